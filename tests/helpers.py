"""NumPy references written from the equations, and random inputs, for the attention tests.

Not a test module: test modules import it as `helpers` (see conftest.py).
"""

import math

import jax.numpy as jnp
import numpy as np


def np_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_attention(q, k, v, mask=None, bias=None) -> np.ndarray:
    """o_t = sum_s e_ts v_s, e_ts = softmax over the unmasked s of q_t . k_s / sqrt(d) + bias_ts,
    per example and head, in float64; a query with no key to attend gets zeros.

    q: (b, t, h, d); k, v: (b, s, h, d); mask: bool and bias: float, each broadcastable to
    (b, h, t, s) (a (b, t, s) mask is read as shared by the heads).
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, t, h, d = q.shape
    s = k.shape[1]
    if mask is None:
        mask = np.ones((b, h, t, s), bool)
    mask = np.asarray(mask, bool)
    if mask.ndim == 3:  # (b, t, s)
        mask = mask[:, None]
    mask = np.broadcast_to(mask, (b, h, t, s))
    bias = np.broadcast_to(np.zeros(()) if bias is None else np.asarray(bias), (b, h, t, s))
    out = np.zeros((b, t, h, d))
    for bi in range(b):
        for hi in range(h):
            for ti in range(t):
                keys = np.flatnonzero(mask[bi, hi, ti])
                if len(keys) == 0:
                    continue
                scores = np.array(
                    [
                        q[bi, ti, hi] @ k[bi, si, hi] / math.sqrt(d) + bias[bi, hi, ti, si]
                        for si in keys
                    ]
                )
                weights = np_softmax(scores)
                out[bi, ti, hi] = sum(
                    w * v[bi, si, hi] for w, si in zip(weights, keys, strict=True)
                )
    return out


def qkv(rng: np.random.Generator, b=2, t=5, s=5, h=3, d=4):
    """Standard normal q (b, t, h, d), k and v (b, s, h, d), as float32 jax arrays."""
    return tuple(
        jnp.asarray(rng.normal(size=shape), jnp.float32)
        for shape in ((b, t, h, d), (b, s, h, d), (b, s, h, d))
    )


def key_padding_mask(lengths, s: int, left: bool = False) -> jnp.ndarray:
    """(b, 1, 1, s) bool: the first (or with `left`, the last) lengths[i] keys of example i."""
    position = np.arange(s)[None, :]
    lengths = np.asarray(lengths)[:, None]
    keys = position >= s - lengths if left else position < lengths  # (b, s)
    return jnp.asarray(keys)[:, None, None, :]


def mask_and_bias(rng: np.random.Generator, mask_shape, bias_shape, t: int = 6):
    """A causal mask broadcast to `mask_shape` (per example and head, with a few more keys
    hidden at random, key 0 always kept) and a random float32 bias of `bias_shape`; None for a
    None shape."""
    mask = None
    if mask_shape is not None:
        mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), mask_shape)
        if mask_shape[0] == 2:
            mask = mask & jnp.asarray(rng.random(mask_shape) > 0.2).at[..., 0].set(True)
    bias = None if bias_shape is None else jnp.asarray(rng.normal(size=bias_shape), jnp.float32)
    return mask, bias


def gathered_disentangled_bias(q, k, pos_q, pos_k, relative):
    """DeBERTa's bias as transformers' disentangled_att_bias forms it, differentiable: the
    (b, h, t, 2P) products of q with every Kr row and of k with every Qr row, then one gather
    per (t, s) at clip(delta_ts + P) and clip(-delta_st + P), the second transposed.
    q: (b, t, h, d); k: (b, s, h, d); pos_q, pos_k: (2P, h, d) or None -> float32 (b, h, t, s)."""
    b, t, h, _ = q.shape
    s = k.shape[1]
    bias = jnp.zeros((b, h, t, s), jnp.float32)
    if pos_k is not None:
        span = pos_k.shape[0] // 2
        index = jnp.broadcast_to(jnp.clip(relative + span, 0, 2 * span - 1), (b, h, t, s))
        c2p = jnp.einsum("bthd,rhd->bhtr", q, pos_k).astype(jnp.float32)  # (b, h, t, 2P)
        bias = bias + jnp.take_along_axis(c2p, index, axis=-1)
    if pos_q is not None:
        span = pos_q.shape[0] // 2
        index = jnp.broadcast_to(jnp.clip(-relative + span, 0, 2 * span - 1), (b, h, s, t))
        p2c = jnp.einsum("bshd,rhd->bhsr", k, pos_q).astype(jnp.float32)  # (b, h, s, 2P)
        bias = bias + jnp.swapaxes(jnp.take_along_axis(p2c, index, axis=-1), -1, -2)
    return bias
