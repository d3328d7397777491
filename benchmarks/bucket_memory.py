"""Resident memory of bucketed training under each host malloc mode (jaxformer.runtime.malloc).

  python benchmarks/bucket_memory.py --malloc=reuse
  python benchmarks/bucket_memory.py --malloc=default

Runs MiniLM-L6's jitted train step on batches of --batch examples whose length cycles through
--lengths (as length bucketing does), two steps per batch, and prints after each the compiled
step's temporary buffer (XLA's memory_analysis) and the process's resident set. With "reuse"
freed blocks stay in the heap, so the resident set can exceed the largest step's needs: each
length's temporaries may land at a new place in the heap.
"""

from __future__ import annotations

from collections.abc import Sequence

import harness
from absl import app, flags

FLAGS = flags.FLAGS
harness.malloc.define_flag()
flags.DEFINE_enum(
    "xla_cpu_dots", "onednn", list(harness.XLA_CPU_DOTS), "XLA:CPU's dots (harness.jit)."
)
flags.DEFINE_integer("batch", 16, "Examples per batch.")
flags.DEFINE_list("lengths", "128,320,192,512,256,448,384,128,512", "Padded lengths, in order.")


def main(argv: Sequence[str]) -> None:
    del argv
    mode = harness.configure_malloc(FLAGS.malloc)  # before the first jax computation
    import jax
    import jax.numpy as jnp

    import jaxformer

    model, params = jaxformer.from_pretrained(harness.minilm_folder(), num_labels=2)
    tx, step = harness.train_step(model, FLAGS.xla_cpu_dots)
    state = {"params": params, "opt": tx.init(params)}
    largest = 0.0
    for length in map(int, FLAGS.lengths):
        batch = harness.make_batch(FLAGS.batch, length, model.config.vocab_size)
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
        compiled = step.compile(state["params"], state["opt"], batch, jax.random.key(0))
        temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
        largest = max(largest, temp)
        for _ in range(2):
            state["params"], state["opt"], loss = step(
                state["params"], state["opt"], batch, jax.random.key(0)
            )
        loss.block_until_ready()
        resident = harness.proc_status_kb("VmRSS") / 2**20  # GiB
        print(
            f"malloc {mode}, {FLAGS.batch}x{length}: step temporaries {temp:.2f} GiB "
            f"(largest so far {largest:.2f}), resident {resident:.2f} GiB",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
