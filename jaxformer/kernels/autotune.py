"""The "auto" choices that depend on the processor, measured once per machine and remembered.

MKL's GEMMs are faster than XLA's dots on some x86 CPUs and slower on others (on a 2-core AMD
EPYC the dense layer below takes about 28 ms with MKL and 15 ms with XLA's oneDNN dots,
docs/benchmarks.md). Which library "auto" runs is therefore measured, not assumed from the
vendor: `fastest_gemm` times a float32 dense layer of a BERT layer's training step (tokens x
384 -> 1536, forward and gradient) with each, interleaved, and keeps the faster. The result is
kept per (CPU model, its feature flags, core count, jaxlib, MKL) in `cache_dir()/autotune/`,
so the measurement (about a second) happens once per machine; deleting the file measures
again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from jaxformer import cache, layers

log = logging.getLogger(__name__)

TOKENS, WIDTH, FF = 2048, 384, 1536  # MiniLM's feed-forward input, 16 sequences of 128
REPS = 5
_MEASURED: list[dict] = []


def _cpuinfo(field: str) -> str | None:
    """A field of the first processor in /proc/cpuinfo, None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo), else platform's name for it."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def machine_key() -> dict:
    """What a measurement holds for: the CPU, its cores, and the libraries measured."""
    flags = _cpuinfo("flags") or ""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": hashlib.sha256(flags.encode()).hexdigest()[:16],  # AVX-512, AMX, ...
        "jaxlib": _version("jaxlib"),
        "mkl": _version("mkl"),
    }


def _gradient_step(dense: Callable) -> Callable:
    """A jitted forward and gradient of one dense layer, XLA's dots by oneDNN as in training."""
    from jaxformer.runtime import onednn

    def loss(x, w, b):
        return dense(x, w, b).sum()

    return onednn.jit(jax.grad(loss, argnums=(0, 1, 2)), matmul="onednn")


def measure_gemms() -> dict[str, float]:
    """Median seconds of the dense layer's forward and gradient by "mkl" and by "xla"."""
    from jaxformer.kernels import cpu

    if not cpu.mkl_available():
        raise RuntimeError("the MKL GEMM kernel is not available: nothing to measure")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((TOKENS, WIDTH), np.float32)
    w = rng.standard_normal((WIDTH, FF), np.float32) * 0.05
    b = np.zeros(FF, np.float32)
    steps = {"mkl": _gradient_step(cpu.dense), "xla": _gradient_step(layers.dense)}
    # Kept for the life of the process: XLA:CPU aborts when a oneDNN program is destroyed while
    # its last run, whose outputs are already ready, still holds its object pool.
    _MEASURED.append(steps)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for rep in range(REPS + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(step(x, w, b))
            if rep:  # the first call compiles
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@functools.cache
def fastest_gemm() -> str:
    """ "mkl" or "xla", whichever runs float32 GEMMs faster on this machine (measured once)."""
    key = machine_key()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache.cache_dir() / "autotune" / f"gemm-{digest}.json"
    try:
        record = json.loads(path.read_text())
        if record.get("key") == key and record.get("choice") in ("mkl", "xla"):
            return record["choice"]
    except (OSError, ValueError):
        pass
    with jax.ensure_compile_time_eval():  # measured eagerly, also when called while tracing
        seconds = measure_gemms()
    choice = min(seconds, key=seconds.get)
    log.info(
        "matmul='auto' runs %s on this %s: a dense layer's step takes %.1f ms with MKL, %.1f ms "
        "with XLA (kept in %s)",
        choice,
        key["cpu"],
        1e3 * seconds["mkl"],
        1e3 * seconds["xla"],
        path,
    )
    _write(path, {"key": key, "choice": choice, "seconds": seconds})
    return choice


def _write(path: Path, record: dict) -> None:
    """Writes the record atomically; a cache that cannot be written is measured again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not keep the GEMM measurement in %s (%s)", path, e)


if __name__ == "__main__":
    seconds = measure_gemms()
    print(
        f"{cpu_model()}, {os.cpu_count()} cores: a dense layer's step "
        f"{1e3 * seconds['mkl']:.1f} ms with MKL, {1e3 * seconds['xla']:.1f} ms with XLA: "
        "'auto' runs "
        f"{min(seconds, key=seconds.get)}"
    )
