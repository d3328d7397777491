"""DeBERTa-v2 and v3 (He et al. 2021, 2023): BERT's post-LN layers with disentangled attention
over relative positions, DeBERTa's embeddings, and the ContextPooler heads.

Mirrors transformers/models/deberta_v2/modeling_deberta_v2.py. The attention scores are

    (q_t . k_s + q_t . Kr[delta_ts] + k_s . Qr[-delta_st]) / sqrt(d * (1 + len(pos_att_type)))

(`layers.disentangled_attention_bias`, `layers.relative_position_buckets`), Kr and Qr the shared
relative embeddings (layer-normed with norm_rel_ebd="layer_norm") projected by each layer's
W_k, W_q (share_att_key) or its own W_pk, W_pq. The embeddings are E_tok (+ P without
position_biased_input=false) (+ E_type with token types), projected to the width when
embedding_size differs, layer-normed, zeroed at padding. Sequence classification and multiple
choice put ContextPooler (act(W Drop(x_[CLS]) + b)) before the classifier; the MLM head is
transformers' legacy one (`cls.predictions`, BERT's head), decoding with the tied word embeddings.
Parameters sit under `deberta`:
  embeddings/{token,position,token_type}/embedding, embeddings/embed_proj/kernel,
  embeddings/layer_norm, rel_embeddings/embedding, rel_norm,
  layer_{i}/attention/{w_q,b_q,w_k,b_k,w_v,b_v,w_pk,b_pk,w_pq,b_pq,w_o,b_o},
  layer_{i}/{attention_norm,mlp,mlp_norm}
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer import dispatch, layers
from jaxformer.models import heads
from jaxformer.models.bert import (
    BertOutput,
    Dropout,
    FeedForward,
    LayerNorm,
    _init,
    check_inputs,
)
from jaxformer.models.config import BertConfig

Array = jax.Array


class Embeddings(nn.Module):
    """x = LN((E_tok[ids] + P[positions] + E_type[types]) W_proj) * mask, then dropout; no P
    without position_biased_input, no E_type without token types, no W_proj at the width."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, attention_mask, train: bool):
        c = self.config
        e = c.embedding_width

        def table(rows: int, name: str) -> Array:  # (rows, e)
            init, dtype = _init(c), c.params_dtype
            return nn.Embed(rows, e, embedding_init=init, param_dtype=dtype, name=name).embedding

        token = table(c.vocab_size, "token")
        types = table(c.type_vocab_size, "token_type") if c.type_vocab_size else None
        positions = (
            table(c.max_position_embeddings, "position") if c.position_biased_input else None
        )
        x = layers.embed(input_ids, token_type_ids, position_ids, token, types, positions)
        x = x.astype(c.compute_dtype)  # (b, t, e)
        if e != c.hidden_size:
            x = nn.Dense(
                c.hidden_size,
                use_bias=False,
                dtype=c.compute_dtype,
                param_dtype=c.params_dtype,
                kernel_init=_init(c),
                name="embed_proj",
            )(x)  # (b, t, m)
        x = LayerNorm(c, name="layer_norm")(x)
        x = x * attention_mask[..., None].astype(x.dtype)
        return Dropout(c.hidden_dropout_prob)(x, train)


