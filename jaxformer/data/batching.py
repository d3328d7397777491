"""Batches of tokenized examples: length-bucketed training batches, eval batches, each process's
slice of a global batch.

Batches are dicts of numpy arrays with a fixed global batch size B:

    input_ids       (B, L) int32   token ids, pad_id after each example
    attention_mask  (B, L) int32   1 = real token, 0 = padding
    token_type_ids  (B, L) int32   zeros (single-segment input), or a pair's segments
    labels          (B, ...)       the split's labels: (B,) int32 class ids, (B,) float32
                                   regression targets or (B, k) float32 multi-label targets
    weights         (B,)   float32 1 = real example, 0 = filler row (all padding, label 0)
    index           (B,)   int32   the example's index in its split, -1 for a filler row

Tasks add per-token fields (`TokenizedSplit.token_fields`: NER's per-token labels, a text
pair's token_type_ids), padded to (B, L), and per-example fields (`example_fields`: an answer's
start and end token), and may transform each global batch with a generator seeded by its
position (masked-LM masking).

With bucketing, L is the smallest of a few fixed lengths (e.g. 64, 128, 256, 512) that holds the
batch's longest example, so jit compiles one program per bucket and short reviews are not padded
to 512; examples are sorted by length within shuffled chunks so a batch holds similar lengths
(the length-grouped sampling of tensor2tensor's bucket_by_sequence_length and HF's
group_by_length). Without it, every batch is padded to the max length.

Training order is a pure function of (seed, epoch, step): a resumed run that knows only its
global step sees exactly the batches it would have seen. Every example appears exactly once per
epoch; the epoch's last batch is filled up with weight-0 rows rather than dropped, so losses and
metrics must be weighted by `weights`. Each process gets a contiguous slice of every global batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

Batch = dict[str, np.ndarray]
DEFAULT_BUCKETS = (64, 128, 256, 512)
IGNORE = -100  # a per-token label the loss skips (transformers' ignore_index)
TOKEN_FILL = {"labels": IGNORE}  # the padding of a per-token field, where it is not 0
# (batch, rng) -> batch: a change of each global batch drawn from a generator that is a
# function of the batch's position (masked-LM masking).
Transform = Callable[[dict, np.random.Generator], dict]


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
    """Token ids of one split, ragged: example i is `ids[offsets[i]:offsets[i + 1]]`."""

    ids: np.ndarray  # (total_tokens,) int32
    offsets: np.ndarray  # (n + 1,) int64, offsets[0] = 0
    labels: np.ndarray  # (n,) int32 class ids, (n,) float32 targets or (n, k) float32 multi-hot
    pad_id: int = 0
    max_length: int | None = None  # the tokenizer's truncation length, if known
    # name -> (total_tokens,) int32 aligned with `ids` ("labels" there replaces the per-example
    # labels), padded with TOKEN_FILL[name] (else 0).
    token_fields: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    # name -> (n,) per-example array, 0 in a filler row.
    example_fields: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        """(n,) tokens per example, [CLS] and [SEP] included."""
        return np.diff(self.offsets)


def bucket_lengths(buckets: Sequence[int] | None, max_length: int) -> tuple[int, ...]:
    """The padded lengths a batch may take: `buckets` below `max_length`, then `max_length`.

    `buckets=None` (no bucketing) gives `(max_length,)`.
    """
    below = sorted({int(b) for b in buckets or () if 0 < b < max_length})
    return (*below, int(max_length))


def process_slice(batch_size: int, process_index: int, process_count: int) -> slice:
    """This process's contiguous rows of a global batch of `batch_size` rows."""
    if batch_size % process_count:
        raise ValueError(
            f"global batch size {batch_size} does not divide by the process count "
            f"{process_count}; choose a multiple of {process_count}"
        )
    per_process = batch_size // process_count
    return slice(process_index * per_process, (process_index + 1) * per_process)


def shard_batch(batch: Batch, process_index: int | None = None, process_count: int | None = None):
    """This process's contiguous slice of every array of a global batch (default: jax's process)."""
    process_index, process_count = _process(process_index, process_count)
    rows = process_slice(len(batch["labels"]), process_index, process_count)
    return {k: v[rows] for k, v in batch.items()}


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return process_index, process_count


