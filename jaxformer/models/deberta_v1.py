"""DeBERTa (He et al. 2021), the first version: transformers/models/deberta/modeling_deberta.py.

Its math is DeBERTa-v2's without log buckets, shared key projections or a relative-embedding
norm (jaxformer/models/deberta.py, whose modules these extend): the same embeddings, the same
disentangled scores

    (q_t . k_s + q_t . Kr[delta_ts] + k_s . Qr[-delta_st]) / sqrt(d * (1 + n)),

delta_ts = t - s clipped to [-P, P), n = len(pos_att_type), P = max_relative_positions (else
max_position_embeddings); transformers divides q by sqrt(d * (1 + n)) before its q.k and c2p
products, and Qr by the same before p2c's: the same scores as v2's division of the sum. What
differs is the projections: one fused in_proj (no bias) gives q, k and v, interleaved per head
([q_h, k_h, v_h] for each head h); q and v then take their own biases q_bias, v_bias, k none;
c2p's Kr = W_pk rel (pos_proj, no bias), p2c's Qr = W_pq rel + b_pq (pos_q_proj). The heads are
v2's: ContextPooler before the sequence classifier, transformers' legacy MLM head
(`cls.predictions`). Parameters as v2's, but layer_{i}/attention/{w_qkv (m, h, 3, d), b_q, b_v,
w_pk, w_pq, b_pq, w_o, b_o}.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer import dispatch
from jaxformer.models import deberta
from jaxformer.models.bert import _init
from jaxformer.models.config import BertConfig

Array = jax.Array

# BertConfig's DeBERTa-v2 fields that DeBERTa v1 lacks: their "off" values, and why.
V2_ONLY = {
    "position_buckets": (-1, "log-bucketed relative positions"),
    "share_att_key": (False, "relative embeddings projected by W_q and W_k (share_att_key)"),
    "norm_rel_ebd": ("none", "layer-normed relative embeddings (norm_rel_ebd)"),
}


def check_config(c: BertConfig) -> None:
    """ValueError unless `c` leaves DeBERTa-v2's own fields off."""
    for name, (off, what) in V2_ONLY.items():
        if c.relative is not None and getattr(c.relative, name) != off:
            raise ValueError(
                f"relative.{name}={getattr(c.relative, name)!r}: DeBERTa (model_type 'deberta') "
                f"has no {what}; leave it {off!r}, or use model_type 'deberta-v2'"
            )


class DisentangledSelfAttention(deberta.DisentangledSelfAttention):
    """v2's attention with v1's projections: the fused in_proj, q_bias and v_bias, pos_proj
    without a bias (c2p), pos_q_proj with one (p2c)."""

    def project(self, x: Array, rel: Array | None):
        c = self.config
        m, h, d = c.hidden_size, c.num_attention_heads, c.head_dim
        w = self.param_("w_qkv", (m, h, 3, d), _init(c))
        b_q = self.param_("b_q", (h, d), nn.initializers.zeros)
        b_v = self.param_("b_v", (h, d), nn.initializers.zeros)
        b = jnp.stack([b_q, jnp.zeros_like(b_q), b_v], axis=1)  # (h, 3, d): no key bias
        qkv = dispatch.dense(x, w, b, 1, c.matmul)  # (b, t, h, 3, d)
        q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]  # (b, t, h, d) each
        pos_q = pos_k = None
        if rel is not None and "c2p" in c.relative.pos_att_type:
            w_pk = self.param_("w_pk", (m, h, d), _init(c))
            pos_k = dispatch.dense(rel, w_pk, jnp.zeros((h, d), w_pk.dtype), 1, c.matmul)
        if rel is not None and "p2c" in c.relative.pos_att_type:
            pos_q = dispatch.dense(rel, *self.projection("pq"), 1, c.matmul)  # (2P, h, d)
        return q, k, v, pos_q, pos_k


class EncoderLayer(deberta.EncoderLayer):
    self_attention = DisentangledSelfAttention


class DebertaModel(deberta.DebertaModel):
    """v2's encoder with v1's layers: relative positions unbucketed, no relative norm."""

    layer = EncoderLayer

    def __post_init__(self):
        check_config(self.config)
        super().__post_init__()


class _Deberta(deberta._Deberta):
    encoder = DebertaModel

    def __post_init__(self):
        check_config(self.config)
        super().__post_init__()


class DebertaForSequenceClassification(_Deberta, deberta.DebertaForSequenceClassification):
    pass


class DebertaForTokenClassification(_Deberta, deberta.DebertaForTokenClassification):
    pass


class DebertaForQuestionAnswering(_Deberta, deberta.DebertaForQuestionAnswering):
    pass


class DebertaForMaskedLM(_Deberta, deberta.DebertaForMaskedLM):
    """transformers' LegacyDebertaLMPredictionHead (`cls.predictions`): BERT's head."""
