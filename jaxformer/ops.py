"""The Transformer encoder's equations as pure JAX functions (no Flax, no parameters held).

Mirrors "Attention Is All You Need" (Vaswani et al. 2017) and BERT (Devlin et al. 2019).

Einsum legend: b batch, t query position, s key position, h heads, d head dim,
m model width, f feed-forward width.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def layer_norm(x: Array, scale: Array, bias: Array, eps: float) -> Array:
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis, statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale + bias).astype(x.dtype)


def gelu_exact(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=True)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": gelu_exact,  # BERT's GELU: x * Phi(x) with the erf
    "gelu_new": gelu_tanh,  # GPT-2's tanh approximation
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": jax.nn.relu,  # the original Transformer's
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def feed_forward(
    x: Array, w1: Array, b1: Array, w2: Array, b2: Array, activation: str = "gelu"
) -> Array:
    """W_2 act(W_1 x + b_1) + b_2, position-wise.

    x: (b, t, m), w1: (m, f), b1: (f,), w2: (f, m), b2: (m,) -> (b, t, m)
    """
    hidden = ACTIVATIONS[activation](x @ w1 + b1)  # (b, t, f)
    return hidden @ w2 + b2


def dropout(x: Array, rate: float, rng: Array | None) -> Array:
    """Inverted dropout: x * keep / (1 - rate), keep ~ Bernoulli(1 - rate) for each element.

    Each element gets 16 random bits (two per 32-bit draw) rather than the 32 that
    `jax.random.bernoulli` spends: random-number generation is a large share of a CPU training
    step, and the keep probability round((1 - rate) * 2^16) / 2^16 is within 1e-5 of 1 - rate.
    """
    if rate == 0.0 or rng is None:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    *lead, n = x.shape
    if n % 2:
        keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    else:
        words = jax.random.bits(rng, (*lead, n // 2), jnp.uint32)  # (..., n/2)
        halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(x.shape)  # (..., n)
        keep = halves.astype(jnp.uint32) < round((1.0 - rate) * 2**16)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _attention_weights_einsum(q: Array, k: Array, mask: Array | None, bias: Array | None) -> Array:
    """softmax_s(q_t . k_s / sqrt(d) + bias) with masked keys at exactly zero. -> (b, h, t, s)"""
    scores = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
    scores = scores.astype(jnp.float32)  # softmax in float32 whatever the compute dtype
    if bias is not None:
        scores = scores + bias
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    # A fully masked row would softmax to uniform weights: zero it instead (and never NaN).
    return jnp.where(mask, probs, 0.0)


def dot_product_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    implementation: str = "einsum",
) -> Array:
    """Multi-head scaled dot-product attention: o_t = sum_s softmax_s(q_t . k_s / sqrt(d)) v_s.

    q: (b, t, h, d); k, v: (b, s, h, d); mask: bool broadcastable to (b, h, t, s), True = attend;
    bias: float broadcastable to (b, h, t, s), added to the scores. Returns (b, t, h, d).

    Masked keys get exactly zero weight; a query whose keys are all masked outputs zeros.
    `implementation="fused"` calls `jax.nn.dot_product_attention` (XLA's fused path, cuDNN on
    GPU); it has no dropout, so with dropout active the einsum path is used.
    """
    if implementation not in ("einsum", "fused"):
        raise ValueError(f"implementation must be 'einsum' or 'fused', got {implementation!r}")
    use_dropout = dropout_rate > 0.0 and dropout_rng is not None
    if implementation == "fused" and not use_dropout:
        out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)  # (b, t, h, d)
        if mask is None:
            return out
        # The fused kernel gives fully masked rows uniform weights; match the einsum path.
        any_key = jnp.broadcast_to(mask, (*mask.shape[:-1], k.shape[1])).any(-1)  # (b, h, t)
        any_key = jnp.broadcast_to(any_key, (q.shape[0], q.shape[2], q.shape[1]))
        return jnp.where(any_key.transpose(0, 2, 1)[..., None], out, 0).astype(out.dtype)
    probs = _attention_weights_einsum(q, k, mask, bias)  # (b, h, t, s)
    if use_dropout:
        probs = dropout(probs, dropout_rate, dropout_rng)
    return jnp.einsum("bhts,bshd->bthd", probs.astype(v.dtype), v)


def attention_weights(q: Array, k: Array, mask: Array | None = None, bias: Array | None = None):
    """The (b, h, t, s) attention matrix e_ts, for inspection and tests."""
    return _attention_weights_einsum(q, k, mask, bias)


def padding_mask(attention_mask: Array) -> Array:
    """(b, s) 1/0 token mask -> (b, 1, 1, s) boolean key mask for `dot_product_attention`."""
    return attention_mask.astype(bool)[:, None, None, :]


def sinusoidal_positions(length: int, width: int, dtype=jnp.float32) -> Array:
    """PE(p, 2i) = sin(p / 10000^(2i/m)), PE(p, 2i+1) = cos(...). -> (length, width)"""
    position = jnp.arange(length, dtype=jnp.float32)[:, None]  # (t, 1)
    inv_freq = jnp.exp(-math.log(10000.0) * jnp.arange(0, width, 2, dtype=jnp.float32) / width)
    angles = position * inv_freq  # (t, ceil(m/2))
    pe = jnp.zeros((length, width), jnp.float32)
    pe = pe.at[:, 0::2].set(jnp.sin(angles))
    pe = pe.at[:, 1::2].set(jnp.cos(angles[:, : width // 2]))
    return pe.astype(dtype)


def embed(
    input_ids: Array,
    token_type_ids: Array,
    position_ids: Array,
    token_table: Array,
    type_table: Array,
    position_table: Array,
) -> Array:
    """x = E_tok[ids] + E_type[types] + P[positions]. ids: (b, t) -> (b, t, m)"""
    return (
        jnp.take(token_table, input_ids, axis=0)
        + jnp.take(type_table, token_type_ids, axis=0)
        + jnp.take(position_table, position_ids, axis=0)
    )


def cross_entropy(logits: Array, labels: Array, weights: Array | None = None) -> Array:
    """Mean softmax cross-entropy over examples with weight 1 (padding examples weigh 0)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    if weights is None:
        return nll.mean()
    return (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)
