"""The Transformer encoder's equations as pure JAX functions: no Flax, no parameters held, no
fast paths (those are in `jaxformer.kernels`, chosen by `jaxformer.dispatch`).

Mirrors "Attention Is All You Need" (Vaswani et al. 2017) and BERT (Devlin et al. 2019), with
DeBERTa's disentangled attention (He et al. 2021, 2023; transformers/models/deberta_v2), and the
rotary positions (Su et al. 2021) and GeGLU feed-forward (Shazeer 2020) of ModernBERT (Warner et
al. 2024).

Einsum legend: b batch, t query position, s key position, h heads, d head dim,
m model width, f feed-forward width.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def layer_norm(x: Array, scale: Array, bias: Array | None, eps: float) -> Array:
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis, statistics in float32;
    no bias term when `bias` is None (ModernBERT's norm_bias=False)."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps) * scale
    return (y if bias is None else y + bias).astype(x.dtype)


def gelu(x: Array) -> Array:
    """x Phi(x) = x/2 (1 + erf(x / sqrt 2)), BERT's GELU, as PyTorch computes it."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def gelu_tanh(x: Array) -> Array:
    """x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's approximation."""
    return jax.nn.gelu(x, approximate=True)


# The activations by name (Hugging Face's names for them are jaxformer.hf.config's).
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "relu": jax.nn.relu,  # the original Transformer's
    "silu": jax.nn.silu,
}


def dense(x: Array, w: Array, b: Array, contract: int = 1) -> Array:
    """x . w + b over x's last `contract` axes and w's first: a projection, position-wise.

    x: (..., *in), w: (*in, *out), b: (*out,) -> (..., *out); e.g. x (b, t, m), w_q (m, h, d),
    b_q (h, d) -> q (b, t, h, d); or o (b, t, h, d), w_o (h, d, m), b_o (m,) -> (b, t, m).
    """
    # Contracted axes innermost first, as jnp.einsum("bthd,hdm->btm", ...) orders them.
    x_axes, w_axes = range(x.ndim - 1, x.ndim - contract - 1, -1), range(contract - 1, -1, -1)
    return jax.lax.dot_general(x, w, ((tuple(x_axes), tuple(w_axes)), ((), ()))) + b


def feed_forward(
    x: Array, w1: Array, b1: Array, w2: Array, b2: Array, activation: str = "gelu"
) -> Array:
    """W_2 act(W_1 x + b_1) + b_2, position-wise. x: (b, t, m), w1: (m, f), w2: (f, m)."""
    return ACTIVATIONS[activation](x @ w1 + b1) @ w2 + b2


def geglu(
    x: Array,
    w_in: Array,
    w_out: Array,
    activation: str = "gelu",
    b_in: Array | None = None,
    b_out: Array | None = None,
    dropout: Callable[[Array], Array] | None = None,
) -> Array:
    """Gated feed-forward, ModernBERT's GeGLU: (u, g) = x W_in + b_in split in two halves of f,
    y = Drop(act(u) * g) W_out + b_out, position-wise; no bias where it is None.
    x: (b, t, m), w_in: (m, 2 f), w_out: (f, m) -> (b, t, m)"""
    z = x @ w_in if b_in is None else x @ w_in + b_in  # (b, t, 2 f)
    u, g = jnp.split(z, 2, axis=-1)  # (b, t, f) each: the input, then the gate
    z = ACTIVATIONS[activation](u) * g
    y = (z if dropout is None else dropout(z)) @ w_out
    return y if b_out is None else y + b_out


def rotary_embedding(x: Array, positions: Array, theta: float) -> Array:
    """Rotary position embedding (RoPE) in the half-split layout of transformers' rotate_half:
    with frequencies w_i = theta^(-2i/d) and angles a_i = p w_i for i < d/2, at position p

        y_i       = x_i cos a_i - x_{i+d/2} sin a_i
        y_{i+d/2} = x_{i+d/2} cos a_i + x_i sin a_i

    that is y = x cos(a, a) + rotate_half(x) sin(a, a), rotate_half(x) = (-x_{d/2:}, x_{:d/2}).
    Computed in float32, returned in x's dtype. x: (b, t, h, d), positions: (b, t) -> (b, t, h, d)
    """
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d)  # (d/2,)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # (b, t, d/2)
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]  # (b, t, 1, d/2)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)  # (b, t, h, d/2) each
    y = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)  # (b, t, h, d)
    return y.astype(x.dtype)


def mean_pool(x: Array, attention_mask: Array) -> Array:
    """sum_t mask_t x_t / sum_t mask_t: the mean over the real tokens.
    x: (b, t, m), attention_mask: (b, t) 1/0 -> (b, m)"""
    w = attention_mask.astype(x.dtype)[..., None]  # (b, t, 1)
    return (x * w).sum(axis=1) / w.sum(axis=1)


