"""The fine-tuning tasks of the one training loop (jaxformer.training.loop): each says which head
the model has, how its data becomes batches, how a batch is scored in the compiled steps, and
what metrics a split gets on the host.

    classification        IMDB reviews -> neg / pos (tasks/classification.py)
    token_classification  CoNLL-format named entities, entity-level F1 (tasks/ner.py)
    question_answering    SQuAD v1.1 / v2.0 extractive answers, exact match and F1 (tasks/qa.py)
    masked_lm             masked-LM further pre-training on IMDB reviews, perplexity (tasks/mlm.py)

`make(config, tokenizer)` builds the task the experiment's `config.task` names.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxformer.data import batching
from jaxformer.data.batching import TokenizedSplit, Transform


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-item negative log-likelihood -log softmax(logits)[label], in float32; a label of
    batching.IGNORE gives 0 (the caller weights it out).

    logits: (..., labels) of any float dtype; labels: (...) int -> (...) float32."""
    safe = jnp.where(labels == batching.IGNORE, 0, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)


class Task:
    """What the loop needs of a task. The loss and the evaluation outputs run inside the
    compiled steps (static methods of arrays); the rest runs on the host."""

    head: ClassVar[str] = "classification"  # the model's task in jaxformer.families
    selection: ClassVar[str] = "accuracy"  # the validation metric that picks best/
    higher_is_better: ClassVar[bool] = True  # of `selection`
    # Evaluation outputs with a token axis (b, t, ...): padded to the longest bucket on the host.
    token_outputs: ClassVar[tuple[str, ...]] = ()
    splits_available: ClassVar[tuple[str, ...]] = ("train", "validation", "test")

    def __init__(self, config: ml_collections.ConfigDict, tokenizer):
        self.config, self.tokenizer = config, tokenizer

    def label_names(self) -> tuple[str, ...] | None:
        """The names of the head's labels (config.json's id2label), None where it has none."""
        names = self.config.label_names
        return tuple(names) if names else None

    def num_labels(self) -> int | None:
        """The width of the head's classifier; None where the head has no labels."""
        names = self.label_names()
        return len(names) if names else self.config.num_labels

    def splits(self, names: tuple[str, ...]) -> dict[str, TokenizedSplit]:
        """The tokenized splits `names` (of splits_available)."""
        raise NotImplementedError

    def transform(self) -> Transform | None:
        """A change of each batch drawn at random (masked-LM masking), or None."""
        return None

    @staticmethod
    def loss_terms(outputs, batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(loss, weight, correct) per scored item, each of one shape: (b,) examples or (b, t)
        tokens; the step sums loss * weight and correct * weight, and divides by sum(weight)."""
        raise NotImplementedError

    @staticmethod
    def eval_outputs(outputs, batch: dict) -> dict[str, jax.Array]:
        """Per-example (b, ...) arrays the host keeps for `metrics`, padding rows included."""
        raise NotImplementedError

    def metrics(self, split: str, outputs: dict[str, np.ndarray]) -> dict:
        """Metrics of a split from `eval_outputs` of all its examples, in the split's order;
        they include "loss" and `selection`."""
        raise NotImplementedError

    def summary(self, m: dict) -> str:
        """The metrics of a split in one log line."""
        return f"{self.selection} {m[self.selection]:.4f} | loss {m['loss']:.4f}"

    def better(self, score: float, best: float | None) -> bool:
        """Whether a validation `score` of `selection` beats the `best` so far (None: none)."""
        if best is None:
            return True
        return score > best if self.higher_is_better else score < best

    def check_split_name(self, split: str) -> None:
        if split not in self.splits_available:
            raise ValueError(
                f"the {self.config.task} task has the splits {self.splits_available}, not {split!r}"
            )


# config.task -> (module of jaxformer.tasks, class): a task's readers load only when it runs.
TASKS = {
    "classification": ("classification", "Classification"),
    "token_classification": ("ner", "TokenClassification"),
    "question_answering": ("qa", "QuestionAnswering"),
    "masked_lm": ("mlm", "MaskedLM"),
}


def task_class(name: str) -> type[Task]:
    """The Task class of config.task `name`; ValueError naming the tasks there are."""
    if name not in TASKS:
        raise ValueError(f"task={name!r}; choose one of {tuple(TASKS)} (--config.task)")
    module, cls = TASKS[name]
    return getattr(importlib.import_module(f"jaxformer.tasks.{module}"), cls)


def make(config: ml_collections.ConfigDict, tokenizer) -> Task:
    """The task `config.task` names, over the experiment `config` and its tokenizer."""
    return task_class(config.task)(config, tokenizer)
