"""ModernBERT (Warner et al. 2024): a pre-LN encoder with rotary positions, a global attention
layer every `local.global_every` and sliding-window attention of `local.window` tokens
between, a GeGLU feed-forward, and biases only where the config's flags say; its heads pool, then
transform (dense, activation, norm) before the classifier.

Mirrors transformers/models/modernbert/modeling_modernbert.py on its padded (non-flash) path: a
key padding mask in every layer, and the window as a mask on top of it in the local ones. The
pieces shared with BERT (layer norm, dropout, the head plumbing) are `bert.py`'s and `heads.py`'s.

Parameter tree (ModernBertModel); a `bias` or `b_*` only with its flag (`biases.norm`,
`.attention`, `.mlp`):
  embeddings/token/embedding, embeddings/layer_norm/{scale,bias}
  layer_{i}/attention_norm/{scale,bias} (none in layer 0: the embeddings are normed already)
  layer_{i}/attention/{w_qkv,b_qkv,w_o,b_o}, layer_{i}/mlp_norm/{scale,bias}
  layer_{i}/mlp/{w_in,b_in,w_out,b_out}, final_norm/{scale,bias}
The heads nest it under `model` (transformers' base_model_prefix) beside `head/{dense,norm}` and
`classifier`, or the masked LM's `decoder/bias` (its weight: the token embeddings).
Hidden states (the embeddings, then each layer's output before final_norm) are sown into
"intermediates".
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer import dispatch, layers
from jaxformer.models import heads
from jaxformer.models.bert import BertOutput, Dropout, LayerNorm, _init, check_ids
from jaxformer.models.config import BertConfig

Array = jax.Array


def _norm(c: BertConfig, name: str) -> LayerNorm:
    return LayerNorm(c, use_bias=c.biases.norm, name=name)


class Embeddings(nn.Module):
    """x = Drop(LN(E_tok[ids])): no positions (they are rotary) and no token types."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: Array, train: bool) -> Array:
        c = self.config
        table = nn.Embed(
            c.vocab_size,
            c.hidden_size,
            embedding_init=_init(c),
            param_dtype=c.params_dtype,
            name="token",
        ).embedding  # (vocab, m)
        x = jnp.take(table, input_ids, axis=0).astype(c.compute_dtype)  # (b, t, m)
        return Dropout(c.hidden_dropout_prob)(_norm(c, "layer_norm")(x), train)


class RotarySelfAttention(nn.Module):
    """(Q, K, V) = x W_qkv (one fused projection); RoPE(Q), RoPE(K) at `theta`; softmax(Q K^T /
    sqrt(d)) V, within `window` when given; heads joined by W_o, then dropout."""

    config: BertConfig
    theta: float
    window: int | None = None

    @nn.compact
    def __call__(self, x: Array, positions: Array, mask: Array, train: bool) -> Array:
        c = self.config
        m, h, d = c.hidden_size, c.num_attention_heads, c.head_dim

        def param(name, shape, init):
            return self.param(name, init, shape, c.params_dtype).astype(c.compute_dtype)

        zeros = nn.initializers.zeros
        w_qkv, w_o = param("w_qkv", (m, 3, h, d), _init(c)), param("w_o", (h, d, m), _init(c))
        b_qkv, b_o = jnp.zeros((3, h, d), c.compute_dtype), jnp.zeros((m,), c.compute_dtype)
        if c.biases.attention:
            b_qkv, b_o = param("b_qkv", (3, h, d), zeros), param("b_o", (m,), zeros)
        qkv = dispatch.dense(x, w_qkv, b_qkv, 1, c.matmul)  # (b, t, 3, h, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (b, t, h, d) each; s = t
        q = layers.rotary_embedding(q, positions, self.theta)
        k = layers.rotary_embedding(k, positions, self.theta)
        dropout = train and c.attention_probs_dropout_prob > 0
        o = dispatch.attention(
            q,
            k,
            v,
            mask,
            dropout_rate=c.attention_probs_dropout_prob if dropout else 0.0,
            dropout_rng=self.make_rng("dropout") if dropout else None,
            window=self.window,
            implementation=c.attention,
        )  # (b, t, h, d)
        y = dispatch.dense(o, w_o, b_o, 2, c.matmul)  # (b, t, m): heads joined
        return Dropout(c.attention_probs_dropout_prob)(y, train)


