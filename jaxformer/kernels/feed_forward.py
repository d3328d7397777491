"""`layers.feed_forward` with a hand-written gradient, its GEMMs in XLA or in MKL.

Autodiff recomputes act'(z), z = W_1 x + b_1, in the backward pass, in a fusion that XLA:CPU
writes transposed, (f, tokens), for the W_1 gradient: a layout oneDNN multiplies at about half
its rate. Here act'(z) is computed beside act(z) in the forward pass and kept, and the backward
pass is the chain rule on (tokens, width) matrices: dz = (g W_2^T) * act'(z) is one GEMM with a
multiply epilogue (a oneDNN post-op), and every GEMM takes row-major operands. A
`jax.custom_vjp`: reverse mode works through it, forward mode (`jax.jvp`) does not.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxformer import layers

Array = jax.Array
GEMMS = ("xla", "mkl")


def feed_forward(
    x: Array,
    w1: Array,
    b1: Array,
    w2: Array,
    b2: Array,
    activation: str = "gelu",
    gemm: str = "xla",
) -> Array:
    """W_2 act(W_1 x + b_1) + b_2; x: (b, t, m), w1: (m, f), w2: (f, m). gemm: "xla" (dots) or
    "mkl" (`kernels.cpu.gemm`, float32 on CPU; check `kernels.cpu.mkl_available()` first)."""
    if activation not in layers.ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(layers.ACTIVATIONS)}, got {activation!r}"
        )
    if gemm not in GEMMS:
        raise ValueError(f"gemm must be one of {GEMMS}, got {gemm!r}")
    return _feed_forward(activation, gemm, x, w1, b1, w2, b2)


def _ops(gemm: str):
    """(a @ b + bias over a's last axis, a @ b^T, a^T @ b on matrices) in the chosen library."""
    if gemm == "mkl":
        from jaxformer.kernels import cpu

        def affine(a, b, bias):
            return cpu.gemm(a.reshape(-1, a.shape[-1]), b, bias).reshape(*a.shape[:-1], -1)

        return (
            affine,
            lambda a, b: cpu.gemm(a, b, trans_b=True),
            lambda a, b: cpu.gemm(a, b, trans_a=True),
        )
    return (
        lambda a, b, bias: a @ b + bias,
        lambda a, b: a @ b.T,
        lambda a, b: jnp.einsum("nm,nf->mf", a, b),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _feed_forward(activation: str, gemm: str, x, w1, b1, w2, b2):
    act, (affine, _, _) = layers.ACTIVATIONS[activation], _ops(gemm)
    return affine(act(affine(x, w1, b1)), w2, b2)


def _feed_forward_fwd(activation, gemm, x, w1, b1, w2, b2):
    act, (affine, _, _) = layers.ACTIVATIONS[activation], _ops(gemm)
    z = affine(x, w1, b1)  # (b, t, f)
    hidden, slope = jax.jvp(act, (z,), (jnp.ones_like(z),))  # act(z), act'(z)
    return affine(hidden, w2, b2), (x, hidden, slope, w1, b1, w2, b2)


def _feed_forward_bwd(activation, gemm, residuals, g):
    x, hidden, slope, w1, b1, w2, b2 = residuals
    _, times_t, t_times = _ops(gemm)
    m, f = w1.shape
    x2, g = x.reshape(-1, m), g.reshape(-1, g.shape[-1])  # (n, m), n = b t
    hidden, slope = hidden.reshape(-1, f), slope.reshape(-1, f)  # (n, f)
    dz = times_t(g, w2) * slope  # (n, f)
    grads = (
        times_t(dz, w1).reshape(x.shape),  # dx
        t_times(x2, dz),  # dw1
        dz.sum(0),  # db1
        t_times(hidden, g),  # dw2
        g.sum(0),  # db2
    )
    return tuple(d.astype(p.dtype) for d, p in zip(grads, (x, w1, b1, w2, b2), strict=True))


_feed_forward.defvjp(_feed_forward_fwd, _feed_forward_bwd)
