"""SQuAD v1.1 and v2.0 extractive question answering: examples from the JSON files or tfds'
`squad`, windows labelled with the answer's tokens, and span logits decoded back to text.

Mirrors transformers' examples/pytorch/question-answering: run_qa.py's prepare_train_features and
prepare_validation_features (`make_features`: questions stripped on the left, contexts cut into
overlapping windows by `qa_windows.encode_windows`, the first answer's first and last token as
labels) and utils_qa.py's postprocess_qa_predictions (`decode`). The files are the official
layout (Rajpurkar et al. 2016, "SQuAD"; 2018, "Know What You Don't Know"):
{"data": [{"paragraphs": [{"context": str, "qas": [{"id": str, "question": str,
"answers": [{"text": str, "answer_start": int}], "is_impossible": bool (v2.0 only)}]}]}]}.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxformer.data import locks
from jaxformer.data.qa_windows import encode_windows

CLS_INDEX = 0  # where every family's template puts [CLS] / <s>: the label of "no answer here"
TFDS_NAMES = {"1.1": "squad/v1.1", "2.0": "squad/v2.0"}
TFDS_SPLITS = ("train", "validation")
SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/"
JSON_TYPES = {str: "a string", int: "an integer", list: "an array", bool: "true or false"}


class SquadError(ValueError):
    """A SQuAD file or example that cannot be used as it is."""


class QAExample(NamedTuple):
    """One question about one context."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]  # (text, start): context[start : start + len(text)]
    is_impossible: bool  # SQuAD v2.0's unanswerable question; it has no answers


class QAFeatures(NamedTuple):
    """The windows of a list of examples (n windows), unpadded, with their answer labels."""

    input_ids: list[np.ndarray]  # (t,) int32 per window
    token_type_ids: list[np.ndarray]  # (t,) int32 per window
    offsets: list[np.ndarray]  # (t, 2) int32 per window: context characters, or -1, -1
    example_index: np.ndarray  # (n,) int32: the window's example
    start_positions: np.ndarray  # (n,) int32: the answer's first token, or CLS_INDEX
    end_positions: np.ndarray  # (n,) int32: the answer's last token, or CLS_INDEX


class Answer(NamedTuple):
    """An example's decoded answer and the scores behind it."""

    text: str  # the prediction: `span`, or "" where version_2 chose no answer
    span: str  # the best span's text ("" if no window has a valid span)
    score: float  # the best span's start + end logit (-inf if none)
    null_score: float  # the least over the example's windows of its CLS start + end logit


def _example(
    qid: str,
    question: str,
    context: str,
    answers: tuple[tuple[str, int], ...],
    is_impossible: bool,
    where: str,
) -> QAExample:
    """A QAExample whose answers lie where they say; `where` names the file and question."""
    if is_impossible and answers:
        raise SquadError(
            f"{where}: is_impossible is true but it lists {len(answers)} answers; "
            "drop them (plausible answers go in plausible_answers) or set is_impossible to false"
        )
    if not is_impossible and not answers:
        raise SquadError(
            f"{where}: an answerable question with no answers; give its answers, or for SQuAD "
            'v2.0 set "is_impossible": true'
        )
    for text, start in answers:
        found = context[start : start + len(text)] if start >= 0 else ""
        if not text or found != text:
            raise SquadError(
                f"{where}: answer {text!r} is not at answer_start={start} of the context "
                f"({len(context)} characters), which holds {found!r} there; fix the answer's "
                "answer_start or text"
            )
    return QAExample(qid, question, context, answers, is_impossible)


def _field(obj, key: str, kind: type, where: str):
    """obj[key], which must be a `kind` (a bool is not an int)."""
    if not isinstance(obj, dict):
        raise SquadError(f"{where} is {json.dumps(obj)[:40]}, not a JSON object")
    if key not in obj:
        raise SquadError(f"{where} has no {key!r} field; is this a SQuAD v1.1 or v2.0 file?")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise SquadError(f"{where}: {key} is {shown}, not {JSON_TYPES[kind]}")
    return value