class GeGLU(nn.Module):
    """Drop(act(x W_u) * (x W_g)) W_out, W_in = (W_u | W_g): `layers.geglu`."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c = self.config
        m, f = c.hidden_size, c.intermediate_size

        def param(name, shape, init):
            return self.param(name, init, shape, c.params_dtype).astype(c.compute_dtype)

        w_in, w_out = param("w_in", (m, 2 * f), _init(c)), param("w_out", (f, m), _init(c))
        b_in = b_out = None
        if c.biases.mlp:
            b_in = param("b_in", (2 * f,), nn.initializers.zeros)
            b_out = param("b_out", (m,), nn.initializers.zeros)
        drop = Dropout(c.mlp_dropout)
        return layers.geglu(
            x, w_in, w_out, c.hidden_act, b_in, b_out, dropout=lambda z: drop(z, train)
        )


class ModernBertLayer(nn.Module):
    """Pre-LN: x = x + Attn(LN(x)); x = x + GeGLU(LN(x)). Layer 0 skips the first LN (its input
    is the normed embeddings); global layers use rotary.global_theta, local ones
    rotary.local_theta and the window."""

    config: BertConfig
    index: int

    @nn.compact
    def __call__(self, x: Array, positions: Array, mask: Array, train: bool) -> Array:
        c = self.config
        local = c.layer_types[self.index] == "sliding_attention"
        theta = c.rotary.local_theta if local else c.rotary.global_theta
        attention = RotarySelfAttention(
            c, theta, c.local.window if local else None, name="attention"
        )
        y = x if self.index == 0 else _norm(c, "attention_norm")(x)
        x = x + attention(y, positions, mask, train)
        return x + GeGLU(c, name="mlp")(_norm(c, "mlp_norm")(x), train)


class ModernBertModel(nn.Module):
    """The encoder: embeddings, layers, final norm; no pooler (the heads pool)."""

    config: BertConfig
    add_pooling_layer: bool = False  # the heads' interface; ModernBERT has none

    @nn.compact
    def __call__(
        self,
        input_ids: Array,  # (b, t) int
        attention_mask: Array | None = None,  # (b, t) 1 = real token, 0 = padding
        token_type_ids: Array | None = None,  # (b, t): zeros or None; no token types
        position_ids: Array | None = None,  # (b, t) int: RoPE's positions, default 0, 1, ...
        *,
        train: bool = False,
    ) -> BertOutput:
        c = self.config
        if self.add_pooling_layer:
            raise ValueError("ModernBERT has no pooler: its heads pool the last hidden states")
        check_ids("input_ids", input_ids, c.vocab_size, "vocab_size")
        check_ids("token_type_ids", token_type_ids, 1, "no token types, so token types")
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = Embeddings(c, name="embeddings")(input_ids, train)  # (b, t, m)
        self.sow("intermediates", "hidden_states", x)
        mask = layers.padding_mask(attention_mask)  # (b, 1, 1, s)
        layer_cls = nn.remat(ModernBertLayer, static_argnums=(4,)) if c.remat else ModernBertLayer
        for i in range(c.num_hidden_layers):
            x = dispatch.residual(x)  # XLA:CPU otherwise recomputes its gradient per layer
            x = layer_cls(c, i, name=f"layer_{i}")(x, position_ids, mask, train)
            self.sow("intermediates", "hidden_states", x)
        return BertOutput(_norm(c, "final_norm")(x), None)


class PredictionHead(nn.Module):
    """LN(act(W x + b)): ModernBertPredictionHead, before every task's output layer."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.config
        x = nn.Dense(
            c.hidden_size,
            use_bias=c.biases.classifier,
            dtype=c.compute_dtype,
            param_dtype=c.params_dtype,
            kernel_init=_init(c),
            name="dense",
        )(x)
        return _norm(c, "norm")(layers.ACTIVATIONS[c.classifier_activation](x))