def mean_sqrt_len_pool(x: Array, attention_mask: Array) -> Array:
    """sum_t mask_t x_t / sqrt(sum_t mask_t): the sum over the real tokens over the square root
    of their count (sentence-transformers' mean_sqrt_len_tokens).
    x: (b, t, m), attention_mask: (b, t) 1/0 -> (b, m)"""
    w = attention_mask.astype(x.dtype)[..., None]  # (b, t, 1)
    return (x * w).sum(axis=1) / jnp.sqrt(w.sum(axis=1))


def cls_pool(x: Array, attention_mask: Array) -> Array:
    """x_{t0}, t0 = min {t : mask_t = 1}: the first real token ([CLS] or <s>), also under left
    padding. x: (b, t, m), attention_mask: (b, t) 1/0 -> (b, m)"""
    first = jnp.argmax(attention_mask.astype(bool), axis=1)  # (b,)
    return x[jnp.arange(x.shape[0]), first]


def max_pool(x: Array, attention_mask: Array) -> Array:
    """max_{t : mask_t = 1} x_t per feature: the largest value over the real tokens.
    x: (b, t, m), attention_mask: (b, t) 1/0 -> (b, m)"""
    real = attention_mask.astype(bool)[..., None]  # (b, t, 1)
    return jnp.where(real, x, -jnp.inf).max(axis=1)


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """x / max(||x||_2, eps) over the last axis (torch.nn.functional.normalize's eps): unit
    vectors, whose dot products are cosine similarities. (..., m) -> (..., m)"""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


def tied_logits(x: Array, table: Array, bias: Array) -> Array:
    """x E^T + bias: scores over the vocabulary from the token embedding table E itself (the
    decoder tied to the input embeddings). x: (b, t, m), table: (v, m), bias: (v,) -> (b, t, v)."""
    return jnp.einsum("btm,vm->btv", x, table) + bias


def dropout(x: Array, rate: float, rng: Array) -> Array:
    """Inverted dropout: x * keep / (1 - rate), keep ~ Bernoulli(1 - rate) per element."""
    if rate == 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def attention_weights(
    q: Array, k: Array, mask: Array | None = None, bias: Array | None = None
) -> Array:
    """e_ts = softmax_s(q_t . k_s / sqrt(d) + bias), masked keys at exactly zero. -> (b, h, t, s)

    Softmax in float32 whatever the compute dtype; a query with no key to attend gets all zeros.
    """
    scores = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
    scores = scores.astype(jnp.float32)
    if bias is not None:
        scores = scores + bias
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    probs = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(jnp.float32).min), axis=-1)
    return jnp.where(mask, probs, 0.0)  # a fully masked row would be uniform, not zero


def attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    dropout: Callable[[Array], Array] | None = None,
) -> Array:
    """Multi-head scaled dot-product attention: o_t = sum_s e_ts v_s (see `attention_weights`).

    q: (b, t, h, d); k, v: (b, s, h, d); mask: bool broadcastable to (b, h, t, s), True = attend;
    bias: float broadcastable to (b, h, t, s); dropout: applied to the weights e (None: none).
    Returns (b, t, h, d).
    """
    probs = attention_weights(q, k, mask, bias)  # (b, h, t, s)
    if dropout is not None:
        probs = dropout(probs)
    return jnp.einsum("bhts,bshd->bthd", probs.astype(v.dtype), v)


def padding_mask(attention_mask: Array) -> Array:
    """(b, s) 1/0 token mask -> (b, 1, 1, s) boolean key mask, True = attend."""
    return attention_mask.astype(bool)[:, None, None, :]


def sliding_window_mask(t: int, s: int, window: int) -> Array:
    """Local attention: query t_i sees key s_j iff |t_i - s_j| <= window // 2. -> (t, s) bool

    ModernBERT's convention: `window` is its `local_attention` (the whole window, 128 there),
    each side gets half of it (transformers' `sliding_window = local_attention // 2`, inclusive).
    """
    offset = jnp.arange(t)[:, None] - jnp.arange(s)[None, :]  # (t, s): t_i - s_j
    return jnp.abs(offset) <= window // 2


