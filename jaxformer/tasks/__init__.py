"""The fine-tuning tasks of the one training loop (jaxformer.training.loop): each says which head
the model has, how its data becomes batches, how a batch is scored in the compiled steps, and
what metrics a split gets on the host.

    classification        texts or text pairs -> labels (single, multi-label) or a number;
                          IMDB reviews by default (tasks/classification.py)
    token_classification  CoNLL-format named entities, entity-level F1 (tasks/ner.py)
    question_answering    SQuAD v1.1 / v2.0 extractive answers, exact match and F1 (tasks/qa.py)
    masked_lm             masked-LM further pre-training on IMDB reviews, perplexity (tasks/mlm.py)

`make(config, tokenizer)` builds the task the experiment's `config.task` names.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxformer import cache
from jaxformer.data import batching, imdb, sources, tfds_source, token_cache
from jaxformer.data.batching import TokenizedSplit, Transform

SPLIT_SEEDS = {"test": 1, "validation": 2}  # a split of its own: its order's seed [split_seed, k]


def limit(n: int | None) -> int | None:
    """A split's example limit from the config: None or -1 is the whole split."""
    return n if n and n > 0 else None


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


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-item negative log-likelihood -log softmax(logits)[label], in float32; a label of
    batching.IGNORE gives 0 (the caller weights it out).

    logits: (..., labels) of any float dtype; labels: (...) int -> (...) float32."""
    safe = jnp.where(labels == batching.IGNORE, 0, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)


def column_texts(table: sources.Table, column: str, purpose: str | None = None) -> list[str]:
    """A column of texts to predict; DataError naming the first empty one's row."""
    texts = table.column(column, purpose=purpose)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise sources.DataError(f"{table.where(i)}: column {column!r} is empty")
    return texts


