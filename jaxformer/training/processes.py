"""The processes of a run: which one writes the workdir, how they wait for each other and agree
on a stop, and what the console shows (Ctrl-C / SIGTERM handling, library log filters).

Several processes (one per host, `train.py --multihost`) run the same loop in lockstep over one
jit Mesh: process 0 builds the data cache while the others wait, and alone writes the workdir's
files besides the checkpoints; a stop signal and a failure are decided on values every process
holds, so that all of them take the same branch and enter the same collectives.
"""

from __future__ import annotations

import logging
import os
import signal

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxformer.training import checkpoints, metrics
from jaxformer.training.parallel import Parallelism

BUILD_TIMEOUT_S = 6 * 3600  # the other processes wait this long for process 0's data build
BARRIER_TIMEOUT_S = 1800  # and this long for its other work (a lock, an export)


def is_primary() -> bool:
    """Process 0 writes the workdir's files besides the checkpoints (Orbax coordinates those)."""
    return jax.process_index() == 0


def on_process_0(name: str, what: str, fn, timeout_s: int = BUILD_TIMEOUT_S):
    """`fn()` on process 0 alone (`what` it does) while the others wait at barrier `name`;
    returns its result there, None elsewhere. If it raises, every process raises: the error
    itself on process 0, a TrainingError naming `what` on the others. A failure on process 0
    alone would leave them waiting for it in a collective."""
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    result = failure = None
    if is_primary():
        try:
            result = fn()
        except Exception as e:
            failure = e
    checkpoints.barrier(name, timeout_s)
    if multihost_utils.broadcast_one_to_all(np.int32(failure is not None)):
        if failure is not None:
            raise failure
        raise metrics.TrainingError(f"process 0 failed {what}; its log says why")
    return result


def agreed_signal(signum: int | None) -> int | None:
    """The stop signal that any process received (the highest number), the same on every
    process: processes that stopped at different steps would wait in different collectives."""
    if jax.process_count() == 1:
        return signum
    from jax.experimental import multihost_utils

    received = multihost_utils.process_allgather(np.int32(signum or 0))
    return int(received.max()) or None


def check_processes(par: Parallelism) -> None:
    """Several processes train only under jit: pmap's and one device's state is each
    process's own copy, which Orbax cannot save as one array, and their validation would score
    each process's share of the examples."""
    if jax.process_count() > 1 and par.kind != "jit":
        raise ValueError(
            f"parallelism={par.kind!r} runs within one process, and this run has "
            f"{jax.process_count()} processes: use --config.parallelism=jit"
        )


def say(message: str) -> None:
    """A console line from process 0 (the others would repeat it)."""
    if is_primary():
        tqdm.write(message)


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training after it saved a checkpoint of `step`."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step} (checkpoint saved); "
            "rerun the same command to resume"
        )


class StopRequest:
    """Ctrl-C / SIGTERM: finish the current step, save a checkpoint, then exit."""

    def __init__(self):
        self.signal: int | None = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.signal = signum
        tqdm.write(f"received {signal.Signals(signum).name}: saving a checkpoint, then stopping")

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def quiet_library_logs() -> None:
    """Keep Orbax's and tfds' INFO chatter (one line per checkpoint operation) out of the
    console: their warnings still show. Orbax's tracebacks of a failed background save are left
    out too: `Checkpoints` reports that failure once, as a TrainingError."""

    def keep(record: logging.LogRecord) -> bool:
        noisy = any(
            f"{os.sep}{lib}{os.sep}" in record.pathname
            for lib in ("orbax", "tensorflow_datasets", "etils")
        )
        if noisy and record.levelno >= logging.ERROR and record.exc_info:
            return f"{os.sep}orbax{os.sep}" not in record.pathname
        if record.name == "asyncio" and f"{os.sep}orbax{os.sep}" in record.getMessage():
            return False  # orbax's writer tasks of that same failed save
        return record.levelno >= logging.WARNING or not noisy

    from absl import logging as absl_logging

    absl_logging.get_absl_handler().addFilter(keep)
