"""Encoder tokenization (BERT, RoBERTa, XLM-R, ALBERT, DeBERTa-v2, ModernBERT) with head or
head+tail truncation, on Hugging Face `tokenizers`.

Mirrors transformers' fast tokenizers: a checkpoint's tokenizer.json, or one built from vocab.txt
as transformers' BertConverter does (BertNormalizer, BertPreTokenizer, WordPiece), with
`do_lower_case` from a BertTokenizer's tokenizer_config.json winning over tokenizer.json's
normalizer, as in transformers. Special tokens are placed by tokenizer.json's post_processor (the
family's template, e.g. [CLS] A [SEP] B [SEP] or <s> A </s></s> B </s>), else by the template of
config.json's model_type. Long texts keep their head (the first tokens that fit) or head and tail
(the first 128 and the last that fit; Sun et al. 2019, "How to Fine-Tune BERT for Text
Classification?"); text pairs share the room as transformers' "longest_first" shares it.
Pre-split words (a NER sentence) are encoded as transformers' `is_split_into_words=True`
encodes them, each word on its own, with the word of every token.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from jaxformer.data.batching import pad_ids
from jaxformer.hf import CheckpointError
from jaxformer.hf.hub import resolve_checkpoint

TRUNCATIONS = ("head", "head_tail")
PADDINGS = ("longest", "max_length")
HEAD_TOKENS = 128  # head_tail keeps this many leading content tokens
# transformers' classes that rebuild the normalizer from do_lower_case.
BERT_CLASSES = ("BertTokenizer", "BertTokenizerFast", "DistilBertTokenizer")
SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
ROBERTA_SPECIAL_TOKENS = {
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}
# config.json's model_type -> the special tokens of transformers' tokenizer class for it, used
# where neither the tokenizer files nor tokenizer.json's post_processor name one.
FAMILY_SPECIAL_TOKENS = {
    "bert": SPECIAL_TOKENS,
    "distilbert": SPECIAL_TOKENS,
    "electra": SPECIAL_TOKENS,
    "modernbert": SPECIAL_TOKENS,
    "deberta-v2": SPECIAL_TOKENS,  # DebertaV2Tokenizer's defaults
    "albert": SPECIAL_TOKENS | {"pad_token": "<pad>", "unk_token": "<unk>"},
    "roberta": ROBERTA_SPECIAL_TOKENS,
    "xlm-roberta": ROBERTA_SPECIAL_TOKENS,
}
# Families whose pairs are <s> A </s></s> B </s> with all-zero token types; the others' are
# [CLS] A [SEP] B [SEP] with type 1 for B and its [SEP].
ROBERTA_TEMPLATE_TYPES = ("roberta", "xlm-roberta")
NEEDED_TOKENS = ("cls_token", "sep_token", "pad_token")


class Piece(NamedTuple):
    """One step of a template: a special token (segment None), or text A's (0) or B's (1)
    tokens, all with the token type `type_id`."""

    segment: int | None
    token_id: int  # the special token's id; -1 for a text
    type_id: int


def _one_token() -> tokenizers.Encoding:
    return tokenizers.Tokenizer(models.WordLevel({"x": 0}, unk_token="x")).encode("x")


def _pieces(processor, pair: bool) -> tuple[Piece, ...]:
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
        return cls(_pieces(processor, pair=False), _pieces(processor, pair=True))

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
    if model_type in ROBERTA_TEMPLATE_TYPES:
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


def _check_length(max_length: int, truncation: str) -> None:
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation={truncation!r}; choose one of {TRUNCATIONS}")
    least = HEAD_TOKENS + 3 if truncation == "head_tail" else 3
    if not isinstance(max_length, int) or max_length < least:
        raise ValueError(
            f"max_length={max_length!r} is too short for truncation={truncation!r}: it needs at "
            f"least {least} ([CLS], [SEP] and "
            + (f"{HEAD_TOKENS} head tokens plus one tail token)" if least > 3 else "one token)")
        )


def _check_words(words_batch: Sequence[Sequence[str]]) -> list[list[str]]:
    if isinstance(words_batch, str):
        raise TypeError("words_batch is a str; give a batch of sentences, each a list of words")
    batch = []
    for i, words in enumerate(words_batch):
        if isinstance(words, str):
            raise TypeError(f"words_batch[{i}] is a str, not a list of words; split it into words")
        for j, word in enumerate(words):
            if not isinstance(word, str):
                raise TypeError(f"words_batch[{i}][{j}] is a {type(word).__name__}, not a str")
        batch.append(list(words))
    return batch


def _prefix_space(spec: dict | None) -> bool:
    """Turns on add_prefix_space in every ByteLevel pre-tokenizer of a tokenizer.json
    pre_tokenizer spec (in place); whether any was off."""
    if not spec:
        return False
    changed = spec.get("type") == "ByteLevel" and not spec.get("add_prefix_space")
    if changed:
        spec["add_prefix_space"] = True
    return any([changed] + [_prefix_space(p) for p in spec.get("pretokenizers") or ()])


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
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
        _check_length(max_length, truncation)
        self.tokenizer_class = tokenizer_class  # transformers' class, written back by `save`
        self.tokenizer = tokenizer
        # Some tokenizer.json files carry their own truncation/padding (MiniLM's: 128); we do ours.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        defaults = FAMILY_SPECIAL_TOKENS.get(model_type, SPECIAL_TOKENS)
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
        _check_length(max_length, self.truncation)
        texts = _check_texts(texts, "texts")
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        if pairs is None:
            budget = max_length - self.template.n_special(pair=False)
            out = [self.template.apply([self._cut(e.ids, budget)]) for e in encodings]
        else:
            pairs = _check_texts(pairs, "pairs")
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

    @functools.cached_property
    def _words_tokenizer(self) -> tokenizers.Tokenizer:
        """The tokenizer for pre-split words. A byte-level BPE (RoBERTa's) gets each word as if
        after a space, as transformers encodes split words with add_prefix_space=True (which
        run_ner.py passes for RoBERTa): without it "York" in "New York" would be encoded as
        the start of a text, which pre-training never saw mid-sentence."""
        spec = json.loads(self.tokenizer.to_str())
        if not _prefix_space(spec.get("pre_tokenizer")):
            return self.tokenizer
        return tokenizers.Tokenizer.from_str(json.dumps(spec))

    def encode_words(
        self, words_batch: Sequence[Sequence[str]], max_length: int | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Unpadded int32 (ids, word_ids) per sentence of pre-split words, with the template's
        special tokens, at most max_length (default self.max_length) long.

        As transformers' `tok(words, is_split_into_words=True, truncation=True,
        max_length=max_length)` with its `.input_ids` and `.word_ids()`: each word is
        normalized and tokenized on its own (a byte-level BPE's as if after a space, see
        `_words_tokenizer`); word_ids[k] is the index in the sentence of the word token k
        comes from, -1 for a special token. A word may give no token at all (an empty word, or
        one the normalizer removes, such as a control character). Sentences always keep their
        head, whatever `truncation` says: the words past max_length are cut.
        """
        max_length = self.max_length if max_length is None else max_length
        _check_length(max_length, "head")
        batch = _check_words(words_batch)
        budget = max_length - self.template.n_special(pair=False)
        encodings = self._words_tokenizer.encode_batch(
            batch, is_pretokenized=True, add_special_tokens=False
        )
        ids, word_ids = [], []
        for e in encodings:
            ids.append(self.template.apply([e.ids[:budget]])[0])
            word_ids.append(self.template.word_ids(e.word_ids[:budget]))
        return ids, word_ids

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
            config["do_lower_case"] = _lowercases(self.tokenizer) is not False
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (folder / "special_tokens_map.json").write_text(
            json.dumps(self.special_tokens, indent=2) + "\n"
        )

    def encode_windows(
        self,
        questions: str | Sequence[str],
        contexts: str | Sequence[str],
        max_length: int | None = None,
        doc_stride: int = 128,
        *,
        max_query_length: int | None = None,
        names: Sequence[str] | None = None,
    ) -> list[Window]:
        """(question, context) pairs as windows over the context, as transformers' fast tokenizer
        gives them with truncation="only_second", stride=doc_stride and
        return_overflowing_tokens=True: each window is the template around the whole question
        and a run of the context's tokens, at most max_length (default self.max_length) long.
        A context that fits is one window; a longer one is cut into runs of `room` tokens (what
        the question and special tokens leave) starting every room - doc_stride tokens, so
        consecutive windows share doc_stride tokens, the last run ending at the context's end.
        A window's offsets are its context tokens' [start, end) characters in the context (the
        fast tokenizer's offset_mapping), (-1, -1) for the question's and the special tokens.

        The question is never cut unless max_query_length is given; then it keeps its first
        max_query_length tokens (the cut of transformers' legacy squad_convert_examples, which
        uses 64). A question so long that the room left is no more than doc_stride, for a context
        that needs windows, is a ValueError naming it (`names[i]`, default "questions[i]").

        Returns a list of `Window`s, the windows of pair 0 first, then of pair 1, ...
        """
        max_length = self.max_length if max_length is None else max_length
        questions = _check_texts(questions, "questions")
        contexts = _check_texts(contexts, "contexts")
        if len(questions) != len(contexts):
            raise ValueError(
                f"{len(questions)} questions but {len(contexts)} contexts; give one context each"
            )
        checks = [("max_length", max_length, 1), ("doc_stride", doc_stride, 0)]
        if max_query_length is not None:
            checks.append(("max_query_length", max_query_length, 1))
        for key, value, least in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{key}={value!r}; it must be an int >= {least}")
        names = [f"questions[{i}]" for i in range(len(questions))] if names is None else names
        n_special = self.template.n_special(pair=True)
        # Windows are cut from the context's tokens before the post-processor runs, as
        # tokenizers truncates, and the post-processor then trims each window's offsets on its
        # own (RoBERTa's trim_offsets keeps a window's first token's leading space): so the
        # context is tokenized by a copy without post-processor, and windows are post-processed.
        raw = tokenizers.Tokenizer.from_str(self.tokenizer.to_str())
        raw.post_processor = None
        # Contexts repeat (SQuAD asks about 5 questions per paragraph): tokenize each once.
        unique = list(dict.fromkeys(contexts))
        by_context = dict(
            zip(unique, raw.encode_batch(unique, add_special_tokens=False), strict=True)
        )
        encoded = self.tokenizer.encode_batch(questions, add_special_tokens=False)
        windows = []
        for i, (question, context) in enumerate(zip(encoded, contexts, strict=True)):
            question_ids = question.ids[:max_query_length]
            room = max_length - n_special - len(question_ids)
            # merge of one encoding is a copy: truncate works in place.
            encoding = tokenizers.Encoding.merge([by_context[context]], growing_offsets=False)
            if len(encoding.ids) > room:
                _check_room(len(encoding.ids), room, doc_stride, names[i])
                encoding.truncate(room, doc_stride)
            encoding = self.tokenizer.post_processor.process(encoding, None, False)
            at = _segment_start(self.template.pair, len(question_ids))
            for part in [encoding, *encoding.overflowing]:
                ids, type_ids = self.template.apply([question_ids, part.ids])
                offsets = np.full((len(ids), 2), -1, np.int32)  # (t, 2)
                offsets[at : at + len(part.ids)] = np.asarray(part.offsets, np.int32).reshape(-1, 2)
                windows.append(Window(ids, type_ids, offsets, i))
        return windows

    def word_start_table(self) -> np.ndarray:
        """Which token ids begin a word: (vocab_size,) bool, for whole-word masking
        (`jaxformer.data.masking.mask_tokens`), read off the tokenizer's model. WordPiece (and
        a BPE with a continuing_subword_prefix): every token but those with the prefix ("##").
        Byte-level BPE: the tokens with its space marker "Ġ"; SentencePiece (Unigram, or BPE
        behind Metaspace): those with "▁". Added and special tokens are starts, and so is an id
        with no token. A word's first token after a special token is a start whatever it is (the
        first word of a byte-level text has no "Ġ"): mask_tokens counts that itself.
        """
        spec = json.loads(self.tokenizer.to_str())
        model = spec.get("model") or {}
        kind, prefix = model.get("type"), model.get("continuing_subword_prefix")
        if kind == "WordPiece":
            prefix = prefix or "##"
        table = np.ones(self.vocab_size, bool)
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
                marker, starts = self._space_marker(spec), True
                if marker is None:
                    raise ValueError(
                        f"cannot tell which tokens of this {kind} tokenizer begin a word: it has "
                        "no continuing_subword_prefix, ByteLevel or Metaspace; word_start_table "
                        "reads WordPiece, byte-level BPE and SentencePiece vocabularies"
                    )
            for token, i in self.tokenizer.get_vocab(with_added_tokens=False).items():
                if i < self.vocab_size:
                    table[i] = token.startswith(marker) == starts
        for i in self.tokenizer.get_added_tokens_decoder():
            table[i] = True
        return table

    @staticmethod
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


class Window(NamedTuple):
    """One window of a (question, context) pair (`Tokenizer.encode_windows`)."""

    ids: np.ndarray  # (t,) int32
    type_ids: np.ndarray  # (t,) int32
    offsets: np.ndarray  # (t, 2) int32: a context token's [start, end) characters; else -1, -1
    question_index: int  # the pair it comes from (transformers' overflow_to_sample_mapping)


def _segment_start(pieces: tuple[Piece, ...], n_question: int) -> int:
    """Where the pair template puts the context's (text B's) first token."""
    at = 0
    for p in pieces:
        if p.segment == 1:
            return at
        at += n_question if p.segment == 0 else 1
    raise ValueError("the tokenizer's pair template has no second text; it cannot encode pairs")


def _check_room(n: int, room: int, stride: int, name: str) -> None:
    """A context of n tokens that does not fit in `room` is cut into windows of `room` tokens,
    each starting room - stride tokens after the previous one (tokenizers' Encoding.truncate),
    which needs room > stride."""
    if room <= stride:
        raise ValueError(
            f"{name}: the question and special tokens leave {max(room, 0)} tokens for the "
            f"context, which must be more than doc_stride={stride} to cut its {n} tokens into "
            "windows; raise max_length, lower doc_stride or cut questions with max_query_length"
        )


def _lowercases(tokenizer: tokenizers.Tokenizer) -> bool | None:
    """Whether a tokenizer's BertNormalizer lower-cases; None if it has none."""
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    return normalizer.get("lowercase") if normalizer.get("type") == "BertNormalizer" else None


def _read_json(path: Path) -> dict:
    """A JSON object from `path`; {} if there is no such file."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); download or save it again") from e
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(value).__name__}, not an object; download or save it again"
        )
    return value


# tokenizer_config.json fields we read -> the types they may have.
CONFIG_TYPES = {
    "do_lower_case": (bool,),
    "tokenize_chinese_chars": (bool,),
    "strip_accents": (bool, type(None)),
    "tokenizer_class": (str, type(None)),
}


def _check_tokenizer_config(config: dict, path: Path) -> None:
    for key, types in CONFIG_TYPES.items():
        if key in config and not isinstance(config[key], types):
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise CheckpointError(
                f"{path}: {key}={config[key]!r} is not valid; it must be {allowed}"
            )


def _tokenizer_json_tokens(tok: tokenizers.Tokenizer) -> dict[str, tuple[str, str]]:
    """Special tokens that tokenizer.json itself names -> (token, where): cls and sep as its
    post_processor puts them around a single text (one special token before it, one after),
    and padding's pad token."""
    found = {}
    processor = tok.post_processor
    if processor is not None and processor.num_special_tokens_to_add(False):
        single = _pieces(processor, pair=False)
        segments = [p.segment for p in single]
        if segments.count(0) == 1:
            text = segments.index(0)
            for key, around in (("cls_token", single[:text]), ("sep_token", single[text + 1 :])):
                if len(around) == 1 and (token := tok.id_to_token(around[0].token_id)):
                    found[key] = token, "from tokenizer.json's post_processor"
    if (token := (tok.padding or {}).get("pad_token")) is not None:
        found["pad_token"] = token, "from tokenizer.json's padding"
    return found


def _special_tokens(
    folder: Path,
    special_map: dict,
    tokenizer_config: dict,
    from_json: dict[str, tuple[str, str]],
    model_type: str | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """The special tokens and where each came from: special_tokens_map.json, else
    tokenizer_config.json (each a string or an AddedToken object {"content": string, ...}), else
    tokenizer.json (`_tokenizer_json_tokens`), else the defaults of config.json's model_type,
    else BERT's."""
    if model_type in FAMILY_SPECIAL_TOKENS:
        defaults = FAMILY_SPECIAL_TOKENS[model_type]
        default_origin = f"the default for config.json's model_type {model_type!r}"
    else:
        defaults = SPECIAL_TOKENS
        default_origin = "BERT's default" + (
            f" (model_type {model_type!r} has none here)" if model_type else ""
        )
    special, origins = {}, {}
    for key, default in defaults.items():
        file, value = "special_tokens_map.json", special_map.get(key)
        if value is None:  # null, or absent: as if not there
            file, value = "tokenizer_config.json", tokenizer_config.get(key)
        if value is None:
            value, origins[key] = from_json.get(key, (default, default_origin))
        else:
            origins[key] = f"named in {file}"
        if isinstance(value, dict):
            value = value.get("content")
        if not isinstance(value, str) or not value:
            raise CheckpointError(
                f"{folder / file}: {key} is {value!r}; a special token must be a non-empty "
                'string or an object {"content": string}'
            )
        special[key] = value
    return special, origins


def _bert_normalizer(tokenizer_config: dict, lowercase: bool) -> normalizers.BertNormalizer:
    return normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=tokenizer_config.get("tokenize_chinese_chars", True),
        strip_accents=tokenizer_config.get("strip_accents"),
        lowercase=lowercase,
    )


def _from_vocab(vocab_file: Path, tokenizer_config: dict, special: dict) -> tokenizers.Tokenizer:
    """transformers' BertConverter: the fast tokenizer equivalent to BertTokenizer(vocab.txt)."""
    try:
        vocab_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(
            f"{vocab_file} is not UTF-8 text ({e}); it should hold one token a line"
        ) from e
    vocab = models.WordPiece.read_file(str(vocab_file))
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=special["unk_token"]))
    tok.normalizer = _bert_normalizer(tokenizer_config, tokenizer_config.get("do_lower_case", True))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    present = [t for t in special.values() if t in vocab]
    tok.add_special_tokens(present)  # never split "[SEP]" etc. in text
    return tok


