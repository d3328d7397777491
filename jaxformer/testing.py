"""Test fixtures: a tiny aclImdb-format archive, CoNLL and SQuAD files, a whitespace tokenizer.

`write_fake_imdb_archive` mirrors the layout of the Large Movie Review Dataset archive
(aclImdb_v1.tar.gz, see `jaxformer/data/imdb.py`) so tfds' real `imdb_reviews` builder can be built
from it in a second. Positive reviews draw on positive words and negative ones on negative
words, so a model can learn the labels.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

_NEUTRAL = "the a movie film plot actor scene story it was and of to is this".split()
_POSITIVE = "great wonderful loved brilliant superb moving best enjoyable".split()
_NEGATIVE = "awful boring worst terrible waste dull poor disappointing".split()

# Reviews that must not crash the pipeline; they go to train/pos and train/neg.
EMPTY_REVIEW = b""
INVALID_UTF8_REVIEW = b"bad bytes \xff\xfe here<br /><br />still awful"


def _review(rng: np.random.Generator, positive: bool) -> bytes:
    n = int(rng.integers(3, 120))
    words = list(rng.choice(_NEUTRAL, size=n))
    sentiment = _POSITIVE if positive else _NEGATIVE
    for i in rng.choice(n, size=max(1, n // 6), replace=False):
        words[i] = str(rng.choice(sentiment))
    text = " ".join(words)
    if rng.random() < 0.3:
        text += "<br /><br />" + text[: len(text) // 2]
    return text.encode("utf-8")


def write_fake_imdb_archive(
    path: str | os.PathLike, n_per_class: int = 20, seed: int = 0, edge_cases: bool = True
) -> Path:
    """Write a tiny aclImdb_v1.tar.gz: `n_per_class` reviews per label in train and in test.

    The file's bytes depend only on (n_per_class, seed), so its sha256 (and so its tfds build
    and token caches) is stable. With `edge_cases`, train/pos holds an empty review and
    train/neg one with invalid UTF-8 bytes. Reviews are 3 to ~180 whitespace words. Returns the
    path.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    rng = np.random.default_rng(seed)
    files = {"aclImdb/README": b"Fake Large Movie Review Dataset for tests.\n"}
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            for i in range(n_per_class):
                rating = int(rng.integers(7, 11) if label == "pos" else rng.integers(1, 5))
                files[f"aclImdb/{split}/{label}/{i}_{rating}.txt"] = _review(rng, label == "pos")
    first = {
        c: next(n for n in files if n.startswith(f"aclImdb/train/{c}/")) for c in ("pos", "neg")
    }
    if edge_cases:
        files[first["pos"]], files[first["neg"]] = EMPTY_REVIEW, INVALID_UTF8_REVIEW

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    return path


class FakeTokenizer:
    """Whitespace tokenizer hashing words into a small vocabulary: a pipeline `TextEncoder`.

    `encode_ids` adds [CLS]/[SEP] and truncates to `max_length` keeping the first tokens
    (truncation="right"), like `jaxformer.load_tokenizer`'s wrapper.
    """

    pad_id, cls_id, sep_id = 0, 1, 2

    def __init__(self, vocab_size: int = 100, max_length: int = 64, truncation: str = "right"):
        self.vocab_size, self.max_length, self.truncation = vocab_size, max_length, truncation
        self.fingerprint = f"fake-whitespace-{vocab_size}"
        self.calls = 0  # number of encode_ids calls, for cache tests

    def _word_id(self, word: str) -> int:
        return 3 + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - 3)

    def encode_ids(self, texts: list[str]) -> list[np.ndarray]:
        self.calls += 1
        out = []
        for text in texts:
            words = text.replace("<br />", " ").split()[: self.max_length - 2]
            ids = [self.cls_id, *map(self._word_id, words), self.sep_id]
            out.append(np.asarray(ids, dtype=np.int32))
        return out


_PEOPLE = ["John Smith", "Mary Jones", "Peter Brown", "Anna White", "Li Wei"]
_PLACES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Cairo"]
_ORGS = ["Google", "Siemens", "Reuters", "Toyota"]
_NER_TEMPLATES = [
    "{PER} visited {LOC} on Monday .",
    "{PER} works for {ORG} in {LOC} .",
    "the weather in {LOC} was cold .",
    "{ORG} shares rose after {PER} spoke .",
    "talks between {ORG} and {ORG} ended .",
]


