"""Where a jaxformer step spends its time: a jax.profiler trace, summed by kind of XLA operation.

  python benchmarks/profile_step.py --workload=infer --shape=32x128
  python benchmarks/profile_step.py --workload=train --shape=16x256 --attention=reference
  python benchmarks/profile_step.py --workload=infer --shape=32x128 --torch   # and PyTorch's
  python benchmarks/profile_step.py --model=modernbert-base --workload=train --shape=8x128

Traces `--steps` calls of the jitted step (after two untimed ones) with jax.profiler's Perfetto
output, reads back the duration of every XLA:CPU thunk, and groups them using the compiled HLO:
  matmul           thunks that contain a dot (oneDNN or YNNPACK fusions, Eigen dots), and
                   calls of the MKL GEMM kernel (jaxformer.kernels.cpu)
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
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import harness
import vs_pytorch as vp  # defines --attention, --matmul, --xla_cpu_dots and --malloc too
from absl import app, flags

from jaxformer.kernels.cpu import GEMM_TARGET
from jaxformer.runtime import onednn
from jaxformer.runtime.onednn import Instruction

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "model",
    "minilm",
    ["minilm", *harness.SHAPES],
    "minilm checkpoint, or a random model of those shapes (vs_pytorch's --models).",
)
flags.DEFINE_enum("workload", "infer", ["infer", "train"], "Forward only, or the AdamW step.")
flags.DEFINE_string("shape", "32x128", "BATCHxLENGTH.")
flags.DEFINE_integer("steps", 3, "Traced steps.")
flags.DEFINE_integer("top", 12, "Also list this many single thunks, slowest first.")
flags.DEFINE_bool(
    "torch",
    False,
    "Also profile transformers' BertForSequenceClassification (eager, same weights for minilm, "
    "same batch) with torch.profiler: time per step by aten op.",
)


def index_hlo(text: str) -> tuple[dict[str, Instruction], dict[str, str], dict]:
    """`onednn.parse_hlo` of compiled HLO text, indexed: (instruction name -> instruction,
    instruction name -> its computation, computation -> its instructions)."""
    computations = onednn.parse_hlo(text)
    instruction, home = {}, {}
    for computation, instructions in computations.items():
        for i in instructions:
            instruction.setdefault(i.name, i)
            home.setdefault(i.name, computation)
    return instruction, home, computations


def called(i: Instruction, *attributes: str) -> list[str]:
    """The computations an instruction names in these attributes (calls=, body=, ...)."""
    return re.findall(rf"\b(?:{'|'.join(attributes)})=%?([\w.\-]+)", i.text)


def loop_computations(instruction: dict, computations: dict) -> set[str]:
    """Computations run per iteration of a while loop (bodies and what they call)."""
    todo = [b for i in instruction.values() for b in called(i, "body")]
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for i in computations.get(name, []):
            todo += called(i, "calls", "to_apply", "body", "condition")
    return seen


RANDOM_BITS_OPS = ("xor", "shift-left", "shift-right-logical")
LAYOUT_OPS = ("copy", "transpose", "bitcast", "parameter")


def kind_of(name: str, instruction: dict, computations: dict) -> str | None:
    """Category of one thunk; None for containers (while, call) whose children are counted."""
    i = instruction[name]
    if i.opcode in ("while", "call", "conditional"):
        return None
    inner = computations.get((called(i, "calls") or [""])[0], [])  # a fusion's body
    ops = [i, *inner]
    if any(x.opcode == "dot" for x in ops) or f'custom_call_target="{GEMM_TARGET}"' in i.text:
        return "matmul"
    if any(x.opcode in RANDOM_BITS_OPS and x.text.startswith("u32[") for x in ops):
        return "random bits"
    if i.opcode in ("copy", "transpose") or (inner and all(x.opcode in LAYOUT_OPS for x in inner)):
        return "copy/transpose"
    return "other"


def main(argv: Sequence[str]) -> None:
    del argv
    import jax
    import jax.numpy as jnp

    import jaxformer
    from jaxformer.models.bert import init_params

    batch_size, length = map(int, FLAGS.shape.split("x"))
    harness.configure_malloc(FLAGS.malloc)  # before the first jax computation
    settings = dict(attention=FLAGS.attention, matmul=FLAGS.matmul)
    if FLAGS.model == "minilm":
        model, params = jaxformer.from_pretrained(harness.minilm_folder(), num_labels=2, **settings)
    elif FLAGS.model == "base":
        config = jaxformer.BertConfig(**harness.SHAPES["base"], **settings)
        model = jaxformer.BertForSequenceClassification(config)
        params = init_params(model, jax.random.key(0))
    else:  # transformers' defaults for the rest of the config, as the benchmark's
        with tempfile.TemporaryDirectory() as tmp:
            pair = vp.build_pair(FLAGS.model, Path(tmp), **settings)
        model, params = pair.jax_model, pair.jax_params
    np_batch = harness.make_batch(batch_size, length, model.config.vocab_size)
    batch = {k: jnp.asarray(v) for k, v in np_batch.items()}
    if FLAGS.workload == "infer":
        fn = harness.jit(
            lambda p, ids, mask: model.apply({"params": p}, ids, mask), FLAGS.xla_cpu_dots
        )
        args = (params, batch["input_ids"], batch["attention_mask"])
        fn = fn.compile(*args)
        hlo = fn.as_text()

        def run():
            fn(*args).block_until_ready()

    else:
        tx, step = harness.train_step(model, FLAGS.xla_cpu_dots)
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

    instruction, home, computations = index_hlo(hlo)
    in_loop = loop_computations(instruction, computations)
    per_thunk = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in instruction:
            per_thunk[e["name"]] += e.get("dur", 0) / 1e3 / FLAGS.steps  # ms per step
    groups = collections.Counter()
    for name, ms in per_thunk.items():
        kind = kind_of(name, instruction, computations)
        if kind is not None:
            where = "in loop" if home[name] in in_loop else "top level"
            groups[(kind, where)] += ms
    total = sum(groups.values())
    print(
        f"\n{FLAGS.model} {FLAGS.workload} {FLAGS.shape}, attention {FLAGS.attention}, "
        f"matmul {FLAGS.matmul} ({vp.matmul_program(FLAGS.matmul)}), "
        f"XLA dots {FLAGS.xla_cpu_dots}: "
        f"wall {1e3 * statistics.median(walls):.1f} ms/step, summed thunks {total:.1f} ms/step\n"
    )
    print("| kind | where | ms/step | share |\n|---|---|---|---|")
    for (kind, where), ms in groups.most_common():
        print(f"| {kind} | {where} | {ms:.1f} | {100 * ms / total:.0f}% |")
    print(f"\nslowest {FLAGS.top} thunks (ms/step, summed over loop iterations):")
    for name, ms in per_thunk.most_common(FLAGS.top):
        kind = kind_of(name, instruction, computations)
        print(f"  {ms:8.1f}  {name:32s} {kind or 'container'}: {instruction[name].text[:70]}")
    if FLAGS.torch:
        torch_profile(np_batch)


def torch_profile(batch: dict) -> None:
    """The same step in PyTorch eager under torch.profiler, self time summed by aten op."""
    import types

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(FLAGS.threads or harness.cores())
    pair = types.SimpleNamespace(torch_model=harness.torch_model(FLAGS.model))
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
