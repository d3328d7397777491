"""jaxformer at this checkout vs jaxformer at a git revision, in one interleaved run.

  python benchmarks/vs_revision.py --baseline=7732063 --models=minilm --reps=5
  python benchmarks/vs_revision.py --baseline=HEAD~3 --models=base --shapes=8x512 --workloads=infer
  python benchmarks/vs_revision.py --baseline=HEAD --baseline_malloc=default   # malloc's effect

Speedups measured in separate runs drift with the machine's load, so this script times both
versions side by side: `git archive` extracts the baseline's `jaxformer/` package into a
temporary folder, and two worker processes, one importing each package, build the model from the
same checkpoint folder (written once by transformers' `save_pretrained`) and run the same batches
(`harness.make_batch`) through the same step code (`harness.runner`: the AdamW train step or the
inference forward). The coordinator asks them for one step at a time, alternately, so only one
runs at any moment, and reports the medians and `speedup = baseline / current` step time. The
working tree, uncommitted changes included, is the "current" side.

Both sides run exactly the same program code, so a worker uses only what every revision
provides: `jaxformer.from_pretrained(folder, task="classification", num_labels=2, dtype=...)`
with the default compute settings, and the model's `apply`. The baseline must provide that API
and take the default settings; the settings themselves ("auto") may choose differently in each
revision, which is what is compared. The loss and optimizer are `harness`'s, and both workers
compile with this checkout's `jaxformer/runtime/onednn.py` (XLA:CPU dots, `--xla_cpu_dots`) and
set host malloc with its `jaxformer/runtime/malloc.py` (`--malloc`), loaded by file path.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import harness
from absl import app, flags

REPO = harness.REPO
FLAGS = flags.FLAGS
flags.DEFINE_string("baseline", None, "The git revision to compare against (any git rev).")
flags.DEFINE_list("models", ["minilm"], "minilm (the real checkpoint), base, tiny (random).")
flags.DEFINE_list("shapes", ["32x128", "16x256", "8x512"], "BATCHxLENGTH, comma-separated.")
flags.DEFINE_list("workloads", ["train", "infer"], "train and/or infer.")
flags.DEFINE_integer("reps", 5, "Timed repetitions per side (median reported).")
flags.DEFINE_integer("warmup", 1, "Untimed calls after the first (compile) call.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "from_pretrained's dtype.")
flags.DEFINE_enum(
    "xla_cpu_dots",
    "onednn",
    list(harness.XLA_CPU_DOTS),
    "XLA:CPU's library for the dots XLA compiles, both sides (jaxformer.runtime.onednn): onednn "
    "where the program allows it, default = XLA's own choice.",
)
flags.DEFINE_enum(
    "baseline_xla_cpu_dots",
    None,
    list(harness.XLA_CPU_DOTS),
    "The baseline worker's --xla_cpu_dots; unset: as the current side.",
)
harness.malloc.define_flag()
flags.DEFINE_enum(
    "baseline_malloc",
    None,
    ["reuse", "default"],
    "Host malloc of the baseline's worker; unset: --malloc, as the current side.",
)
flags.DEFINE_string("json", None, "Write the rows (a JSON list) here.")
flags.DEFINE_string("worker", None, "Internal: run as a worker importing jaxformer from here.")
REPLY = "@@vs_revision "  # prefix of the workers' replies (libraries print to stdout too)


# ---------------------------------------------------------------------------------------------
# Worker: one jaxformer package, steps on request


def worker(root: Path, xla_cpu_dots: str) -> None:
    malloc = harness.configure_malloc(FLAGS.malloc)  # before any jax work
    sys.path.insert(0, str(root))
    import jaxformer

    where = Path(jaxformer.__file__).resolve()
    if not where.is_relative_to(root.resolve()):
        raise RuntimeError(f"imported jaxformer from {where}, expected it under {root}")
    models, run = {}, None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "setup":
            folder = cmd["folder"]
            if folder not in models:
                models.clear()  # one model resident at a time
                models[folder] = jaxformer.from_pretrained(
                    folder, task="classification", num_labels=2, dtype=FLAGS.dtype
                )
            model, params = models[folder]
            batch = harness.make_batch(cmd["batch"], cmd["length"], model.config.vocab_size)
            run = harness.runner(model, params, cmd["workload"], batch, xla_cpu_dots)
            first = harness.timed(run)
            for _ in range(FLAGS.warmup):
                run()
            reply = {"first_call_s": first, "onednn": harness.uses_onednn(run), "malloc": malloc}
            reply["jaxformer"] = str(where.parent)
        elif cmd["op"] == "run":
            reply = {"step_s": harness.timed(run)}
        else:
            return
        print(REPLY + json.dumps(reply), flush=True)


class Worker:
    def __init__(self, root: Path, log: Path, malloc: str | None, xla_cpu_dots: str):
        self.log = log
        argv = [sys.executable, __file__, f"--worker={root}", f"--xla_cpu_dots={xla_cpu_dots}"]
        argv += [f"--dtype={FLAGS.dtype}", f"--warmup={FLAGS.warmup}"]
        argv += [f"--malloc={malloc}"] * bool(malloc)
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True
        )

    def call(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
        tail = self.log.read_text()[-3000:]
        raise RuntimeError(f"worker exited without a reply to {cmd}; its stderr ends:\n{tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


# ---------------------------------------------------------------------------------------------
# Coordinator


def git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"git {' '.join(args)} failed in {REPO}: {out.stderr.strip()}")
    return out.stdout.strip()


def extract(rev: str, folder: Path) -> None:
    """The revision's jaxformer/ package, unpacked under `folder`."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "jaxformer"], cwd=REPO, capture_output=True
    )
    if archive.returncode:
        raise SystemExit(f"git archive {rev} jaxformer failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)


def checkpoint(name: str, folder: Path) -> Path:
    """`harness.torch_model(name)` saved by transformers under `folder`, read by both workers."""
    out = folder / name
    if not out.exists():
        harness.torch_model(name).save_pretrained(out)
    return out


def parse_shapes(shapes: Sequence[str]) -> list[tuple[int, int]]:
    return [tuple(int(n) for n in s.lower().split("x")) for s in shapes]


def markdown(rows: list[dict], baseline: str, current: str) -> str:
    lines = [
        f"baseline = {baseline}, current = {current}; step times are medians of interleaved "
        "repetitions; speedup = baseline / current (>1: current faster).",
        "",
        "| workload | model | batch x len | baseline s | current s | speedup | oneDNN b / c "
        "| malloc b / c |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['model']} | {r['batch']}x{r['length']} | "
            f"{r['baseline_step_s']:.3f} | {r['current_step_s']:.3f} | **{r['speedup']:.2f}x** | "
            f"{r['baseline_onednn']} / {r['current_onednn']} | "
            f"{r['baseline_malloc']} / {r['current_malloc']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    del argv
    if FLAGS.worker:
        return worker(Path(FLAGS.worker), FLAGS.xla_cpu_dots)
    if not FLAGS.baseline:
        raise SystemExit("--baseline=REV is required (a git revision of this repository)")
    from tqdm.auto import tqdm

    baseline = f"{FLAGS.baseline} ({git('rev-parse', '--short', FLAGS.baseline)})"
    dirty = bool(git("status", "--porcelain", "jaxformer"))  # new files count too
    current = git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    dots = {
        "baseline": FLAGS.baseline_xla_cpu_dots or FLAGS.xla_cpu_dots,
        "current": FLAGS.xla_cpu_dots,
    }
    todo = [
        (m, s, w) for m in FLAGS.models for s in parse_shapes(FLAGS.shapes) for w in FLAGS.workloads
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        extract(FLAGS.baseline, Path(tmp))
        malloc = {"baseline": FLAGS.baseline_malloc or FLAGS.malloc, "current": FLAGS.malloc}
        roots = {"baseline": Path(tmp), "current": REPO}
        workers = {
            name: Worker(roots[name], Path(tmp) / f"{name}.log", malloc[name], dots[name])
            for name in roots
        }
        try:
            for model, (batch, length), workload in tqdm(todo, desc="vs_revision"):
                setup = dict(
                    op="setup",
                    folder=str(checkpoint(model, Path(tmp) / "checkpoints")),
                    batch=batch,
                    length=length,
                    workload=workload,
                )
                info = {name: w.call(**setup) for name, w in workers.items()}
                times = {name: [] for name in workers}
                for _ in range(FLAGS.reps):
                    for name, w in workers.items():
                        times[name].append(w.call(op="run")["step_s"])
                row = {"workload": workload, "model": model, "batch": batch, "length": length}
                row["dtype"] = FLAGS.dtype
                for name in workers:
                    row[f"{name}_step_s"] = statistics.median(times[name])
                    row[f"{name}_first_call_s"] = info[name]["first_call_s"]
                    row[f"{name}_xla_cpu_dots"] = dots[name]
                    row[f"{name}_onednn"] = info[name]["onednn"]
                    row[f"{name}_package"] = info[name]["jaxformer"]
                    row[f"{name}_malloc"] = info[name]["malloc"]
                row["speedup"] = row["baseline_step_s"] / row["current_step_s"]
                row["baseline"], row["current"] = baseline, current
                rows.append(row)
                tqdm.write(markdown([row], baseline, current).splitlines()[-1])
        finally:
            for w in workers.values():
                w.close()
    print(markdown(rows, baseline, current))
    if FLAGS.json:
        Path(FLAGS.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    app.run(main)
