"""Attention through `jax.nn.dot_product_attention`: XLA's fused attention, the implementation
that jax picks for the backend."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def attention(
    q: Array, k: Array, v: Array, mask: Array | None = None, bias: Array | None = None
) -> Array:
    """`layers.attention` without dropout (the fused call takes none); shapes as there."""
    out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)  # (b, t, h, d)
    if mask is None:
        return out
    # The fused call gives a query with no key to attend uniform weights; the equation, zeros.
    any_key = jnp.broadcast_to(mask, (*mask.shape[:-1], k.shape[1])).any(-1)  # (b|1, h|1, t|1)
    any_key = jnp.broadcast_to(any_key, (q.shape[0], q.shape[2], q.shape[1]))  # (b, h, t)
    return jnp.where(any_key.transpose(0, 2, 1)[..., None], out, 0).astype(out.dtype)
