"""Attention in cuDNN's flash-attention kernel: `jax.nn.dot_product_attention(...,
implementation="cudnn")`, which jax never picks by itself.

What cuDNN takes, from jax's checks (jax/_src/cudnn/fused_attention_stablehlo.py:
`check_layout`, `check_is_flash_attention`): q, k, v of one dtype, float16 or bfloat16; a head
dimension that is a multiple of 8, up to 128 (256 from compute capability 9.0, Hopper); a bias
(and a boolean mask, which jax turns into one) spanning the full (t, s) and, for training, even t
and s. A key padding mask that keeps each example's first keys goes in as
`key_value_seq_lengths`, which cuDNN applies without reading a mask, and skips the padded keys'
blocks. Other masks go in as a mask (cuDNN adds it as a bias of large negatives).

A sliding window goes in as a mask too: cuDNN's own window (`local_window_size`) is one-sided
unless the attention is causal (jax raises "cuDNN doesn't support right window" otherwise), and
an encoder's window reaches both ways.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxformer import layers
from jaxformer.kernels.fused import zero_rows_without_keys

Array = jax.Array
DTYPES = (jnp.bfloat16, jnp.float16)


def max_head_dim() -> int:
    """cuDNN's largest head dimension on the first device: 256 on Hopper and later, else 128."""
    capability = getattr(jax.devices()[0], "compute_capability", "0.0")
    return 256 if tuple(int(x) for x in capability.split(".")[:2]) >= (9, 0) else 128


def is_key_mask(mask: Array | None) -> bool:
    """Whether `mask` is one key mask per example, shared by heads and queries: (b|1, 1, 1, s)."""
    return mask is not None and mask.ndim == 4 and mask.shape[1:3] == (1, 1)


def supports(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None,
    bias: Array | None,
    window: int | None,
    head_dim_limit: int = 128,
) -> bool:
    """Whether cuDNN takes these arguments: q, k, v (b, t|s, h, d) all float16 or all bfloat16,
    d a multiple of 8 and <= `head_dim_limit` (`max_head_dim()`), no bias, and with a mask or a
    window (both become cuDNN's bias) an even t and s."""
    if bias is not None or q.dtype not in DTYPES or not (q.dtype == k.dtype == v.dtype):
        return False
    if q.ndim != 4 or q.shape[-1] % 8 or q.shape[-1] > head_dim_limit:
        return False
    t, s = q.shape[1], k.shape[1]
    return (mask is None and window is None) or (t % 2 == 0 and s % 2 == 0)


def padding_lengths(mask: Array) -> tuple[Array, Array]:
    """A key mask (b|1, 1, 1, s) as lengths: (lengths (b|1,) int32, right_padded () bool).

    lengths_i = sum_s mask_is, the keys example i attends; right_padded: mask_is = (s <
    lengths_i) for every example, i.e. each attends its first lengths_i keys. Left padding or a
    hole in the middle makes it False: then the lengths do not describe the mask.
    """
    keys = mask[:, 0, 0, :]  # (b|1, s)
    lengths = keys.sum(-1, dtype=jnp.int32)  # (b|1,)
    first = jnp.arange(keys.shape[-1])[None, :] < lengths[:, None]  # (b|1, s)
    return lengths, (keys == first).all()


def attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    window: int | None = None,
    *,
    implementation: str = "cudnn",
) -> Array:
    """`layers.attention` without bias or dropout, in cuDNN; shapes as there; `window`: keys
    within |t - s| <= window // 2 (`layers.sliding_window_mask`). `implementation` names
    jax.nn.dot_product_attention's: "xla" runs the same arguments where cuDNN is absent."""
    b, t, _, _ = q.shape
    s = k.shape[1]
    local = None if window is None else layers.sliding_window_mask(t, s, window)[None, None]

    def call(mask: Array | None, lengths: Array | None) -> Array:
        if mask is not None:  # cuDNN's bias spans (t, s): jax checks it before broadcasting
            mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)  # (b|1, h|1, t|1, s|1)
            mask = jnp.broadcast_to(mask, (*mask.shape[:2], t, s))  # (b|1, h|1, t, s)
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask, key_value_seq_lengths=lengths, implementation=implementation
        )  # (b, t, h, d)

    def as_mask(mask: Array | None) -> Array:
        if mask is None or local is None:
            return call(local if mask is None else mask, None)
        return call(mask & local, None)

    if is_key_mask(mask):
        lengths, right_padded = padding_lengths(mask)
        # An example with no key: length 1 keeps cuDNN's softmax finite; the row is zeroed below.
        lengths = jnp.broadcast_to(jnp.maximum(lengths, 1), (b,))
        out = jax.lax.cond(right_padded, lambda: call(local, lengths), lambda: as_mask(mask))
    else:
        out = as_mask(mask)
    full = local if mask is None else (mask if local is None else mask & local)
    return zero_rows_without_keys(out, full)
