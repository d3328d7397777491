"""LoRA against full fine-tuning, in one interleaved run: train-state bytes and train step time.

  python benchmarks/lora.py --models=minilm,base --shapes=32x128 --reps=5

Each model is loaded twice from the same folder (MiniLM-L6's checkpoint; bert-base shapes with
random weights, written once by transformers): as the classification model jaxformer fine-tunes
in full, and with LoRA adapters (`--rank`, `--alpha`, the family's default targets). Both train
with the loop's own state and step (`training.steps.create_state`, `steps.train_step`, the
experiment's AdamW and the classification loss), compiled as the loop compiles them; the steps
alternate on the same batch. The train state's bytes are the parameters and the optimizer state
(a LoRA state holds Adam's moments for the adapters and the head only). Prints a markdown table
with the ratios LoRA / full.
"""

from __future__ import annotations

import functools
import os
import statistics
import tempfile
from pathlib import Path

import harness
import jax
import numpy as np
from absl import app, flags

import jaxformer
from jaxformer.kernels import autotune
from jaxformer.tasks import classification
from jaxformer.training import config as base_config
from jaxformer.training import parallel, steps

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["minilm", "base"], "minilm (the real checkpoint) or harness shapes.")
flags.DEFINE_list("shapes", ["32x128"], "batch x length.")
flags.DEFINE_integer("reps", 5, "Timed steps of each side, interleaved.")
flags.DEFINE_integer("rank", 8, "LoRA rank.")
flags.DEFINE_float("alpha", 16.0, "LoRA alpha.")


def folder(name: str, workdir: Path) -> Path:
    if name == "minilm":
        return harness.minilm_folder()
    path = workdir / name
    if not path.exists():
        harness.torch_model(name).save_pretrained(path)
    return path


def nbytes(tree) -> int:
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


def side(path: Path, lora: jaxformer.LoraConfig | None):
    """(model, state, compiled step) of one side."""
    kwargs = {} if lora is None else {"lora": lora}
    model, params = jaxformer.from_pretrained(path, task="classification", num_labels=2, **kwargs)
    optimizer = base_config.get_config().optimizer
    state = steps.create_state(model, params, optimizer, num_steps=1000)
    step = parallel.jit(
        functools.partial(steps.train_step, loss_terms=classification.single_label_terms),
        "auto",
    )
    return model, state, step


def measure(name: str, batch_size: int, length: int, workdir: Path) -> dict:
    path = folder(name, workdir)
    lora = jaxformer.LoraConfig(rank=FLAGS.rank, alpha=FLAGS.alpha)
    sides = {"full": side(path, None), "lora": side(path, lora)}
    vocab = sides["full"][0].config.vocab_size
    batch = harness.make_batch(batch_size, length, vocab)
    batch = batch | {
        "token_type_ids": np.zeros_like(batch["input_ids"]),
        "weights": np.ones(batch_size, np.float32),
    }
    rng = jax.random.key(0)
    row = {"model": name, "shape": f"{batch_size}x{length}"}
    states = {k: s[1] for k, s in sides.items()}
    for k, (_, state, _) in sides.items():
        row[f"{k}_state_bytes"] = nbytes(state.params) + nbytes(state.opt_state)
        row[f"{k}_opt_bytes"] = nbytes(state.opt_state)
    times = {k: [] for k in sides}
    runs = {
        k: functools.partial(lambda f, s: jax.block_until_ready(f(s, batch, rng)), step, states[k])
        for k, (_, _, step) in sides.items()
    }
    for rep in range(FLAGS.reps + 1):
        for k, run in runs.items():
            t = harness.timed(run)
            if rep:  # the first call compiles
                times[k].append(t)
    for k in sides:
        row[f"{k}_step_s"] = statistics.median(times[k])
    return row


def main(argv):
    del argv
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in FLAGS.models:
            for shape in FLAGS.shapes:
                b, t = map(int, shape.split("x"))
                rows.append(measure(name, b, t, Path(tmp)))
    print(
        f"{autotune.cpu_model()}, {harness.cores()} cores, jax {jax.__version__}; LoRA rank "
        f"{FLAGS.rank}, alpha {FLAGS.alpha}, the family's default targets\n"
    )
    print(
        "| model | batch x len | state MiB full / LoRA (ratio) | optimizer state MiB full / LoRA "
        "| step s full / LoRA (LoRA speedup) |"
    )
    print("|---|---|---|---|---|")
    mib = 2**20
    for r in rows:
        ratio = r["lora_state_bytes"] / r["full_state_bytes"]
        print(
            f"| {r['model']} | {r['shape']} | {r['full_state_bytes'] / mib:.0f} / "
            f"{r['lora_state_bytes'] / mib:.0f} ({ratio:.2f}) "
            f"| {r['full_opt_bytes'] / mib:.1f} / {r['lora_opt_bytes'] / mib:.2f} "
            f"| {r['full_step_s']:.3f} / {r['lora_step_s']:.3f} "
            f"({r['full_step_s'] / r['lora_step_s']:.2f}x) |"
        )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app.run(main)
