"""Masked-language-model inputs for (further) pre-training, on the host in NumPy.

Mirrors BERT (Devlin et al. 2019, section 3.1 and appendix A.1) and transformers'
DataCollatorForLanguageModeling (data/data_collator.py): mask_prob of the real, non-special
tokens are selected as targets; of those 80% become the mask token, 10% a random token, 10% stay
as they are; the labels hold the original ids at the targets and -100 (the loss's ignore index)
elsewhere. With whole-word masking (BERT's later release, transformers' whole_word_mask=True)
words are the unit instead of tokens.

Where this differs from transformers, on purpose:
- Random replacements are drawn from the vocabulary less the special ids and the mask id
  (transformers draws from the whole vocabulary, [CLS] and [PAD] included), so a "random" token
  is never a special one.
- Every row with a token to select gets at least one target (transformers may select none in a
  short row; BERT's create_pretraining_data.py takes max(1, round(n * mask_prob))): a batch of
  short rows then never has all labels -100, which would make a mean loss 0 / 0.
- Whole words: transformers 5 finds words from the tokenizer's offsets and replaces every token
  of a chosen word by the mask token (it turns random replacement off); its older
  DataCollatorForWholeWordMask and BERT's script draw 80/10/10 per token. Here words come from
  a table of which token ids begin one (`word_start_table`), and the 80/10/10 is
  drawn once per word: a chosen word is wholly masked, wholly random, or wholly kept, so the
  model never sees part of a word it must predict.

Training order must be a pure function of (seed, step): pass rng=np.random.default_rng([seed,
step]). The draws are whole (b, t) arrays in a fixed order, so the result depends only on the
generator's state and the inputs' shapes and values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from jaxformer.tokenizer import Tokenizer

IGNORE = -100  # the labels' "no target" (transformers' and optax's ignore index)
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the targets; the rest are kept as they are


class MaskingError(ValueError):
    """Inputs mask_tokens cannot mask as given; the message says which and what to do."""


def _check(input_ids, attention_mask, vocab_size, mask_id, mask_prob, word_starts) -> None:
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise MaskingError(
            f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape} must be the "
            "same (batch, length) shape"
        )
    if not 0.0 < mask_prob <= 1.0:
        raise MaskingError(f"mask_prob={mask_prob}; it must be in (0, 1]")
    if not 0 <= mask_id < vocab_size:
        raise MaskingError(f"mask_id={mask_id} is outside the vocabulary [0, {vocab_size})")
    real = attention_mask.astype(bool)
    if real.any() and (input_ids[real].min() < 0 or input_ids[real].max() >= vocab_size):
        raise MaskingError(
            f"input_ids hold {int(input_ids[real].min())}..{int(input_ids[real].max())}, outside "
            f"the vocabulary [0, {vocab_size}): was vocab_size the tokenizer's?"
        )
    table_ok = word_starts is None or (
        word_starts.dtype == bool and word_starts.shape == (vocab_size,)
    )
    if not table_ok:
        raise MaskingError(
            f"word_starts is {word_starts.dtype} {word_starts.shape}; it must be a bool table of "
            f"shape ({vocab_size},), one entry per token id (word_start_table(tokenizer))"
        )


def _at_least_one(selected: np.ndarray, eligible: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """`selected`, plus in each row that has an eligible position but no selected one, the
    eligible position with the highest score (a uniform pick for uniform scores)."""
    empty = ~selected.any(axis=1) & eligible.any(axis=1)  # (b,)
    pick = np.argmax(np.where(eligible, scores, -1.0), axis=1)  # (b,)
    rows = np.flatnonzero(empty)
    selected = selected.copy()
    selected[rows, pick[rows]] = True
    return selected


def mask_tokens(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    mask_prob: float = 0.15,
    word_starts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masked-LM corruption of a padded batch: (masked_ids, labels), both (b, t) int32.

    Tokens that can be targets: real (attention_mask 1) and not in `special_ids`. Each is
    selected with probability mask_prob, or with `word_starts` each word is, with all its
    tokens; each row with a candidate gets at least one target. A target becomes `mask_id`
    (80%), a random id of [0, vocab_size) that is neither special nor mask_id (10%), or stays
    (10%); with words, that choice is made once per word. labels: the original id at targets,
    -100 elsewhere; masked_ids: input_ids elsewhere, padding included.

    word_starts: (vocab_size,) bool, True for the ids that begin a word
      (`word_start_table(tokenizer)`). A word is a start token and the continuation tokens
      after it; a candidate right after a non-candidate (special token, padding, row start)
      begins a word too, whatever it is. Each word is selected with probability mask_prob, so
      about mask_prob of the tokens are targets.
    rng: np.random.default_rng([seed, step]) for a batch that is a pure function of the step.
    """
    input_ids = np.asarray(input_ids)
    attention_mask = np.asarray(attention_mask)
    _check(input_ids, attention_mask, vocab_size, mask_id, mask_prob, word_starts)
    b, t = input_ids.shape
    special = np.asarray(list(special_ids), np.int64)
    candidate = attention_mask.astype(bool) & ~np.isin(input_ids, special)  # (b, t)
    replacements = np.setdiff1d(np.arange(vocab_size), np.append(special, mask_id))
    if len(replacements) == 0:
        raise MaskingError(f"every id of the {vocab_size} is special: no random replacement")

    # Every draw is a whole (b, t) array, in this order, used or not.
    select_u, pick_u, action_u = rng.random((b, t)), rng.random((b, t)), rng.random((b, t))
    random_ids = replacements[rng.integers(0, len(replacements), size=(b, t))]

    if word_starts is None:
        selected = _at_least_one(candidate & (select_u < mask_prob), candidate, pick_u)
        action = action_u
    else:
        ids = np.where(candidate, input_ids, 0)
        before = np.concatenate([np.zeros((b, 1), bool), candidate[:, :-1]], axis=1)
        starts = candidate & (word_starts[ids] | ~before)  # (b, t): the words' first tokens
        chosen = _at_least_one(starts & (select_u < mask_prob), starts, pick_u)
        # Each token's word: the last start at or before it (candidates always have one).
        start_of = np.maximum.accumulate(np.where(starts, np.arange(t), 0), axis=1)  # (b, t)
        rows = np.arange(b)[:, None]
        selected = candidate & chosen[rows, start_of]
        action = action_u[rows, start_of]  # one draw per word, at its first token

    to_mask = selected & (action < MASK_SHARE)
    to_random = selected & (action >= MASK_SHARE) & (action < MASK_SHARE + RANDOM_SHARE)
    masked = np.where(to_mask, mask_id, np.where(to_random, random_ids, input_ids))
    labels = np.where(selected, input_ids, IGNORE)
    return masked.astype(np.int32), labels.astype(np.int32)


