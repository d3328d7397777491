"""Predictions for a file of rows: each input row, with the model's prediction beside it, written
to a file of any of the formats the training data may have (CSV, TSV, JSON Lines, Parquet).

    classification         prediction: the label's name and its probability; every label over
                           0.5 and each label's probability (multi-label); the value (regression)
    token_classification   entities: [{"type", "start", "end", "text"}] of the text column
    question_answering     answer and score, of a row's `question` and `context`

Each task computes its own columns (`Task.prediction_columns`, jaxformer.tasks). The columns read
are the ones training named (data.text_column, text_pair_column). The output is written to a
temporary file beside it and renamed, so an interrupted run leaves no half-file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa

from jaxformer import tasks
from jaxformer.data import sources

FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


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
    predicted = tasks.make(config, tokenizer).prediction_columns(model, params, table)
    clash = sorted(set(predicted) & set(table.columns))
    if clash:
        raise sources.DataError(
            f"{table.name}: the input already has column(s) {clash}, which predict writes; "
            "rename them"
        )
    return write_table(output_file, {**table.columns, **predicted})
