"""Compiled CPU kernels called through XLA's FFI: attention's forward pass, and GEMMs in Intel MKL.

Attention (`csrc/attention_cpu.cc`): XLA:CPU runs the pure-JAX attention as many small GEMMs and
elementwise passes, with the (t, s) weights and transposed copies of q, k and v going through
memory; PyTorch runs a fused flash-attention kernel there. This kernel runs one task per
(example, head) on XLA's intra-op thread pool, packs the head's unmasked keys once, then takes
four query rows at a time: scores, softmax and the weighted sum of values, all in cache. Padded
keys cost nothing. Its gradient is the "scan" program's (`kernels.scan`).

GEMMs (`csrc/gemm_cpu.cc`): the dense layers' matrix multiplies in MKL's sgemm, the library
under PyTorch's CPU matmuls. The library is linked against MKL's sequential layer from the `mkl`
wheel (`pip install 'jaxformer[mkl]'`), so no MKL setting of the process is read or changed; the
kernel splits each GEMM across XLA's own intra-op threads. A GEMM's gradient is two more GEMMs.

Each library is built on first use with the system's C++ compiler ($CXX, else g++, c++ or
clang++; about 15 s) against the installed jaxlib's FFI headers, for this CPU (-march=native),
into `jaxformer.cache.cache_dir() / "kernels"`. Its name carries a hash of the sources, jaxlib's
version, the compiler's version, the flags, the CPU's feature flags and (for the GEMM) MKL's
folder, so a cache shared between machines never loads a build made for another CPU; it is
written under a temporary name and renamed, so the cache never holds a half-written build.
Without a compiler, after a failed build, or with JAXFORMER_CPU_KERNELS=0, `attention_available()`
and `mkl_available()` are False and one log line says why; the dispatcher then runs pure JAX.
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

from jaxformer.cache import cache_dir
from jaxformer.kernels import scan

log = logging.getLogger("jaxformer")
Array = jax.Array

CSRC = Path(__file__).resolve().parent / "csrc"
ATTENTION_TARGET = "jaxformer_attention_forward"
GEMM_TARGET = "jaxformer_gemm"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
MAX_HEAD_DIM = 128  # the kernel's limit (kMaxHeadDim in csrc/attention_cpu.cc)
# MKL's layered libraries for sequential LP64 sgemm (the "single dynamic library" libmkl_rt
# would pick its threading layer process-wide).
MKL_LIBRARIES = ("libmkl_intel_lp64.so", "libmkl_sequential.so", "libmkl_core.so")


def kernel_dir() -> Path:
    return cache_dir() / "kernels"


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


def _build(compiler: str, name: str, source: Path, link: tuple[str, ...] = ()) -> Path:
    """The shared library of `source` for this jaxlib, compiler, CPU and `link` (built once)."""
    import jaxlib

    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    parts = (source.read_bytes(), jaxlib.__version__, version, *FLAGS, *link, _cpu_flags())
    digest = hashlib.sha256(
        b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)
    ).hexdigest()[:16]
    out = kernel_dir() / f"{name}-{digest}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("Building jaxformer's %s kernel (once per CPU, compiler and jaxlib): %s", name, out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as tmp:
        partial = Path(tmp) / out.name
        cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(source), *link]
        result = subprocess.run([*cmd, "-o", str(partial)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{result.stderr[-2000:]}")
        os.replace(partial, out)  # atomic: the cache never holds a half-written library
    return out


def _load(name: str, source: Path, link: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    """The built library, or None after one log line saying why."""
    if os.environ.get("JAXFORMER_CPU_KERNELS", "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        log.warning("No C++ compiler (set $CXX, or install g++): the %s kernel is off", name)
        return None
    try:
        return ctypes.CDLL(str(_build(compiler, name, source, link)))
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        log.warning("jaxformer's %s kernel is off (pure JAX runs instead): %s", name, e)
        return None


@functools.cache
def attention_available() -> bool:
    """Whether the attention kernel is built and registered with XLA:CPU."""
    library = _load("attention", CSRC / "attention_cpu.cc")
    if library is None:
        return False
    try:
        handler = jax.ffi.pycapsule(library.JaxformerAttentionForward)
        jax.ffi.register_ffi_target(ATTENTION_TARGET, handler, platform="cpu")
        jax.ffi.register_ffi_target_as_batch_partitionable(ATTENTION_TARGET)  # shards along b
    except (AttributeError, RuntimeError) as e:
        log.warning("jaxformer's attention kernel is off (pure JAX runs instead): %s", e)
        return False
    return True


def mkl_dir() -> Path | None:
    """The folder of the `mkl` wheel's libraries, or None when it is not installed."""
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in files if f.name.startswith(MKL_LIBRARIES[0])]
    return Path(found[0].locate()).resolve().parent if found else None