class DisentangledSelfAttention(nn.Module):
    """softmax((q_t . k_s + bias_ts) / sqrt(d * scale_factor)) V, bias the c2p and p2c terms
    (`layers.disentangled_attention_bias`); heads joined by W_o. `project` makes q, k, v and the
    relative tables; a family whose projections differ overrides it (DeBERTa v1's)."""

    config: BertConfig

    def param_(self, name: str, shape: tuple[int, ...], init) -> Array:
        c = self.config
        return self.param(name, init, shape, c.params_dtype).astype(c.compute_dtype)

    def projection(self, name: str) -> tuple[Array, Array]:
        """W_name (m, h, d) and b_name (h, d)."""
        c = self.config
        m, h, d = c.hidden_size, c.num_attention_heads, c.head_dim
        w = self.param_(f"w_{name}", (m, h, d), _init(c))
        return w, self.param_(f"b_{name}", (h, d), nn.initializers.zeros)

    def project(self, x: Array, rel: Array | None):
        """q, k, v (b, t, h, d) and the c2p, p2c tables pos_k, pos_q (2P, h, d) of the relative
        embeddings `rel` (None for a term the config leaves out): W x + b each."""
        c = self.config
        (w_q, b_q), (w_k, b_k), (w_v, b_v) = map(self.projection, "qkv")
        q = dispatch.dense(x, w_q, b_q, 1, c.matmul)  # (b, t, h, d)
        k = dispatch.dense(x, w_k, b_k, 1, c.matmul)  # (b, s, h, d); s = t
        v = dispatch.dense(x, w_v, b_v, 1, c.matmul)  # (b, s, h, d)
        pos_q = pos_k = None
        r = c.relative
        if rel is not None and "c2p" in r.pos_att_type:
            w, b = (w_k, b_k) if r.share_att_key else self.projection("pk")
            pos_k = dispatch.dense(rel, w, b, 1, c.matmul)  # (2P, h, d)
        if rel is not None and "p2c" in r.pos_att_type:
            w, b = (w_q, b_q) if r.share_att_key else self.projection("pq")
            pos_q = dispatch.dense(rel, w, b, 1, c.matmul)  # (2P, h, d)
        return q, k, v, pos_q, pos_k

    @nn.compact
    def __call__(self, x: Array, mask: Array, rel: Array | None, relative, train: bool):
        c = self.config
        m, h, d = c.hidden_size, c.num_attention_heads, c.head_dim
        pos_att_type = () if c.relative is None else c.relative.pos_att_type
        if pos_att_type:
            rel = Dropout(c.hidden_dropout_prob)(rel, train)  # (2P, m)
        else:
            rel = None
        q, k, v, pos_q, pos_k = self.project(x, rel)
        w_o = self.param_("w_o", (h, d, m), _init(c))
        b_o = self.param_("b_o", (m,), nn.initializers.zeros)
        scale_factor = 1 + len(pos_att_type)
        bias = None
        if rel is not None:
            scores = dispatch.relative_scores(c.attention)
            bias = layers.disentangled_attention_bias(q, k, pos_q, pos_k, relative, scores)
            bias = bias / math.sqrt(d * scale_factor)  # (b, h, t, s) float32
        dropout = train and c.attention_probs_dropout_prob > 0
        o = dispatch.attention(
            q / jnp.asarray(math.sqrt(scale_factor), q.dtype),  # q.k / sqrt(d * scale_factor)
            k,
            v,
            mask,
            bias,
            dropout_rate=c.attention_probs_dropout_prob if dropout else 0.0,
            dropout_rng=self.make_rng("dropout") if dropout else None,
            implementation=c.attention,
        )  # (b, t, h, d)
        return dispatch.dense(o, w_o, b_o, 2, c.matmul)  # (b, t, m)


class EncoderLayer(nn.Module):
    """Post-LN, as BERT's: x = LN(x + Drop(Attn(x))); x = LN(x + Drop(FFN(x))); Attn is
    `self_attention`."""

    config: BertConfig
    self_attention: ClassVar[type[nn.Module]] = DisentangledSelfAttention

    @nn.compact
    def __call__(self, x: Array, mask: Array, rel, relative, train: bool) -> Array:
        c = self.config

        def drop(y):
            return Dropout(c.hidden_dropout_prob)(y, train)

        attention = self.self_attention(c, name="attention")
        x = LayerNorm(c, name="attention_norm")(x + drop(attention(x, mask, rel, relative, train)))
        return LayerNorm(c, name="mlp_norm")(x + drop(FeedForward(c, name="mlp")(x)))


