"""Attention in Pallas's splash attention kernel for TPU
(`jax.experimental.pallas.ops.tpu.splash_attention`: flash attention that skips the blocks its
static mask zeroes). The dispatcher imports this module for TPU only
(on one, or tracing for one: `dispatch.target_platform`).

Padding goes in through splash's segment ids (a query attends the keys of its own segment): all
queries are in segment 0, attended keys too, padded keys in segment 1. A sliding window is
splash's static `LocalMask`, so the blocks outside it are never computed. Splash does not scale
the scores: q is scaled by 1/sqrt(d) first.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash_lib

from jaxformer import layers
from jaxformer.kernels.fused import zero_rows_without_keys

Array = jax.Array
BLOCK = 128  # splash's default block sizes (BlockSizes.get_default()): q and kv, both passes
HEAD_DIM = 128  # the TPU's lane width: head dimensions in whole vector registers


def supports(
    q: Array, k: Array, v: Array, mask: Array | None, bias: Array | None, window: int | None
) -> bool:
    """Whether the kernel takes these arguments: q, k, v (b, t|s, h, d) of one dtype, t and s
    multiples of `BLOCK`, d a multiple of `HEAD_DIM`, no bias, a mask that is None or a key mask
    (b|1, 1, 1, s). Any window."""
    del window  # a LocalMask of any width
    if bias is not None or q.ndim != 4 or not (q.dtype == k.dtype == v.dtype):
        return False
    if q.shape[1] % BLOCK or k.shape[1] % BLOCK or q.shape[-1] % HEAD_DIM:
        return False
    return mask is None or (mask.ndim == 4 and mask.shape[1:3] == (1, 1))


def segment_ids(mask: Array, batch: int, length: int) -> tuple[Array, Array]:
    """A key mask (b|1, 1, 1, s) as segment ids: (q (batch, length), kv (batch, s)) int32.

    q_t = 0 for every query; kv_s = 0 where mask_s (attended), else 1, a segment without
    queries. An example with no key to attend keeps its keys in segment 0: splash needs a key in
    every row, and those rows are zeroed afterwards.
    """
    keys = mask[:, 0, 0, :]  # (b|1, s)
    keys = keys | ~keys.any(-1, keepdims=True)
    kv = jnp.where(keys, 0, 1).astype(jnp.int32)
    kv = jnp.broadcast_to(kv, (batch, kv.shape[-1]))  # (b, s)
    return jnp.zeros((batch, length), jnp.int32), kv


def attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    window: int | None = None,
    *,
    interpret: bool = False,
) -> Array:
    """`layers.attention` without bias or dropout, in splash; shapes as there; `window`: keys
    within |t - s| <= window // 2 (`layers.sliding_window_mask`). `interpret` runs the kernel
    in Pallas's interpreter (any backend, slowly)."""
    b, t, h, d = q.shape
    s = k.shape[1]
    if window is None:
        head_mask = splash_lib.FullMask((t, s))
    else:
        head_mask = splash_lib.LocalMask((t, s), (window // 2, window // 2), offset=0)
    kernel = splash_lib.make_splash_mha_single_device(
        splash_lib.MultiHeadMask([head_mask] * h), interpret=interpret
    )
    q = q * jnp.asarray(1.0 / math.sqrt(d), q.dtype)
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # (b, h, t|s, d)
    if mask is None:
        out = jax.vmap(kernel)(q, k, v)  # (b, h, t, d)
    else:
        ids = splash_lib.SegmentIds(*segment_ids(mask, b, t))  # (b, t), (b, s)
        out = jax.vmap(kernel)(q, k, v, ids)  # (b, h, t, d)
    out = out.transpose(0, 2, 1, 3)  # (b, t, h, d)
    local = None if window is None else layers.sliding_window_mask(t, s, window)
    full = local if mask is None else (mask if local is None else mask & local)
    return zero_rows_without_keys(out, full)