@functools.cache
def mkl_available() -> bool:
    """Whether the MKL GEMM kernel is built and registered: the `mkl` wheel installed and the
    kernel linked against its sequential layer."""
    folder = mkl_dir()
    if folder is None:
        return False
    libraries = [min(folder.glob(f"{name}.*"), default=None) for name in MKL_LIBRARIES]
    if None in libraries:
        log.warning("MKL in %s lacks one of %s: the MKL GEMM kernel is off", folder, MKL_LIBRARIES)
        return False
    link = ("-Wl,--no-as-needed", *(f"-l:{p.name}" for p in libraries))
    library = _load("gemm", CSRC / "gemm_cpu.cc", (f"-L{folder}", f"-Wl,-rpath,{folder}", *link))
    if library is None:
        return False
    try:
        jax.ffi.register_ffi_target(
            GEMM_TARGET, jax.ffi.pycapsule(library.JaxformerGemm), platform="cpu"
        )
    except (AttributeError, RuntimeError) as e:
        log.warning("jaxformer's MKL GEMM kernel is off (XLA runs the matmuls): %s", e)
        return False
    log.info("GEMMs run in MKL (%s)", folder)
    return True


# ----------------------------------------------------------------------------- attention


def attention_supports(q: Array, k: Array, v: Array, mask: Array | None, bias: Array | None):
    """Whether `attention` takes these arguments: float32 q, k, v with head_dim <= 128, no bias,
    and a mask that is None or shared by heads and queries ((b|1, 1, 1, s))."""
    if bias is not None or any(x.dtype != jnp.float32 for x in (q, k, v)):
        return False
    if q.ndim != 4 or q.shape[-1] > MAX_HEAD_DIM:
        return False
    return mask is None or (mask.ndim == 4 and mask.shape[1:3] == (1, 1))


def _attention_call(q: Array, k: Array, v: Array, key_mask: Array) -> Array:
    # num_batch_dims: every operand and the result lead with b, so under jit with batch-sharded
    # inputs each device runs the kernel on its own examples instead of all of them (XLA's
    # default for a custom call: gather every operand everywhere).
    with set_xla_metadata(num_batch_dims="1"):
        return jax.ffi.ffi_call(
            ATTENTION_TARGET, jax.ShapeDtypeStruct(q.shape, q.dtype), vmap_method="sequential"
        )(q, k, v, key_mask, scale=np.float32(1.0 / math.sqrt(q.shape[-1])))


@jax.custom_vjp
def _attention(q: Array, k: Array, v: Array, key_mask: Array) -> Array:
    return _attention_call(q, k, v, key_mask)


def _attention_fwd(q, k, v, key_mask):
    return _attention_call(q, k, v, key_mask), (q, k, v, key_mask)


def _attention_bwd(residuals, g):
    q, k, v, key_mask = residuals
    mask = key_mask[:, None, None, :]
    _, vjp = jax.vjp(lambda q, k, v: scan.attention(q, k, v, mask), q, k, v)
    return (*vjp(g), None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(q: Array, k: Array, v: Array, mask: Array | None = None) -> Array:
    """`layers.attention` with the compiled kernel (see `attention_supports`); the gradient is
    `kernels.scan`'s (a `jax.custom_vjp`: no forward-mode autodiff).

    q: (b, t, h, d); k, v: (b, s, h, d), float32; mask: None or bool (b|1, 1, 1, s), True =
    attend. Returns (b, t, h, d); a query with no key to attend gets zeros.
    """
    if not attention_available():
        raise RuntimeError("jaxformer's CPU attention kernel is not available (see the log)")
    b, s = k.shape[0], k.shape[1]
    key_mask = jnp.ones((b, s), bool) if mask is None else mask[:, 0, 0, :].astype(bool)
    return _attention(q, k, v, jnp.broadcast_to(key_mask, (b, s)))


# ----------------------------------------------------------------------------- GEMMs


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


def dense(x: Array, w: Array, b: Array, contract: int = 1) -> Array:
    """`layers.dense` as one `matmul` on the (tokens, in) x (in, out) matrices."""
    lead, inner, outer = x.shape[: x.ndim - contract], w.shape[:contract], w.shape[contract:]
    x2 = x.reshape(math.prod(lead), math.prod(inner))  # (tokens, in)
    w2 = w.reshape(math.prod(inner), math.prod(outer))  # (in, out)
    return matmul(x2, w2, b.reshape(-1)).reshape(*lead, *outer)
