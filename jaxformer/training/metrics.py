"""Metrics on the host: a split's evaluation, per-step training metrics, and where
they are written (workdir/metrics.jsonl, TensorBoard, metrics.png).

Mirrors the Flax examples' split of work: the compiled steps return per-example or per-step
arrays, and the host copies them only when it logs, reduces them, and writes one record per log
step (clu's metric writers there; a JSON-lines file and tensorboardX here).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxformer.training.parallel import Parallelism


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad setup); the last good checkpoint is kept."""


def evaluate_batches(
    eval_fn: Callable,
    par: Parallelism,
    state,
    batches: Iterable[dict],
    task,
    split: str,
    desc: str = "eval",
    total: int | None = None,
) -> dict:
    """Runs `eval_fn` (a compiled `eval_step` of `task`) over every batch and returns the
    task's metrics of the split's real examples, with their count and speed. Padding rows
    (weight 0) are dropped and the examples put back in the split's order here."""
    kept: dict[str, list[np.ndarray]] = {}
    start = time.perf_counter()
    bar = tqdm(
        batches, desc=desc, total=total, leave=False, unit="batch", disable=jax.process_index() > 0
    )
    for batch in bar:
        out = par.to_host(eval_fn(state, par.put_batch(batch)))
        keep = out["weights"] > 0
        for k, v in out.items():
            kept.setdefault(k, []).append(np.asarray(v)[keep])
    seconds = time.perf_counter() - start
    outputs = split_outputs(kept, task.token_outputs)
    result = task.metrics(split, outputs)
    n = len(outputs.get("index", ()))
    result.update(examples=n, seconds=seconds, examples_per_s=n / max(seconds, 1e-9))
    return result


def split_outputs(kept: dict[str, list[np.ndarray]], token_outputs: tuple[str, ...]) -> dict:
    """Batches of evaluation outputs -> one array per output over the split, in index order;
    `token_outputs` (b, t, ...) are padded with zeros to the longest t first."""
    if not kept:
        return {}
    outputs = {}
    for k, parts in kept.items():
        if k in token_outputs:
            t = max(p.shape[1] for p in parts)
            pad = [(0, 0)] * (parts[0].ndim - 2)
            parts = [np.pad(p, [(0, 0), (0, t - p.shape[1]), *pad]) for p in parts]
        outputs[k] = np.concatenate(parts)
    order = np.argsort(outputs["index"], kind="stable")
    return {k: v[order] for k, v in outputs.items()}


def host_rows(par: Parallelism, pending: list[dict]) -> list[dict[str, float]]:
    """Per-step device metrics -> floats on the host (the only device-to-host copy of them)."""
    return [{k: float(np.ravel(v)[0]) for k, v in par.to_host(m).items()} for m in pending]


def check_finite(step: int, rows: list[dict]) -> None:
    """Raises TrainingError if a row of `host_rows` (the last of which is `step`) has a
    non-finite loss or gradient norm."""
    for i, row in enumerate(rows):
        bad = [k for k in ("loss", "grad_norm") if not math.isfinite(row[k])]
        if bad:
            raise TrainingError(
                f"non-finite {', '.join(bad)} at step {step - len(rows) + i + 1} "
                f"({', '.join(f'{k}={row[k]}' for k in bad)}); training stopped. The last good "
                "checkpoint is kept; lower --config.optimizer.learning_rate or check the data"
            )


class MetricWriter:
    """One JSON line per record in workdir/metrics.jsonl and TensorBoard scalars (process 0).

    A run that resumes from `start_step` first drops the records past it, which the interrupted
    run wrote and this one writes again: one row per (step, split)."""

    def __init__(self, workdir: Path, start_step: int = 0):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            from tensorboardX import SummaryWriter

            path = workdir / "metrics.jsonl"
            if path.exists():
                _keep_rows_up_to(path, start_step)
            self.jsonl = open(path, "a")
            # TensorBoard hides the events past purge_step that the interrupted run wrote.
            self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=start_step + 1)

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        self.jsonl.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")
        self.jsonl.flush()
        for k, v in scalars.items():
            self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()


def _keep_rows_up_to(path: Path, step: int) -> None:
    """Rewrites metrics.jsonl (atomically) without its rows past `step` and its torn last line."""
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # the half-written line of a killed run
        if row.get("step", 0) <= step:
            kept.append(line)
    if len(kept) == len(lines):
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def plot_metrics(workdir: Path, metric: str = "accuracy") -> Path | None:
    """PNG of training loss and the validation `metric` (the task's selection) against step,
    from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    train = [(r["step"], r["loss"]) for r in rows if r["split"] == "train" and "loss" in r]
    val = [(r["step"], r[metric]) for r in rows if r["split"] == "validation" and metric in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), "o-", label=f"validation {metric}", color="tab:orange")
        ax2.set_ylabel(f"validation {metric}")
    fig.legend(loc="upper center", ncol=2, frameon=False)  # above the axes, over no curve
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    out = workdir / "metrics.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
