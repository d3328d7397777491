"""Which program runs each equation: the one place that chooses between `jaxformer.layers` (the
reference) and the fast paths of `jaxformer.kernels`, by backend, dtype and arguments.

The backend is `jax.default_backend()`, or inside `target_platform(p)` the platform p: a
program exported with `jax.export.export(..., platforms=[p])` from a machine without p holds
the programs p would run ("auto"'s choice there, no CPU kernel).

The models call these functions with the choices of their config (`BertConfig.attention`,
`BertConfig.matmul`). No math here: every branch calls a function that is tested against the
reference. When a requested fast path cannot take the arguments, the fallback is logged once.

attention: "auto"      "cpu" on CPU, "cudnn" on GPU, "splash" on TPU, "xla" elsewhere, each
                       with its own fallback below; on GPU and TPU the choice is logged once;
           "reference" `layers.attention`: all heads at once, the (b, h, t, s) weights stored;
           "xla"       `kernels.fused` (jax.nn.dot_product_attention, XLA's implementation);
           "scan"      `kernels.scan`: one head at a time, no weights stored for the backward;
           "cpu"       `kernels.cpu.attention`, the compiled kernel: float32, no dropout, no
                       bias, no window, a key padding mask ((b|1, 1, 1, s)); elsewhere "scan";
           "cudnn"     `kernels.cudnn`, cuDNN's flash attention: a GPU, bfloat16 or float16,
                       head_dim a multiple of 8 up to 128 (256 on Hopper), no bias, even
                       lengths with a mask or window; a right-padded key mask becomes sequence
                       lengths; elsewhere "xla";
           "splash"    `kernels.splash`, Pallas's splash attention: a TPU, lengths multiples of
                       128, head_dim a multiple of 128, no bias, a key padding mask (as segment
                       ids), any window; elsewhere "xla".
           Attention dropout: the fused programs ("xla", "cudnn", "splash") take none, so with
           dropout on they run "reference" (logged once); "cpu" runs "scan", which has it.
           A window (keys within |t - s| <= window // 2, `layers.sliding_window_mask`) is a
           mask for "reference", "xla" and "scan", a static local mask for "splash", a mask
           for "cudnn" (whose own window is one-sided); "cpu" runs "scan".
matmul:    "auto"      for float32 on CPU with the MKL kernel built, "mkl" or "xla", whichever
                       is faster on this CPU (`kernels.autotune`, measured once per machine);
                       "xla" otherwise;
           "reference" `layers.dense` / `layers.feed_forward`, autodiff gradients;
           "xla"       XLA's dots, the feed-forward block's hand-written gradient
                       (`kernels.feed_forward`);
           "mkl"       MKL's sgemm (`kernels.cpu`) forward and backward; float32 on CPU only,
                       elsewhere "xla".
relative:  DeBERTa's relative-position scores: "reference" attention `layers.relative_scores`
           (a gather), every other program `kernels.relative` (a relative shift).
dropout:   always `kernels.dropout` (16 random bits per element; exact Threefry words).
residual:  on CPU `kernels.barrier` at each pre-LN layer's input (its gradient written out
           there, not recomputed in every later fusion); elsewhere the identity.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp

from jaxformer import layers
from jaxformer.kernels import barrier, cudnn, fused, relative, scan
from jaxformer.kernels import dropout as dropout_lib
from jaxformer.kernels import feed_forward as feed_forward_lib

log = logging.getLogger("jaxformer")
Array = jax.Array

ATTENTION = ("auto", "reference", "xla", "scan", "cpu", "cudnn", "splash")
FUSED = ("xla", "cudnn", "splash")  # no dropout
AUTO = {"cpu": "cpu", "gpu": "cudnn", "tpu": "splash"}  # by backend()
MATMUL = ("auto", "reference", "xla", "mkl")
PLATFORMS = {"cpu": "cpu", "cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "tpu": "tpu"}
# Part of jax.jit's cache key: a function traced for one platform is traced again for another.
_TARGET = jax.make_user_context(default_value=None)


@functools.cache
def _say_once(message: str) -> None:
    log.info(message)


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {allowed}")


def target_platform(platform: str):
    """A context in which the programs are chosen for `platform` (jax.export's names "cpu",
    "cuda", "rocm", "tpu", or "gpu") instead of this process's backend."""
    _check("platform", platform, tuple(PLATFORMS))
    return _TARGET(PLATFORMS[platform])


def backend() -> str:
    """The backend the programs are chosen for: `target_platform`'s, else jax's default."""
    return _TARGET.value or jax.default_backend()


