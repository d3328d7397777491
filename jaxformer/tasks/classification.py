"""Sequence classification on IMDB: a review's [CLS] (or pooled) vector -> neg / pos, scored by
the cross-entropy, accuracy and per-class precision, recall and F1 (transformers'
run_glue.py / the Flax examples' sst2).
"""

from __future__ import annotations

import numpy as np

from jaxformer.data import imdb
from jaxformer.tasks import Task, cross_entropy
from jaxformer.training import metrics


class Classification(Task):
    head = "classification"
    selection = "accuracy"

    def splits(self, names):
        return imdb_splits(self.config, self.tokenizer, names)

    @staticmethod
    def loss_terms(logits, batch):
        correct = logits.argmax(-1) == batch["labels"]
        return cross_entropy(logits, batch["labels"]), batch["weights"], correct

    @staticmethod
    def eval_outputs(logits, batch):
        loss = cross_entropy(logits, batch["labels"])
        return {"logits": logits, "loss": loss, "labels": batch["labels"]}

    def metrics(self, split, outputs):
        if not outputs:  # a split of no examples
            k = self.num_labels()
            outputs = {"logits": np.zeros((0, k)), "labels": np.zeros(0, int), "loss": np.zeros(0)}
        return metrics.classification_metrics(
            outputs["logits"], outputs["labels"], outputs["loss"], self.num_labels()
        )


def imdb_splits(config, tokenizer, names) -> dict:
    """IMDB's tokenized splits `names` as the experiment's data section asks."""
    d = config.data
    return imdb.load_imdb(
        tokenizer,
        splits=names,
        archive=d.archive,
        data_dir=d.data_dir,
        cache_dir=d.cache_dir,
        validation_fraction=d.validation_fraction,
        split_seed=d.split_seed,
        limits={name: limit(d[f"{name}_limit"]) for name in names},
    )


def limit(n: int | None) -> int | None:
    """A split's example limit from the config: None or -1 is the whole split."""
    return n if n and n > 0 else None
