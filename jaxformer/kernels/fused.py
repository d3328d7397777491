"""Attention through `jax.nn.dot_product_attention` with XLA's implementation (the one jax picks
when none is named), and the masking fix-up that every fused call shares."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def zero_rows_without_keys(out: Array, mask: Array | None) -> Array:
    """out with the queries that have no key to attend set to zero, as `layers.attention` gives
    them: fused kernels give such a row uniform weights instead.

    out: (b, t, h, d); mask: bool broadcastable to (b, h, t, s), True = attend, or None.
    """
    if mask is None:
        return out
    b, t, h, _ = out.shape
    any_key = mask.reshape((1,) * (4 - mask.ndim) + mask.shape).any(-1)  # (b|1, h|1, t|1)
    any_key = jnp.broadcast_to(any_key, (b, h, t))  # (b, h, t)
    return jnp.where(any_key.transpose(0, 2, 1)[..., None], out, 0).astype(out.dtype)


def attention(
    q: Array, k: Array, v: Array, mask: Array | None = None, bias: Array | None = None
) -> Array:
    """`layers.attention` without dropout (the fused call takes none); shapes as there."""
    out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)  # (b, t, h, d)
    return zero_rows_without_keys(out, mask)
