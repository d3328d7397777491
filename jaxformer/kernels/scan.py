"""Attention one head at a time: `layers.attention`'s equation as a program that suits XLA:CPU.

`lax.map` over the heads, each head's (b, t, s) scores recomputed in the backward pass. Working
on one (b, t, s) block per head keeps XLA:CPU away from the large (b, h, t, s) transposes and
layouts of the batched form, and, as in flash attention, the backward pass keeps no float
attention matrix, only q, k, v (and, with dropout, the one-byte keep mask). The batch axis stays
a parallel axis inside the loop, so batch sharding is unaffected. Two more savings:
- the softmax is shifted by a cheap bound instead of the row max (`shifted_softmax`);
- without dropout, v gets a column of ones, so the GEMM p [v 1] also yields the softmax's
  denominator sum_s p, and no separate pass over p sums it.
docs/design.md has what it buys and the command that measures it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxformer.kernels import dropout as dropout_lib

Array = jax.Array
DROPOUT_MASK = "attention_dropout_mask"  # checkpoint name of the keep mask


def shifted_softmax(
    scores: Array, mask: Array | None, finish: Callable[[Array], tuple[Array, Array]]
) -> tuple[Array, Array]:
    """finish(p) for p = exp(scores - c) with masked keys at zero, where finish returns
    (anything, l) with l = max(sum_s p, tiny); softmax(scores) = p / l over the last axis.

    Any shift c with max - 88 < c <= max + 30 gives the same float32 softmax (max: the row's max
    over unmasked keys): no exp overflows, and only weights below e^-57 of the largest are lost to
    underflow. The row max is the slowest operation of the loop on XLA:CPU (a max reduction along
    the row), so c = (score of key 0) + 30 is used, masked or not. Exponents are capped at 88, so
    a c too low shows as l >= e^88, and a c too high as l < e^-30 in a row with a key to attend;
    then the block is computed again with c = max. c only shifts: no gradient flows through it.
    Masked scores need not be replaced first: their weights are zeroed after the exp.
    """

    def attempt(shift):
        p = jnp.exp(jnp.minimum(scores - jax.lax.stop_gradient(shift), 88.0))
        if mask is not None:
            p = jnp.where(mask, p, 0.0)  # a fully masked row: all zero, output zero
        return finish(p)

    result, denominator = attempt(scores[..., :1] + 30.0)
    no_underflow = denominator > math.exp(-30.0)
    if mask is not None:  # a row with no key to attend has l = tiny, rightly
        no_underflow |= ~mask.any(-1, keepdims=True)
    in_range = (denominator < 1e38) & no_underflow
    return jax.lax.cond(
        in_range.all(),
        lambda: (result, denominator),
        lambda: attempt(
            (scores if mask is None else jnp.where(mask, scores, -jnp.inf)).max(-1, keepdims=True)
        ),
    )


def _row_sum(p: Array) -> tuple[Array, Array]:
    return p, jnp.maximum(p.sum(-1, keepdims=True), jnp.finfo(jnp.float32).tiny)


def softmax_numerator(scores: Array, mask: Array | None) -> tuple[Array, Array]:
    """(p, l) with softmax(scores) = p / l over the last axis (see `shifted_softmax`)."""
    return shifted_softmax(scores, mask, _row_sum)


def _to_4d(x: Array) -> Array:
    """Left-pads the shape of a mask or bias with ones up to (b, h, t, s) broadcasting rank."""
    return x.reshape((1,) * (4 - x.ndim) + x.shape)


def attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
) -> Array:
    """`layers.attention` one head at a time; dropout (16-bit bits, `kernels.dropout`) when
    `dropout_rng` is given. Shapes as `layers.attention`: q (b, t, h, d) -> (b, t, h, d)."""
    heads = q.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    use_dropout = dropout_rate > 0.0 and dropout_rng is not None
    if not use_dropout:  # v_s -> [v_s, 1]: the (d+1)-th output is sum_s p_ts
        v = jnp.concatenate([v, jnp.ones((*v.shape[:-1], 1), v.dtype)], axis=-1)
    xs = {  # head axis first: the loop runs over it
        "q": (q * scale).transpose(2, 0, 1, 3),  # (h, b, t, d)
        "k": k.transpose(2, 0, 1, 3),  # (h, b, s, d)
        "v": v.transpose(2, 0, 1, 3),  # (h, b, s, d), or (h, b, s, d + 1) without dropout
    }
    shared = {}  # masks and biases without a head axis: the same for every head
    for name, x in (("mask", mask), ("bias", bias)):
        if x is None:
            continue
        x = _to_4d(x)  # (b|1, h|1, t|1, s|1)
        if x.shape[1] == 1:
            shared[name] = x[:, 0]  # (b|1, t|1, s|1)
        else:
            xs[name] = jnp.broadcast_to(x, (x.shape[0], heads, *x.shape[2:])).transpose(1, 0, 2, 3)
    if use_dropout:
        xs["rng"] = jax.random.split(dropout_rng, heads)

    def one_head(x: dict) -> Array:
        x = {**shared, **x}
        scores = jnp.einsum("btd,bsd->bts", x["q"], x["k"]).astype(jnp.float32)  # (b, t, s)
        if "bias" in x:
            scores = scores + x["bias"]

        def times_v(p):  # (b, t, s) -> (p v: (b, t, d), l: (b, t, 1))
            out = jnp.einsum(
                "bts,bsd->btd", p.astype(x["v"].dtype), x["v"], preferred_element_type=jnp.float32
            )  # (b, t, d + 1)
            tiny = jnp.finfo(jnp.float32).tiny
            return out[..., :-1], jnp.maximum(out[..., -1:], tiny)

        if "rng" in x:  # the denominator sums p before dropout: a pass of its own
            p, denominator = softmax_numerator(scores, x.get("mask"))
            p = dropout_lib.dropout(p, dropout_rate, x["rng"], name=DROPOUT_MASK)
            out = jnp.einsum("bts,bsd->btd", p.astype(x["v"].dtype), x["v"])  # (b, t, d)
        else:
            out, denominator = shifted_softmax(scores, x.get("mask"), times_v)
        # Times the reciprocal, not divided: the backward pass of a division fuses into a
        # matmul epilogue that XLA's oneDNN path cannot run (see runtime/onednn.py); this can.
        return (out * (1.0 / denominator)).astype(q.dtype)

    # The backward pass recomputes each head's weights but keeps the dropout mask (one byte per
    # weight) rather than drawing its random bits a second time.
    policy = jax.checkpoint_policies.save_only_these_names(DROPOUT_MASK)
    out = jax.lax.map(jax.checkpoint(one_head, policy=policy), xs)  # (h, b, t, d)
    return out.transpose(1, 2, 0, 3)  # (b, t, h, d)
