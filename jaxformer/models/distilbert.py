"""DistilBERT (Sanh et al. 2019): BERT's encoder without token types or pooler, its layers
adding the attention output undropped, and its own heads on [CLS].

Mirrors transformers/models/distilbert/modeling_distilbert.py: learned or sinusoidal
(`sinusoidal_pos_embds`) positions 0, 1, ...; layer norms at eps 1e-12; the classification and
multiple-choice heads are pre_classifier, ReLU, dropout (seq_classif_dropout, our
classifier_dropout), classifier; question answering drops qa_dropout; token classification drops
`dropout` (our hidden_dropout_prob). Parameters sit under `distilbert`.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from jaxformer.models import heads
from jaxformer.models.bert import BertModel, BertOutput, Dropout


class DistilBertModel(BertModel):
    add_pooling_layer: bool = False
    layer_options: ClassVar[dict] = {"attention_output_dropout": False}


class _DistilBert:
    encoder: ClassVar[type[nn.Module]] = DistilBertModel
    prefix: ClassVar[str] = "distilbert"
    pooled: ClassVar[bool] = False

    def classify(self, out: BertOutput, width: int, train: bool):
        """W Drop(ReLU(W_pre x_[CLS] + b_pre)) + b. -> (b, width)"""
        c = self.config
        x = nn.relu(heads._dense(c, c.hidden_size, "pre_classifier")(out.sequence_output[:, 0]))
        x = Dropout(self.dropout_rate())(x, train)
        return heads._dense(c, width, "classifier")(x)


class DistilBertForSequenceClassification(_DistilBert, heads.BertForSequenceClassification):
    pass


class DistilBertForTokenClassification(_DistilBert, heads.BertForTokenClassification):
    def dropout_rate(self) -> float:  # DistilBERT's `dropout`, not seq_classif_dropout
        return self.config.hidden_dropout_prob


class DistilBertForQuestionAnswering(_DistilBert, heads.BertForQuestionAnswering):
    pass


class DistilBertForMultipleChoice(_DistilBert, heads.BertForMultipleChoice):
    pass


class DistilBertForMaskedLM(_DistilBert, heads.BertForMaskedLM):
    pass
