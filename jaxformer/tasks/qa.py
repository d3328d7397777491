"""Extractive question answering on SQuAD v1.1 / v2.0 (transformers' run_qa.py): a question and
its context are one pair input; a context longer than data.max_length is cut into windows that
overlap by qa.doc_stride tokens, each labelled with its answer's first and last token (the
[CLS] token where the answer lies outside the window, or there is none). The loss is the mean
of the start and end cross-entropies over the window's real tokens. A split is scored by
decoding each question's best span over all its windows back to context text and comparing it
with the gold answers as the official SQuAD script does (exact match and F1, in percent).
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np

from jaxformer.data import batching, sources, squad
from jaxformer.tasks import Task, column_texts, cross_entropy
from jaxformer.training import squad_eval

NEG = -1e9  # a padding position's logit: never a start or an end


class QuestionAnswering(Task):
    head = "question_answering"
    section = "qa"

    @staticmethod
    def settings(c):
        # Windows of data.max_length tokens over a long context, overlapping by doc_stride
        # tokens; answers of at most max_answer_length tokens, from the n_best starts and ends;
        # SQuAD v2.0's "no answer" when its score beats the best span's by null_threshold.
        c.doc_stride = 128
        c.max_answer_length = 30
        c.n_best = 20
        c.version_2 = False
        c.null_threshold = 0.0

    selection = "f1"
    token_outputs = ("start_logits", "end_logits")
    splits_available = ("train", "validation")

    def __init__(self, config, tokenizer, data=None):
        super().__init__(config, tokenizer, data)
        self._examples: dict[str, list[squad.QAExample]] = {}
        self._features: dict[str, squad.QAFeatures] = {}

    def label_names(self):
        return None

    def num_labels(self):
        return None  # a start and an end logit per token: the head's own

    def examples(self, split: str) -> list[squad.QAExample]:
        """The questions of a split: its rows given in Python, data.<split>_file (SQuAD JSON, or
        JSON Lines / Parquet in Hugging Face's squad shape), else tfds' squad (v2.0 with
        qa.version_2)."""
        if split not in self._examples:
            d, qa = self.config.data, self.config.qa
            path = d[f"{split}_file"]
            if self.data is not None and self.data.get(split) is not None:
                found = squad.examples_from_table(self.data[split])
            elif path and not squad.is_squad_json(path):
                found = squad.examples_from_table(sources.read_files(path))
            elif path:
                found = squad.read_squad(path)
            else:
                found = squad.load_squad_tfds(split, "2.0" if qa.version_2 else "1.1", d.data_dir)
            limit = d[f"{split}_limit"]
            self._examples[split] = found[:limit] if limit and limit > 0 else found
        return self._examples[split]

    def splits(self, names):
        out = {}
        d = self.config.data
        for name in names:
            features = squad.make_features(
                self.tokenizer, self.examples(name), d.max_length, self.config.qa.doc_stride
            )
            self._features[name] = features
            out[name] = batching.from_sequences(
                features.input_ids,
                token_fields={"token_type_ids": features.token_type_ids},
                example_fields={
                    "start_positions": features.start_positions,
                    "end_positions": features.end_positions,
                },
                pad_id=self.tokenizer.pad_id,
                max_length=d.max_length,
            )
        return out

    @staticmethod
    def _logits(spans, batch):
        real = batch["attention_mask"] > 0  # (b, t)
        return (jnp.where(real, x.astype(jnp.float32), NEG) for x in spans)

    @staticmethod
    def _loss(start, end, batch):
        """The mean of the start and end cross-entropies, (b,), of masked (b, t) logits."""
        return 0.5 * (
            cross_entropy(start, batch["start_positions"])
            + cross_entropy(end, batch["end_positions"])
        )

    @staticmethod
    def loss_terms(spans, batch):
        start, end = QuestionAnswering._logits(spans, batch)  # (b, t) each
        correct = (start.argmax(-1) == batch["start_positions"]) & (
            end.argmax(-1) == batch["end_positions"]
        )
        return QuestionAnswering._loss(start, end, batch), batch["weights"], correct

    @staticmethod
    def eval_outputs(spans, batch):
        start, end = QuestionAnswering._logits(spans, batch)
        loss = QuestionAnswering._loss(start, end, batch)
        return {"start_logits": start, "end_logits": end, "loss": loss}

    def predictions(self, split: str, outputs: dict) -> dict[str, str]:
        """Each question's answer text (SQuAD v2.0: "" for no answer) from the windows' logits."""
        qa = self.config.qa
        return squad.decode(
            outputs["start_logits"],
            outputs["end_logits"],
            self._features[split],
            self.examples(split),
            n_best=qa.n_best,
            max_answer_length=qa.max_answer_length,
            version_2=qa.version_2,
            null_threshold=qa.null_threshold,
        )

    def metrics(self, split, outputs):
        examples = self.examples(split)
        if not outputs:
            return {"loss": float("nan"), "exact_match": 0.0, "f1": 0.0, "total": 0}
        scores = squad_eval.squad_scores(self.predictions(split, outputs), examples)
        loss = float(np.mean(outputs["loss"], dtype=np.float64))
        return {"loss": loss, **scores}

    def summary(self, m):
        return f"exact match {m['exact_match']:.2f} | F1 {m['f1']:.2f} | loss {m['loss']:.4f}"

    # ------------------------------------------------------------------------ predictions

    def _answers(self, model, params, questions, contexts):
        from jaxformer.training import evaluate  # which imports the tasks

        return evaluate.predict_answers(
            questions, contexts, self.tokenizer, model, params, self.config
        )

    def prediction_columns(self, model, params, table):
        answers = self._answers(
            model, params, column_texts(table, "question"), column_texts(table, "context")
        )
        return {"answer": [a.text for a in answers], "score": [float(a.score) for a in answers]}

    def prediction_lines(self, model, params, inputs, questions=(), contexts=()):
        """`inputs` are JSON lines {"question": ..., "context": ...}, after the given pairs."""
        questions, contexts = list(questions), list(contexts)
        for i, line in enumerate(inputs, 1):
            try:
                record = json.loads(line)
                questions.append(record["question"])
                contexts.append(record["context"])
            except (ValueError, KeyError, TypeError):
                raise ValueError(
                    f"input line {i} is not a JSON object with a question and a context: "
                    f"{line[:80]!r}"
                ) from None
        if len(questions) != len(contexts):
            from absl import app  # the counts are of predict's flags: a usage error

            raise app.UsageError(f"{len(questions)} --question but {len(contexts)} --context")
        answers = self._answers(model, params, questions, contexts)
        return [
            f"{answer.text or '(no answer)'}\t{answer.score:.2f}\t{question[:80]}"
            for question, answer in zip(questions, answers, strict=True)
        ]
