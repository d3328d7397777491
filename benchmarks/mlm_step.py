"""The masked-LM train step decoding every position ("dense") vs only the chosen targets
("sparse"), interleaved in one run.

  python benchmarks/mlm_step.py --shape=32x128 --reps=5

A random BERT at MiniLM-L6's shapes (6 layers of 384, 12 heads, 1536, vocabulary 30522) and the
training loop's own step (`jaxformer.training.steps.train_step` with the masked-LM task's loss,
AdamW, dropout on). One batch (`harness.make_batch`'s token ids, lengths in [t/2, t]) is masked
as the task masks it (`jaxformer.data.masking`, 15%): the sparse side gets its masked_positions
and masked_labels (b, p), the dense side the same batch without them, so the model decodes all
(b, t) positions and the loss reads the (b, t) labels. Same targets, same loss. Each side has
its own copy of the state; the two are timed one step at a time, in turn, and the medians and
their ratio are printed.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess

import harness
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("shape", "32x128", "BATCHxLENGTH.")
flags.DEFINE_integer("reps", 5, "Timed steps per side (median reported).")
flags.DEFINE_integer("warmup", 1, "Untimed steps per side after the first (compile) one.")
flags.DEFINE_float("mask_prob", 0.15, "The share of real tokens chosen as targets.")
flags.DEFINE_integer("layers", 6, "Encoder layers (MiniLM-L6: 6; fewer for a smoke run).")
flags.DEFINE_enum(
    "xla_cpu_dots",
    "onednn",
    list(harness.XLA_CPU_DOTS),
    "XLA:CPU's library for the dots XLA compiles (jaxformer.runtime.onednn).",
)
harness.malloc.define_flag()
flags.DEFINE_string("json", None, "Write the result (a JSON object) here.")

MINILM = dict(
    vocab_size=30522,
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=12,
    intermediate_size=1536,
    max_position_embeddings=512,
)
MASK_ID, SPECIAL = 103, (0, 100, 101, 102, 103)  # BERT's uncased vocabulary: pad, unk, cls...


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def masked_batch(b: int, t: int) -> dict:
    import numpy as np

    from jaxformer.data import masking

    raw = harness.make_batch(b, t, MINILM["vocab_size"])
    ids, labels = masking.mask_tokens(
        raw["input_ids"],
        raw["attention_mask"],
        np.random.default_rng([0, 0]),
        mask_id=MASK_ID,
        vocab_size=MINILM["vocab_size"],
        special_ids=SPECIAL,
        mask_prob=FLAGS.mask_prob,
    )
    positions, targets = masking.gather_targets(labels, masking.target_slots(t, FLAGS.mask_prob))
    return {
        "input_ids": ids,
        "attention_mask": raw["attention_mask"],
        "token_type_ids": np.zeros_like(ids),
        "labels": labels,
        "masked_positions": positions,
        "masked_labels": targets,
        "weights": np.ones(b, np.float32),
        "index": np.arange(b, dtype=np.int32),
    }


def main(argv):
    del argv
    malloc = harness.configure_malloc(FLAGS.malloc)  # before any jax work
    import functools

    import jax
    import jax.numpy as jnp

    from jaxformer.models import BertConfig, BertForMaskedLM, init_params
    from jaxformer.tasks.mlm import MaskedLM
    from jaxformer.training import config as training_config
    from jaxformer.training import steps

    b, t = (int(x) for x in FLAGS.shape.split("x"))
    model = BertForMaskedLM(BertConfig(**(MINILM | {"num_hidden_layers": FLAGS.layers})))
    params = init_params(model, jax.random.key(0))
    optimizer = training_config.get_config().optimizer
    batch = {k: jnp.asarray(v) for k, v in masked_batch(b, t).items()}
    sides = {
        "dense": {k: v for k, v in batch.items() if k not in ("masked_positions", "masked_labels")},
        "sparse": batch,
    }
    step = harness.jit(
        functools.partial(
            steps.train_step, loss_terms=MaskedLM.loss_terms, model_inputs=MaskedLM.model_inputs
        ),
        FLAGS.xla_cpu_dots,
        donate_argnums=0,
    )
    states = {
        side: steps.create_state(model, jax.tree.map(jnp.copy, params), optimizer, 1000)
        for side in sides
    }
    rng = jax.random.key(1)
    times: dict[str, list[float]] = {side: [] for side in sides}
    first, losses = {}, {}

    def run(side):
        states[side], metrics = step(states[side], sides[side], rng)
        jax.block_until_ready((states[side], metrics))
        return metrics

    for side in sides:  # compile, then the warm-up steps
        first[side] = harness.timed(lambda side=side: losses.__setitem__(side, run(side)["loss"]))
        for _ in range(FLAGS.warmup):
            run(side)
    for _ in range(FLAGS.reps):
        for side in sides:
            times[side].append(harness.timed(lambda side=side: run(side)))

    median = {side: statistics.median(v) for side, v in times.items()}
    result = {
        "shape": FLAGS.shape,
        "vocab_size": MINILM["vocab_size"],
        "layers": FLAGS.layers,
        "target_slots": int(batch["masked_positions"].shape[1]),
        "targets": int((batch["labels"] != -100).sum()),
        "first_loss": {side: float(v) for side, v in losses.items()},
        "median_s": median,
        "times_s": times,
        "compile_and_first_s": first,
        "dense_over_sparse": median["dense"] / median["sparse"],
        "cpu": cpu_model(),
        "cores": harness.cores(),
        "jax": jax.__version__,
        "xla_cpu_dots": FLAGS.xla_cpu_dots,
        "malloc": malloc,
        "matmul": model.config.matmul,
        "attention": model.config.attention,
    }
    print(
        f"masked-LM train step, MiniLM-L6 shapes, {FLAGS.shape}, vocabulary "
        f"{MINILM['vocab_size']}, {result['targets']} targets in {b} x {result['target_slots']} "
        f"slots; {result['cpu']}, {result['cores']} cores, jax {jax.__version__}"
    )
    for side in sides:
        print(
            f"  {side:6s} median {median[side]:.3f} s  (steps: "
            f"{', '.join(f'{x:.3f}' for x in times[side])}; first {first[side]:.1f} s; "
            f"first loss {result['first_loss'][side]:.5f})"
        )
    print(f"  dense / sparse step time: {result['dense_over_sparse']:.2f}x")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    app.run(main)
