"""jaxformer's compiled CPU kernels, called through XLA's FFI: attention's forward pass, and GEMMs
through Intel MKL.

Attention: XLA:CPU runs the pure-JAX attention (`ops.dot_product_attention`) as many small GEMMs
and elementwise passes, with the (t, s) weights and transposed copies of q, k and v going through
memory; PyTorch runs a fused flash-attention kernel there. `csrc/attention_cpu.cc` is such a
kernel: one task per (example, head) on XLA's intra-op thread pool, the head's unmasked keys packed
once, then four query rows at a time: scores, softmax and the weighted sum of values, all in cache.
Padded keys cost nothing.

GEMMs: `csrc/gemm_cpu.cc` runs the dense layers' matrix multiplies (`ops.dense`,
`ops.feed_forward` with implementation "mkl") with MKL's sgemm, the library under PyTorch's CPU
matmuls, where XLA would use oneDNN. MKL comes from the `mkl` wheel (`pip install
'jaxformer[mkl]'`) and runs with its sequential threading layer: the kernel splits each GEMM
across XLA's own intra-op threads, so no OpenMP thread team competes with XLA's threads.

Both are built on first use with the system's C++ compiler (`$CXX`, else g++, c++ or clang++;
about 15 s) against the installed jaxlib's FFI headers, for this machine's CPU (-march=native),
into `$JAXFORMER_CACHE_DIR` (default ~/.cache/jaxformer). The library's name carries a hash of the
sources, jaxlib's version, the compiler and the CPU's flags, and it is written under a temporary
name and renamed, so a cache never holds a stale or half-written build. With no compiler, a failed
build, or `JAXFORMER_CPU_KERNELS=0`, `available()` and `mkl_available()` are False (the reason is
logged once) and the model runs in pure JAX; without MKL, `mkl_available()` is False.

Only forward passes are compiled. Attention's gradient is that of the pure-JAX "scan"
implementation (`attention`'s custom VJP), so training with attention dropout, which this kernel
does not do, never uses it. A GEMM's gradient is two more GEMMs through the same kernel.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.xla_metadata import set_xla_metadata

log = logging.getLogger("jaxformer")
Array = jax.Array

SOURCES = tuple(
    Path(__file__).resolve().parent / "csrc" / f for f in ("attention_cpu.cc", "gemm_cpu.cc")
)
TARGET = "jaxformer_attention_forward"
GEMM_TARGET = "jaxformer_gemm"
MKL_THREADING_SEQUENTIAL = 1  # MKL_Set_Threading_Layer's code for the sequential layer
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
MAX_HEAD_DIM = 128  # the kernel's limit (kMaxHeadDim in csrc/attention_cpu.cc)


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxformer"
    return Path(os.environ.get("JAXFORMER_CACHE_DIR", default))


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(compiler: str) -> Path:
    """The kernel's shared library for this source, jaxlib, compiler and CPU (built if needed)."""
    import jaxlib

    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    key = hashlib.sha256(
        b"\0".join(
            s.encode() if isinstance(s, str) else s
            for s in (
                *(source.read_bytes() for source in SOURCES),
                jaxlib.__version__,
                version,
                " ".join(FLAGS),
                _cpu_flags(),
            )
        )
    ).hexdigest()[:16]
    out = cache_dir() / f"cpu_kernels-{key}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("Building jaxformer's CPU kernels (once per machine and jaxlib): %s", out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as tmp:
        partial = Path(tmp) / out.name
        cmd = [
            compiler,
            *FLAGS,
            f"-I{jax.ffi.include_dir()}",
            *map(str, SOURCES),
            "-o",
            str(partial),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{result.stderr[-2000:]}")
        os.replace(partial, out)  # atomic: the cache never holds a half-written library
    return out


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The kernels' shared library, built if needed; None (the log says why, once) if not."""
    if os.environ.get("JAXFORMER_CPU_KERNELS", "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        log.warning(
            "No C++ compiler (set $CXX, or install g++): jaxformer's CPU kernels are off; "
            "attention and GEMMs run in pure JAX."
        )
        return None
    try:
        return ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        log.warning("jaxformer's CPU kernels are off (the model runs in pure JAX): %s", e)
        return None


@functools.cache
def available() -> bool:
    """Whether the attention kernel is built and registered with XLA:CPU (if not, the log says
    why, once)."""
    library = _library()
    if library is None:
        return False
    try:
        handler = jax.ffi.pycapsule(library.JaxformerAttentionForward)
        jax.ffi.register_ffi_target(TARGET, handler, platform="cpu")
        jax.ffi.register_ffi_target_as_batch_partitionable(TARGET)  # shards along b
    except (AttributeError, RuntimeError) as e:
        log.warning("jaxformer's CPU attention kernel is off (attention runs in pure JAX): %s", e)
        return False
    return True


def mkl_runtime() -> Path | None:
    """MKL's single dynamic library (libmkl_rt): $JAXFORMER_MKL_RT, else the `mkl` wheel's."""
    if path := os.environ.get("JAXFORMER_MKL_RT"):
        return Path(path)
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = sorted(f for f in files if f.name.startswith("libmkl_rt.so"))
    return Path(found[0].locate()).resolve() if found else None


@functools.cache
def mkl_available() -> bool:
    """Whether the MKL GEMM kernel is registered with XLA:CPU: the kernels built, and MKL found
    (`pip install 'jaxformer[mkl]'`) and set to its sequential threading layer. If MKL is
    installed but cannot be used, the log says why, once."""
    runtime = mkl_runtime()
    if runtime is None or os.environ.get("JAXFORMER_MKL", "1") == "0":
        return False
    library = _library()
    if library is None:
        return False
    try:
        mkl = ctypes.CDLL(str(runtime), mode=ctypes.RTLD_GLOBAL)
        # Sequential MKL (this call outranks $MKL_THREADING_LAYER): the kernel splits each GEMM
        # across XLA's intra-op threads itself.
        layer = mkl.MKL_Set_Threading_Layer(ctypes.c_int(MKL_THREADING_SEQUENTIAL))
        if layer != MKL_THREADING_SEQUENTIAL:
            raise RuntimeError(
                f"MKL's threading layer is {layer}, not sequential ({MKL_THREADING_SEQUENTIAL}): "
                "something in this process (numpy or scipy built on MKL?) used MKL first, with "
                "another layer"
            )
        library.jaxformer_set_sgemm(ctypes.cast(mkl.sgemm_, ctypes.c_void_p))
        handler = jax.ffi.pycapsule(library.JaxformerGemm)
        jax.ffi.register_ffi_target(GEMM_TARGET, handler, platform="cpu")
    except (OSError, AttributeError, RuntimeError) as e:
        log.warning("MKL GEMMs are off (XLA runs the matmuls) for %s: %s", runtime, e)
        return False
    log.info("GEMMs run in MKL (%s)", runtime)
    return True


def supports(q: Array, k: Array, v: Array, mask: Array | None, bias: Array | None) -> bool:
    """Whether `attention` can take these arguments: float32 q, k, v with head_dim <= 128, no
    bias, and a mask that is None or the same for every head and query ((b|1, 1, 1, s))."""
    if bias is not None or any(x.dtype != jnp.float32 for x in (q, k, v)):
        return False
    if q.shape[-1] > MAX_HEAD_DIM or q.ndim != 4:
        return False
    if mask is not None and (mask.ndim != 4 or mask.shape[1:3] != (1, 1)):
        return False
    return True


def _forward(q: Array, k: Array, v: Array, key_mask: Array) -> Array:
    # num_batch_dims: every operand and the result lead with b, so under jit with batch-sharded
    # inputs each device runs the kernel on its own examples instead of all of them (XLA's
    # default for a custom call: gather every operand everywhere).
    with set_xla_metadata(num_batch_dims="1"):
        return jax.ffi.ffi_call(
            TARGET, jax.ShapeDtypeStruct(q.shape, q.dtype), vmap_method="sequential"
        )(q, k, v, key_mask, scale=np.float32(1.0 / math.sqrt(q.shape[-1])))


@jax.custom_vjp
def _attention(q: Array, k: Array, v: Array, key_mask: Array) -> Array:
    return _forward(q, k, v, key_mask)


def _attention_fwd(q, k, v, key_mask):
    return _forward(q, k, v, key_mask), (q, k, v, key_mask)


def _attention_bwd(residuals, g):
    from jaxformer import ops

    q, k, v, key_mask = residuals
    _, vjp = jax.vjp(
        lambda q, k, v: ops.dot_product_attention(
            q, k, v, key_mask[:, None, None, :], implementation="scan"
        ),
        q,
        k,
        v,
    )
    return (*vjp(g), None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(q: Array, k: Array, v: Array, mask: Array | None = None) -> Array:
    """softmax(q k^T / sqrt(d)) v per head with the compiled kernel; the gradient is the "scan"
    implementation's (a `jax.custom_vjp`: no forward-mode autodiff).

    q: (b, t, h, d); k, v: (b, s, h, d), float32; mask: None or bool (b|1, 1, 1, s), True =
    attend. Returns (b, t, h, d); a query with no key to attend gets zeros. Call `available()`
    first (and `supports(...)`): without the kernel this raises.
    """
    if not available():
        raise RuntimeError("jaxformer's CPU attention kernel is not available (see the log)")
    b, s = k.shape[0], k.shape[1]
    key_mask = jnp.ones((b, s), bool) if mask is None else mask[:, 0, 0, :].astype(bool)
    return _attention(q, k, v, jnp.broadcast_to(key_mask, (b, s)))


def gemm(
    a: Array, b: Array, bias: Array | None = None, trans_a: bool = False, trans_b: bool = False
) -> Array:
    """op(a) op(b) (+ bias) in MKL: float32 matrices, op(a) (m, k) and op(b) (k, n); a is stored
    (k, m) with trans_a, b is stored (n, k) with trans_b; bias: (n,) or None. Not differentiable
    (see `matmul`). Call `mkl_available()` first: without MKL, XLA reports an unknown target."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm takes matrices, got shapes {a.shape} and {b.shape}")
    (m, k), (k2, n) = a.shape[::-1] if trans_a else a.shape, b.shape[::-1] if trans_b else b.shape
    if k != k2:
        raise ValueError(
            f"gemm: op(a) is {m}x{k} but op(b) is {k2}x{n} (trans_a={trans_a}, trans_b={trans_b})"
        )
    if bias is None:
        bias = jnp.zeros((0,), jnp.float32)
    elif bias.shape != (n,):
        raise ValueError(f"gemm: bias must have shape ({n},), got {bias.shape}")
    return jax.ffi.ffi_call(
        GEMM_TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32), vmap_method="sequential"
    )(a, b, bias, trans_a=trans_a, trans_b=trans_b)


@jax.custom_vjp
def matmul(x: Array, w: Array, bias: Array) -> Array:
    """x w + bias with `gemm`: x (n, k), w (k, m), bias (m,), float32. The gradient is two more
    `gemm` calls and a sum (a `jax.custom_vjp`: no forward-mode autodiff)."""
    return gemm(x, w, bias)


def _matmul_fwd(x, w, bias):
    return gemm(x, w, bias), (x, w)


def _matmul_bwd(residuals, g):
    x, w = residuals
    return gemm(g, w, trans_b=True), gemm(x, g, trans_a=True), g.sum(0)  # dx, dw, dbias


matmul.defvjp(_matmul_fwd, _matmul_bwd)
