"""Task heads on the BERT encoder, as transformers' BertFor<Task> classes put them.

Mirrors transformers/models/bert/modeling_bert.py: the encoder's parameters under `bert`, the
head's beside it (`classifier`, `qa_outputs`, `mlm`). Each head's `pooled` says whether its
encoder has the pooler, as transformers builds it (`add_pooling_layer`).

Another family's heads subclass these and change what differs: `encoder` and `prefix` (its
encoder module and the scope it sits in, transformers' base_model_prefix), `classify` (the
layers from the encoder's output to the logits), `dropout_rate`, `mlm_activation`.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer import layers
from jaxformer.models.bert import BertModel, BertOutput, Dropout, LayerNorm, _init
from jaxformer.models.config import BertConfig

Array = jax.Array


def _dense(c: BertConfig, width: int, name: str) -> nn.Dense:
    """A head's projection, initialised as transformers initialises nn.Linear."""
    return nn.Dense(
        width, dtype=c.compute_dtype, param_dtype=c.params_dtype, kernel_init=_init(c), name=name
    )


def classifier_dropout(c: BertConfig) -> float:
    """transformers' classifier_dropout rate: the config's, else hidden_dropout_prob."""
    return c.hidden_dropout_prob if c.classifier_dropout is None else c.classifier_dropout


class Head(nn.Module):
    """What every task head shares: the family's encoder under `prefix`."""

    config: BertConfig
    encoder: ClassVar[type[nn.Module]] = BertModel
    prefix: ClassVar[str] = "bert"  # transformers' base_model_prefix
    pooled: ClassVar[bool] = False

    def encode(self, *inputs: Any, train: bool) -> BertOutput:
        encoder = self.encoder(self.config, add_pooling_layer=self.pooled, name=self.prefix)
        return encoder(*inputs, train=train)

    def dropout_rate(self) -> float:
        """The dropout before the head's projection."""
        return classifier_dropout(self.config)

    def classify(self, out: BertOutput, width: int, train: bool) -> Array:
        """One row of `width` logits per sequence: W Drop(pooled) + b, BERT's. -> (b, width)"""
        pooled = Dropout(self.dropout_rate())(out.pooled_output, train)
        return _dense(self.config, width, "classifier")(pooled)


class BertForSequenceClassification(Head):
    """logits = W Drop(pooled) + b, as transformers' BertForSequenceClassification."""

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
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, train=train)
        logits = self.classify(out, self.config.num_labels, train)
        return logits.astype(jnp.float32)  # (b, num_labels)


class BertForTokenClassification(Head):
    """logits_t = W Drop(x_t) + b at every position, as transformers' BertForTokenClassification."""

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
        x, _ = self.encode(input_ids, attention_mask, token_type_ids, position_ids, train=train)
        x = Dropout(self.dropout_rate())(x, train)
        return _dense(c, c.num_labels, "classifier")(x).astype(jnp.float32)  # (b, t, num_labels)


class SpanLogits(NamedTuple):
    start_logits: Array  # (b, t): the answer span starts at t
    end_logits: Array  # (b, t): the answer span ends at t


class BertForQuestionAnswering(Head):
    """(start, end)_t = W Drop(x_t) + b, W: (m, 2), as transformers' BertForQuestionAnswering
    (whose head has no dropout: qa_dropout is 0 but for DistilBERT)."""

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
        x, _ = self.encode(input_ids, attention_mask, token_type_ids, position_ids, train=train)
        x = Dropout(c.qa_dropout)(x, train)
        logits = _dense(c, 2, "qa_outputs")(x).astype(jnp.float32)  # (b, t, 2)
        return SpanLogits(logits[..., 0], logits[..., 1])


class BertForMultipleChoice(Head):
    """logits_k = W Drop(pooled_k) + b, W: (m, 1), over each choice k of an example, as
    transformers' BertForMultipleChoice. Inputs are (b, choices, t)."""

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

        out = self.encode(
            flat(input_ids),
            flat(attention_mask),
            flat(token_type_ids),
            flat(position_ids),
            train=train,
        )  # (b k, t, m)
        logits = self.classify(out, 1, train)  # (b k, 1)
        return logits.reshape(b, k).astype(jnp.float32)  # (b, choices)


class MaskedLMHead(nn.Module):
    """logits = LN(act(W x + b)) E^T + b_v: transformers' BertLMPredictionHead. Holds the
    transform (`transform`, `layer_norm`) and the output bias; the decoder is the token embedding
    table E, passed in (tied, as transformers ties it). act: `activation`, else hidden_act. W maps
    to the table's width, embedding_width (ELECTRA's and ALBERT's narrower embeddings)."""

    config: BertConfig
    activation: str | None = None

    @nn.compact
    def __call__(self, x: Array, table: Array) -> Array:
        c = self.config
        act = layers.ACTIVATIONS[self.activation or c.hidden_act]
        x = act(_dense(c, c.embedding_width, "transform")(x))
        x = LayerNorm(c, name="layer_norm")(x)  # (b, t, e)
        bias = self.param("bias", nn.initializers.zeros, (c.vocab_size,), c.params_dtype)
        return layers.tied_logits(x, table.astype(x.dtype), bias.astype(x.dtype))  # (b, t, v)


def gather_positions(x: Array, positions: Array | None) -> Array:
    """x (b, t, m) at each row's `positions` (b, p) -> (b, p, m); x itself for None. A masked
    LM decodes only the positions it scores: the vocabulary projection is its largest matmul."""
    if positions is None:
        return x
    if jnp.ndim(positions) != 2 or jnp.shape(positions)[0] != x.shape[0]:
        raise ValueError(
            f"masked_positions has shape {jnp.shape(positions)}; it must be (batch, positions) "
            f"with batch {x.shape[0]}, as the input_ids"
        )
    if not jnp.issubdtype(jnp.asarray(positions).dtype, jnp.integer):
        raise ValueError(f"masked_positions must be integer indices, got {positions.dtype}")
    return jnp.take_along_axis(x, positions[..., None], axis=1, mode="clip")


class BertForMaskedLM(Head):
    """logits_t = LN(act(W x_t + b)) E^T + b_v over the vocabulary, E the token embeddings, as
    transformers' BertForMaskedLM: at every position t, or with `masked_positions` (b, p) int
    at those only ((b, p, vocab))."""

    mlm_activation: ClassVar[str | None] = None  # None: hidden_act

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        *,
        train: bool = False,
        masked_positions=None,
    ) -> Array:
        c = self.config
        encoder = self.encoder(c, add_pooling_layer=False, name=self.prefix)
        x, _ = encoder(input_ids, attention_mask, token_type_ids, position_ids, train=train)
        x = gather_positions(x, masked_positions)  # (b, t or p, m)
        table = encoder.variables["params"]["embeddings"]["token"]["embedding"]  # (vocab, e)
        logits = MaskedLMHead(c, self.mlm_activation, name="mlm")(x, table)
        return logits.astype(jnp.float32)  # (b, t or p, vocab)
