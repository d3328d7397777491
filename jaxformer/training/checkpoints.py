"""Orbax checkpoints of a training workdir: the latest few, and the best on validation.

Mirrors the Flax examples' use of Orbax (`ocp.CheckpointManager` with a StandardSave of the
TrainState): each checkpoint holds the state and a small JSON record (step, best validation
score), so a rerun resumes exactly where the last save left off.

What a kill, a full disk or a damaged file can leave behind is handled here: a step that does not
restore is moved aside to `workdir/damaged/` and the newest one that does is used; a save that
fails says so once and removes its temporary folder; a step that already exists is never saved
again; and nothing with a non-finite leaf is written. With several processes (one per host, one
shared workdir), Orbax coordinates the saves and process 0 alone moves or deletes folders.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxformer.training.metrics import TrainingError

log = logging.getLogger("jaxformer")

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's in-progress folders: `<step>.orbax-checkpoint-tmp`


def barrier(name: str, timeout_s: int = 1800) -> None:
    """Waits until every process of the run has arrived here; nothing with one process. The
    coordinator's barrier (as Orbax's own), not a device collective, so a long wait meets no
    collective's deadline. Each name is used once per run."""
    if jax.process_count() > 1:
        ocp.multihost.get_barrier_sync_fn()(key=f"jaxformer_{name}", timeout_ms=timeout_s * 1000)


class DamagedCheckpointError(ValueError):
    """A checkpoint step that exists on disk but does not restore (missing or truncated file)."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, at most `limit` characters: tensorstore's errors run
    over many lines of JSON spec."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def disk_full(e: BaseException) -> bool:
    """Whether `e`, or an exception it was raised from, says the disk is full: an OSError of
    ENOSPC from Python's writes, or tensorstore's RESOURCE_EXHAUSTED (the status its writes
    give for ENOSPC), whose errors carry no errno."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "RESOURCE_EXHAUSTED" in str(e) or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def collect_abandoned_io() -> None:
    """Orbax stops a restore or a save at its first failed read or write and closes the event
    loop it ran them on, with the others still pending. Their coroutines, once collected,
    report that same failure and the closed loop on stderr, at exit, after the error line that
    reported it: from here on those reports are dropped (collected now where they are done)."""
    if getattr(sys.unraisablehook, "drops_orbax_reports", False):
        gc.collect()
        return
    previous = sys.unraisablehook

    def hook(unraisable, previous=previous, sep=os.sep):
        code = getattr(unraisable.object, "cr_code", None)
        orbax = code is not None and f"{sep}orbax{sep}" in code.co_filename
        closed = isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(
            unraisable.exc_value
        )
        if not (orbax or closed):
            previous(unraisable)

    hook.drops_orbax_reports = True
    sys.unraisablehook = hook
    gc.collect()


@jax.jit
def _all_finite(xs: list) -> list:
    """One program for all the flags: eager reductions of sharded leaves, a program each, can
    deadlock XLA:CPU's collectives when many are in flight."""
    return [jnp.all(jnp.isfinite(x)) for x in xs]


