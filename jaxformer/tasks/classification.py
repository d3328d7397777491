"""Sequence classification of texts or text pairs, in the three forms of transformers'
`problem_type` (transformers' run_classification.py / run_glue.py):

    single_label_classification  softmax cross-entropy; accuracy, macro and per-class
                                 precision / recall / F1, Matthews correlation (picks by accuracy)
    multi_label_classification   a sigmoid and binary cross-entropy per label; micro / macro F1,
                                 exact match at 0.5 (picks by micro F1)
    regression                   one output, mean squared error; MSE, Pearson, Spearman (picks by
                                 Pearson)

The rows come from the experiment's data section: `train_file` / `validation_file` /
`test_file` (CSV, TSV, JSON Lines, Parquet; a glob of shards), a tfds dataset (`tfds_name`), or
tables given in Python (`jaxformer.train(..., data=...)`); with none of them, IMDB's reviews. A
split without its own rows is carved from train (validation) with `validation_fraction`.
"""

from __future__ import annotations

import functools
import json
import logging

import jax.numpy as jnp
import numpy as np
import optax

from jaxformer.data import classification as examples_lib
from jaxformer.data import sources
from jaxformer.data.classification import MULTI, PROBLEM_TYPES, REGRESSION, SINGLE
from jaxformer.tasks import Task, column_texts, cross_entropy, imdb_splits
from jaxformer.training import scores

log = logging.getLogger(__name__)

IMDB_LABELS = ("neg", "pos")  # tfds imdb_reviews' ClassLabel names
SELECTION = {SINGLE: "accuracy", MULTI: "micro_f1", REGRESSION: "pearson"}


def single_label_terms(logits, batch):
    """Softmax cross-entropy per example; correct where the argmax is the label."""
    correct = logits.argmax(-1) == batch["labels"]
    return cross_entropy(logits, batch["labels"]), batch["weights"], correct


def multi_label_terms(logits, batch):
    """The mean over labels of each label's sigmoid cross-entropy (transformers'
    BCEWithLogitsLoss); correct where every label is right at 0.5."""
    logits = logits.astype(jnp.float32)  # (b, k)
    loss = optax.sigmoid_binary_cross_entropy(logits, batch["labels"]).mean(-1)
    correct = ((logits > 0) == (batch["labels"] > 0.5)).all(-1)
    return loss, batch["weights"], correct


def regression_terms(logits, batch):
    """Squared error of the one output (transformers' MSELoss); never "correct"."""
    error = logits[:, 0].astype(jnp.float32) - batch["labels"]
    return jnp.square(error), batch["weights"], jnp.zeros_like(error, bool)


LOSS_TERMS = {SINGLE: single_label_terms, MULTI: multi_label_terms, REGRESSION: regression_terms}


