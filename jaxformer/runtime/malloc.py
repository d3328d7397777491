"""Keep freed host memory in the process, so XLA:CPU stops page-faulting its buffers on every step.

XLA:CPU allocates an executable's temporaries as one block per call (about 1 GB for MiniLM's
training step at 32x128) and frees it when the call returns. glibc's malloc serves a block that
large with a fresh `mmap` and returns it with `munmap`; from any thread but the main one it has
no other choice (a thread arena cannot grow past 64 MB). So on every step the kernel maps, zeroes
and faults in the whole block again: about 300,000 minor page faults and close to a second of
system time per step there (strace shows the 1 GB mmap/munmap pair, `getrusage` the faults).
PyTorch's per-op tensors are small enough for malloc to recycle them.

`reuse_freed_memory()` sets glibc's malloc to serve every block from the main heap (one arena,
no `mmap`) and to keep freed memory instead of returning it to the system, so each step reuses
the pages the last one faulted in. Costs:
- the process keeps its peak heap until it exits;
- threads share one malloc arena, which slows allocation-heavy multithreaded code: Hugging Face
  tokenizers' batch encoding runs slower (jaxformer caches token ids, so that happens once).
It must run before XLA's threads first allocate, i.e. before the first jax computation:
train.py, eval.py and the benchmarks call it first thing, as their --malloc flag says
(--malloc=default leaves malloc alone). It does nothing outside Linux with glibc.
docs/benchmarks.md has the measured effect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("jaxformer")
MODES = ("reuse", "default")
# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = {
    M_ARENA_MAX: 1,  # every thread allocates from the main arena, which can grow to any size
    M_MMAP_MAX: 0,  # no block gets its own mapping
    M_TRIM_THRESHOLD: 2**31 - 1,  # freed memory stays in the heap
}
FLAG_HELP = (
    "Host malloc (jaxformer.runtime.malloc): reuse = keep freed memory, so XLA:CPU stops "
    "page-faulting its temp buffer on every step; default = leave glibc's malloc alone."
)
_applied = False


def define_flag() -> None:
    """Defines the absl flag --malloc, for programs that pass FLAGS.malloc to
    `reuse_freed_memory` first thing."""
    from absl import flags

    flags.DEFINE_enum("malloc", "reuse", list(MODES), FLAG_HELP)


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the one with `mallopt`), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


def reuse_freed_memory(mode: str = "reuse") -> bool:
    """Sets glibc's malloc to keep and reuse freed memory (see the module docstring).

    mode: "reuse", or "default" (leave malloc alone).
    Returns whether the settings are in effect. Idempotent."""
    global _applied
    if mode not in MODES:
        raise ValueError(f"malloc mode {mode!r}: use one of {MODES}")
    if mode == "default" or _applied:
        return _applied
    libc = glibc()
    if libc is None:
        log.info("Not glibc: host malloc left at its defaults")
        return False
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            log.warning(
                "reuse_freed_memory() called after jax started its backend: threads that have "
                "already allocated keep their own malloc arenas and may still map and unmap "
                "XLA's buffers on every call. Call it before the first jax computation."
            )
    refused = [param for param, value in SETTINGS.items() if libc.mallopt(param, value) != 1]
    if refused:
        log.warning("glibc's mallopt refused parameters %s: malloc partly at its defaults", refused)
        return False
    _applied = True
    return True
