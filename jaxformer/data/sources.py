"""A user's own data as rows of named columns, for fine-tuning on it.

Like transformers' run_classification.py / run_glue.py / run_mlm.py read `--train_file`, these
readers turn files, an in-memory DataFrame or columns, a Hugging Face `datasets.Dataset` or a
tensorflow-datasets split into a `Table`: columns of plain Python values, and for every row the
file (or source) and row number it came from, so that an error about a row can say where it is.

Files are read with pyarrow: its C++ readers for CSV, JSON Lines and Parquet handle quoting
(fields with commas and newlines), header names and native types fast, without pandas, and it is
already a dependency of `datasets`. `datasets` itself is not used to read files: it is heavier and
writes its own cache of every file it reads.

Supported files (by extension, uncompressed):
- `.csv` (comma) and `.tsv` (tab): the first row is the header; `"` quotes fields. Every cell is
  read as its text (str), so a numeric-looking label comes back as e.g. "1" or "0.5" and the
  caller decides its type. Empty cells, quoted or not, are "" (never None): a row with missing
  cells (too few fields) is an error. Blank lines are skipped.
- `.json` and `.jsonl`: JSON Lines, one object per line, read with the standard library's
  parser (pyarrow's wants one type per column, and would refuse a stray string among numbers
  before the row could be named); values keep their JSON types, a key missing from a row is
  None, and rows are numbered by line.
- `.parquet`: values keep their stored types.
- `.txt`: one document per line, in one column (`text_file_column`); blank lines are skipped.

tfds datasets are read by `jaxformer.data.tfds_source`.

Rows are numbered from 1 within each file: data rows for CSV/TSV/JSON/Parquet (the header not
counted), line numbers for text files.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pa_parquet

SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt")

_BOM = b"\xef\xbb\xbf"


def _one_line(text: object) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


class DataError(ValueError):
    """Bad input data: the message is one line naming the file, row and column, and what to do."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


@dataclasses.dataclass
class Table:
    """Rows of named columns and where each row came from.

    Attributes:
      name: what to call the source in messages (a file path, "DataFrame", "tfds glue/sst2 train").
      columns: column name -> Python values (str, int, float, bool, list, dict, None), one per row.
      origins: per row, (file or source name, 1-based row number within that file).
      label_names: for columns of class ids (tfds' or datasets' ClassLabel), the class names.
    """

    name: str
    columns: dict[str, list]
    origins: list[tuple[str, int]]
    label_names: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        lengths = {name: len(values) for name, values in self.columns.items()}
        if any(n != len(self.origins) for n in lengths.values()):
            raise DataError(
                f"{self.name}: columns have different lengths {lengths} "
                f"({len(self.origins)} rows); give every column one value per row"
            )

    def __len__(self) -> int:
        return len(self.origins)

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def where(self, i: int) -> str:
        """Where row i came from, e.g. "train.csv row 12"."""
        source, number = self.origins[i]
        return f"{source} row {number}"

    def column(self, name: str, *, purpose: str | None = None) -> list:
        """The values of column `name`, which the config field `purpose` (e.g. "label_column")
        named, or which the format requires (`purpose` None); DataError if there is none."""
        if name not in self.columns:
            fix = (
                f"set --config.data.{purpose}=<one of them>"
                if purpose
                else f"name the column {name!r} in the file"
            )
            what = f" (the {purpose})" if purpose else ""
            raise DataError(
                f"{self.name}: no column {name!r}{what}; its columns are {self.column_names}; {fix}"
            )
        return self.columns[name]

    def select(self, rows: Sequence[int]) -> Table:
        """The given rows, in the given order, with their origins."""
        rows = list(rows)
        return Table(
            self.name,
            {name: [values[i] for i in rows] for name, values in self.columns.items()},
            [self.origins[i] for i in rows],
            dict(self.label_names),
        )


