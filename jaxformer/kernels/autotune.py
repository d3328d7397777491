"""The "auto" choices that depend on the processor, measured once per machine and remembered.

MKL's GEMMs are faster than XLA's dots on some x86 CPUs and slower on others (on a 2-core AMD
EPYC the dense layer below takes about 28 ms with MKL and 15 ms with XLA's oneDNN dots,
docs/benchmarks.md), and the same holds for XLA:CPU's dot libraries and the CPU attention
programs. Which program "auto" runs is therefore measured, not assumed from the vendor, each on
a piece of MiniLM's training step (forward and gradient), the candidates interleaved:
- `fastest_dots`: XLA:CPU's dots by oneDNN or by XLA's default (YNNPACK) in a dense layer
  (tokens x 384 -> 1536), the experiment's xla_cpu_dots="auto";
- `fastest_gemm`: that dense layer by MKL or by XLA's dots (as `fastest_dots` chose), matmul;
- the CPU attention programs are measured too (`measure_attention`, printed by the command
  below), but "auto" keeps its fixed rule there (the compiled kernel without dropout, scan with
  it): on a 2-core AMD EPYC scan's layer forward and gradient measured faster than the kernel's
  (17 against 20 ms at 128 tokens) and the reference's with dropout faster than scan's (26
  against 43 ms), yet choosing them made MiniLM's inference step 1.2x and its 8 x 512 train step
  1.4x slower (benchmarks/vs_revision.py against a revision with the fixed rule): the layer
  alone does not predict the model's step.
Each result is kept per (CPU model, its feature flags, core count, jaxlib, MKL) in
`cache_dir()/autotune/`, so a measurement (a second or two) happens once per machine; deleting
the file measures again. `python -m jaxformer.kernels.autotune` measures and prints them all.
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
ATTENTION_TOKENS = 2048  # per measurement, in sequences of the length measured
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


def _gradient_step(loss: Callable, argnums: tuple[int, ...], dots: str) -> Callable:
    """A jitted forward and gradient of `loss`, XLA's dots by `dots` ("onednn" or "xla")."""
    from jaxformer.runtime import onednn

    return onednn.jit(jax.grad(loss, argnums=argnums), matmul=dots)


