"""RoBERTa (Liu et al. 2019) and XLM-R (Conneau et al. 2020, the same architecture): BERT's
encoder and heads with RoBERTa's position ids and classification head.

Mirrors transformers/models/roberta/modeling_roberta.py (and xlm_roberta/, a copy of it):
positions count the real tokens from pad_token_id + 1 (`layers.padded_positions`), one token
type; RobertaClassificationHead on <s>; the multiple-choice head on the pooler; the LM head's
activation is exact GELU whatever hidden_act says. Parameters sit under `roberta`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax

from jaxformer import layers
from jaxformer.models import heads
from jaxformer.models.bert import BertModel, BertOutput, Dropout
from jaxformer.models.config import BertConfig

Array = jax.Array


class RobertaModel(BertModel):
    def positions(self, input_ids):
        return layers.padded_positions(input_ids, self.config.pad_token_id)

    @property
    def max_length(self) -> int:  # positions start after pad_token_id
        return self.config.max_position_embeddings - self.config.pad_token_id - 1


class _Roberta:
    encoder: ClassVar[type[nn.Module]] = RobertaModel
    prefix: ClassVar[str] = "roberta"


class ClassificationHead(nn.Module):
    """logits = W_out Drop(act(W Drop(x_<s>) + b)) + b_out: RobertaClassificationHead (act tanh),
    ElectraClassificationHead (act exact GELU)."""

    config: BertConfig
    width: int
    rate: float
    activation: Callable[[Array], Array] = nn.tanh

    @nn.compact
    def __call__(self, x, train: bool):  # (b, t, m) -> (b, width)
        c, drop = self.config, Dropout(self.rate)
        x = drop(x[:, 0], train)  # (b, m): <s>
        x = drop(self.activation(heads._dense(c, c.hidden_size, "dense")(x)), train)
        return heads._dense(c, self.width, "out_proj")(x)


class RobertaForSequenceClassification(_Roberta, heads.BertForSequenceClassification):
    """RobertaClassificationHead on <s>; no pooler."""

    pooled: ClassVar[bool] = False

    def classify(self, out: BertOutput, width: int, train: bool):
        head = ClassificationHead(self.config, width, self.dropout_rate(), name="classifier")
        return head(out.sequence_output, train)


class RobertaForTokenClassification(_Roberta, heads.BertForTokenClassification):
    pass


class RobertaForQuestionAnswering(_Roberta, heads.BertForQuestionAnswering):
    pass


class RobertaForMultipleChoice(_Roberta, heads.BertForMultipleChoice):
    def dropout_rate(self) -> float:  # hidden_dropout_prob, not classifier_dropout
        return self.config.hidden_dropout_prob


class RobertaForMaskedLM(_Roberta, heads.BertForMaskedLM):
    mlm_activation: ClassVar[str] = "gelu"
