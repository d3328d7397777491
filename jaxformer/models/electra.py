"""ELECTRA (Clark et al. 2020), the discriminator: BERT's encoder on embeddings embedding_size
wide, projected to hidden_size where the widths differ, no pooler, and its own heads on the first
token.

Mirrors transformers/models/electra/modeling_electra.py: ElectraClassificationHead (RoBERTa's
head with exact GELU for tanh); the multiple-choice head is ElectraSequenceSummary (first token,
a Dense, exact GELU, summary_last_dropout) then `classifier`; the masked-LM head is
ElectraGeneratorPredictions (a Dense to embedding_size, exact GELU, LayerNorm) then
generator_lm_head, the word embeddings plus a bias; ElectraForPreTraining's discriminator scores
each token replaced or not. Parameters sit under `electra`.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxformer import layers
from jaxformer.models import heads
from jaxformer.models.bert import BertModel, BertOutput, Dropout
from jaxformer.models.roberta import ClassificationHead


class ElectraModel(BertModel):
    add_pooling_layer: bool = False


class _Electra:
    encoder: ClassVar[type[nn.Module]] = ElectraModel
    prefix: ClassVar[str] = "electra"
    pooled: ClassVar[bool] = False


class ElectraForSequenceClassification(_Electra, heads.BertForSequenceClassification):
    """ElectraClassificationHead on the first token."""

    def classify(self, out: BertOutput, width: int, train: bool):
        head = ClassificationHead(
            self.config, width, self.dropout_rate(), layers.gelu, name="classifier"
        )
        return head(out.sequence_output, train)


class ElectraForTokenClassification(_Electra, heads.BertForTokenClassification):
    pass


class ElectraForQuestionAnswering(_Electra, heads.BertForQuestionAnswering):
    pass


class ElectraForMultipleChoice(_Electra, heads.BertForMultipleChoice):
    def classify(self, out: BertOutput, width: int, train: bool):
        """W Drop(GELU(W_s x_first + b_s)) + b: the sequence summary, then the classifier."""
        c = self.config
        x = layers.gelu(heads._dense(c, c.hidden_size, "summary")(out.sequence_output[:, 0]))
        x = Dropout(c.summary_dropout)(x, train)
        return heads._dense(c, width, "classifier")(x)  # (b, width)


class ElectraForMaskedLM(_Electra, heads.BertForMaskedLM):
    mlm_activation: ClassVar[str] = "gelu"


class ElectraForPreTraining(_Electra, heads.Head):
    """logits_t = w . act(W x_t + b) + b_w: how likely token t was replaced by the generator, as
    transformers' ElectraForPreTraining (ElectraDiscriminatorPredictions, act hidden_act)."""

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        *,
        train: bool = False,
    ):
        c = self.config
        x, _ = self.encode(input_ids, attention_mask, token_type_ids, position_ids, train=train)
        x = layers.ACTIVATIONS[c.hidden_act](heads._dense(c, c.hidden_size, "discriminator")(x))
        logits = heads._dense(c, 1, "discriminator_prediction")(x)  # (b, t, 1)
        return logits[..., 0].astype(jnp.float32)  # (b, t)
