"""Named-entity data in the CoNLL-2003 format: sentences from files or tfds, their tags aligned
to sub-tokens for training, and token predictions mapped back to words.

Mirrors the CoNLL-2003 shared task's files (Tjong Kim Sang and De Meulder, 2003: one
`token ... tag` line per word, whitespace-separated columns, a blank line after each sentence,
`-DOCSTART-` lines between documents) as tfds' and Hugging Face's conll2003 readers parse them,
and the labelling of transformers' examples/pytorch/token-classification/run_ner.py
(`tokenize_and_align_labels`): a word's label goes on its first sub-token, -100 (the label the
loss ignores) on special tokens and on the other sub-tokens, or with `label_all_tokens` the
word's label on every sub-token, a B-X turned into I-X on the continuations (`b_to_i_label`).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlparse

import numpy as np

from jaxformer.data import locks
from jaxformer.data.ner_words import encode_words

if TYPE_CHECKING:
    from jaxformer.tokenizer import Tokenizer

IGNORE_LABEL = -100  # PyTorch's cross-entropy ignore_index, which run_ner.py labels with
DOCSTART = "-DOCSTART-"
# "O", or a prefix and an entity type: IOB1, IOB2 (B-, I-) and IOBES (also E-, S-).
TAG_RE = re.compile(r"O|[BIES]-\S+")
PREFIX_ORDER = "BIES"
# tfds' conll2003 (and Hugging Face's) label order, for a config that wants those label ids.
CONLL2003_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
TFDS_NAME = "conll2003"
TFDS_URL = "https://data.deepai.org/conll2003.zip"  # what tfds' conll2003 builder downloads
TFDS_SPLITS = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}
PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
LOCAL_FILES_HINT = (
    "to train on local CoNLL files instead, pass --config.data.train_file=PATH "
    "(and the other splits' files)"
)
_FIELD_SEP = re.compile(r"[ \t]+")

log = logging.getLogger(__name__)


class ConllError(ValueError):
    """A CoNLL file, or a sentence from one, that cannot be used; names the file and line."""


class Sentence(NamedTuple):
    """One sentence: its words and their tags, where it starts (`line`, 1-based) and the file it
    comes from (`path`; "" if none). Word k is on line `line + k`."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    line: int
    path: str = ""


def _where(sentence: Sentence, k: int = 0) -> str:
    """`path:line` of word k of a sentence."""
    return f"{sentence.path or '<sentences>'}:{sentence.line + k}"


def _columns(n: int, token_column: int, tag_column: int) -> tuple[int, int] | None:
    """The (token, tag) indices in a line of n fields; None if either is missing or they are
    the same field."""
    token, tag = (c if c >= 0 else n + c for c in (token_column, tag_column))
    if not (0 <= token < n and 0 <= tag < n) or token == tag:
        return None
    return token, tag


def read_conll(
    path: str | os.PathLike, token_column: int = 0, tag_column: int = -1
) -> list[Sentence]:
    """The sentences of a CoNLL file (UTF-8), in file order.

    Each non-blank line is one word: whitespace-separated (spaces or tabs) fields of which
    `token_column` is the word and `tag_column` its tag (Python indices: -1 is the last field,
    CoNLL-2003's NER column). A blank line ends a sentence, and so does a `-DOCSTART-` line
    (skipped); the last sentence needs no blank line after it. Tags must be IOB-like: O, B-X,
    I-X, E-X or S-X (IOB1, IOB2 or IOBES). Raises ConllError naming the file and line.
    """
    for name, value in (("token_column", token_column), ("tag_column", tag_column)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name}={value!r}; give a column index (an int)")
    if token_column == tag_column:
        raise ValueError(
            f"token_column and tag_column are both {token_column}; they must be different columns"
        )
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConllError(
            f"{path}: {e.strerror or e}; pass the path of a CoNLL file (one 'token ... tag' per "
            "line)"
        ) from e
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    first = 0

    def end_sentence() -> None:
        if words:
            sentences.append(Sentence(tuple(words), tuple(tags), first, str(path)))
            words.clear()
            tags.clear()

    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip(" \t\r")
        except UnicodeDecodeError as e:
            raise ConllError(
                f"{path}:{number}: not UTF-8 ({e.reason} at byte {e.start} of the line); save the "
                "file as UTF-8"
            ) from e
        if not line or line.startswith(DOCSTART):
            end_sentence()
            continue
        fields = _FIELD_SEP.split(line)
        columns = _columns(len(fields), token_column, tag_column)
        if columns is None:
            raise ConllError(
                f"{path}:{number}: {len(fields)} field(s) in {line!r}, which has no distinct "
                f"token_column={token_column} and tag_column={tag_column}; write one "
                "'token ... tag' per line, fields separated by spaces or tabs"
            )
        token, tag = fields[columns[0]], fields[columns[1]]
        if not TAG_RE.fullmatch(tag):
            raise ConllError(
                f"{path}:{number}: tag {tag!r} is not IOB-like (O, B-X, I-X, E-X or S-X); is "
                f"tag_column={tag_column} the entity column of this file?"
            )
        if not words:
            first = number
        words.append(token)
        tags.append(tag)
    end_sentence()
    if not sentences:
        raise ConllError(
            f"{path}: no sentences (the file is empty or holds only -DOCSTART- lines); pass a "
            "CoNLL file with one 'token ... tag' per line"
        )
    return sentences