def read_files(pattern: str | os.PathLike, *, text_file_column: str = "text") -> Table:
    """The rows of the file `pattern`, or of every file its glob matches (shards, in sorted path
    order, concatenated; they must have the same columns). See the module docstring for formats.
    """
    pattern = os.path.expanduser(os.fspath(pattern))
    paths = [pattern]
    if re.search(r"[*?[]", pattern) and not os.path.exists(pattern):
        paths = sorted(glob.glob(pattern, recursive=True))
        if not paths:
            raise DataError(f"no file matches {pattern}; check the path or glob")
    for path in paths:
        _check_extension(path)
    tables = [_read_file(path, text_file_column) for path in paths]
    first = tables[0]
    for table in tables[1:]:
        if set(table.column_names) != set(first.column_names):
            raise DataError(
                f"{first.name} has columns {first.column_names} but {table.name} has "
                f"{table.column_names}; give every file of {pattern} the same columns"
            )
    if len(tables) == 1:
        return first
    return Table(
        f"{pattern} ({len(tables)} files)",
        {name: [v for t in tables for v in t.columns[name]] for name in first.column_names},
        [origin for t in tables for origin in t.origins],
    )


def _check_extension(path: str) -> None:
    if Path(path).suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise DataError(
            f"{path}: unsupported file type {Path(path).suffix or '(no extension)'!r}; "
            f"use one of {' '.join(SUPPORTED_EXTENSIONS)} (uncompressed)"
        )


def _read_file(path: str, text_file_column: str) -> Table:
    suffix = Path(path).suffix.lower()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(
            f"{path} cannot be opened ({e.strerror or e}); check the path and its permissions"
        ) from e
    if suffix == ".parquet":
        if not data:
            raise DataError(f"{path} has no rows")
        return _arrow_table(path, lambda: pa_parquet.read_table(pa.BufferReader(data)))

    text, data = _utf8(path, data)
    if not text.strip():
        raise DataError(f"{path} has no rows")
    if suffix == ".txt":
        return _text_lines(path, text, text_file_column)
    if suffix in (".json", ".jsonl"):
        return _json_lines(path, text)
    return _arrow_table(path, lambda: _read_csv(data, "\t" if suffix == ".tsv" else ","))


def _utf8(path: str, data: bytes) -> tuple[str, bytes]:
    """The decoded text and the bytes without a UTF-8 byte order mark; DataError if not UTF-8."""
    skipped = 0
    if data.startswith(_BOM):
        data, skipped = data[len(_BOM) :], len(_BOM)
    try:
        return data.decode("utf-8"), data
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}: not UTF-8 text at byte {e.start + skipped} (line {line}: {e.reason}, "
            f"byte 0x{data[e.start]:02x}); save it as UTF-8"
        ) from e


def _read_csv(data: bytes, delimiter: str) -> pa.Table:
    parse = pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    # The header's names, from a reader that parses only the first block.
    reader = pa_csv.open_csv(pa.BufferReader(data), parse_options=parse)
    names = reader.schema.names
    reader.close()
    convert = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in names}, strings_can_be_null=False
    )
    return pa_csv.read_csv(pa.BufferReader(data), parse_options=parse, convert_options=convert)


def _arrow_table(path: str, read, hint: str = "") -> Table:
    try:
        table = read()
    except pa.ArrowException as e:
        raise DataError(f"{path}: {_one_line(e)}{hint}") from e
    names = table.column_names
    for name in names:
        if names.count(name) > 1:
            raise DataError(f"{path}: column {name!r} appears more than once; rename one")
    if table.num_rows == 0:
        raise DataError(f"{path} has no rows")
    return Table(path, table.to_pydict(), [(path, i + 1) for i in range(table.num_rows)])


def _json_lines(path: str, text: str) -> Table:
    """JSON Lines with the standard library's parser, one row per non-blank line (numbered by
    line), each value as JSON has it: a column may mix types (a label "high" among numbers is
    the caller's to name), and a key missing from a row is None."""
    rows, origins = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path} row {number}: not a JSON object ({e.msg} at column {e.colno}); "
                ".json and .jsonl files are read as JSON Lines, one object per line"
            ) from e
        if not isinstance(row, dict):
            raise DataError(
                f"{path} row {number}: a JSON {type(row).__name__}, not an object; .json and "
                ".jsonl files are read as JSON Lines, one object per line"
            )
        rows.append(row)
        origins.append((path, number))
    names = list(dict.fromkeys(key for row in rows for key in row))
    return Table(path, {n: [row.get(n) for row in rows] for n in names}, origins)


def _text_lines(path: str, text: str, column: str) -> Table:
    values, origins = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            values.append(line)
            origins.append((path, number))
    if not values:
        raise DataError(f"{path} has no rows")
    return Table(path, {column: values}, origins)


