"""Task heads on the BERT encoder, as transformers' BertFor<Task> classes put them.

Mirrors transformers/models/bert/modeling_bert.py: the encoder's parameters under `bert`, the
head's beside it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.models.bert import BertModel, Dropout, _init
from jaxformer.models.config import BertConfig

Array = jax.Array


class BertForSequenceClassification(nn.Module):
    """logits = W Drop(pooled) + b, as transformers' BertForSequenceClassification."""

    config: BertConfig

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        *,
        train: bool = False,
    ) -> Array:
        c = self.config
        _, pooled = BertModel(c, name="bert")(
            input_ids, attention_mask, token_type_ids, position_ids, train=train
        )
        rate = c.hidden_dropout_prob if c.classifier_dropout is None else c.classifier_dropout
        pooled = Dropout(rate)(pooled, train)
        logits = nn.Dense(
            c.num_labels,
            dtype=c.compute_dtype,
            param_dtype=c.params_dtype,
            kernel_init=_init(c),
            name="classifier",
        )(pooled)
        return logits.astype(jnp.float32)  # (b, num_labels)
