"""Named-entity recognition on CoNLL-2003-format files as token classification (transformers'
run_ner.py): a sentence's words are tokenized, each word's label sits on its first sub-token (or
on all of them with ner.label_all_subtokens), and the loss is the cross-entropy at labelled
tokens. A split is scored by entity-level precision, recall and F1 over the words' predicted
tags (seqeval's, which are conlleval's), and token accuracy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from jaxformer.data import batching, conll, sources
from jaxformer.tasks import Task, column_texts, cross_entropy
from jaxformer.training import seqeval

# Files read as tables of a words column and a tags column; any other file is CoNLL columns.
TABLE_SUFFIXES = (".json", ".jsonl", ".parquet")


class TokenClassification(Task):
    head = "token_classification"
    section = "ner"

    @staticmethod
    def settings(c):
        # The label on each word's first sub-token (transformers' run_ner); True: on every
        # sub-token. The tag scheme of entity-level scores (IOB1, IOB2 or IOBES).
        c.label_all_subtokens = False
        c.tag_scheme = "IOB2"

    selection = "f1"
    token_outputs = ("predictions",)

    def __init__(self, config, tokenizer, data=None):
        super().__init__(config, tokenizer, data)
        self._sentences: dict[str, list[conll.Sentence]] = {}
        self._features: dict[str, conll.NerFeatures] = {}

    def sentences(self, split: str) -> list[conll.Sentence]:
        """The sentences of a split: its rows given in Python, data.<split>_file (CoNLL columns,
        or JSON Lines / Parquet of a words and a tags column), else tfds' conll2003."""
        if split not in self._sentences:
            d = self.config.data
            path = d[f"{split}_file"]
            if self.data is not None and self.data.get(split) is not None:
                found = self._from_table(self.data[split])
            elif path and Path(path).suffix.lower() in TABLE_SUFFIXES:
                found = self._from_table(sources.read_files(path))
            elif path:
                found = conll.read_conll(path, d.token_column, d.tag_column)
            else:
                found = conll.load_conll2003_tfds(split, d.data_dir)
            limit = d[f"{split}_limit"]
            self._sentences[split] = found[:limit] if limit and limit > 0 else found
        return self._sentences[split]

    def _from_table(self, table) -> list[conll.Sentence]:
        d = self.config.data
        names = self.config.label_names or table.label_names.get(d.tags_column)
        return conll.sentences_from_table(table, d.tokens_column, d.tags_column, names)

    def label_names(self):
        """config.label_names, else the tags of the training split in conll.label_names' order."""
        if self.config.label_names:
            return tuple(self.config.label_names)
        return conll.label_names(self.sentences("train"))

    def splits(self, names):
        out = {}
        labels = self.label_names()
        for name in names:
            features = conll.encode_sentences(
                self.tokenizer,
                self.sentences(name),
                labels,
                max_length=self.config.data.max_length,
                label_all_subtokens=self.config.ner.label_all_subtokens,
            )
            self._features[name] = features
            out[name] = batching.from_sequences(
                features.input_ids,
                token_fields={"labels": features.labels},
                pad_id=self.tokenizer.pad_id,
                max_length=self.config.data.max_length,
            )
        return out

    @staticmethod
    def loss_terms(logits, batch):
        labels = batch["labels"]  # (b, t), IGNORE where the loss skips a token
        weight = (labels != batching.IGNORE) * batch["weights"][:, None]  # (b, t)
        return cross_entropy(logits, labels), weight, logits.argmax(-1) == labels

    @staticmethod
    def eval_outputs(logits, batch):
        loss, weight, _ = TokenClassification.loss_terms(logits, batch)
        return {
            "predictions": logits.argmax(-1).astype(np.int32),  # (b, t)
            "loss_sum": (loss * weight).sum(-1),
            "tokens": weight.sum(-1),
        }

    def word_tags(self, split: str, predictions: np.ndarray) -> list[list[str]]:
        """The predicted tag of every word of a split, from its tokens' (n, t) predictions; a
        word cut off by truncation is tagged O."""
        names = self.label_names()
        outside = names.index("O") if "O" in names else 0
        features = self._features[split]
        return [
            [names[i] for i in conll.word_predictions(row, word_ids, len(sentence.words), outside)]
            for row, word_ids, sentence in zip(
                predictions, features.word_ids, self.sentences(split), strict=True
            )
        ]

    def metrics(self, split, outputs):
        sentences = self.sentences(split)
        if not outputs:
            predicted: list[list[str]] = []
        else:
            predicted = self.word_tags(split, outputs["predictions"])
        scores = seqeval.entity_scores(
            [list(s.tags) for s in sentences[: len(predicted)]],
            predicted,
            scheme=self.config.ner.tag_scheme,
        )
        tokens = float(np.sum(outputs.get("tokens", 0.0), dtype=np.float64))
        loss = float(np.sum(outputs.get("loss_sum", 0.0), dtype=np.float64))
        per_type = scores.pop("per_type")
        flat = {
            f"{kind}_{metric}": value[metric]
            for kind, value in per_type.items()
            for metric in ("precision", "recall", "f1")
        }
        return {"loss": loss / tokens if tokens else math.nan, **scores, **flat}

    def summary(self, m):
        return (
            f"entity F1 {m['f1']:.4f} (precision {m['precision']:.4f}, recall "
            f"{m['recall']:.4f}) | token accuracy {m['token_accuracy']:.4f} | loss {m['loss']:.4f}"
        )

    # ------------------------------------------------------------------------ predictions

    def _entities(self, model, params, texts, **kwargs):
        from jaxformer.training import evaluate  # which imports the tasks

        return evaluate.predict_entities(
            texts,
            self.tokenizer,
            model,
            params,
            scheme=self.config.ner.tag_scheme,
            xla_cpu_dots=self.config.xla_cpu_dots,
            **kwargs,
        )

    def prediction_columns(self, model, params, table):
        texts = column_texts(table, self.config.data.text_column, "text_column")
        found = self._entities(model, params, texts, batch_size=self.config.eval_batch_size)
        return {"entities": [json.dumps([e._asdict() for e in row]) for row in found]}

    def prediction_lines(self, model, params, inputs, questions=(), contexts=()):
        found = self._entities(model, params, inputs)
        lines = []
        for text, entities in zip(inputs, found, strict=True):
            spans = "  ".join(f"{e.type}[{e.start}:{e.end}]={e.text!r}" for e in entities)
            lines.append(f"{text[:80]}\t{spans or '-'}")
        return lines
