"""Masked-LM further pre-training on a corpus: text files (a document per line), a text column
of any file `jaxformer.data.sources` reads, or IMDB's reviews by default (Devlin et al. 2019's
objective; Sun et al. 2019's within-task pre-training before fine-tuning): 15% of the real
tokens are chosen, 80% of them become the mask token, 10% a random token, 10% stay; the loss
is the cross-entropy at the chosen positions only, and a split is scored by its perplexity
exp(mean loss) and the accuracy of the predicted tokens (transformers' run_mlm.py).

Only the targets are decoded: the host also lists each row's target positions (a fixed number
of slots per batch shape, jaxformer.data.masking.gather_targets), and the model gathers their
hidden states before its transform and the vocabulary projection, the step's largest matmul.

The masking is drawn on the host with a generator seeded by the batch's position
(jaxformer.data.masking), so a resumed run sees the masks it would have seen, and a split is
masked the same way at every evaluation.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from jaxformer.data import batching, masking, sources
from jaxformer.tasks import Task, cross_entropy, imdb_splits


def special_ids(tokenizer) -> list[int]:
    """The ids of the tokenizer's special tokens, which are never chosen or drawn."""
    tok = tokenizer.tokenizer
    ids = {tok.token_to_id(t) for t in tokenizer.special_tokens.values()}
    ids |= {i for i, added in tok.get_added_tokens_decoder().items() if added.special}
    return sorted(i for i in ids if i is not None)


class MaskedLM(Task):
    head = "masked_lm"
    section = "mlm"

    @staticmethod
    def settings(c):
        # The share of real tokens chosen (80% masked, 10% random, 10% kept), and whether a
        # word's sub-tokens are chosen together.
        c.mask_prob = 0.15
        c.whole_word_mask = False

    selection = "perplexity"
    higher_is_better = False

    def label_names(self):
        return None

    def num_labels(self):
        return None

    def splits(self, names):
        if self.reads_imdb:
            return imdb_splits(self.config, self.tokenizer, names)  # the labels go unused
        out = {}
        for name in names:
            rows = self.rows(name)
            column = self.config.data.text_column
            texts = rows.column(column, purpose="text_column")
            empty = [
                i for i, text in enumerate(texts) if not (isinstance(text, str) and text.strip())
            ]
            if empty and not self.config.data.skip_bad_rows:
                raise sources.DataError(
                    f"{rows.where(empty[0])}: column {column!r} (the text_column) is empty; fix "
                    "the row, or set --config.data.skip_bad_rows=True to leave such rows out"
                )
            texts = [text for i, text in enumerate(texts) if i not in set(empty)]
            out[name] = self.tokenize_cached(name, texts, np.zeros(len(texts), np.int32))
        return out

    def transform(self):
        tok, m = self.tokenizer, self.config.mlm
        mask_token = tok.special_tokens.get("mask_token")
        mask_id = tok.tokenizer.token_to_id(mask_token) if mask_token else None
        if mask_id is None:
            raise ValueError(
                f"the tokenizer has no mask token ({mask_token!r} is not in its vocabulary): "
                "masked-LM training needs one; use the checkpoint's own tokenizer"
            )
        return functools.partial(
            _mask_batch,
            mask_id=mask_id,
            vocab_size=tok.vocab_size,
            special_ids=special_ids(tok),
            mask_prob=m.mask_prob,
            word_starts=masking.word_start_table(tok) if m.whole_word_mask else None,
        )

    # The model decodes the targets only: the transform's masked_positions (b, p) go to the
    # model, which gathers their hidden states before the vocabulary projection.
    model_inputs = ("masked_positions",)

    @staticmethod
    def loss_terms(logits, batch):
        """logits: (b, p, vocab) at the batch's masked_positions, scored against masked_labels
        (b, p); or, for a batch without them, (b, t, vocab) against labels (b, t). IGNORE off
        the targets either way."""
        labels = batch["masked_labels"] if "masked_positions" in batch else batch["labels"]
        if logits.shape[:2] != labels.shape:
            raise ValueError(
                f"masked-LM logits {logits.shape} do not match the labels {labels.shape}: pass "
                "the batch's masked_positions to the model (the task's model_inputs)"
            )
        weight = (labels != batching.IGNORE) * batch["weights"][:, None]  # (b, p) or (b, t)
        correct = logits.argmax(-1) == labels
        return cross_entropy(logits, labels), weight, correct

    @staticmethod
    def eval_outputs(logits, batch):
        loss, weight, correct = MaskedLM.loss_terms(logits, batch)
        return {
            "loss_sum": (loss * weight).sum(-1),
            "correct": (correct * weight).sum(-1),
            "tokens": weight.sum(-1),
        }

    def metrics(self, split, outputs):
        tokens = float(np.sum(outputs.get("tokens", 0.0), dtype=np.float64))
        loss = (
            float(np.sum(outputs.get("loss_sum", 0.0), dtype=np.float64)) / tokens
            if tokens
            else math.nan
        )
        return {
            "loss": loss,
            "perplexity": math.exp(loss) if math.isfinite(loss) else math.nan,
            "accuracy": float(np.sum(outputs.get("correct", 0.0))) / tokens if tokens else math.nan,
            "masked_tokens": int(tokens),
        }

    def summary(self, m):
        return (
            f"perplexity {m['perplexity']:.3f} | loss {m['loss']:.4f} | "
            f"accuracy {m['accuracy']:.4f}"
        )


def _mask_batch(batch, rng, **kwargs):
    ids, labels = masking.mask_tokens(batch["input_ids"], batch["attention_mask"], rng, **kwargs)
    slots = masking.target_slots(ids.shape[1], kwargs["mask_prob"])
    positions, targets = masking.gather_targets(labels, slots)
    return dict(
        batch, input_ids=ids, labels=labels, masked_positions=positions, masked_labels=targets
    )