def _median_seconds(steps: dict[str, Callable], *args) -> dict[str, float]:
    """Median seconds of each step on `args`, the steps interleaved, the compiling call left
    out."""
    # Kept for the life of the process: XLA:CPU aborts when a oneDNN program is destroyed while
    # its last run, whose outputs are already ready, still holds its object pool.
    _MEASURED.append(steps)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for rep in range(REPS + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(step(*args))
            if rep:  # the first call compiles
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _dense_operands() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((TOKENS, WIDTH), np.float32)
    w = rng.standard_normal((WIDTH, FF), np.float32) * 0.05
    return x, w, np.zeros(FF, np.float32)


def _dense_loss(dense: Callable) -> Callable:
    return lambda x, w, b: dense(x, w, b).sum()


def measure_dots() -> dict[str, float]:
    """Median seconds of the dense layer's forward and gradient with XLA's dots by "onednn" and
    by XLA's "default"."""
    loss = _dense_loss(layers.dense)
    steps = {"onednn": _gradient_step(loss, (0, 1, 2), "onednn")}
    steps["default"] = _gradient_step(loss, (0, 1, 2), "xla")
    return _median_seconds(steps, *_dense_operands())


def measure_gemms() -> dict[str, float]:
    """Median seconds of the dense layer's forward and gradient by "mkl" and by "xla" (XLA's dots
    by the library `fastest_dots` chose)."""
    from jaxformer.kernels import cpu

    if not cpu.mkl_available():
        raise RuntimeError("the MKL GEMM kernel is not available: nothing to measure")
    dots = "onednn" if fastest_dots() == "onednn" else "xla"
    steps = {
        "mkl": _gradient_step(_dense_loss(cpu.dense), (0, 1, 2), dots),
        "xla": _gradient_step(_dense_loss(layers.dense), (0, 1, 2), dots),
    }
    return _median_seconds(steps, *_dense_operands())


def measure_attention(
    length: int = 128, dropout: bool = False, heads: int = 12, head_dim: int = 32
) -> dict[str, float]:
    """Median seconds of an attention layer's forward and gradient (with respect to q, k, v) over
    2,048 tokens in sequences of `length` by each CPU program that can run it: without dropout
    the compiled kernel (where built), scan and XLA's fused form, with dropout scan and the
    reference."""
    from jaxformer import dispatch
    from jaxformer.kernels import cpu

    rng = np.random.default_rng(0)
    batch = max(1, ATTENTION_TOKENS // length)
    q, k, v = (rng.standard_normal((batch, length, heads, head_dim), np.float32) for _ in range(3))
    lengths = rng.integers(length // 2, length + 1, batch)
    mask = (np.arange(length) < lengths[:, None])[:, None, None, :]  # (b, 1, 1, s)
    programs = ("cpu", "scan", "xla") if cpu.attention_available() else ("scan", "xla")
    rate, key = (0.1, jax.random.key(0)) if dropout else (0.0, None)
    programs = ("scan", "reference") if dropout else programs

    def loss(program):
        return lambda q, k, v: dispatch.attention(
            q, k, v, mask, dropout_rate=rate, dropout_rng=key, implementation=program
        ).sum()

    steps = {p: _gradient_step(loss(p), (0, 1, 2), "xla") for p in programs}
    return _median_seconds(steps, q, k, v)


def _fastest(name: str, measure: Callable[[], dict[str, float]], what: str) -> str:
    """The fastest of `measure`'s programs on this machine, read from its record in the cache
    or measured (and kept) there."""
    key = machine_key()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache.cache_dir() / "autotune" / f"{name}-{digest}.json"
    try:
        record = json.loads(path.read_text())
        if record.get("key") == key and record.get("choice") in record.get("seconds", {}):
            return record["choice"]
    except (OSError, ValueError, AttributeError):
        pass
    with jax.ensure_compile_time_eval():  # measured eagerly, also when called while tracing
        seconds = measure()
    choice = min(seconds, key=seconds.get)
    times = ", ".join(f"{p} {1e3 * s:.1f} ms" for p, s in seconds.items())
    log.info("%s runs %s on this %s: %s (kept in %s)", what, choice, key["cpu"], times, path)
    _write(path, {"key": key, "choice": choice, "seconds": seconds})
    return choice


@functools.cache
def fastest_dots() -> str:
    """ "onednn" or "default": the library of XLA:CPU's dots that runs a dense layer's step
    faster on this machine (measured once)."""
    return _fastest("dots", measure_dots, "xla_cpu_dots='auto'")


@functools.cache
def fastest_gemm() -> str:
    """ "mkl" or "xla", whichever runs float32 GEMMs faster on this machine (measured once)."""
    return _fastest("gemm", measure_gemms, "matmul='auto'")


def _write(path: Path, record: dict) -> None:
    """Writes the record atomically; a cache that cannot be written is measured again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not keep the measurement in %s (%s)", path, e)


if __name__ == "__main__":
    print(f"{cpu_model()}, {os.cpu_count()} cores, jaxlib {_version('jaxlib')}:")
    for what, measure in (
        ("xla_cpu_dots: a dense layer's step", measure_dots),
        ("matmul: a dense layer's step", measure_gemms),
    ):
        seconds = measure()
        times = ", ".join(f"{p} {1e3 * s:.1f} ms" for p, s in seconds.items())
        print(f"  {what}: {times} -> 'auto' runs {min(seconds, key=seconds.get)}")
    for length in (128, 512):  # measured, not chosen from (the module docstring says why)
        for dropout in (False, True):
            seconds = measure_attention(length, dropout)
            times = ", ".join(f"{p} {1e3 * s:.1f} ms" for p, s in seconds.items())
            print(f"  attention at {length} tokens{' with dropout' * dropout}: {times}")