def sentences_from_table(
    table, tokens_column: str, tags_column: str, names: Sequence[str] | None = None
) -> list[Sentence]:
    """The sentences of a table's rows (`jaxformer.data.sources.Table`, e.g. JSON Lines as
    Hugging Face datasets' conll2003 has them): a list of words and a list of tags per row, the
    tags as strings, or as ids into `names`. A row of no words is skipped."""
    from jaxformer.data.sources import DataError

    words_column = table.column(tokens_column, purpose="tokens_column")
    tags_by_row = table.column(tags_column, purpose="tags_column")
    sentences = []
    for i, (words, tags) in enumerate(zip(words_column, tags_by_row, strict=True)):
        where = table.where(i)
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataError(f"{where}: column {tokens_column!r} must be a list of words")
        if not isinstance(tags, list) or len(tags) != len(words):
            raise DataError(
                f"{where}: column {tags_column!r} must be a list of one tag per word "
                f"({len(words)} words)"
            )
        named = []
        for k, tag in enumerate(tags):
            if isinstance(tag, int) and not isinstance(tag, bool):
                if not names or not 0 <= tag < len(names):
                    raise DataError(
                        f"{where}: tag {tag} of word {k} is an id, and label_names "
                        f"{tuple(names or ())} has no such label: set --config.label_names to "
                        "the tags in id order"
                    )
                tag = names[tag]
            if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
                raise DataError(
                    f"{where}: tag {tag!r} of word {k} is not IOB-like (O, B-X, I-X, E-X or S-X)"
                )
            named.append(tag)
        if words:
            sentences.append(Sentence(tuple(words), tuple(named), table.origins[i][1], where))
    return sentences


def label_names(sentences: Sequence[Sentence]) -> tuple[str, ...]:
    """The tags of `sentences` in a stable order: "O" first, then the entity types sorted, each
    type's B-, I-, E-, S- in that order (only the tags that occur).

    CoNLL-2003 gives ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER",
    "I-PER"). A config can give its own order instead (the label ids follow it), e.g.
    CONLL2003_LABELS, the order of tfds' and Hugging Face's conll2003.
    """
    seen = set()
    for s in sentences:
        for k, tag in enumerate(s.tags):
            if not TAG_RE.fullmatch(tag):
                raise ConllError(
                    f"{_where(s, k)}: tag {tag!r} is not IOB-like (O, B-X, I-X, E-X or S-X); fix "
                    "the tag"
                )
            seen.add(tag)
    types = sorted({tag[2:] for tag in seen if tag != "O"})
    ordered = [f"{p}-{t}" for t in types for p in PREFIX_ORDER if f"{p}-{t}" in seen]
    return (("O",) if "O" in seen else ()) + tuple(ordered)