class Classification(Task):
    head = "classification"

    @property
    def loss_terms(self):
        return LOSS_TERMS[self.problem_type]

    @property
    def eval_outputs(self):
        return functools.partial(_eval_outputs, self.loss_terms)

    @property
    def train_accuracy(self) -> bool:
        return self.problem_type != REGRESSION

    @property
    def columns(self) -> examples_lib.Columns:
        d = self.config.data
        return examples_lib.Columns(
            d.text_column, d.text_pair_column or None, d.label_column, d.label_separator or None
        )

    @functools.cached_property
    def problem_type(self) -> str:
        """config.problem_type, else IMDB's single label, else inferred from the training rows."""
        given = self.config.problem_type
        if given:
            if given not in PROBLEM_TYPES:
                raise ValueError(f"problem_type={given!r}; choose one of {PROBLEM_TYPES}")
            return given
        if self.reads_imdb:
            return SINGLE
        train = self.train_table()
        values = train.column(self.columns.label, purpose="label_column")
        return examples_lib.infer_problem_type(values, self.columns.separator)

    @property
    def selection(self) -> str:
        return SELECTION[self.problem_type]

    def label_names(self):
        if self.problem_type == REGRESSION:
            return None
        if self.config.label_names:
            return tuple(self.config.label_names)
        if self.reads_imdb:
            return IMDB_LABELS
        return self._names

    @functools.cached_property
    def _names(self) -> tuple[str, ...]:
        names = examples_lib.label_names(self.train_table(), self.columns, self.problem_type)
        if not names:
            raise sources.DataError(f"{self.train_table().name}: no labels in the training rows")
        return names

    def num_labels(self):
        return 1 if self.problem_type == REGRESSION else len(self.label_names())

    # ------------------------------------------------------------------------ the splits

    def splits(self, names):
        if self.reads_imdb:
            return imdb_splits(self.config, self.tokenizer, names)
        out = {}
        for name in names:
            found = self.examples(name)
            out[name] = self.tokenize_cached(
                name, found.texts, found.labels, found.pairs, problem_type=self.problem_type
            )
        return out

    def examples(self, split: str) -> examples_lib.Examples:
        """A split's texts, pairs and encoded labels, its bad rows refused or skipped."""
        return examples_lib.encode(
            self.rows(split),
            self.columns,
            self.problem_type,
            self.label_names(),
            split=split,
            skip_bad_rows=self.config.data.skip_bad_rows,
        )

    # ------------------------------------------------------------------------ scores

    def metrics(self, split, outputs):
        names = self.label_names()
        if not outputs:  # a split of no examples
            k = self.num_labels()
            shape = (0, k) if self.problem_type == MULTI else (0,)
            outputs = {"logits": np.zeros((0, k)), "labels": np.zeros(shape), "loss": np.zeros(0)}
        if self.problem_type == REGRESSION:
            return scores.regression(outputs["logits"][:, 0], outputs["labels"])
        if self.problem_type == MULTI:
            return scores.multi_label(outputs["logits"], outputs["labels"], outputs["loss"], names)
        labels = outputs["labels"].astype(np.int64)
        return scores.single_label(outputs["logits"], labels, outputs["loss"], names)

    def summary(self, m):
        if self.problem_type == REGRESSION:
            return f"pearson {m['pearson']:.4f} | spearman {m['spearman']:.4f} | mse {m['mse']:.4f}"
        if self.problem_type == MULTI:
            return (
                f"micro F1 {m['micro_f1']:.4f} | macro F1 {m['macro_f1']:.4f} | exact match "
                f"{m['exact_match']:.4f} | loss {m['loss']:.4f}"
            )
        return f"accuracy {m['accuracy']:.4f} | macro F1 {m['macro_f1']:.4f} | loss {m['loss']:.4f}"

    # ------------------------------------------------------------------------ predictions

    def prediction_columns(self, model, params, table):
        from jaxformer.training import evaluate  # which imports the tasks

        d = self.config.data
        texts = column_texts(table, d.text_column, "text_column")
        pairs = (
            column_texts(table, d.text_pair_column, "text_pair_column")
            if d.text_pair_column
            else None
        )
        probs = evaluate.predict(
            texts,
            self.tokenizer,
            model,
            params,
            batch_size=self.config.eval_batch_size,
            xla_cpu_dots=self.config.xla_cpu_dots,
            pairs=pairs,
            progress=True,
        )
        return score_columns(probs, model.config, d.label_separator)

    def prediction_lines(self, model, params, inputs, questions=(), contexts=()):
        from jaxformer.training import evaluate  # which imports the tasks

        probs = evaluate.predict(
            inputs, self.tokenizer, model, params, xla_cpu_dots=self.config.xla_cpu_dots
        )
        columns = score_columns(probs, model.config, self.config.data.label_separator)
        lines = []
        for i, text in enumerate(inputs):
            fields = [columns[k][i] for k in ("prediction", "probability") if k in columns]
            shown = "\t".join(f"{v:.3f}" if isinstance(v, float) else v for v in fields)
            lines.append(f"{shown}\t{text[:80]}")
        return lines


def score_columns(scores: np.ndarray, arch, separator: str | None) -> dict[str, list]:
    """Columns of (n, labels) scores as `evaluate.predict` gives them, by the model's
    problem_type (its config `arch`, not the data's: a model predicts as it was trained): a
    single label (name, probability), the labels over 0.5 (joined by `separator`, else "|")
    with every label's probability as JSON, or the value."""
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


def _eval_outputs(loss_terms, logits, batch):
    loss, _, _ = loss_terms(logits, batch)
    return {"logits": logits, "loss": loss, "labels": batch["labels"]}


single_label_outputs = functools.partial(_eval_outputs, single_label_terms)
