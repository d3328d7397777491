"""jaxformer's compiled CPU kernel: multi-head attention's forward pass, called through XLA's FFI.

XLA:CPU runs the pure-JAX attention (`ops.dot_product_attention`) as many small GEMMs and
elementwise passes, with the (t, s) weights and transposed copies of q, k and v going through
memory; PyTorch runs a fused flash-attention kernel there. `csrc/attention_cpu.cc` is such a
kernel: one task per (example, head) on XLA's intra-op thread pool, the head's unmasked keys packed
once, then four query rows at a time: scores, softmax and the weighted sum of values, all in cache.
Padded keys cost nothing.

It is built on first use with the system's C++ compiler (`$CXX`, else g++, c++ or clang++;
about 10 s) against the installed jaxlib's FFI headers, for this machine's CPU (-march=native),
into `$JAXFORMER_CACHE_DIR` (default ~/.cache/jaxformer). The library's name carries a hash of the
source, jaxlib's version, the compiler and the CPU's flags, and it is written under a temporary
name and renamed, so a cache never holds a stale or half-written build. With no compiler, a failed
build, or `JAXFORMER_CPU_KERNELS=0`, `available()` is False (the reason is logged once) and
attention runs in pure JAX.

Only the forward pass is compiled: the gradient is that of the pure-JAX "scan" implementation
(`attention`'s custom VJP), so training with attention dropout, which this kernel does not do,
never uses it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
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

SOURCE = Path(__file__).resolve().parent / "csrc" / "attention_cpu.cc"
TARGET = "jaxformer_attention_forward"
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
                SOURCE.read_bytes(),
                jaxlib.__version__,
                version,
                " ".join(FLAGS),
                _cpu_flags(),
            )
        )
    ).hexdigest()[:16]
    out = cache_dir() / f"attention_cpu-{key}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("Building jaxformer's CPU attention kernel (once per machine and jaxlib): %s", out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as tmp:
        partial = Path(tmp) / out.name
        cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(partial)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{result.stderr[-2000:]}")
        os.replace(partial, out)  # atomic: the cache never holds a half-written library
    return out


@functools.cache
def available() -> bool:
    """Whether the kernel is built and registered with XLA:CPU (if not, the log says why, once)."""
    if os.environ.get("JAXFORMER_CPU_KERNELS", "1") == "0":
        return False
    compiler = _compiler()
    if compiler is None:
        log.warning(
            "No C++ compiler (set $CXX, or install g++): jaxformer's CPU attention kernel is off "
            "and attention runs in pure JAX."
        )
        return False
    try:
        library = ctypes.CDLL(str(_build(compiler)))
        handler = jax.ffi.pycapsule(library.JaxformerAttentionForward)
        jax.ffi.register_ffi_target(TARGET, handler, platform="cpu")
        jax.ffi.register_ffi_target_as_batch_partitionable(TARGET)  # shards along b
    except (OSError, RuntimeError, subprocess.CalledProcessError, AttributeError) as e:
        log.warning("jaxformer's CPU attention kernel is off (attention runs in pure JAX): %s", e)
        return False
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