class NerFeatures(NamedTuple):
    """Encoded sentences, one int32 array per sentence in each list: input_ids (t,); labels (t,),
    the label id of each token or IGNORE_LABEL (-100) where the loss ignores it; word_ids (t,),
    the index in the sentence of each token's word, -1 for special tokens."""

    input_ids: list[np.ndarray]
    labels: list[np.ndarray]
    word_ids: list[np.ndarray]


def _label_ids(names: Sequence[str]) -> dict[str, int]:
    ids = {}
    for i, name in enumerate(names):
        if name in ids:
            raise ValueError(f"label_names lists {name!r} twice (at {ids[name]} and {i})")
        ids[name] = i
    return ids


def _first_tokens(word_ids: np.ndarray) -> np.ndarray:
    """(t,) bool: the tokens that start a word (its first sub-token)."""
    previous = np.concatenate([[-1], word_ids[:-1]])
    return (word_ids >= 0) & (word_ids != previous)


def align_labels(
    tag_ids: np.ndarray, word_ids: np.ndarray, continuation: np.ndarray | None = None
) -> np.ndarray:
    """(t,) int32 labels of a sentence's tokens from its words' label ids `tag_ids` (n,) and the
    tokens' `word_ids` (t,): the word's label on its first sub-token, IGNORE_LABEL on special
    tokens and on the other sub-tokens, or, given `continuation` (label id -> the id for a
    continuation sub-token), continuation[word's label] on them."""
    labels = np.full(len(word_ids), IGNORE_LABEL, np.int32)
    first = _first_tokens(word_ids)
    labels[first] = tag_ids[word_ids[first]]
    if continuation is not None:
        rest = (word_ids >= 0) & ~first
        labels[rest] = continuation[tag_ids[word_ids[rest]]]
    return labels


def encode_sentences(
    tokenizer: Tokenizer,
    sentences: Sequence[Sentence],
    label_names: Sequence[str],
    max_length: int | None = None,
    label_all_subtokens: bool = False,
) -> NerFeatures:
    """Token ids, labels and word ids of each sentence (see NerFeatures), as run_ner.py's
    `tokenize_and_align_labels`.

    label_names gives each tag its label id (its index). With label_all_subtokens every sub-token
    of a word gets the word's label, except that the continuations of a B-X word get I-X (when
    label_names has it). Sentences keep their head (`ner_words.encode_words`, max_length default
    tokenizer.max_length): the words cut get no label, and one log line says how many sentences
    lost words. A tag not in label_names raises ConllError naming its file and line.
    """
    label_to_id = _label_ids(label_names)
    tag_ids = []
    for s in sentences:
        if len(s.words) != len(s.tags):
            raise ConllError(
                f"{_where(s)}: a sentence of {len(s.words)} words has {len(s.tags)} tags; give "
                "one tag per word"
            )
        for k, tag in enumerate(s.tags):
            if tag not in label_to_id:
                raise ConllError(
                    f"{_where(s, k)}: tag {tag!r} is not in label_names {tuple(label_names)}; add "
                    "it to the labels or fix the tag"
                )
        tag_ids.append(np.array([label_to_id[t] for t in s.tags], np.int32))
    continuation = None
    if label_all_subtokens:
        continuation = np.array(
            [
                label_to_id.get("I-" + n[2:], i) if n.startswith("B-") else i
                for n, i in label_to_id.items()
            ],
            np.int32,
        )
    ids, word_ids = encode_words(tokenizer, [s.words for s in sentences], max_length)
    labels = [align_labels(t, w, continuation) for t, w in zip(tag_ids, word_ids, strict=True)]
    length = tokenizer.max_length if max_length is None else max_length
    cut = sum(
        len(x) == length and w.max(initial=-1) < len(s.words) - 1
        for x, w, s in zip(ids, word_ids, sentences, strict=True)
    )
    if cut:
        log.warning(
            "%d of %d sentences are longer than max_length=%d tokens: their last words are cut "
            "and get no label (raise max_length to keep them)",
            cut,
            len(sentences),
            length,
        )
    return NerFeatures(ids, labels, word_ids)


