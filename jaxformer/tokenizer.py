"""Encoder tokenization for every family jaxformer holds, with head or head+tail truncation, on
Hugging Face `tokenizers`.

Mirrors transformers' fast tokenizers (a checkpoint's files are read by
`jaxformer.hf.tokenizer_files.load_tokenizer`). Special tokens are placed by tokenizer.json's
post_processor (the family's template, e.g. [CLS] A [SEP] B [SEP] or <s> A </s></s> B </s>),
else by the template of config.json's model_type. Long texts keep their head (the first tokens
that fit) or head and tail (the first 128 and the last that fit; Sun et al. 2019, "How to
Fine-Tune BERT for Text Classification?"); text pairs share the room as transformers'
"longest_first" shares it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tokenizers
from tokenizers import models, processors

from jaxformer import families
from jaxformer.data.batching import pad_ids

TRUNCATIONS = ("head", "head_tail")
PADDINGS = ("longest", "max_length")
HEAD_TOKENS = 128  # head_tail keeps this many leading content tokens
# transformers' classes that rebuild the normalizer from do_lower_case.
BERT_CLASSES = ("BertTokenizer", "BertTokenizerFast", "DistilBertTokenizer")
SPECIAL_TOKENS = families.BERT_SPECIAL_TOKENS  # where no family names them


def family_special_tokens(model_type: str | None) -> dict[str, str] | None:
    """The special tokens of the transformers tokenizer class of config.json's `model_type`, used
    where neither the tokenizer files nor tokenizer.json's post_processor name one; None for a
    model_type jaxformer does not hold."""
    family = families.FAMILIES.get(model_type)
    return None if family is None else family.special_tokens


class Piece(NamedTuple):
    """One step of a template: a special token (segment None), or text A's (0) or B's (1)
    tokens, all with the token type `type_id`."""

    segment: int | None
    token_id: int  # the special token's id; -1 for a text
    type_id: int


def _one_token() -> tokenizers.Encoding:
    return tokenizers.Tokenizer(models.WordLevel({"x": 0}, unk_token="x")).encode("x")


def pieces(processor, pair: bool) -> tuple[Piece, ...]:
    """The template `processor` applies, read off by running it on one-token texts."""
    out = processor.process(_one_token(), _one_token() if pair else None, True)
    return tuple(
        Piece(s, i if s is None else -1, t)
        for s, i, t in zip(out.sequence_ids, out.ids, out.type_ids, strict=True)
    )


class Template(NamedTuple):
    """Where the special tokens go around one text and around a pair, with token types."""

    single: tuple[Piece, ...]
    pair: tuple[Piece, ...]

    @classmethod
    def of(cls, processor) -> Template:
        return cls(pieces(processor, pair=False), pieces(processor, pair=True))

    def n_special(self, pair: bool) -> int:
        return sum(p.segment is None for p in (self.pair if pair else self.single))

    def apply(self, texts: Sequence[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, type_ids) int32 for one text's content ids, or a pair's."""
        ids, types = [], []
        for p in self.pair if len(texts) == 2 else self.single:
            part = [p.token_id] if p.segment is None else texts[p.segment]
            ids.extend(part)
            types.extend([p.type_id] * len(part))
        return np.array(ids, np.int32), np.array(types, np.int32)

    def word_ids(self, word_ids: list[int]) -> np.ndarray:
        """int32 word index of each token of one text laid out by `apply`: the text's own
        `word_ids` where its tokens go, -1 at the special tokens."""
        out = []
        for p in self.single:
            out.extend([-1] if p.segment is None else word_ids)
        return np.array(out, np.int32)


def _family_processor(model_type: str | None, cls: tuple[str, int], sep: tuple[str, int]):
    """The post-processor of model_type's transformers tokenizer class, for tokenizers that
    have none."""
    family = families.FAMILIES.get(model_type)
    if family is not None and family.pair_template == "roberta":
        return processors.RobertaProcessing(sep, cls)
    return processors.BertProcessing(sep, cls)