def read_squad(path: str | os.PathLike) -> list[QAExample]:
    """The questions of a SQuAD v1.1 or v2.0 JSON file, in file order."""
    path = Path(path)
    try:
        squad = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SquadError(
            f"{path}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
            "download the file again or fix it there"
        ) from e
    except UnicodeDecodeError as e:
        raise SquadError(f"{path}: not UTF-8 text ({e}); download the file again") from e
    examples, seen = [], {}
    for a, article in enumerate(_field(squad, "data", list, f"{path}: the top level")):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"{path}: data[{a}]")):
            at = f"{path}: data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, at)
            for q, qa in enumerate(_field(paragraph, "qas", list, at)):
                qid = _field(qa, "id", str, f"{at}.qas[{q}]")
                where = f"{path}: question {qid!r} (data[{a}].paragraphs[{p}].qas[{q}])"
                if qid in seen:
                    raise SquadError(
                        f"{where}: the id is not unique, {seen[qid]} has it too; "
                        "give each question its own id"
                    )
                seen[qid] = f"data[{a}].paragraphs[{p}].qas[{q}]"
                question = _field(qa, "question", str, where)
                answers = tuple(
                    (
                        _field(answer, "text", str, f"{where} answers[{i}]"),
                        _field(answer, "answer_start", int, f"{where} answers[{i}]"),
                    )
                    for i, answer in enumerate(_field(qa, "answers", list, where))
                )
                impossible = (
                    _field(qa, "is_impossible", bool, where) if "is_impossible" in qa else False
                )
                examples.append(_example(qid, question, context, answers, impossible, where))
    return examples


def examples_from_table(table) -> list[QAExample]:
    """The questions of a table's rows (`jaxformer.data.sources.Table`, e.g. JSON Lines) in
    Hugging Face datasets' squad shape: `id`, `question`, `context` and `answers` =
    {"text": [...], "answer_start": [...]} (no answers: SQuAD v2.0's unanswerable question)."""
    ids = table.column("id")
    questions = table.column("question")
    contexts = table.column("context")
    answer_cells = table.column("answers")
    examples, seen = [], {}
    for i, (qid, question, context, cell) in enumerate(
        zip(ids, questions, contexts, answer_cells, strict=True)
    ):
        where = table.where(i)
        qid = str(qid)
        if qid in seen:
            raise SquadError(f"{where}: id {qid!r} is not unique, {seen[qid]} has it too")
        seen[qid] = where
        for name, value in (("question", question), ("context", context)):
            if not isinstance(value, str) or not value.strip():
                raise SquadError(f"{where}: column {name!r} is empty")
        texts = (cell or {}).get("text") if isinstance(cell, dict) else None
        starts = (cell or {}).get("answer_start") if isinstance(cell, dict) else None
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise SquadError(
                f'{where}: column \'answers\' must be {{"text": [...], "answer_start": [...]}} '
                "with one start per text"
            )
        answers = tuple((str(t), int(a)) for t, a in zip(texts, starts, strict=True))
        examples.append(_example(qid, question, context, answers, not answers, where))
    return examples


def is_squad_json(path: str | os.PathLike) -> bool:
    """Whether a file is one SQuAD JSON document ({"data": [...]}) rather than JSON Lines (or
    another table format): a .json file whose whole text is one object with "data"."""
    if Path(path).suffix.lower() != ".json":
        return False
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (ValueError, OSError):
        return False  # JSON Lines ("extra data"), or an error the table reader names
    return isinstance(value, dict) and "data" in value