def word_predictions(
    token_predictions: np.ndarray, word_ids: np.ndarray, num_words: int, fill_id: int
) -> list[int]:
    """The predicted label id of each of a sentence's num_words words: that of the word's first
    sub-token, as run_ner.py scores only the labelled first sub-tokens.

    token_predictions: (T,) int label ids, T >= t (a padded row is fine); word_ids: (t,) int, as
    NerFeatures gives them. A word with no token (cut by truncation, or one the tokenizer drops)
    gets `fill_id`: the caller chooses it, usually the id of "O" (0 in `label_names`' order), so
    that such words count as predicted outside any entity.
    """
    token_predictions, word_ids = np.asarray(token_predictions), np.asarray(word_ids)
    if token_predictions.ndim != 1 or word_ids.ndim != 1:
        raise ValueError(
            f"token_predictions {token_predictions.shape} and word_ids {word_ids.shape} must be "
            "one sentence's 1-d arrays"
        )
    if len(token_predictions) < len(word_ids):
        raise ValueError(
            f"{len(token_predictions)} token predictions for {len(word_ids)} tokens; pass the "
            "predictions of this sentence's whole row"
        )
    if word_ids.max(initial=-1) >= num_words:
        raise ValueError(
            f"word_ids reach word {word_ids.max()} but the sentence has {num_words} words; pass "
            "the word_ids encoded from this sentence"
        )
    out = np.full(num_words, fill_id, np.int64)
    first = _first_tokens(word_ids)
    out[word_ids[first]] = token_predictions[: len(word_ids)][first]
    return out.tolist()


def _check_reachable(url: str) -> None:
    """Fails at once if url's host does not resolve and no proxy is set: tfds would otherwise
    retry the download for minutes before giving up."""
    if any(os.environ.get(v) for v in PROXY_VARS):
        return
    host = urlparse(url).hostname
    try:
        socket.getaddrinfo(host, 443)
    except OSError as e:
        raise ConllError(
            f"tfds {TFDS_NAME} cannot be downloaded: {host} does not resolve ({e}); "
            + LOCAL_FILES_HINT
        ) from e


def _download(ds, data_dir: Path) -> None:
    _check_reachable(TFDS_URL)
    log.info("Downloading and preparing %s into %s", TFDS_NAME, data_dir)
    try:
        ds.download_and_prepare(file_format="array_record")
    except OSError as e:  # requests' ConnectionError and timeouts are OSErrors
        raise ConllError(
            f"tfds {TFDS_NAME} could not be downloaded ({type(e).__name__}: {e}); "
            + LOCAL_FILES_HINT
        ) from e


def load_conll2003_tfds(split: str, data_dir: str | os.PathLike) -> list[Sentence]:
    """The sentences of CoNLL-2003's English `split` ("train", "validation" or "dev", "test")
    as tfds' `conll2003` builds them in data_dir (downloading it the first time), in tfds'
    stored order, with tags from its label names (CONLL2003_LABELS). Each Sentence's line is its
    example number in that order.

    Without network the download fails with one ConllError line that points at local files.
    """
    if split not in TFDS_SPLITS:
        raise ValueError(f"split={split!r}; choose one of {tuple(TFDS_SPLITS)}")
    import tensorflow_datasets as tfds

    # tfds' top-level import does not register conll2003; importing its module does.
    importlib.import_module("tensorflow_datasets.text.conll2003.conll2003")
    data_dir = Path(data_dir)

    def builder():
        return tfds.builder(TFDS_NAME, data_dir=os.fspath(data_dir), file_format="array_record")

    ds = builder()
    if not ds.is_prepared():
        # Two processes preparing one data_dir would race on tfds' rename of its build.
        with locks.FileLock(
            data_dir / "conll2003.lock", f"the tfds build in {data_dir}", wait=True
        ):
            ds = builder()
            if not ds.is_prepared():
                _download(ds, data_dir)
    names = ds.info.features["ner"].feature.names
    source = ds.as_data_source()[TFDS_SPLITS[split]]
    records = source.__getitems__(range(len(source))) if len(source) else []
    where = f"tfds {TFDS_NAME} {split}"
    return [
        Sentence(
            tuple(w.decode("utf-8") for w in r["tokens"]),
            tuple(names[i] for i in r["ner"]),
            number,
            where,
        )
        for number, r in enumerate(records, start=1)
        if len(r["tokens"])
    ]