def write_fake_conll(path: str | os.PathLike, n_sentences: int = 120, seed: int = 0) -> Path:
    """Write a CoNLL-2003-format file (word POS chunk tag, IOB2 tags, a -DOCSTART- line, a blank
    line after each sentence) of template sentences whose people, places and organisations a
    small model learns. Returns the path."""
    rng = np.random.default_rng(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    pools = {"PER": _PEOPLE, "LOC": _PLACES, "ORG": _ORGS}
    for _ in range(n_sentences):
        template = _NER_TEMPLATES[int(rng.integers(len(_NER_TEMPLATES)))]
        for piece in template.split():
            kind = piece[1:-1] if piece.startswith("{") else None
            words = str(rng.choice(pools[kind])).split() if kind else [piece]
            for k, word in enumerate(words):
                tag = "O" if kind is None else f"{'B' if k == 0 else 'I'}-{kind}"
                lines.append(f"{word} NN I-NP {tag}")
        lines.append("")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


_FILLER = "the committee met again and discussed the budget for the coming year at length ."


def write_fake_squad(
    path: str | os.PathLike, n_contexts: int = 24, seed: int = 0, version_2: bool = True
) -> Path:
    """Write a SQuAD-format JSON file: contexts about who founded which company where and when,
    with long filler so that a context takes several windows of 64 tokens, three questions per
    context (and with version_2 an unanswerable one). Returns the path."""
    rng = np.random.default_rng(seed)
    paragraphs = []
    for c in range(n_contexts):
        person, place, org = (str(rng.choice(p)) for p in (_PEOPLE, _PLACES, _ORGS))
        year = str(int(rng.integers(1900, 2000)))
        facts = f"{org} was founded by {person} in {year} . its office is in {place} ."
        filler = " ".join([_FILLER] * int(rng.integers(1, 5)))
        context = f"{filler} {facts} {filler}" if rng.random() < 0.5 else f"{facts} {filler}"
        qas = []
        for k, (question, answer) in enumerate(
            [
                (f"who founded {org} ?", person),
                (f"when was {org} founded ?", year),
                (f"where is the office of {org} ?", place),
            ]
        ):
            start = context.index(answer, context.index(facts))
            qas.append(
                {
                    "id": f"q{c}-{k}",
                    "question": question,
                    "answers": [{"text": answer, "answer_start": start}],
                    **({"is_impossible": False} if version_2 else {}),
                }
            )
        if version_2:
            qas.append(
                {
                    "id": f"q{c}-none",
                    "question": f"who bought {org} ?",
                    "answers": [],
                    "is_impossible": True,
                }
            )
        paragraphs.append({"context": context, "qas": qas})
    data = {
        "version": "v2.0" if version_2 else "1.1",
        "data": [{"title": "fake", "paragraphs": paragraphs}],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


_TOPICS = {
    "billing": ["invoice", "refund", "charge", "payment"],
    "bug": ["crash", "error", "broken", "freeze"],
    "praise": ["great", "love", "thanks", "excellent"],
}
_NEUTRAL = ["the", "app", "today", "my", "account", "please", "again", "since", "update"]


def fake_text_rows(problem_type: str, n: int, seed: int = 0) -> dict[str, list]:
    """Columns `text` and `label` of n support-ticket-like texts whose label a small model
    learns from their words, in transformers' three problem types:

    single_label_classification  one topic of ("billing", "bug", "praise") per text
    multi_label_classification   a list of one or two topics
    regression                   a float in [0, 4]: the number of topic words, plus 0.5
    A text of several lines (with commas and quotes) now and then tests a reader's quoting."""
    rng = np.random.default_rng(seed)
    topics = list(_TOPICS)
    texts, labels = [], []
    for i in range(n):
        k = int(rng.integers(1, 3)) if problem_type == "multi_label_classification" else 1
        chosen = sorted(rng.choice(topics, size=k, replace=False).tolist())
        strength = int(rng.integers(0, 4)) if problem_type == "regression" else 3
        words = [str(rng.choice(_TOPICS[t])) for t in chosen for _ in range(max(strength, 1))]
        if problem_type == "regression" and strength == 0:
            words = []
        words += rng.choice(_NEUTRAL, size=2).tolist()
        rng.shuffle(words)
        text = " ".join(words)
        if i % 7 == 3:
            text = f'"{text}",\nsecond line, with a comma'
        texts.append(text)
        if problem_type == "regression":
            labels.append(strength + 0.5)
        elif problem_type == "multi_label_classification":
            labels.append(chosen)
        else:
            labels.append(chosen[0])
    return {"text": texts, "label": labels}


_AGREE = ["indeed", "true", "right", "correct", "yes"]
_DISAGREE = ["false", "wrong", "never", "incorrect", "no"]


def fake_pair_rows(n: int, seed: int = 0) -> dict[str, list]:
    """Columns `premise`, `hypothesis` and `label` of an MNLI-shaped pair task: a premise about a
    topic of `fake_text_rows`, a hypothesis that agrees ("entailment") or not
    ("contradiction"). The label is in the hypothesis alone: a model that is not given the pair
    stays at chance."""
    rng = np.random.default_rng(seed)
    topics = list(_TOPICS)
    premises, hypotheses, labels = [], [], []
    for _ in range(n):
        topic = str(rng.choice(topics))
        agree = bool(rng.random() < 0.5)
        premises.append(" ".join([*rng.choice(_TOPICS[topic], 3), *rng.choice(_NEUTRAL, 2)]))
        words = rng.choice(_AGREE if agree else _DISAGREE, 2)
        hypotheses.append(" ".join([*rng.choice(_NEUTRAL, 2), *words]))
        labels.append("entailment" if agree else "contradiction")
    return {"premise": premises, "hypothesis": hypotheses, "label": labels}