class DebertaModel(nn.Module):
    """The encoder: embeddings, the relative embeddings its layers share, the layers. No pooler
    (the heads' ContextPooler is theirs); `add_pooling_layer` is accepted for the heads' call."""

    config: BertConfig
    add_pooling_layer: bool = False
    layer: ClassVar[type[nn.Module]] = EncoderLayer

    @property
    def max_length(self) -> int:
        """The longest input: relative positions only (position_biased_input=false) have none."""
        c = self.config
        return c.max_position_embeddings if c.position_biased_input else 2**31 - 1

    @nn.compact
    def __call__(
        self,
        input_ids: Array,  # (b, t) int
        attention_mask: Array | None = None,  # (b, t) 1 = real token, 0 = padding
        token_type_ids: Array | None = None,  # (b, t) int
        position_ids: Array | None = None,  # (b, t) int
        *,
        train: bool = False,
    ) -> BertOutput:
        c = self.config
        t = input_ids.shape[1]
        if c.pre_layer_norm:
            raise ValueError("DeBERTa is post-LN: pre_layer_norm=True has no DeBERTa model")
        token_type_ids = check_inputs(
            c, input_ids, token_type_ids, position_ids, self.max_length, c.position_biased_input
        )
        if c.position_biased_input:
            if position_ids is None:
                position_ids = jnp.broadcast_to(jnp.arange(t), input_ids.shape)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        x = Embeddings(c, name="embeddings")(
            input_ids, token_type_ids, position_ids, attention_mask, train
        )
        self.sow("intermediates", "hidden_states", x)
        rel = relative = None
        r = c.relative
        if r is not None:
            rel = nn.Embed(
                2 * r.span(c.max_position_embeddings),
                c.hidden_size,
                embedding_init=_init(c),
                param_dtype=c.params_dtype,
                name="rel_embeddings",
            ).embedding.astype(c.compute_dtype)  # (2P, m)
            relative = layers.relative_position_buckets(
                t, t, r.position_buckets, r.max_position(c.max_position_embeddings)
            )  # (t, t)
        if r is not None and "layer_norm" in r.norm_rel_ebd:
            rel = LayerNorm(c, name="rel_norm")(rel)
        mask = layers.padding_mask(attention_mask)  # (b, 1, 1, s)
        layer_cls = nn.remat(self.layer, static_argnums=(5,)) if c.remat else self.layer
        for i in range(c.num_hidden_layers):
            x = layer_cls(c, name=f"layer_{i}")(x, mask, rel, relative, train)
            self.sow("intermediates", "hidden_states", x)
        return BertOutput(x, None)


class _Deberta:
    encoder: ClassVar[type[nn.Module]] = DebertaModel
    prefix: ClassVar[str] = "deberta"
    pooled: ClassVar[bool] = False

    def classify(self, out: BertOutput, width: int, train: bool) -> Array:
        """W Drop(act(W_p Drop(x_[CLS]) + b_p)) + b: ContextPooler as the pooled output, then
        BERT's classifier (its dropout cls_dropout, our classifier_dropout, else
        hidden_dropout_prob). -> (b, width)"""
        c = self.config
        x = Dropout(c.pooler_dropout)(out.sequence_output[:, 0], train)  # (b, m)
        pooled = layers.ACTIVATIONS[c.pooler_hidden_act](
            heads._dense(c, c.hidden_size, "pooler")(x)
        )
        return super().classify(out._replace(pooled_output=pooled), width, train)


class DebertaForSequenceClassification(_Deberta, heads.BertForSequenceClassification):
    pass


class DebertaForTokenClassification(_Deberta, heads.BertForTokenClassification):
    def dropout_rate(self) -> float:  # hidden_dropout_prob, not cls_dropout
        return self.config.hidden_dropout_prob


class DebertaForQuestionAnswering(_Deberta, heads.BertForQuestionAnswering):
    pass


class DebertaForMultipleChoice(_Deberta, heads.BertForMultipleChoice):
    pass


class DebertaForMaskedLM(_Deberta, heads.BertForMaskedLM):
    """BERT's MaskedLMHead at the embedding width: transformers' LegacyDebertaV2LMPredictionHead."""
