"""Orbax checkpoints of a training workdir: the latest few, and the best on validation.

Mirrors the Flax examples' use of Orbax (`ocp.CheckpointManager` with a StandardSave of the
TrainState): each checkpoint holds the state and a small JSON record (step, best accuracy), so a
rerun resumes exactly where the last save left off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


class Checkpoints:
    """Orbax managers under the workdir: `checkpoints/` keeps the last K (every N steps and at
    the end), `best/` keeps the one with the best validation accuracy."""

    def __init__(self, workdir: str | Path, keep: int = 2, create: bool = True):
        root = Path(workdir).absolute()
        self.latest = ocp.CheckpointManager(
            root / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create),
        )
        self.best = ocp.CheckpointManager(
            root / "best", options=ocp.CheckpointManagerOptions(max_to_keep=1, create=create)
        )

    def manager(self, which: str) -> ocp.CheckpointManager:
        return self.best if which == "best" else self.latest

    def save(self, which: str, step: int, state, meta: dict) -> None:
        self.manager(which).save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def restore(self, which: str, step: int | None, abstract_state) -> tuple[Any, dict]:
        """(state, meta) of `step` (None: the newest) of the "latest" or "best" checkpoints."""
        mngr = self.manager(which)
        step = mngr.latest_step() if step is None else step
        if step is None or step not in mngr.all_steps():
            raise FileNotFoundError(
                f"no {which} checkpoint{'' if step is None else f' at step {step}'} in "
                f"{mngr.directory} (steps there: {list(mngr.all_steps()) or 'none'})"
            )
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.meta

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def abstract_state(state):
    """ShapeDtypeStructs of `state`'s leaves: what `Checkpoints.restore` fills in (on the
    default device; `Parallelism.put_state` places it afterwards)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype), state)