def pad_ids(ids: Sequence[np.ndarray], length: int, pad_id: int) -> Batch:
    """Ragged id sequences laid left-aligned into (b, t) int32 arrays, t = `length`.

    Args:
      ids: b sequences of token ids, none longer than `length`; an empty one gives a row of
        padding.
      length: t, the padded length.
      pad_id: the id after each sequence.

    Returns:
      {"input_ids": (b, t), "attention_mask": (b, t) 1 = real token, "token_type_ids": (b, t)
      zeros (single-segment input)}.
    """
    longest = max((len(x) for x in ids), default=0)
    if longest > length:
        raise ValueError(f"a sequence of {longest} ids does not fit padding to {length}")
    input_ids = np.full((len(ids), length), pad_id, dtype=np.int32)  # (b, t)
    attention_mask = np.zeros((len(ids), length), dtype=np.int32)  # (b, t)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = x
        attention_mask[row, : len(x)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": np.zeros_like(input_ids),
    }


def from_sequences(
    ids: Sequence[np.ndarray],
    labels: np.ndarray | None = None,
    *,
    token_fields: Mapping[str, Sequence[np.ndarray]] | None = None,
    example_fields: Mapping[str, np.ndarray] | None = None,
    pad_id: int = 0,
    max_length: int | None = None,
) -> TokenizedSplit:
    """A TokenizedSplit of ragged id sequences, with per-token fields of the same lengths and
    per-example fields; labels default to zeros (a task whose labels are per token)."""
    lengths = np.asarray([len(x) for x in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def flat(seqs):
        return np.concatenate([np.asarray(x, np.int32) for x in seqs]) if len(seqs) else _EMPTY

    tokens = {}
    for name, seqs in (token_fields or {}).items():
        if [len(x) for x in seqs] != lengths.tolist():
            raise ValueError(f"token field {name!r} does not have one value per token")
        tokens[name] = flat(seqs)
    n = len(ids)
    examples = {k: np.asarray(v) for k, v in (example_fields or {}).items()}
    for name, values in examples.items():
        if len(values) != n:
            raise ValueError(f"example field {name!r} has {len(values)} values for {n} examples")
    return TokenizedSplit(
        ids=flat(ids),
        offsets=offsets,
        labels=np.zeros(n, np.int32) if labels is None else label_array(labels),
        pad_id=int(pad_id),
        max_length=max_length,
        token_fields=tokens,
        example_fields=examples,
    )


_EMPTY = np.zeros(0, np.int32)


def label_array(labels) -> np.ndarray:
    """Labels as the batches carry them: integers as int32 class ids, anything else float32."""
    labels = np.asarray(labels)
    return labels.astype(np.int32 if np.issubdtype(labels.dtype, np.integer) else np.float32)


def collate(split: TokenizedSplit, indices: np.ndarray, length: int) -> Batch:
    """The batch of examples `indices` (-1 = weight-0 filler row) padded to `length` tokens."""
    indices = np.asarray(indices)
    real = indices >= 0
    # A filler row is all padding.
    rows = [(split.offsets[i], split.offsets[i + 1]) if i >= 0 else (0, 0) for i in indices]
    batch = pad_ids([split.ids[a:b] for a, b in rows], length, split.pad_id)
    labels = np.zeros((len(indices), *split.labels.shape[1:]), split.labels.dtype)  # (b, ...)
    labels[real] = split.labels[indices[real]]
    batch.update(labels=labels, weights=real.astype(np.float32), index=indices.astype(np.int32))
    for name, values in split.token_fields.items():
        padded = np.full((len(indices), length), TOKEN_FILL.get(name, 0), np.int32)  # (b, t)
        for row, (a, b) in enumerate(rows):
            padded[row, : b - a] = values[a:b]
        batch[name] = padded
    for name, values in split.example_fields.items():
        column = np.zeros(len(indices), values.dtype)  # (b,)
        column[real] = values[indices[real]]
        batch[name] = column
    return batch


class _Batches:
    """Shared by TrainBatches and EvalBatches: a plan of global batches, sliced per process."""

    def __init__(
        self,
        split: TokenizedSplit,
        batch_size: int,
        buckets: Sequence[int] | None,
        max_length: int | None,
        bucketing: bool,
        pad_id: int | None,
        process_index: int | None,
        process_count: int | None,
        transform: Transform | None = None,
        seed: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if pad_id is not None:
            split = dataclasses.replace(split, pad_id=int(pad_id))
        self.split = split
        self.batch_size = batch_size
        self.transform, self.seed = transform, seed
        self.bucketing = bucketing
        self.process_index, self.process_count = _process(process_index, process_count)
        self._rows = process_slice(batch_size, self.process_index, self.process_count)
        longest = int(split.lengths.max(initial=1))
        self.max_length = int(max_length or split.max_length or longest)
        if longest > self.max_length:
            raise ValueError(
                f"the split has an example of {longest} tokens, longer than max_length "
                f"{self.max_length}: tokenize with truncation to max_length"
            )
        self.buckets = bucket_lengths(buckets if bucketing else None, self.max_length)
        self.num_batches = math.ceil(len(split) / batch_size)

    @property
    def per_process_batch_size(self) -> int:
        return self.batch_size // self.process_count

    def _plan(self, epoch: int) -> np.ndarray:
        """(num_batches, batch_size) global example indices, -1 for filler rows."""
        raise NotImplementedError

    def _padded_length(self, indices: np.ndarray) -> int:
        """The smallest bucket that holds the longest example of a global batch."""
        real = indices[indices >= 0]
        longest = int(self.split.lengths[real].max(initial=1))
        return self.buckets[int(np.searchsorted(self.buckets, longest))]

    def _batch(self, epoch: int, step: int) -> Batch:
        if not 0 <= step < self.num_batches:
            raise IndexError(f"step {step} not in [0, {self.num_batches})")
        indices = self._plan(epoch)[step]
        # The length comes from the global batch so that every process pads to the same shape.
        length = self._padded_length(indices)
        if self.transform is None:
            return collate(self.split, indices[self._rows], length)
        # Transformed whole, then sliced: a process sees what it would see in a run of one.
        batch = collate(self.split, indices, length)
        batch = self.transform(batch, np.random.default_rng([self.seed, epoch, step]))
        return {k: v[self._rows] for k, v in batch.items()}

    def _padding_fraction(self, epoch: int) -> float:
        plan = self._plan(epoch)
        total = sum(self._padded_length(indices) * len(indices) for indices in plan)
        real = int(self.split.lengths.sum())
        return 1.0 - real / total if total else 0.0


def _pad_to_batches(order: np.ndarray, batch_size: int) -> np.ndarray:
    """(n,) example order -> (ceil(n / batch_size), batch_size), the last row filled with -1."""
    num_batches = math.ceil(len(order) / batch_size)
    padded = np.full(num_batches * batch_size, -1, dtype=np.int64)
    padded[: len(order)] = order
    return padded.reshape(num_batches, batch_size)


class TrainBatches(_Batches):
    """Shuffled, length-bucketed training batches; the order is a function of (seed, epoch, step).

    Each epoch: a seeded permutation of the examples, cut into chunks of `sort_chunk_batches`
    batches; each chunk is sorted by length and cut into batches; the batches are shuffled.
    The last batch of the epoch is filled with weight-0 rows, so every example is seen exactly
    once per epoch and `num_batches == ceil(len(split) / batch_size)`.

    Args:
      split: tokenized examples.
      batch_size: global batch size (all processes together).
      seed: shuffling seed.
      buckets: padded lengths a batch may take (capped at, and completed by, `max_length`).
      max_length: the longest padded length; default the tokenizer's max length, else the
        split's longest example.
      bucketing: False pads every batch to `max_length` (the plain approach, for comparison).
      sort_chunk_batches: batches per sorted chunk; larger wastes less padding, mixes less.
      pad_id: padding token id; default the split's (the tokenizer's).
      process_index, process_count: this process's slice; default jax's.
      transform: applied to each global batch with np.random.default_rng([seed, epoch, step]).
    """

    def __init__(
        self,
        split: TokenizedSplit,
        batch_size: int,
        seed: int = 0,
        buckets: Sequence[int] | None = DEFAULT_BUCKETS,
        max_length: int | None = None,
        bucketing: bool = True,
        sort_chunk_batches: int = 50,
        pad_id: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        transform: Transform | None = None,
    ):
        super().__init__(
            split,
            batch_size,
            buckets,
            max_length,
            bucketing,
            pad_id,
            process_index,
            process_count,
            transform,
            seed,
        )
        if len(split) == 0:
            raise ValueError("cannot train on an empty split")
        self.sort_chunk_batches = sort_chunk_batches
        self._plans: dict[int, np.ndarray] = {}

    @property
    def num_batches_per_epoch(self) -> int:
        return self.num_batches

    def _plan(self, epoch: int) -> np.ndarray:
        if epoch not in self._plans:
            if len(self._plans) >= 2:  # keep the current and the next epoch
                self._plans.pop(min(self._plans))
            self._plans[epoch] = self._make_plan(epoch)
        return self._plans[epoch]

    def _make_plan(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.split))
        if self.bucketing:
            lengths = self.split.lengths
            chunk = self.batch_size * self.sort_chunk_batches
            for start in range(0, len(order), chunk):
                part = order[start : start + chunk]
                order[start : start + chunk] = part[np.argsort(lengths[part], kind="stable")]
        plan = _pad_to_batches(order, self.batch_size)
        return plan[rng.permutation(len(plan))]

    def batch(self, epoch: int, step: int) -> Batch:
        """This process's slice of batch `step` (0 <= step < num_batches_per_epoch) of `epoch`."""
        return self._batch(epoch, step)

    def batch_at(self, global_step: int) -> Batch:
        """The batch a run sees at `global_step` (epochs follow each other)."""
        return self._batch(*divmod(global_step, self.num_batches))

    def iterate(self, start_step: int = 0, num_steps: int | None = None) -> Iterator[Batch]:
        """Batches from `start_step` on, for `num_steps` steps or forever."""
        stop = None if num_steps is None else start_step + num_steps
        step = start_step
        while stop is None or step < stop:
            yield self.batch_at(step)
            step += 1

    def batch_indices(self, epoch: int, step: int) -> np.ndarray:
        """(batch_size,) global example indices of a batch, -1 for filler rows."""
        return self._plan(epoch)[step].copy()

    def padding_fraction(self, epoch: int = 0) -> float:
        """Pad tokens / all tokens over the global batches of `epoch` (filler rows included)."""
        return self._padding_fraction(epoch)


class EvalBatches(_Batches):
    """Every example once, in a fixed order; the last batch is filled with weight-0 rows.

    With bucketing the order is by length (stable), so batches group similar lengths; without it,
    the split's order. Arguments as for TrainBatches; a transform draws from
    np.random.default_rng([0, 0, step]), the same in every evaluation.
    """

    def __init__(
        self,
        split: TokenizedSplit,
        batch_size: int,
        buckets: Sequence[int] | None = DEFAULT_BUCKETS,
        max_length: int | None = None,
        bucketing: bool = True,
        pad_id: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        transform: Transform | None = None,
    ):
        super().__init__(
            split,
            batch_size,
            buckets,
            max_length,
            bucketing,
            pad_id,
            process_index,
            process_count,
            transform,
        )
        order = np.arange(len(split))
        if bucketing:
            order = np.argsort(split.lengths, kind="stable")
        self._order = _pad_to_batches(order, batch_size)

    def _plan(self, epoch: int) -> np.ndarray:
        del epoch
        return self._order

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        for step in range(self.num_batches):
            yield self._batch(0, step)

    def batch(self, step: int) -> Batch:
        """This process's slice of eval batch `step`."""
        return self._batch(0, step)

    def batch_indices(self, step: int) -> np.ndarray:
        """(batch_size,) global example indices of batch `step`, -1 for filler rows."""
        return self._order[step].copy()

    def padding_fraction(self) -> float:
        """Pad tokens / all tokens over the global eval batches (filler rows included)."""
        return self._padding_fraction(0)
