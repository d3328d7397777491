"""Which program runs each equation: the one place that chooses between `jaxformer.layers` (the
reference) and the fast paths of `jaxformer.kernels`, by backend, dtype and arguments.

The models call these functions with the choices of their config (`BertConfig.attention`,
`BertConfig.matmul`). No math here: every branch calls a function that is tested against the
reference. When a requested fast path cannot take the arguments, the fallback is logged once.

attention: "auto"      "cpu" on CPU, "xla" elsewhere;
           "reference" `layers.attention`: all heads at once, the (b, h, t, s) weights stored;
           "xla"       `kernels.fused` (jax.nn.dot_product_attention), no dropout;
           "scan"      `kernels.scan`: one head at a time, no weights stored for the backward;
           "cpu"       `kernels.cpu.attention`, the compiled kernel: float32, no dropout, no
                       bias, a key padding mask ((b|1, 1, 1, s)); elsewhere "scan".
matmul:    "auto"      "mkl" for float32 on CPU with the MKL kernel built, "xla" otherwise;
           "reference" `layers.dense` / `layers.feed_forward`, autodiff gradients;
           "xla"       XLA's dots, the feed-forward block's hand-written gradient
                       (`kernels.feed_forward`);
           "mkl"       MKL's sgemm (`kernels.cpu`) forward and backward; float32 on CPU only,
                       elsewhere "xla".
dropout:   always `kernels.dropout` (16 random bits per element; exact Threefry words).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp

from jaxformer import layers
from jaxformer.kernels import dropout as dropout_lib
from jaxformer.kernels import feed_forward as feed_forward_lib
from jaxformer.kernels import fused, scan

log = logging.getLogger("jaxformer")
Array = jax.Array

ATTENTION = ("auto", "reference", "xla", "scan", "cpu")
MATMUL = ("auto", "reference", "xla", "mkl")


@functools.cache
def _say_once(message: str) -> None:
    log.info(message)


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {allowed}")


# ----------------------------------------------------------------------------- attention


def attention_program(
    implementation: str,
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    dropout: bool = False,
) -> str:
    """The program that runs `implementation` on these arguments: "reference", "xla", "scan"
    or "cpu"."""
    _check("attention", implementation, ATTENTION)
    chosen = implementation
    if chosen == "auto":
        chosen = "cpu" if jax.default_backend() == "cpu" else "xla"
    if chosen == "cpu":
        from jaxformer.kernels import cpu

        applies = not dropout and cpu.attention_supports(q, k, v, mask, bias)
        if not (applies and cpu.attention_available()):
            if implementation == "cpu":
                why = "needs no dropout, float32, no bias, a key mask" if not applies else "off"
                _say_once(f"attention='cpu' runs 'scan' (the kernel {why})")
            chosen = "scan"
    if chosen == "xla" and dropout:
        _say_once(f"attention={implementation!r} with dropout runs 'reference' (no fused dropout)")
        chosen = "reference"
    return chosen


def attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    implementation: str = "auto",
) -> Array:
    """`layers.attention` by the chosen program; dropout on the weights when `dropout_rng` is
    given. q: (b, t, h, d); k, v: (b, s, h, d); mask: bool broadcastable to (b, h, t, s), True =
    attend; bias: float broadcastable to (b, h, t, s). Returns (b, t, h, d)."""
    use_dropout = dropout_rate > 0.0 and dropout_rng is not None
    program = attention_program(implementation, q, k, v, mask, bias, use_dropout)
    if program == "cpu":
        from jaxformer.kernels import cpu

        return cpu.attention(q, k, v, mask)
    if program == "scan":
        rng = dropout_rng if use_dropout else None
        return scan.attention(q, k, v, mask, bias, dropout_rate, rng)
    if program == "xla":
        return fused.attention(q, k, v, mask, bias)
    drop = functools.partial(dropout, rate=dropout_rate, rng=dropout_rng) if use_dropout else None
    return layers.attention(q, k, v, mask, bias, dropout=drop)


# ----------------------------------------------------------------------------- GEMMs


def matmul_program(implementation: str, *arrays: Array) -> str:
    """The program that runs `implementation` on these operands: "reference", "xla" or "mkl"."""
    _check("matmul", implementation, MATMUL)
    if implementation not in ("auto", "mkl"):
        return implementation
    float32 = all(a.dtype == jnp.float32 for a in arrays)
    if float32 and jax.default_backend() == "cpu":
        from jaxformer.kernels import cpu

        if cpu.mkl_available():
            return "mkl"
    if implementation == "mkl":
        _say_once("matmul='mkl' runs 'xla' (MKL takes float32 on CPU, with the mkl extra)")
    return "xla"


def dense(x: Array, w: Array, b: Array, contract: int = 1, implementation: str = "auto") -> Array:
    """`layers.dense` (x: (..., *in), w: (*in, *out), b: (*out,)) by the chosen program."""
    if matmul_program(implementation, x, w, b) == "mkl":
        from jaxformer.kernels import cpu

        return cpu.dense(x, w, b, contract)
    return layers.dense(x, w, b, contract)


def feed_forward(
    x: Array,
    w1: Array,
    b1: Array,
    w2: Array,
    b2: Array,
    activation: str = "gelu",
    implementation: str = "auto",
) -> Array:
    """`layers.feed_forward` (x: (b, t, m), w1: (m, f), w2: (f, m)) by the chosen program."""
    program = matmul_program(implementation, x, w1, b1, w2, b2)
    if program == "reference":
        return layers.feed_forward(x, w1, b1, w2, b2, activation)
    return feed_forward_lib.feed_forward(x, w1, b1, w2, b2, activation, gemm=program)


def dropout(x: Array, rate: float, rng: Array) -> Array:
    """`layers.dropout` with cheap random bits (`kernels.dropout`)."""
    return dropout_lib.dropout(x, rate, rng)