def _online(host: str) -> bool:
    """Whether `host` resolves, or a proxy may reach it (tfds retries an unreachable host for
    minutes before it fails)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def load_squad_tfds(split: str, version: str, data_dir: str | os.PathLike) -> list[QAExample]:
    """The questions of tfds' `squad/v1.1` or `squad/v2.0` ("train" or "validation"), downloaded
    and prepared under data_dir if they are not yet; in tfds' stored order."""
    import tensorflow_datasets as tfds

    if version not in TFDS_NAMES:
        raise SquadError(f"SQuAD version {version!r}; choose one of {sorted(TFDS_NAMES)}")
    if split not in TFDS_SPLITS:
        raise SquadError(f"SQuAD split {split!r}; choose one of {TFDS_SPLITS}")
    name, data_dir = TFDS_NAMES[version], Path(data_dir)
    builder = tfds.builder(name, data_dir=os.fspath(data_dir), file_format="array_record")
    if not builder.is_prepared():
        files = f"train-v{version}.json and dev-v{version}.json"
        offline = SquadError(
            f"could not download SQuAD v{version} ({name}) with tensorflow-datasets into "
            f"{data_dir}; without network, fetch {files} from {SQUAD_URL} and pass "
            "--config.data.train_file=PATH --config.data.validation_file=PATH"
        )
        if not _online("rajpurkar.github.io"):
            raise offline
        # Two processes preparing one data_dir would race on tfds' rename of its build.
        with locks.FileLock(data_dir / "squad.lock", f"the tfds build in {data_dir}", wait=True):
            builder = tfds.builder(name, data_dir=os.fspath(data_dir), file_format="array_record")
            if not builder.is_prepared():
                try:
                    builder.download_and_prepare(file_format="array_record")
                except OSError as e:  # requests' and urllib's connection errors among them
                    raise offline from e
    source = builder.as_data_source()[split]
    records = source.__getitems__(range(len(source))) if len(source) else []
    examples, seen = [], set()
    for r in records:
        qid = r["id"].decode()
        where = f"tfds {name} {split}: question {qid!r}"
        if qid in seen:
            raise SquadError(f"{where}: the id is not unique; rebuild {data_dir / name}")
        seen.add(qid)
        answers = tuple(
            (text.decode(), int(start))
            for text, start in zip(r["answers"]["text"], r["answers"]["answer_start"], strict=True)
        )
        impossible = bool(r.get("is_impossible", False))
        examples.append(
            _example(qid, r["question"].decode(), r["context"].decode(), answers, impossible, where)
        )
    return examples


def _labels(offsets: np.ndarray, example: QAExample) -> tuple[int, int]:
    """The window's first and last token of the example's first answer, as run_qa.py labels
    them: CLS_INDEX for an unanswerable question or an answer not wholly in the window. The
    search stays inside the window's context tokens, where run_qa.py's search for the start
    steps onto the final [SEP] when the answer starts at the window's last token."""
    context = np.flatnonzero(offsets[:, 0] >= 0)
    if example.is_impossible or not example.answers or not len(context):
        return CLS_INDEX, CLS_INDEX
    text, start_char = example.answers[0]
    end_char = start_char + len(text)
    first = int(context[0])
    spans = offsets[first : context[-1] + 1]  # (c, 2): the window's context tokens
    if not (spans[0, 0] <= start_char and spans[-1, 1] >= end_char):
        return CLS_INDEX, CLS_INDEX
    after = np.flatnonzero(spans[:, 0] > start_char)  # tokens starting past the answer's start
    start = first + (int(after[0]) if len(after) else len(spans)) - 1
    before = np.flatnonzero(spans[:, 1] < end_char)  # tokens ending before the answer's end
    end = first + (int(before[-1]) + 1 if len(before) else 0)
    return start, end


def make_features(
    tokenizer,
    examples: Sequence[QAExample],
    max_length: int,
    doc_stride: int,
    max_query_length: int | None = None,
) -> QAFeatures:
    """Every example's windows (`qa_windows.encode_windows` of the question without its
    leading whitespace, which byte-level tokenizers would spend tokens on, and the context) with
    the first answer's token labels (`_labels`), for training and for evaluation alike."""
    windows = encode_windows(
        tokenizer,
        [e.question.lstrip() for e in examples],
        [e.context for e in examples],
        max_length,
        doc_stride,
        max_query_length=max_query_length,
        names=[f"question {e.id!r}" for e in examples],
    )
    labels = [_labels(w.offsets, examples[w.question_index]) for w in windows]
    return QAFeatures(
        input_ids=[w.ids for w in windows],
        token_type_ids=[w.type_ids for w in windows],
        offsets=[w.offsets for w in windows],
        example_index=np.array([w.question_index for w in windows], np.int32),
        start_positions=np.array([s for s, _ in labels], np.int32),
        end_positions=np.array([e for _, e in labels], np.int32),
    )