# ----------------------------------------------------------------------------- attention


def attention_program(
    implementation: str,
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    dropout: bool = False,
    window: int | None = None,
) -> str:
    """The program that runs `implementation` on these arguments: "reference", "xla", "scan",
    "cpu", "cudnn" or "splash"."""
    _check("attention", implementation, ATTENTION)
    platform = backend()
    chosen = AUTO.get(platform, "xla") if implementation == "auto" else implementation
    if chosen in FUSED and dropout:
        _say_once(f"attention={implementation!r} with dropout runs 'reference' (no fused dropout)")
        return "reference"
    if chosen == "cpu":
        from jaxformer.kernels import cpu

        applies = not dropout and window is None and cpu.attention_supports(q, k, v, mask, bias)
        if not (applies and cpu.attention_available()):
            if implementation == "cpu":
                why = "needs no dropout, float32, no bias, a key mask, no window"
                _say_once(
                    f"attention='cpu' runs 'scan' (the kernel {why if not applies else 'off'})"
                )
            chosen = "scan"
    elif chosen == "cudnn":
        why = None
        if platform != "gpu":
            why = "needs a GPU"
        elif not cudnn.supports(q, k, v, mask, bias, window, limit := cudnn.max_head_dim()):
            why = f"needs bf16/fp16, head_dim 8k <= {limit}, no bias, even lengths with a mask"
        chosen = _fused_or_xla(implementation, "cudnn", why)
    elif chosen == "splash":
        why = "needs a TPU" if platform != "tpu" else None
        if why is None:
            from jaxformer.kernels import splash  # Pallas TPU code: imported for TPU only

            if not splash.supports(q, k, v, mask, bias, window):
                why = "needs lengths and head_dim multiples of 128, no bias, a key mask"
        chosen = _fused_or_xla(implementation, "splash", why)
    return chosen


def _fused_or_xla(implementation: str, program: str, why: str | None) -> str:
    """`program`, or "xla" when `why` says it cannot run; "auto"'s choice is logged once."""
    if why is not None:
        _say_once(f"attention={implementation!r} runs 'xla' ({program} {why})")
        return "xla"
    if implementation == "auto":
        _say_once(f"attention='auto' runs {program!r}")
    return program


def attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    window: int | None = None,
    implementation: str = "auto",
) -> Array:
    """`layers.attention` by the chosen program; dropout on the weights when `dropout_rng` is
    given. q: (b, t, h, d); k, v: (b, s, h, d); mask: bool broadcastable to (b, h, t, s), True =
    attend; bias: float broadcastable to (b, h, t, s); window: if given, query t attends only
    keys with |t - s| <= window // 2 (`layers.sliding_window_mask`). Returns (b, t, h, d)."""
    use_dropout = dropout_rate > 0.0 and dropout_rng is not None
    program = attention_program(implementation, q, k, v, mask, bias, use_dropout, window)
    if program == "cudnn":
        return cudnn.attention(q, k, v, mask, window)
    if program == "splash":
        from jaxformer.kernels import splash

        return splash.attention(q, k, v, mask, window)
    if window is not None:
        local = layers.sliding_window_mask(q.shape[1], k.shape[1], window)  # (t, s)
        mask = local if mask is None else mask & local
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


def relative_scores(implementation: str = "auto"):
    """The function that computes `layers.relative_scores` for the attention `implementation`:
    the gather itself for "reference", the relative shift (`kernels.relative`) otherwise."""
    _check("attention", implementation, ATTENTION)
    return layers.relative_scores if implementation == "reference" else relative.relative_scores


# ----------------------------------------------------------------------------- GEMMs


def matmul_program(implementation: str, *arrays: Array) -> str:
    """The program that runs `implementation` on these operands: "reference", "xla" or "mkl"."""
    _check("matmul", implementation, MATMUL)
    if implementation not in ("auto", "mkl"):
        return implementation
    float32 = all(a.dtype == jnp.float32 for a in arrays)
    if float32 and backend() == "cpu":
        from jaxformer.kernels import autotune, cpu

        if cpu.mkl_available():
            # "auto": MKL where it is the faster on this machine (measured once, cached).
            return "mkl" if implementation == "mkl" else autotune.fastest_gemm()
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


def residual(x: Array) -> Array:
    """x, a pre-LN layer's input (its residual stream); on CPU its gradient is written out here
    (`kernels.barrier.gradient_barrier`)."""
    return barrier.gradient_barrier(x) if backend() == "cpu" else x