def target_slots(length: int, mask_prob: float) -> int:
    """The default number of target slots p of a row of `length` tokens: the expected count
    length * mask_prob plus six standard deviations of its binomial spread, plus one, rounded up
    to a multiple of 8 and capped at `length`, so a row of independently chosen tokens almost
    never has more (`gather_targets` widens a batch that does)."""
    mean = length * mask_prob
    spread = math.sqrt(length * mask_prob * (1.0 - mask_prob))
    return min(length, 8 * math.ceil((mean + 6.0 * spread + 1.0) / 8))


def gather_targets(labels: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """The targets of `mask_tokens`' labels (b, t) as (positions, target_labels), both (b, p)
    int32: each row's target positions in order, then slots at position 0 with label -100.
    p is `slots`, or where a row has more targets, the next power of two that holds them
    (capped at t), so that few distinct shapes compile and no target is dropped."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise MaskingError(f"labels {labels.shape} must be (batch, length)")
    if slots < 1:
        raise MaskingError(f"slots={slots}; it must be positive")
    b, t = labels.shape
    chosen = labels != IGNORE  # (b, t)
    most = int(chosen.sum(axis=1).max(initial=0))
    p = min(slots, t) if most <= slots else min(t, 1 << (most - 1).bit_length())
    order = np.argsort(~chosen, axis=1, kind="stable")[:, :p]  # targets first, in order
    used = np.take_along_axis(chosen, order, axis=1)  # (b, p)
    positions = np.where(used, order, 0)
    targets = np.where(used, np.take_along_axis(labels, order, axis=1), IGNORE)
    return positions.astype(np.int32), targets.astype(np.int32)


def word_start_table(tokenizer: Tokenizer) -> np.ndarray:
    """Which token ids begin a word: (vocab_size,) bool, for whole-word masking (`mask_tokens`),
    read off the tokenizer's model. WordPiece (and a BPE with a continuing_subword_prefix):
    every token but those with the prefix ("##"). Byte-level BPE: the tokens with its space
    marker "Ġ"; SentencePiece (Unigram, or BPE behind Metaspace): those with "▁". Added and
    special tokens are starts, and so is an id with no token. A word's first token after a
    special token is a start whatever it is (the first word of a byte-level text has no "Ġ"):
    mask_tokens counts that itself.
    """
    tok, vocab_size = tokenizer.tokenizer, tokenizer.vocab_size
    spec = json.loads(tok.to_str())
    model = spec.get("model") or {}
    kind, prefix = model.get("type"), model.get("continuing_subword_prefix")
    if kind == "WordPiece":
        prefix = prefix or "##"
    table = np.ones(vocab_size, bool)
    if kind != "WordLevel":  # a WordLevel token is a whole word
        if prefix:
            marker, starts = prefix, False
        else:
            if model.get("end_of_word_suffix"):
                raise ValueError(
                    f"this {kind} tokenizer marks the ends of words "
                    f"({model['end_of_word_suffix']!r}), not their starts: word_start_table "
                    "reads WordPiece, byte-level BPE and SentencePiece vocabularies"
                )
            marker, starts = _space_marker(spec), True
            if marker is None:
                raise ValueError(
                    f"cannot tell which tokens of this {kind} tokenizer begin a word: it has "
                    "no continuing_subword_prefix, ByteLevel or Metaspace; word_start_table "
                    "reads WordPiece, byte-level BPE and SentencePiece vocabularies"
                )
        for token, i in tok.get_vocab(with_added_tokens=False).items():
            if i < vocab_size:
                table[i] = token.startswith(marker) == starts
    for i in tok.get_added_tokens_decoder():
        table[i] = True
    return table


def _space_marker(spec: dict) -> str | None:
    """The character a tokenizer writes for the space before a word: "Ġ" behind a ByteLevel
    pre-tokenizer, Metaspace's replacement ("▁"), or what a normalizer Replace puts for " "."""
    nodes = [spec.get("pre_tokenizer"), spec.get("normalizer"), spec.get("decoder")]
    while nodes:
        node = nodes.pop(0)
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "ByteLevel":
            return "Ġ"  # GPT-2's bytes_to_unicode of the space byte
        if kind == "Metaspace":
            return node.get("replacement", "▁")
        if kind == "Replace" and (node.get("pattern") or {}).get("String") == " ":
            return node.get("content")
        for key in ("pretokenizers", "normalizers", "decoders"):
            nodes.extend(node.get(key) or [])
    return None
