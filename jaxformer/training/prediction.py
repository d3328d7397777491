"""Predictions for a file of rows: each input row, with the model's prediction beside it, written
to a file of any of the formats the training data may have (CSV, TSV, JSON Lines, Parquet).

    classification         prediction: the label's name and its probability; every label over
                           0.5 and each label's probability (multi-label); the value (regression)
    token_classification   entities: [{"type", "start", "end", "text"}] of the text column
    question_answering     answer and score, of a row's `question` and `context`

The columns read are the ones training named (data.text_column, text_pair_column). The output is
written to a temporary file beside it and renamed, so an interrupted run leaves no half-file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from jaxformer.data import sources
from jaxformer.training import evaluate

FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def output_columns(config, tokenizer, model, params, table: sources.Table) -> dict[str, list]:
    """The prediction columns of a table's rows (see the module docstring)."""
    d = config.data
    if config.task == "classification":
        texts = _texts(table, d.text_column, "text_column")
        pairs = (
            _texts(table, d.text_pair_column, "text_pair_column") if d.text_pair_column else None
        )
        scores = evaluate.predict(
            texts,
            tokenizer,
            model,
            params,
            batch_size=config.eval_batch_size,
            xla_cpu_dots=config.xla_cpu_dots,
            pairs=pairs,
            progress=True,
        )
        return classification_columns(scores, model.config, d.label_separator)
    if config.task == "token_classification":
        texts = _texts(table, d.text_column, "text_column")
        found = evaluate.predict_entities(
            texts,
            tokenizer,
            model,
            params,
            scheme=config.ner.tag_scheme,
            batch_size=config.eval_batch_size,
            xla_cpu_dots=config.xla_cpu_dots,
        )
        return {"entities": [json.dumps([e._asdict() for e in row]) for row in found]}
    if config.task == "question_answering":
        questions = _texts(table, "question")
        contexts = _texts(table, "context")
        answers = evaluate.predict_answers(questions, contexts, tokenizer, model, params, config)
        return {"answer": [a.text for a in answers], "score": [float(a.score) for a in answers]}
    raise ValueError(
        f"predict runs classification, token_classification and question_answering models; "
        f"this one is a {config.task} model (evaluate it with eval.py)"
    )


def classification_columns(scores: np.ndarray, arch, separator: str | None) -> dict[str, list]:
    """Columns of (n, labels) scores as `evaluate.predict` gives them, by the model's
    problem_type: a single label (name, probability), the labels over 0.5 (joined by
    `separator`, else "|") with every label's probability as JSON, or the value."""
    names = arch.label_names or tuple(f"LABEL_{i}" for i in range(scores.shape[-1]))
    if arch.problem_type == "regression":
        return {"prediction": [float(v) for v in scores[:, 0]]}
    if arch.problem_type == "multi_label_classification":
        chosen = [[names[j] for j in np.flatnonzero(row > 0.5)] for row in scores]
        return {
            "prediction": [(separator or "|").join(row) for row in chosen],
            "probabilities": [
                json.dumps({n: round(float(p), 6) for n, p in zip(names, row, strict=True)})
                for row in scores
            ],
        }
    best = scores.argmax(-1)
    return {
        "prediction": [names[j] for j in best],
        "probability": [float(scores[i, j]) for i, j in enumerate(best)],
    }


def _texts(table: sources.Table, column: str, purpose: str | None = None) -> list[str]:
    """A column of texts to predict; DataError naming the first empty one's row."""
    texts = table.column(column, purpose=purpose)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise sources.DataError(f"{table.where(i)}: column {column!r} is empty")
    return texts


def write_table(path: str | os.PathLike, columns: dict[str, list]) -> Path:
    """Write columns to `path` (its extension picks the format) through a temporary file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"--output_file={path}: the extension must be one of {FORMATS}")
    table = pa.table({name: _arrow_column(values) for name, values in columns.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as pcsv

            options = pcsv.WriteOptions(delimiter="\t" if suffix == ".tsv" else ",")
            pcsv.write_csv(table, tmp, write_options=options)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in table.to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _arrow_column(values: list) -> pa.Array:
    """A column as arrow holds it; values of mixed or nested types as JSON text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else json.dumps(v) for v in values])


def predict_file(config, tokenizer, model, params, input_file: str, output_file: str) -> Path:
    """Reads `input_file`'s rows, predicts each, writes them with the predictions to
    `output_file`; the output's path."""
    table = sources.read_files(input_file, text_file_column=config.data.text_column)
    predicted = output_columns(config, tokenizer, model, params, table)
    clash = sorted(set(predicted) & set(table.columns))
    if clash:
        raise sources.DataError(
            f"{table.name}: the input already has column(s) {clash}, which predict writes; "
            "rename them"
        )
    return write_table(output_file, {**table.columns, **predicted})
