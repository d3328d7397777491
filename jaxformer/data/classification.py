"""Sequence-classification examples from a table of rows: the texts (and the text pairs) and the
labels in the three forms transformers' `problem_type` knows, checked row by row.

    single_label_classification  one label per text: a name (str) or an id (int)
    multi_label_classification   a set of labels per text: a list, or a string cut at a separator
    regression                   a number per text (num_labels = 1)

The problem type, when not given, is inferred from the training labels as transformers'
run_classification.py infers it from a `datasets` column: numbers that are not all integers are
regression, lists are multi-label, anything else is single-label. Label names come from the
training rows (sorted; integer labels in numeric order), from a tfds ClassLabel, or from the
experiment's `label_names`.

A bad row (an empty text, a missing label, a label training never saw, a target that is not a
number) is a `DataError` naming the file, row and column, unless `skip_bad_rows`: then it is left
out and each file's count is logged.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from jaxformer.data.sources import DataError, Table

log = logging.getLogger(__name__)

SINGLE, MULTI, REGRESSION = (
    "single_label_classification",
    "multi_label_classification",
    "regression",
)
PROBLEM_TYPES = (SINGLE, MULTI, REGRESSION)


@dataclasses.dataclass(frozen=True)
class Columns:
    """Which columns of a table hold what (the experiment's data section names them)."""

    text: str = "text"
    pair: str | None = None
    label: str = "label"
    separator: str | None = None  # multi-label: labels in one string, cut at this separator


@dataclasses.dataclass(frozen=True)
class Examples:
    """A split's texts, pairs (or None) and encoded labels: (n,) int32 ids, (n,) float32 targets
    or (n, k) float32 multi-hot rows."""

    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray


def _number(value) -> float | None:
    """A label as a number, None if it is not one (bools are not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _missing(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _is_integer(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("+-").isdigit()


def infer_problem_type(values: Sequence, separator: str | None = None) -> str:
    """The problem type of a training label column, as transformers infers it."""
    present = [v for v in values if not _missing(v)]
    if separator is not None or any(isinstance(v, list | tuple) for v in present):
        return MULTI
    numbers = [_number(v) for v in present]
    if present and all(n is not None for n in numbers):
        if not all(_is_integer(v) for v in present):
            return REGRESSION
    return SINGLE


def _label_list(value, columns: Columns) -> list | None:
    """A multi-label cell as a list of labels; None if it is not one."""
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str) and columns.separator is not None:
        return [x.strip() for x in value.split(columns.separator) if x.strip()]
    return None


def _key(label) -> str:
    """A label as a name: integers written without a decimal part."""
    if isinstance(label, str):
        return label.strip()
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)


def label_names(table: Table, columns: Columns, problem_type: str) -> tuple[str, ...] | None:
    """The label names the training table implies: a tfds ClassLabel's, else its distinct
    labels sorted (integers in numeric order); None for regression."""
    if problem_type == REGRESSION:
        return None
    if columns.label in table.label_names:
        return tuple(table.label_names[columns.label])
    found = set()
    for value in table.column(columns.label, purpose="label_column"):
        if _missing(value):
            continue
        if problem_type == MULTI:
            found.update(_key(x) for x in _label_list(value, columns) or ())
        else:
            found.add(_key(value))
    if all(_is_integer(x) for x in found):
        return tuple(sorted(found, key=int))
    return tuple(sorted(found))


def _id_of(value, names: tuple[str, ...], name_to_id: dict[str, int], integer_ids: bool):
    """A label's id: its name's, or an integer taken as an id where the names are not integers
    (a Hugging Face dataset's ClassLabel ids beside `label_names`)."""
    key = _key(value)
    if key in name_to_id:
        return name_to_id[key]
    if integer_ids and _is_integer(value) and 0 <= int(key) < len(names):
        return int(key)
    return None


def encode(
    table: Table,
    columns: Columns,
    problem_type: str,
    names: tuple[str, ...] | None,
    *,
    split: str,
    skip_bad_rows: bool = False,
) -> Examples:
    """The examples of a table, its labels encoded for `problem_type` over `names`."""
    texts = table.column(columns.text, purpose="text_column")
    pairs = table.column(columns.pair, purpose="text_pair_column") if columns.pair else None
    values = table.column(columns.label, purpose="label_column")
    names = tuple(names or ())
    name_to_id = {n: i for i, n in enumerate(names)}
    integer_ids = not all(_is_integer(n) for n in names)
    kept_texts, kept_pairs, labels = [], [], []
    skipped: Counter[str] = Counter()
    for i, value in enumerate(values):
        problem = None
        if not isinstance(texts[i], str) or not texts[i].strip():
            problem = f"column {columns.text!r} (the text_column) is empty"
        elif pairs is not None and (not isinstance(pairs[i], str) or not pairs[i].strip()):
            problem = f"column {columns.pair!r} (the text_pair_column) is empty"
        elif _missing(value):
            problem = f"column {columns.label!r} (the label_column) has no label"
        elif problem_type == REGRESSION:
            target = _number(value)
            if target is None or not math.isfinite(target):
                problem = (
                    f"column {columns.label!r} holds {value!r}, not a number (problem_type "
                    "regression)"
                )
            label = target
        elif problem_type == MULTI:
            items = _label_list(value, columns)
            if items is None:
                problem = (
                    f"column {columns.label!r} holds {value!r}, not a list of labels: give a JSON "
                    "list, or set --config.data.label_separator"
                )
            else:
                ids = [_id_of(x, names, name_to_id, integer_ids) for x in items]
                if None in ids:
                    unknown = items[ids.index(None)]
                    problem = _unseen(unknown, columns, names, split)
                label = np.zeros(len(names), np.float32)
                label[[j for j in ids if j is not None]] = 1.0
        else:
            label = _id_of(value, names, name_to_id, integer_ids)
            if label is None:
                problem = _unseen(value, columns, names, split)
        if problem is not None:
            if not skip_bad_rows:
                raise DataError(
                    f"{table.where(i)}: {problem}; fix the row, or set "
                    "--config.data.skip_bad_rows=True to leave such rows out"
                )
            skipped[table.origins[i][0]] += 1
            continue
        kept_texts.append(texts[i])
        if pairs is not None:
            kept_pairs.append(pairs[i])
        labels.append(label)
    for source, count in skipped.items():
        log.warning("%s: skipped %d bad rows of %s (data.skip_bad_rows)", split, count, source)
    if not labels:
        raise DataError(f"{table.name}: the {split} split has no usable rows")
    if problem_type == MULTI:
        array = np.stack(labels).astype(np.float32)
    else:
        array = np.asarray(labels, np.float32 if problem_type == REGRESSION else np.int32)
    return Examples(kept_texts, kept_pairs if pairs is not None else None, array)


def _unseen(value, columns: Columns, names: tuple[str, ...], split: str) -> str:
    shown = list(names[:20]) + (["..."] if len(names) > 20 else [])
    return (
        f"label {value!r} of column {columns.label!r} is not one of the {len(names)} training "
        f"labels {shown} (the {split} split may hold only labels that training has)"
    )
