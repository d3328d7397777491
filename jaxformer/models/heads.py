"""Task heads on the BERT encoder, as transformers' BertFor<Task> classes put them.

Mirrors transformers/models/bert/modeling_bert.py: the encoder's parameters under `bert`, the
head's beside it (`classifier`, `qa_outputs`, `mlm`). Each head's `pooled` says whether its
encoder has the pooler, as transformers builds it (`add_pooling_layer`).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer import layers
from jaxformer.models.bert import BertModel, Dropout, LayerNorm, _init
from jaxformer.models.config import BertConfig

Array = jax.Array


def _dense(c: BertConfig, width: int, name: str) -> nn.Dense:
    """A head's projection, initialised as transformers initialises nn.Linear."""
    return nn.Dense(
        width, dtype=c.compute_dtype, param_dtype=c.params_dtype, kernel_init=_init(c), name=name
    )


def _classifier_dropout(c: BertConfig) -> Dropout:
    return Dropout(c.hidden_dropout_prob if c.classifier_dropout is None else c.classifier_dropout)


class BertForSequenceClassification(nn.Module):
    """logits = W Drop(pooled) + b, as transformers' BertForSequenceClassification."""

    config: BertConfig
    pooled: ClassVar[bool] = True

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
        pooled = _classifier_dropout(c)(pooled, train)
        logits = _dense(c, c.num_labels, "classifier")(pooled)
        return logits.astype(jnp.float32)  # (b, num_labels)


class BertForTokenClassification(nn.Module):
    """logits_t = W Drop(x_t) + b at every position, as transformers' BertForTokenClassification."""

    config: BertConfig
    pooled: ClassVar[bool] = False

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
        x, _ = BertModel(c, add_pooling_layer=False, name="bert")(
            input_ids, attention_mask, token_type_ids, position_ids, train=train
        )
        x = _classifier_dropout(c)(x, train)
        return _dense(c, c.num_labels, "classifier")(x).astype(jnp.float32)  # (b, t, num_labels)


class SpanLogits(NamedTuple):
    start_logits: Array  # (b, t): the answer span starts at t
    end_logits: Array  # (b, t): the answer span ends at t


class BertForQuestionAnswering(nn.Module):
    """(start, end)_t = W x_t + b, W: (m, 2), as transformers' BertForQuestionAnswering (no
    dropout on the head there either)."""

    config: BertConfig
    pooled: ClassVar[bool] = False

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        *,
        train: bool = False,
    ) -> SpanLogits:
        c = self.config
        x, _ = BertModel(c, add_pooling_layer=False, name="bert")(
            input_ids, attention_mask, token_type_ids, position_ids, train=train
        )
        logits = _dense(c, 2, "qa_outputs")(x).astype(jnp.float32)  # (b, t, 2)
        return SpanLogits(logits[..., 0], logits[..., 1])


class BertForMultipleChoice(nn.Module):
    """logits_k = W Drop(pooled_k) + b, W: (m, 1), over each choice k of an example, as
    transformers' BertForMultipleChoice. Inputs are (b, choices, t)."""

    config: BertConfig
    pooled: ClassVar[bool] = True
    input_rank: ClassVar[int] = 3

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
        for name, a in (
            ("input_ids", input_ids),
            ("attention_mask", attention_mask),
            ("token_type_ids", token_type_ids),
            ("position_ids", position_ids),
        ):
            if a is not None and jnp.ndim(a) != 3:
                raise ValueError(
                    f"multiple choice takes (batch, choices, length) inputs; {name} has shape "
                    f"{jnp.shape(a)}"
                )
        b, k, t = input_ids.shape

        def flat(a):  # (b, k, t) -> (b k, t): each choice is its own sequence
            return None if a is None else jnp.reshape(a, (b * k, t))

        _, pooled = BertModel(c, name="bert")(
            flat(input_ids),
            flat(attention_mask),
            flat(token_type_ids),
            flat(position_ids),
            train=train,
        )  # (b k, m)
        pooled = _classifier_dropout(c)(pooled, train)
        logits = _dense(c, 1, "classifier")(pooled)  # (b k, 1)
        return logits.reshape(b, k).astype(jnp.float32)  # (b, choices)


class MaskedLMHead(nn.Module):
    """logits = LN(act(W x + b)) E^T + b_v: transformers' BertLMPredictionHead. Holds the
    transform (`transform`, `layer_norm`) and the output bias; the decoder is the token embedding
    table E, passed in (tied, as transformers ties it)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, table: Array) -> Array:
        c = self.config
        x = layers.ACTIVATIONS[c.hidden_act](_dense(c, c.hidden_size, "transform")(x))
        x = LayerNorm(c, name="layer_norm")(x)  # (b, t, m)
        bias = self.param("bias", nn.initializers.zeros, (c.vocab_size,), c.params_dtype)
        return layers.tied_logits(x, table.astype(x.dtype), bias.astype(x.dtype))  # (b, t, v)


class BertForMaskedLM(nn.Module):
    """logits_t = LN(act(W x_t + b)) E^T + b_v over the vocabulary, E the token embeddings, as
    transformers' BertForMaskedLM."""

    config: BertConfig
    pooled: ClassVar[bool] = False

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
        bert = BertModel(c, add_pooling_layer=False, name="bert")
        x, _ = bert(input_ids, attention_mask, token_type_ids, position_ids, train=train)
        table = bert.variables["params"]["embeddings"]["token"]["embedding"]  # (vocab, m)
        return MaskedLMHead(c, name="mlm")(x, table).astype(jnp.float32)  # (b, t, vocab)