def non_finite_leaves(tree) -> list[str]:
    """Paths of the floating-point leaves of `tree` that hold a NaN or an infinity."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    checks = [(path, x) for path, x in flat if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    finite = jax.device_get(_all_finite([x for _, x in checks]))  # one transfer for all flags
    return [
        jax.tree_util.keystr(path) for (path, _), ok in zip(checks, finite, strict=True) if not ok
    ]


class Checkpoints:
    """Orbax managers under the workdir: `checkpoints/` keeps the last K (every N steps and at
    the end), `best/` keeps the one with the best validation accuracy.

    `create=True` (training) also removes the temporary folders of a save that a kill
    interrupted; `create=False` (evaluation) only reads."""

    def __init__(self, workdir: str | Path, keep: int = 2, create: bool = True):
        self.root = Path(workdir).absolute()
        self.latest = self._manager("checkpoints", keep, create)
        self.best = self._manager("best", 1, create)
        self._failed = False
        self._last_save = ("latest", -1)  # (which, step) of the newest save, for its error

    def _manager(self, name: str, keep: int, create: bool) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=create,
            cleanup_tmp_directories=create,
            # Both managers save at the same step: barriers of their own, across processes.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=name
            ),
        )
        return ocp.CheckpointManager(self.root / name, options=options)

    def manager(self, which: str) -> ocp.CheckpointManager:
        return self.best if which == "best" else self.latest

    def save(self, which: str, step: int, state, meta: dict) -> bool:
        """Saves `state` and `meta` as `step` of "latest" or "best"; False (and nothing written)
        if that step is already there. TrainingError if a leaf is not finite or the save fails
        (its temporary folder removed, the earlier steps untouched)."""
        bad = non_finite_leaves(state)
        if bad:
            raise TrainingError(
                f"not saving the {which} checkpoint of step {step}: {len(bad)} arrays of the "
                f"state hold non-finite values, NaN or inf (first: {bad[0]}); training "
                "stopped. The last good checkpoint is kept; lower "
                "--config.optimizer.learning_rate or check the data"
            )
        mngr = self.manager(which)
        if step in mngr.all_steps():
            log.info("%s already holds step %d; not saved again", mngr.directory, step)
            return False
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        try:
            mngr.save(step, args=args, force=True)
            self._last_save = (which, step)
        except Exception as e:  # an earlier async save's failure surfaces here too
            self._save_failed(which, step, e)
        return True

    def _save_failed(self, which: str, step: int, e: Exception):
        self._failed = True
        for mngr in (self.latest, self.best):
            try:
                mngr.wait_until_finished()
            except Exception:
                pass  # the same failure, already in hand
        collect_abandoned_io()
        removed = self.remove_temporary()
        kept = sorted(self.latest.all_steps())
        cause = first_line(e)
        if disk_full(e):
            try:  # measured after the unfinished save was removed
                free = f"{shutil.disk_usage(self.root).free} bytes free"
            except OSError:
                free = "free space unknown"
            cause = f"no space left on device: {free} in {self.root}; {cause}"
        raise TrainingError(
            f"could not save the {which} checkpoint of step {step} in {self.root} ({cause}); "
            + (f"removed the unfinished {', '.join(removed)}; " if removed else "")
            + f"the earlier checkpoints are intact (steps {kept or 'none'}). Free disk space "
            "and rerun the same command to resume"
        ) from None

    def remove_temporary(self, quiet_s: float = 1.0, limit_s: float = 30.0) -> list[str]:
        """Deletes orbax's `*.orbax-checkpoint-tmp*` folders of unfinished saves; their names.

        After a failed save, writes of that save still in flight (tensorstore's, which orbax
        stops waiting for at the first error) can create its folders again, so process 0
        deletes until none has appeared for `quiet_s` seconds (at most `limit_s`)."""
        removed: list[str] = []
        quiet_since = start = time.monotonic()
        while True:
            found = self._temporary()  # a folder deleted and written again counts as new
            if jax.process_index() == 0:
                for p in found:
                    shutil.rmtree(self.root / p, ignore_errors=True)
            removed += [p for p in found if p not in removed]
            now = time.monotonic()
            if found:
                quiet_since = now
            if jax.process_index() != 0 or now - quiet_since >= quiet_s or now - start > limit_s:
                break
            time.sleep(0.1)
        for mngr in (self.latest, self.best):
            mngr.reload()
        return removed

    def _temporary(self) -> list[str]:
        """`best/8.orbax-checkpoint-tmp`-like names (relative to the workdir) there now."""
        return [
            f"{directory.name}/{p.name}"
            for directory in (Path(m.directory) for m in (self.latest, self.best))
            if directory.is_dir()
            for p in sorted(directory.iterdir())
            if TMP_SUFFIX in p.name
        ]

    def restore(self, which: str, step: int | None, abstract_state) -> tuple[Any, dict]:
        """(state, meta) of `step` (None: the newest) of the "latest" or "best" checkpoints.
        FileNotFoundError if there is no such step, DamagedCheckpointError if it does not
        restore."""
        mngr = self.manager(which)
        step = mngr.latest_step() if step is None else step
        if step is None or step not in mngr.all_steps():
            raise FileNotFoundError(
                f"no {which} checkpoint{'' if step is None else f' at step {step}'} in "
                f"{mngr.directory} (steps there: {list(mngr.all_steps()) or 'none'})"
            )
        try:
            restored = mngr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # tensorstore raises bare Exceptions for missing/short files
            reason = first_line(e)
        else:
            return restored.state, restored.meta
        collect_abandoned_io()  # the failure's traceback, which holds them, is gone now
        raise DamagedCheckpointError(
            f"checkpoint {Path(mngr.directory) / str(step)} is damaged and does not restore "
            f"({reason})"
        )

    def restore_newest_good(self, which: str, abstract_state) -> tuple[Any, dict] | None:
        """(state, meta) of the newest step of `which` that restores, or None if there is no
        step. Newer steps that do not restore are moved to `workdir/damaged/` (logged), so
        that the run can save those steps again; if no step restores, nothing is moved and
        TrainingError names them all."""
        mngr = self.manager(which)
        damaged = []
        for step in sorted(mngr.all_steps(), reverse=True):
            try:
                state, meta = self.restore(which, step, abstract_state)
            except DamagedCheckpointError as e:
                log.warning("skipping %s", e)
                damaged.append((step, e))
                continue
            for bad, _ in damaged:
                self.move_aside(which, bad)
            return state, meta
        if damaged:
            reasons = "; ".join(str(e) for _, e in damaged)
            raise TrainingError(
                f"no checkpoint in {mngr.directory} restores ({reasons}); move that folder "
                "away to start afresh"
            )
        return None

    def move_aside(self, which: str, step: int) -> Path:
        """Moves `step` of `which` to `workdir/damaged/<folder>-<step>` (kept for inspection)."""
        mngr = self.manager(which)
        source = Path(mngr.directory) / str(step)
        target = self.root / "damaged" / f"{source.parent.name}-{step}"
        n = 1
        while target.exists():
            n += 1
            target = target.with_name(f"{source.parent.name}-{step}.{n}")
        if jax.process_index() == 0:
            target.parent.mkdir(exist_ok=True)
            source.rename(target)
        barrier(f"moved_{source.parent.name}_{step}")
        mngr.reload()
        log.warning("moved the damaged checkpoint %s to %s", source, target)
        return target

    def best_record(self) -> tuple[int, dict] | None:
        """(step, meta) of the best checkpoint, reading only its JSON record; None if there is
        none. A best step whose record does not read is moved aside."""
        step = self.best.latest_step()
        if step is None:
            return None
        try:
            meta = self.best.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            ).meta
        except Exception as e:
            log.warning(
                "skipping best checkpoint %d: its record does not read (%s)", step, first_line(e)
            )
            self.move_aside("best", step)
            return None
        return step, meta

    def wait(self) -> None:
        """Blocks until the saves in flight are written; TrainingError (said once) if one
        failed."""
        if self._failed:
            return
        try:
            self.latest.wait_until_finished()
            self.best.wait_until_finished()
        except Exception as e:
            self._save_failed(*self._last_save, e)

    def close(self) -> None:
        for mngr in (self.latest, self.best):
            try:
                mngr.close()
            except Exception:
                if not self._failed:
                    raise


def abstract_state(state, sharding: jax.sharding.Sharding | None = None):
    """ShapeDtypeStructs of `state`'s leaves (arrays or ShapeDtypeStructs): what
    `Checkpoints.restore` fills in, placed by `sharding` (None: as the checkpoint was written,
    which needs the same devices)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x), sharding=sharding),
        state,
    )