def sinusoidal_positions(length: int, width: int, dtype=jnp.float32) -> Array:
    """PE(p, 2i) = sin(p / 10000^(2i/m)), PE(p, 2i+1) = cos(...). -> (length, width)

    A constant of the shapes: computed in float64 numpy, then rounded, as transformers'
    create_sinusoidal_embeddings (DistilBERT) computes the table its checkpoints hold.
    """
    position = np.arange(length, dtype=np.float64)[:, None]  # (t, 1)
    angles = position / np.power(10000.0, 2 * (np.arange(width) // 2) / width)  # (t, m)
    pe = np.where(np.arange(width) % 2 == 0, np.sin(angles), np.cos(angles))
    return jnp.asarray(pe.astype(np.float32), dtype)


def padded_positions(input_ids: Array, pad_id: int) -> Array:
    """RoBERTa's position ids: pad_id + 1, pad_id + 2, ... over the real tokens, pad_id at the
    padding (fairseq's make_positions, transformers' create_position_ids_from_input_ids).
    input_ids: (b, t) -> (b, t)"""
    real = (input_ids != pad_id).astype(jnp.int32)  # (b, t)
    return jnp.cumsum(real, axis=1) * real + pad_id


def embed(
    input_ids: Array,
    token_type_ids: Array | None,
    position_ids: Array,
    token_table: Array,
    type_table: Array | None,
    position_table: Array | None,
) -> Array:
    """x = E_tok[ids] + E_type[types] + P[positions]; no E_type term without a type table, no P
    term without a position table (DeBERTa-v3's positions are relative only).
    ids: (b, t) -> (b, t, m)"""
    x = jnp.take(token_table, input_ids, axis=0)  # (b, t, m)
    if type_table is not None:
        x = x + jnp.take(type_table, token_type_ids, axis=0)
    if position_table is None:
        return x
    return x + jnp.take(position_table, position_ids, axis=0)


def relative_position_buckets(t: int, s: int, buckets: int, max_position: int) -> Array:
    """DeBERTa's relative positions r_ij = i - j of query i to key j, log-bucketed:

        delta(r) = r                                                         if |r| <= m,
                   sign(r) (m + ceil((m - 1) log(|r| / m) / log((P - 1) / m)))   otherwise,

    m = buckets // 2, P = max_position: exact within m of the query, then logarithmically coarser
    out to distance P (transformers' make_log_bucket_position and build_relative_position).
    With buckets or max_position <= 0, delta(r) = r. The logarithms are float32, as transformers
    computes them, so the buckets agree at their edges. -> (t, s) int32
    """
    r = jnp.arange(t)[:, None] - jnp.arange(s)[None, :]  # (t, s): i - j
    if buckets <= 0 or max_position <= 0:
        return r.astype(jnp.int32)
    mid = buckets // 2
    r = r.astype(jnp.float32)
    far = jnp.where(jnp.abs(r) > mid, jnp.abs(r), jnp.float32(mid))  # near: the exact branch
    log_ratio = jnp.log(far / jnp.float32(mid)) / jnp.log(jnp.float32((max_position - 1) / mid))
    log_pos = jnp.ceil(log_ratio * jnp.float32(mid - 1)) + jnp.float32(mid)
    return jnp.where(jnp.abs(r) <= mid, r, log_pos * jnp.sign(r)).astype(jnp.int32)


def relative_scores(x: Array, table: Array, index: Array) -> Array:
    """scores_ij = x_i . table[index_ij]: the products of each position with every table row,
    then one gather per score (transformers' c2p / p2c).

    x: (b, n, h, d); table: (r, h, d); index: (n, m) int in [0, r). -> (b, h, n, m), x.dtype
    """
    b, n, h, _ = x.shape
    products = jnp.einsum("bihd,rhd->bhir", x, table)  # (b, h, n, r)
    index = jnp.broadcast_to(index, (b, h, *index.shape))  # (b, h, n, m)
    return jnp.take_along_axis(products, index, axis=-1)


def disentangled_attention_bias(
    q: Array,
    k: Array,
    pos_q: Array | None,
    pos_k: Array | None,
    relative: Array,
    scores: Callable[[Array, Array, Array], Array] = relative_scores,
) -> Array:
    """DeBERTa's content-to-position and position-to-content scores, unscaled:

        bias_ts = q_t . Kr[clip(delta_ts + P)]  +  k_s . Qr[clip(-delta_st + P)],

    clip to [0, 2P - 1], delta the relative positions (`relative_position_buckets`, row minus
    column): c2p reads the projected relative embeddings Kr at the query's distance to the key,
    p2c the projected Qr at the key's distance to the query, negated (transformers' two gathers,
    the second transposed), each term by `scores` (`relative_scores`, or a faster program of the
    same equation: `jaxformer.dispatch.relative_scores`). Either term is left out when its table
    is None.

    q: (b, t, h, d); k: (b, s, h, d), s = t; pos_q, pos_k: (2P, h, d); relative: (t, s) int, a
    function of t - s. Returns float32 (b, h, t, s); the caller divides by sqrt(d * scale_factor).
    """
    b, t, h, _ = q.shape
    s = k.shape[1]
    assert relative.shape == (t, s) and t == s, "self-attention only: t == s"
    bias = jnp.zeros((b, h, t, s), jnp.float32)
    if pos_k is not None:
        span = pos_k.shape[0] // 2
        index = jnp.clip(relative + span, 0, 2 * span - 1)  # (t, s)
        bias = bias + scores(q, pos_k, index).astype(jnp.float32)
    if pos_q is not None:
        span = pos_q.shape[0] // 2
        index = jnp.clip(-relative + span, 0, 2 * span - 1)  # (s, t): row s the key
        p2c = scores(k, pos_q, index).astype(jnp.float32)  # (b, h, s, t)
        bias = bias + jnp.swapaxes(p2c, -1, -2)  # (b, h, t, s)
    return bias