class _ModernBert:
    encoder: ClassVar[type[nn.Module]] = ModernBertModel
    prefix: ClassVar[str] = "model"
    pooled: ClassVar[bool] = False

    def classify(self, out: BertOutput, width: int, train: bool) -> Array:
        """W Drop(head(x)) + b on the pooled vector, or on every token without one."""
        x = out.sequence_output if out.pooled_output is None else out.pooled_output
        x = Dropout(self.dropout_rate())(PredictionHead(self.config, name="head")(x), train)
        return heads._dense(self.config, width, "classifier")(x)


class _Pooled(_ModernBert):
    """The encoder's output with `pooled_output` the classifier_pooling vector: the first
    token's ("cls") or the mean over the real tokens ("mean")."""

    def first_token(self, attention_mask: Array) -> Array:
        """Each sequence's [CLS] position. (b, t) -> (b,)"""
        return jnp.zeros(attention_mask.shape[:1], jnp.int32)

    def encode(self, input_ids, attention_mask, *inputs, train: bool) -> BertOutput:
        x = super().encode(input_ids, attention_mask, *inputs, train=train).sequence_output
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        if self.config.classifier_pooling == "mean":
            pooled = layers.mean_pool(x, attention_mask)  # (b, m)
        else:
            pooled = x[jnp.arange(x.shape[0]), self.first_token(attention_mask)]  # (b, m)
        return BertOutput(x, pooled)


class ModernBertForSequenceClassification(_Pooled, heads.BertForSequenceClassification):
    """logits = W Drop(head(pool(x))) + b."""


class ModernBertForMultipleChoice(_Pooled, heads.BertForMultipleChoice):
    """logits_k = W Drop(head(pool(x_k))) + b per choice; "cls" takes each choice's first real
    token (transformers' argmax of the mask), so left padding works too."""

    def first_token(self, attention_mask: Array) -> Array:
        return jnp.argmax(attention_mask, axis=-1)


class ModernBertForTokenClassification(_ModernBert, heads.BertForTokenClassification):
    """logits_t = W Drop(head(x_t)) + b."""

    @nn.compact
    def __call__(
        self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *, train=False
    ) -> Array:
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, train=train)
        return self.classify(out, self.config.num_labels, train).astype(jnp.float32)


class ModernBertForQuestionAnswering(_ModernBert, heads.BertForQuestionAnswering):
    """(start, end)_t = W Drop(head(x_t)) + b, W: (m, 2), named `classifier` as transformers
    names it."""

    @nn.compact
    def __call__(
        self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *, train=False
    ) -> heads.SpanLogits:
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, train=train)
        logits = self.classify(out, 2, train).astype(jnp.float32)  # (b, t, 2)
        return heads.SpanLogits(logits[..., 0], logits[..., 1])


class TiedDecoder(nn.Module):
    """x E^T + b_v: the vocabulary logits from the token embeddings E; b_v with decoder_bias."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, table: Array) -> Array:
        c = self.config
        bias = jnp.zeros((c.vocab_size,), c.params_dtype)
        if c.biases.decoder:
            bias = self.param("bias", nn.initializers.zeros, (c.vocab_size,), c.params_dtype)
        return layers.tied_logits(x, table.astype(x.dtype), bias.astype(x.dtype))  # (b, t, v)


class ModernBertForMaskedLM(_ModernBert, heads.BertForMaskedLM):
    """logits_t = head(x_t) E^T + b_v, E the token embeddings; at `masked_positions` (b, p)
    only where given."""

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        *,
        train=False,
        masked_positions=None,
    ) -> Array:
        c = self.config
        encoder = self.encoder(c, name=self.prefix)
        x, _ = encoder(input_ids, attention_mask, token_type_ids, position_ids, train=train)
        x = heads.gather_positions(x, masked_positions)  # (b, t or p, m)
        table = encoder.variables["params"]["embeddings"]["token"]["embedding"]  # (vocab, m)
        x = PredictionHead(c, name="head")(x)  # (b, t or p, m)
        return TiedDecoder(c, name="decoder")(x, table).astype(jnp.float32)  # (b, t or p, v)