class Task:
    """What the loop needs of a task. The loss and the evaluation outputs run inside the
    compiled steps (static methods of arrays); the rest runs on the host."""

    head: ClassVar[str] = "classification"  # the model's task in jaxformer.families
    selection: ClassVar[str] = "accuracy"  # the validation metric that picks best/
    higher_is_better: ClassVar[bool] = True  # of `selection`
    # Evaluation outputs with a token axis (b, t, ...): padded to the longest bucket on the host.
    token_outputs: ClassVar[tuple[str, ...]] = ()
    splits_available: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    train_accuracy: ClassVar[bool] = True  # whether a training step's "accuracy" means one
    section: ClassVar[str | None] = None  # the task's own section of the experiment config
    # Batch fields the steps pass to the model as keywords, where a batch has them (masked-LM's
    # masked_positions).
    model_inputs: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def settings(c: ml_collections.ConfigDict) -> None:
        """Sets the fields of the task's `section` with their defaults (and a comment each)."""

    def __init__(self, config: ml_collections.ConfigDict, tokenizer, data=None):
        """`data`: the splits' rows given in Python ({split: a pandas DataFrame, a
        `datasets.Dataset`, a dict of columns or a `sources.Table`}, or a `datasets.DatasetDict`),
        in place of the files the config names."""
        self.config, self.tokenizer = config, tokenizer
        self.data = sources.as_tables(data) if data is not None else None
        self._tables: dict[str, sources.Table | None] = {}

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

    # The rows of the user's own data (classification, masked-LM): given in Python, files, or a
    # tfds dataset; IMDB's reviews where none is named.

    @property
    def reads_imdb(self) -> bool:
        """No rows given, no files, no tfds name: IMDB's reviews."""
        d = self.config.data
        return not (self.data or d.in_memory or d.train_file or d.tfds_name)

    def table(self, split: str) -> sources.Table | None:
        """A split's own rows (given in Python, a file, a tfds split), None if it has none."""
        if split not in self._tables:
            d = self.config.data
            if self.data:
                found = self.data.get(split)
            elif d[f"{split}_file"]:
                found = sources.read_files(d[f"{split}_file"], text_file_column=d.text_column)
            elif d.tfds_name:
                found = tfds_source.from_tfds(
                    d.tfds_name,
                    split,
                    data_dir=d.data_dir,
                    manual_dir=d.manual_dir,
                    missing_ok=True,
                )
            elif d.in_memory:
                raise ValueError(
                    f"this model was trained on rows given in Python: pass the {split} rows the "
                    f"same way (data={{{split!r}: ...}}), or name a file with "
                    f"--config.data.{split}_file"
                )
            else:
                found = None
            self._tables[split] = found
        return self._tables[split]

    def train_table(self) -> sources.Table:
        train = self.table("train")
        if train is None:
            raise ValueError(
                "no training rows: give --config.data.train_file (or tfds_name), or train rows "
                "in Python"
            )
        return train

    def rows(self, split: str) -> sources.Table:
        """The rows of a split in a seeded order, cut to its limit (data.<split>_limit: the first
        N of the order). Validation without rows of its own is carved from train as IMDB's is
        (the same function, so IMDB written to a file gives the same splits)."""
        d = self.config.data
        own = self.table(split)
        if split == "train" or (split == "validation" and own is None):
            train = self.train_table()
            fraction = d.validation_fraction if self.table("validation") is None else 0.0
            parts = imdb.split_indices(len(train), fraction, d.split_seed)
            table, order = train, parts[split == "validation"]
        elif own is None:
            raise ValueError(
                f"no {split} rows: give --config.data.{split}_file (or a {split} split in Python)"
            )
        else:
            table = own
            order = np.random.default_rng([d.split_seed, SPLIT_SEEDS[split]]).permutation(len(own))
        return table.select(order[: limit(d[f"{split}_limit"])])

    def tokenize_cached(self, split, texts, labels, pairs=None, **subset) -> TokenizedSplit:
        """Texts (and pairs) tokenized, cached under data.cache_dir by their content."""
        content = token_cache.content_hash(texts, pairs, np.asarray(labels).tolist())
        key = token_cache.cache_key(
            self.tokenizer, split, f"rows-sha256:{content}", pairs=pairs is not None, **subset
        )
        d = self.config.data
        folder = Path(d.cache_dir) if d.cache_dir else cache.cache_dir()
        path = token_cache.cache_path(folder / "tokens", key)

        def build():
            return token_cache.tokenize(
                texts, labels, self.tokenizer, desc=f"tokenize {split}", pairs=pairs
            )

        return token_cache.cached_split(path, key, self.tokenizer, build)

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

    # Predictions on new inputs (jaxformer.predict, jaxformer.training.prediction): the tasks
    # that predict override both.

    def prediction_columns(self, model, params, table: sources.Table) -> dict[str, list]:
        """The prediction columns of a table's rows, written to a file beside them."""
        raise ValueError(self._predicts_not())

    def prediction_lines(
        self, model, params, inputs: list[str], questions=(), contexts=()
    ) -> list[str]:
        """One console line per input of `python -m jaxformer.predict`: the inputs are its
        texts (arguments, --file lines, standard input); `questions` and `contexts` its
        --question and --context pairs."""
        raise ValueError(self._predicts_not())

    def _predicts_not(self) -> str:
        return (
            "predict runs classification, token_classification and question_answering models; "
            f"this one is a {self.config.task} model (evaluate it with eval.py)"
        )

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


def config_sections() -> dict[str, ml_collections.ConfigDict]:
    """{section: its fields with their defaults} of every task that has settings of its own."""
    sections = {}
    for name in TASKS:
        cls = task_class(name)
        if cls.section is not None:
            sections[cls.section] = ml_collections.ConfigDict()
            cls.settings(sections[cls.section])
    return sections


def make(config: ml_collections.ConfigDict, tokenizer, data=None) -> Task:
    """The task `config.task` names, over the experiment `config`, its tokenizer and the rows
    given in Python (`Task`'s `data`), if any."""
    return task_class(config.task)(config, tokenizer, data)