def _longest_first(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """How many tokens each text of a pair keeps, as transformers' truncation="longest_first"
    (tokenizers' LongestFirst): the longer text is cut first; when both must be cut each keeps
    half the budget, the longer one (B on a tie) the odd token."""
    if n_a + n_b <= budget:
        return n_a, n_b
    short, long = sorted((n_a, n_b))
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short, long = budget // 2, budget // 2 + budget % 2
    return (long, short) if n_a > n_b else (short, long)


def check_length(max_length: int, truncation: str) -> None:
    """Raises ValueError unless `truncation` is known and max_length leaves it room."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation={truncation!r}; choose one of {TRUNCATIONS}")
    least = HEAD_TOKENS + 3 if truncation == "head_tail" else 3
    if not isinstance(max_length, int) or max_length < least:
        raise ValueError(
            f"max_length={max_length!r} is too short for truncation={truncation!r}: it needs at "
            f"least {least} ([CLS], [SEP] and "
            + (f"{HEAD_TOKENS} head tokens plus one tail token)" if least > 3 else "one token)")
        )


def check_texts(texts: str | Sequence[str], name: str) -> list[str]:
    """`texts` as a list (a single str is a list of one); TypeError naming a non-str item."""
    if isinstance(texts, str):
        texts = [texts]
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is a {type(text).__name__}, not a str")
    return list(texts)


class Tokenizer:
    """A `tokenizers.Tokenizer` that truncates our way and returns numpy int32 batches.

    Special tokens go where the tokenizer's post_processor puts them. A tokenizer without one,
    or with one that adds no special tokens (a lone ByteLevel), gets `model_type`'s template
    from `special_tokens`' cls and sep (RoBERTa, XLM-R: <s> A </s></s> B </s>, all types 0; the
    others: [CLS] A [SEP] B [SEP], type 1 from B on) as its post_processor, so that `save` and
    the fingerprint hold it.

    Attributes: special_tokens, pad_id, cls_id, sep_id, vocab_size, max_length, truncation,
    template, fingerprint (a hash of the tokenizer's JSON, max_length and truncation, for cache
    keys).
    """

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        max_length: int = 512,
        truncation: str = "head",
        special_tokens: dict[str, str] | None = None,
        tokenizer_class: str = "BertTokenizer",
        model_type: str | None = None,
    ):
        check_length(max_length, truncation)
        self.tokenizer_class = tokenizer_class  # transformers' class, written back by `save`
        self.tokenizer = tokenizer
        # Some tokenizer.json files carry their own truncation/padding (MiniLM's: 128); we do ours.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        defaults = family_special_tokens(model_type) or SPECIAL_TOKENS
        self.special_tokens = {**defaults, **(special_tokens or {})}
        self.max_length, self.truncation = max_length, truncation
        self.pad_id, self.cls_id, self.sep_id = (
            self._token_id(k) for k in ("pad_token", "cls_token", "sep_token")
        )
        processor = tokenizer.post_processor
        if processor is None or not processor.num_special_tokens_to_add(False):
            family = _family_processor(
                model_type,
                (self.special_tokens["cls_token"], self.cls_id),
                (self.special_tokens["sep_token"], self.sep_id),
            )
            tokenizer.post_processor = (
                family if processor is None else processors.Sequence([processor, family])
            )
        self.template = Template.of(tokenizer.post_processor)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        content = tokenizer.to_str() + f"|max_length={max_length}|truncation={truncation}"
        self.fingerprint = hashlib.sha256(content.encode()).hexdigest()[:16]

    def _token_id(self, key: str) -> int:
        token = self.special_tokens[key]
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise ValueError(
                f"special token {token!r} is not in the tokenizer's vocabulary (it is the {key})"
            )
        return i

    def _cut(self, ids: list[int], keep: int) -> list[int]:
        """The `keep` tokens of `ids` that truncation keeps: the head, or with head_tail the
        first HEAD_TOKENS and the last keep - HEAD_TOKENS (the head alone if keep is smaller)."""
        if len(ids) <= keep:
            return ids
        if self.truncation == "head" or keep <= HEAD_TOKENS:
            return ids[:keep]
        return ids[:HEAD_TOKENS] + ids[len(ids) - (keep - HEAD_TOKENS) :]

    def encode(
        self,
        texts: str | Sequence[str],
        max_length: int | None = None,
        *,
        pairs: str | Sequence[str] | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Unpadded int32 (ids, type_ids) per text or per (text, pair), with the template's
        special tokens, at most max_length (default self.max_length) long.

        A single text keeps its head or head and tail (`truncation`). A pair is cut as
        transformers' truncation="longest_first" cuts it: tokens come off the longer text until
        the pair fits. With head_tail each text of a pair that is cut keeps its own first
        HEAD_TOKENS and its last tokens (its head alone if it keeps no more than HEAD_TOKENS):
        the document whose ending matters may be either text (a premise, a passage after its
        question), and a pair that fits is never changed.
        """
        max_length = self.max_length if max_length is None else max_length
        check_length(max_length, self.truncation)
        texts = check_texts(texts, "texts")
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        if pairs is None:
            budget = max_length - self.template.n_special(pair=False)
            out = [self.template.apply([self._cut(e.ids, budget)]) for e in encodings]
        else:
            pairs = check_texts(pairs, "pairs")
            if len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs; give one pair each")
            n = self.template.n_special(pair=True)
            budget = max_length - n
            if budget < 2:
                raise ValueError(
                    f"max_length={max_length} is too short for text pairs: the template adds {n} "
                    f"special tokens, so it needs at least {n + 2} (one token of each text)"
                )
            out = []
            for a, b in zip(
                encodings, self.tokenizer.encode_batch(pairs, add_special_tokens=False), strict=True
            ):
                n_a, n_b = _longest_first(len(a.ids), len(b.ids), budget)
                out.append(self.template.apply([self._cut(a.ids, n_a), self._cut(b.ids, n_b)]))
        return [ids for ids, _ in out], [types for _, types in out]

    def encode_ids(
        self,
        texts: str | Sequence[str],
        max_length: int | None = None,
        *,
        pairs: str | Sequence[str] | None = None,
    ) -> list[np.ndarray]:
        """The ids of `encode`: unpadded int32 per text (or per pair)."""
        return self.encode(texts, max_length, pairs=pairs)[0]

    def pad(
        self,
        ids: Sequence[np.ndarray],
        padding: str = "longest",
        max_length: int | None = None,
        type_ids: Sequence[np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Pads id sequences into (b, t) int32 arrays: input_ids, attention_mask, token_type_ids
        (see `jaxformer.data.batching.pad_ids`; `type_ids`, as `encode` gives them, fill
        token_type_ids, else it is zeros). padding="longest" pads to the longest sequence,
        "max_length" to max_length (default self.max_length)."""
        if padding not in PADDINGS:
            raise ValueError(f"padding={padding!r}; choose one of {PADDINGS}")
        longest = max((len(x) for x in ids), default=0)
        length = (max_length or self.max_length) if padding == "max_length" else longest
        batch = pad_ids(ids, length, self.pad_id)
        for row, types in enumerate(type_ids or ()):
            batch["token_type_ids"][row, : len(types)] = types
        return batch

    def __call__(
        self,
        texts: str | Sequence[str],
        max_length: int | None = None,
        padding: str = "longest",
        *,
        pairs: str | Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Tokenizes a batch of texts (a single str is a batch of one), or of (text, pair)
        pairs, into padded int32 arrays."""
        ids, type_ids = self.encode(texts, max_length, pairs=pairs)
        return self.pad(ids, padding, max_length, type_ids)

    def save(self, folder: str | os.PathLike) -> None:
        """Writes tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json,
        which transformers' AutoTokenizer and `load_tokenizer` both read."""
        folder = Path(folder)
        self.tokenizer.save(str(folder / "tokenizer.json"))
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        by_id = sorted(vocab, key=vocab.get)
        if [vocab[t] for t in by_id] == list(range(len(by_id))):  # WordPiece: one token a line
            (folder / "vocab.txt").write_text("".join(f"{t}\n" for t in by_id), encoding="utf-8")
        config = {
            "tokenizer_class": self.tokenizer_class,
            "model_max_length": self.max_length,
            **self.special_tokens,
        }
        if self.tokenizer_class in BERT_CLASSES:
            config["do_lower_case"] = lowercases(self.tokenizer) is not False
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (folder / "special_tokens_map.json").write_text(
            json.dumps(self.special_tokens, indent=2) + "\n"
        )


def lowercases(tokenizer: tokenizers.Tokenizer) -> bool | None:
    """Whether a tokenizer's BertNormalizer lower-cases; None if it has none."""
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    return normalizer.get("lowercase") if normalizer.get("type") == "BertNormalizer" else None