def _plain(value, decode_bytes: bool = False):
    """value as plain Python: numpy scalars and arrays to int/float/str/list, recursively."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes) and decode_bytes:
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return [_plain(v, decode_bytes) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, decode_bytes) for k, v in value.items()}
    return value


def from_columns(columns: Mapping[str, Sequence], name: str = "columns") -> Table:
    """A Table of in-memory columns (lists, tuples, numpy arrays, pyarrow arrays), values made
    plain Python; row i's origin is (name, i + 1)."""
    out: dict[str, list] = {}
    for key, values in columns.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise DataError(
                f"{name}: column {key!r} is a {type(values).__name__}, not a sequence of values; "
                "give every column a list with one value per row"
            )
        if str(key) in out:
            raise DataError(f"{name}: column {str(key)!r} appears more than once; rename one")
        if hasattr(values, "to_pylist"):
            values = values.to_pylist()
        out[str(key)] = [_plain(v) for v in values]
    lengths = {key: len(values) for key, values in out.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(
            f"{name}: columns have different lengths {lengths}; give every column one value per row"
        )
    n = next(iter(lengths.values()), 0)
    return Table(name, out, [(name, i + 1) for i in range(n)])


def from_pandas(frame, name: str = "DataFrame") -> Table:
    """A Table of a pandas DataFrame's columns (its index is ignored). Missing values (None, NaN,
    pd.NA, NaT) become None; numpy values become plain Python."""
    if not hasattr(frame, "columns") or not hasattr(frame, "isna"):
        raise DataError(f"{name}: a {type(frame).__name__} is not a pandas DataFrame; pass one")
    if frame.columns.has_duplicates:
        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise DataError(f"{name}: columns {duplicated} appear more than once; rename them")
    columns = {}
    for key in frame.columns:
        series = frame[key]
        missing = series.isna().tolist()
        columns[key] = [None if m else v for v, m in zip(series.tolist(), missing, strict=True)]
    return from_columns(columns, name)


def from_hf_dataset(dataset, name: str = "Dataset") -> Table:
    """A Table of a Hugging Face `datasets.Dataset` (one split), with the class names of its
    ClassLabel columns in `label_names`."""
    if isinstance(dataset, Mapping):
        splits = list(dataset)
        raise DataError(
            f"{name} is a {type(dataset).__name__} with splits {splits}; pick one split, "
            f"e.g. dataset[{splits[0] if splits else 'train'!r}]"
        )
    if not hasattr(dataset, "to_dict") or not hasattr(dataset, "features"):
        raise DataError(
            f"{name}: a {type(dataset).__name__} is not a datasets.Dataset; pass a Dataset "
            "(loaded without streaming=True)"
        )
    table = from_columns(dataset.to_dict(), name)
    for key, feature in (dataset.features or {}).items():
        if type(feature).__name__ == "ClassLabel":
            table.label_names[key] = list(feature.names)
    return table


def as_table(rows, name: str) -> Table:
    """A Table of rows given in Python: a Table, a pandas DataFrame, a `datasets.Dataset`, or
    a mapping of column names to values."""
    if isinstance(rows, Table):
        return rows
    if hasattr(rows, "isna") and hasattr(rows, "columns"):
        return from_pandas(rows, name)
    if hasattr(rows, "features") and hasattr(rows, "to_dict"):
        return from_hf_dataset(rows, name)
    if isinstance(rows, Mapping):
        return from_columns(rows, name)
    raise DataError(
        f"{name} is a {type(rows).__name__}: give a pandas DataFrame, a datasets.Dataset or a "
        "dict of columns"
    )


def as_tables(data) -> dict[str, Table]:
    """{split: Table} of splits given in Python: a mapping of split names ("train",
    "validation", "test") to rows `as_table` takes, or a `datasets.DatasetDict`."""
    if not isinstance(data, Mapping) or not set(data) <= {"train", "validation", "test"}:
        raise DataError(
            f"data must map the splits 'train', 'validation', 'test' to their rows, got "
            f"{list(data) if isinstance(data, Mapping) else type(data).__name__}"
        )
    return {split: as_table(rows, f"the {split} rows") for split, rows in data.items()}