def load_tokenizer(
    path_or_hub_id: str | os.PathLike, max_length: int = 512, truncation: str = "head"
) -> Tokenizer:
    """The tokenizer of a checkpoint folder or Hub id (see `jaxformer.hf.hub.resolve_checkpoint`):
    its tokenizer.json if present, else one built from vocab.txt. config.json's model_type, if
    there is one beside it, gives the special tokens and the template that the tokenizer files
    do not name."""
    _check_length(max_length, truncation)
    folder = resolve_checkpoint(path_or_hub_id)
    tokenizer_config = _read_json(folder / "tokenizer_config.json")
    _check_tokenizer_config(tokenizer_config, folder / "tokenizer_config.json")
    special_map = _read_json(folder / "special_tokens_map.json")
    model_type = _read_json(folder / "config.json").get("model_type")
    model_type = model_type if isinstance(model_type, str) else None
    source = folder / "tokenizer.json"
    if source.is_file():
        try:
            tok = tokenizers.Tokenizer.from_file(str(source))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise CheckpointError(
                f"{source} could not be read ({e}); download or save it again"
            ) from e
        special, origins = _special_tokens(
            folder, special_map, tokenizer_config, _tokenizer_json_tokens(tok), model_type
        )
        # transformers' BertTokenizer rebuilds the normalizer from do_lower_case; other classes
        # (and no class) keep tokenizer.json's.
        lowercase = tokenizer_config.get("do_lower_case")
        is_bert = tokenizer_config.get("tokenizer_class") in BERT_CLASSES
        if is_bert and lowercase is not None and _lowercases(tok) not in (None, lowercase):
            tok.normalizer = _bert_normalizer(tokenizer_config, lowercase)
    elif (source := folder / "vocab.txt").is_file():
        special, origins = _special_tokens(folder, special_map, tokenizer_config, {}, model_type)
        tok = _from_vocab(source, tokenizer_config, special)
    else:
        raise FileNotFoundError(
            f"{folder} has neither tokenizer.json nor vocab.txt; copy the checkpoint's tokenizer "
            "files into it"
        )
    for key in NEEDED_TOKENS:
        if tok.token_to_id(special[key]) is None:
            raise CheckpointError(
                f"{source}: special token {special[key]!r} is not in the tokenizer's vocabulary: "
                f"it is the {key}, {origins[key]}; is this the checkpoint's tokenizer? If so, "
                f"name its {key} in tokenizer_config.json"
            )
    cls = tokenizer_config.get("tokenizer_class") or "BertTokenizer"
    return Tokenizer(tok, max_length, truncation, special, cls, model_type)