def _window_logits(logits, i: int, t: int, name: str) -> np.ndarray:
    """Row i of `logits` cut to the window's t tokens."""
    row = np.asarray(logits[i], np.float64)
    if row.ndim != 1 or len(row) < t:
        raise ValueError(
            f"{name}[{i}] has shape {row.shape} but window {i} has {t} tokens; pass one row of "
            "at least the window's length per window of `features`, in order"
        )
    return row[:t]  # positions past the window are padding


def decode_answers(
    start_logits,
    end_logits,
    features: QAFeatures,
    examples: Sequence[QAExample],
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_threshold: float = 0.0,
) -> dict[str, Answer]:
    """Each example's answer from its windows' logits, as utils_qa.py's
    postprocess_qa_predictions: in every window, each pair of the n_best highest start and the
    n_best highest end logits (over the window's tokens) that lies in the context, ends at or
    after its start and spans at most max_answer_length tokens is a candidate scored start +
    end logit; the best candidate over all windows gives the text through the offsets
    (candidates whose characters are empty are passed over). With version_2 the answer is ""
    when the null score (the least over windows of the CLS start + end logit) exceeds the best
    score by more than null_threshold. An example without candidates gets "".

    start_logits, end_logits: (n, t') arrays, or n rows, t' >= each window's length t.
    Returns {example id: Answer}.
    """
    n = len(features.input_ids)
    # One host copy of a device array, not one per row.
    start_logits, end_logits = (
        x if isinstance(x, list) else np.asarray(x) for x in (start_logits, end_logits)
    )
    for name, logits in (("start_logits", start_logits), ("end_logits", end_logits)):
        if len(logits) != n:
            raise ValueError(f"{name} has {len(logits)} rows for {n} windows; give one per window")
    by_example: dict[int, list[int]] = {}
    for w, e in enumerate(features.example_index.tolist()):
        by_example.setdefault(e, []).append(w)
    answers = {}
    for e, example in enumerate(examples):
        candidates = []  # (score, window, start, end)
        null_score = np.inf
        for w in by_example.get(e, []):
            offsets = features.offsets[w]
            t = len(offsets)
            s = _window_logits(start_logits, w, t, "start_logits")
            f = _window_logits(end_logits, w, t, "end_logits")
            null_score = min(null_score, s[CLS_INDEX] + f[CLS_INDEX])
            starts = np.argsort(-s, kind="stable")[:n_best, None]  # (k, 1)
            ends = np.argsort(-f, kind="stable")[None, :n_best]  # (1, k)
            in_context = offsets[:, 0] >= 0
            ok = in_context[starts] & in_context[ends] & (ends >= starts)
            ok &= ends - starts + 1 <= max_answer_length
            scores = s[starts] + f[ends]  # (k, k)
            for i, j in zip(*np.nonzero(ok), strict=True):
                candidates.append((scores[i, j], w, int(starts[i, 0]), int(ends[0, j])))
        span, score = "", -np.inf
        for c_score, w, a, b in sorted(candidates, key=lambda c: -c[0]):  # stable: HF's order
            text = example.context[features.offsets[w][a, 0] : features.offsets[w][b, 1]]
            if text:
                span, score = text, float(c_score)
                break
        choose_null = version_2 and (score == -np.inf or null_score - score > null_threshold)
        answers[example.id] = Answer("" if choose_null else span, span, score, float(null_score))
    return answers


def decode(
    start_logits,
    end_logits,
    features: QAFeatures,
    examples: Sequence[QAExample],
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_threshold: float = 0.0,
) -> dict[str, str]:
    """{example id: answer text} (see `decode_answers`, which also gives the scores)."""
    answers = decode_answers(
        start_logits,
        end_logits,
        features,
        examples,
        n_best,
        max_answer_length,
        version_2,
        null_threshold,
    )
    return {k: a.text for k, a in answers.items()}
