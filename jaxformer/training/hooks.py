"""What the training loop does every N steps besides training: `(every, fn)` hooks, as Levanter's
`add_hook` and the Flax examples' periodic actions.

The loop runs one step, then calls each hook that is due at that step, in the order given: a
hook is due where its `every` divides the step, at the final step (`at_last`) and at the step
where a stop signal was agreed (`at_stop`), so that a run's end and a Ctrl-C leave the same
rows and checkpoints whatever the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """The step just trained: its number, whether it is the run's final step, and the stop
    signal every process agreed on there (None: none)."""

    step: int
    last: bool = False
    signum: int | None = None

    @property
    def stopping(self) -> bool:
        return self.signum is not None


@dataclasses.dataclass(frozen=True)
class Hook:
    """`fn(info)` every `every` steps, and also at the final step (`at_last`) and at a stop
    (`at_stop`)."""

    every: int
    fn: Callable[[StepInfo], None]
    at_last: bool = True
    at_stop: bool = False

    def due(self, info: StepInfo) -> bool:
        return (
            info.step % self.every == 0
            or (self.at_last and info.last)
            or (self.at_stop and info.stopping)
        )


def run_hooks(hooks: Sequence[Hook], info: StepInfo) -> None:
    """Calls the hooks due at `info.step`, in order."""
    for hook in hooks:
        if hook.due(info):
            hook.fn(info)
