"""Where a jaxformer step spends its time: a jax.profiler trace, summed by kind of XLA operation.

  python benchmarks/profile_step.py --workload=infer --shape=32x128
  python benchmarks/profile_step.py --workload=train --shape=16x256 --attention_impl=einsum
  python benchmarks/profile_step.py --workload=infer --shape=32x128 --torch   # and PyTorch's

Traces `--steps` calls of the jitted step (after two untimed ones) with jax.profiler's Perfetto
output, reads back the duration of every XLA:CPU thunk, and groups them using the compiled HLO:
  matmul           thunks that contain a dot (oneDNN or YNNPACK fusions, Eigen dots), and
                   calls of the MKL GEMM kernel (jaxformer.cpu_kernels)
  random bits      integer (u32) arithmetic: threefry for dropout
  copy/transpose   layout changes
  other            elementwise, reductions, softmax, layer norm, AdamW, ...
each split by whether it runs inside a loop body (the "scan" attention runs one head per
iteration). XLA may run independent thunks at the same time, so shares are of summed thunk
time, not of wall time (both are printed).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_pytorch as vp  # noqa: E402  (also defines --attention_impl, shared with this script)

from jaxformer.kernels.cpu import GEMM_TARGET  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "minilm", ["minilm", "base"], "minilm checkpoint or random bert-base.")
flags.DEFINE_enum("workload", "infer", ["infer", "train"], "Forward only, or the AdamW step.")
flags.DEFINE_string("shape", "32x128", "BATCHxLENGTH.")
flags.DEFINE_integer("steps", 3, "Traced steps.")
flags.DEFINE_enum(
    "cpu_matmul",
    "mkl",
    vp.GEMM_LIBRARIES,
    "jax's GEMMs, as vs_pytorch's --jax_cpu_matmul: mkl (the dense layers in MKL, the default "
    "with MKL installed), onednn or xla (XLA:CPU's library for every GEMM; jaxformer.onednn).",
)
flags.DEFINE_integer("top", 12, "Also list this many single thunks, slowest first.")
flags.DEFINE_bool(
    "torch",
    False,
    "Also profile transformers' BertForSequenceClassification (eager, same weights for minilm, "
    "same batch) with torch.profiler: time per step by aten op.",
)


def parse_hlo(text: str) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """(instruction -> its line, instruction -> its computation, computation -> lines)."""
    from jaxformer.runtime import onednn

    line_of, home, body = {}, {}, collections.defaultdict(list)
    for computation, instructions in onednn.parse_hlo(text).items():
        for i in instructions:
            line_of.setdefault(i.name, i.text)
            home.setdefault(i.name, computation)
            body[computation].append(i.text)
    return line_of, home, body


def loop_computations(line_of: dict, body: dict) -> set[str]:
    """Computations run per iteration of a while loop (bodies and what they call)."""
    todo = [b for line in line_of.values() for b in re.findall(r"body=%?([\w.\-]+)", line)]
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in body.get(name, []):
            todo += re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)
    return seen


def kind_of(name: str, line_of: dict, body: dict) -> str | None:
    """Category of one thunk; None for containers (while, call) whose children are counted."""
    line = line_of[name]
    op = re.search(r"(?:^|\s)([a-z][\w\-]*)\(", line).group(1)  # after the (maybe tuple) shape
    if op in ("while", "call", "conditional"):
        return None
    lines = [line] + body.get((re.findall(r"calls=%?([\w.\-]+)", line) or [""])[0], [])
    ops = " ".join(lines)
    if re.search(r"\bdot\(", ops) or f'custom_call_target="{GEMM_TARGET}"' in line:
        return "matmul"
    if re.search(r"u32\[[\d,]*\][^ ]* (xor|shift-left|shift-right-logical)\(", ops):
        return "random bits"
    if op in ("copy", "transpose") or (
        all(re.search(r"\b(copy|transpose|bitcast|parameter)\(", x) for x in lines[1:])
        and len(lines) > 1
    ):
        return "copy/transpose"
    return "other"


def main(argv: Sequence[str]) -> None:
    del argv
    import jax
    import jax.numpy as jnp

    import jaxformer
    from jaxformer.models.bert import init_params
    from jaxformer.runtime import onednn

    batch_size, length = map(int, FLAGS.shape.split("x"))
    vp.configure_malloc(FLAGS.malloc)  # before the first jax computation
    if FLAGS.model == "minilm":
        model, params = jaxformer.from_pretrained(
            vp.minilm_folder(),
            num_labels=2,
            attention_impl=FLAGS.attention_impl,
            matmul_impl=vp.matmul_impl(FLAGS.cpu_matmul),
        )
    else:
        config = jaxformer.BertConfig(
            **vp.SHAPES["base"],
            attention_impl=FLAGS.attention_impl,
            matmul_impl=vp.matmul_impl(FLAGS.cpu_matmul),
        )
        model = jaxformer.BertForSequenceClassification(config)
        params = init_params(model, jax.random.key(0))
    np_batch = vp.make_batch(batch_size, length, model.config.vocab_size)
    batch = {k: jnp.asarray(v) for k, v in np_batch.items()}
    if FLAGS.workload == "infer":
        fn = onednn.jit(
            lambda p, ids, mask: model.apply({"params": p}, ids, mask),
            matmul=vp.xla_library(FLAGS.cpu_matmul),
        )
        args = (params, batch["input_ids"], batch["attention_mask"])
        fn = fn.compile(*args)
        hlo = fn.as_text()

        def run():
            fn(*args).block_until_ready()

    else:
        tx, step = vp.jax_train_step(model, FLAGS.cpu_matmul)
        state = {"params": params, "opt": tx.init(params)}
        step = step.compile(state["params"], state["opt"], batch, jax.random.key(0))
        hlo = step.as_text()

        def run():
            state["params"], state["opt"], loss = step(
                state["params"], state["opt"], batch, jax.random.key(0)
            )
            loss.block_until_ready()

    run()
    run()
    with tempfile.TemporaryDirectory() as tmp:
        walls = []
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(FLAGS.steps):
                t0 = time.perf_counter()
                run()
                walls.append(time.perf_counter() - t0)
        (trace,) = glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True)
        events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events

    line_of, home, body = parse_hlo(hlo)
    in_loop = loop_computations(line_of, body)
    per_thunk = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in line_of:
            per_thunk[e["name"]] += e.get("dur", 0) / 1e3 / FLAGS.steps  # ms per step
    groups = collections.Counter()
    for name, ms in per_thunk.items():
        kind = kind_of(name, line_of, body)
        if kind is not None:
            where = "in loop" if home[name] in in_loop else "top level"
            groups[(kind, where)] += ms
    total = sum(groups.values())
    print(
        f"\n{FLAGS.model} {FLAGS.workload} {FLAGS.shape}, attention_impl={FLAGS.attention_impl}, "
        f"GEMMs {FLAGS.cpu_matmul}: "
        f"wall {1e3 * statistics.median(walls):.1f} ms/step, summed thunks {total:.1f} ms/step\n"
    )
    print("| kind | where | ms/step | share |\n|---|---|---|---|")
    for (kind, where), ms in groups.most_common():
        print(f"| {kind} | {where} | {ms:.1f} | {100 * ms / total:.0f}% |")
    print(f"\nslowest {FLAGS.top} thunks (ms/step, summed over loop iterations):")
    for name, ms in per_thunk.most_common(FLAGS.top):
        kind = kind_of(name, line_of, body)
        print(f"  {ms:8.1f}  {name:32s} {kind or 'container'}: {line_of[name][:70]}")
    if FLAGS.torch:
        torch_profile(np_batch)


def torch_profile(batch: dict) -> None:
    """The same step in PyTorch eager under torch.profiler, self time summed by aten op."""
    import types

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(vp.cores())
    pair = types.SimpleNamespace(torch_model=vp.torch_model(FLAGS.model))
    run = vp.torch_runner(pair, FLAGS.workload, batch, False, "float32")
    run()
    run()
    walls = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(FLAGS.steps):
            t0 = time.perf_counter()
            run()
            walls.append(time.perf_counter() - t0)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) / 1e3 / FLAGS.steps  # ms per step
    print(
        f"\ntorch eager {FLAGS.model} {FLAGS.workload} {FLAGS.shape}: wall "
        f"{1e3 * statistics.median(walls):.1f} ms/step, summed self time {total:.1f} ms/step\n"
    )
    print("| aten op | ms/step | share |\n|---|---|---|")
    for e in ops[: FLAGS.top]:
        ms = e.self_cpu_time_total / 1e3 / FLAGS.steps
        print(f"| {e.key} | {ms:.1f} | {100 * ms / total:.0f}% |")


if __name__ == "__main__":
    app.run(main)
