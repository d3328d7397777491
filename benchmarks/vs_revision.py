"""jaxformer at this checkout vs jaxformer at an earlier git revision, in one interleaved run.

  python benchmarks/vs_revision.py --baseline=03eb744 --models=minilm --reps=5
  python benchmarks/vs_revision.py --baseline=HEAD~3 --models=base --shapes=8x512 --workloads=infer
  python benchmarks/vs_revision.py --baseline=HEAD --baseline_malloc=default   # malloc's effect
  python benchmarks/vs_revision.py --baseline=4225886 --baseline_cpu_matmul=onednn   # before MKL

Speedups measured across separate runs drift with the host (up to 40% here), so this script
times both versions side by side: `git archive` extracts the baseline's `jaxformer/` package
into a temporary folder, and two worker processes, one importing each package, build the same
model from the same checkpoint folder (`vs_pytorch.build_pair`) and run the same batches
(`vs_pytorch.make_batch`) with the same step (`vs_pytorch.jax_runner`: the AdamW train step or
the inference forward). The coordinator asks them for one step at a time, alternately, so only
one runs at any moment, and reports the medians and `speedup = baseline / current` step time.
The working tree, uncommitted changes included, is the "current" side. Both workers set up host
malloc as `--malloc` says (jaxformer.host_memory, loaded from this checkout), or the baseline as
`--baseline_malloc` says.

The baseline must have the APIs the benchmark calls (`jaxformer.from_pretrained`,
`jaxformer.onednn.jit`, `ops.cross_entropy`): revisions from 03eb744 on. Revisions from before
the MKL GEMM kernel (session 9) need `--baseline_cpu_matmul=onednn` (or `xla`).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_pytorch as vp  # noqa: E402  (--models, --shapes, --workloads, --reps, --json, ...)

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string("baseline", None, "The git revision to compare against (any git rev).")
flags.DEFINE_string("worker", None, "Internal: run as a worker importing jaxformer from here.")
flags.DEFINE_enum(
    "baseline_malloc",
    None,
    ["reuse", "default"],
    "Host malloc of the baseline's worker (jaxformer.host_memory); unset: --malloc, as the "
    "current side.",
)
REPLY = "@@vs_revision "  # prefix of the workers' replies (libraries print to stdout too)


# ---------------------------------------------------------------------------------------------
# Worker: one jaxformer package, steps on request


def worker(root: Path) -> None:
    malloc = vp.configure_malloc(FLAGS.malloc)  # before any jax work
    sys.path.insert(0, str(root))
    import jaxformer

    where = Path(jaxformer.__file__).resolve()
    if not where.is_relative_to(root.resolve()):
        raise RuntimeError(f"imported jaxformer from {where}, expected it under {root}")
    pairs, run = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "setup":
                name = cmd["model"]
                if name not in pairs:
                    pairs[name] = vp.build_pair(name, Path(tmp), cpu_matmul=cmd["cpu_matmul"])
                pair = pairs[name]
                batch = vp.make_batch(cmd["batch"], cmd["length"], pair.hf_config["vocab_size"])
                run = vp.jax_runner(pair, cmd["workload"], batch)
                first = vp._timed(run)
                for _ in range(cmd["warmup"]):
                    run()
                onednn = bool(run.compiled.uses_onednn) and all(run.compiled.uses_onednn.values())
                reply = {"first_call_s": first, "onednn": onednn, "malloc": malloc}
                reply["jaxformer"] = str(where.parent)
            elif cmd["op"] == "run":
                reply = {"step_s": vp._timed(run)}
            else:
                return
            print(REPLY + json.dumps(reply), flush=True)


class Worker:
    def __init__(self, root: Path, log: Path, malloc: str | None):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, __file__, f"--worker={root}"] + [f"--malloc={malloc}"] * bool(malloc),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
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
        return worker(Path(FLAGS.worker))
    if not FLAGS.baseline:
        raise SystemExit("--baseline=REV is required (a git revision of this repository)")
    from tqdm.auto import tqdm

    baseline = f"{FLAGS.baseline} ({git('rev-parse', '--short', FLAGS.baseline)})"
    dirty = bool(git("status", "--porcelain", "jaxformer"))  # new files count too
    current = git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    todo = [
        (m, s, w)
        for m in FLAGS.models
        for s in vp.parse_shapes(FLAGS.shapes)
        for w in FLAGS.workloads
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        extract(FLAGS.baseline, Path(tmp))
        workers = {
            "baseline": Worker(
                Path(tmp), Path(tmp) / "baseline.log", FLAGS.baseline_malloc or FLAGS.malloc
            ),
            "current": Worker(REPO, Path(tmp) / "current.log", FLAGS.malloc),
        }
        try:
            for model, (batch, length), workload in tqdm(todo, desc="vs_revision"):
                setup = dict(
                    op="setup",
                    model=model,
                    batch=batch,
                    length=length,
                    workload=workload,
                    warmup=FLAGS.warmup,
                )
                matmul = {  # a baseline from before the MKL kernel: --baseline_cpu_matmul=onednn
                    "baseline": FLAGS.baseline_cpu_matmul or FLAGS.jax_cpu_matmul,
                    "current": FLAGS.jax_cpu_matmul,
                }
                info = {
                    name: w.call(**setup, cpu_matmul=matmul[name]) for name, w in workers.items()
                }
                times = {name: [] for name in workers}
                for _ in range(FLAGS.reps):
                    for name, w in workers.items():
                        times[name].append(w.call(op="run")["step_s"])
                row = {"workload": workload, "model": model, "batch": batch, "length": length}
                row["jax_cpu_matmul"] = FLAGS.jax_cpu_matmul
                row["baseline_cpu_matmul"] = matmul["baseline"]
                for name in workers:
                    row[f"{name}_step_s"] = statistics.median(times[name])
                    row[f"{name}_first_call_s"] = info[name]["first_call_s"]
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
