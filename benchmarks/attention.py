"""One attention layer's core, softmax(q k^T / sqrt(d)) v, by each implementation, and PyTorch's.

  python benchmarks/attention.py                      # MiniLM and bert-base heads, 3 shapes
  python benchmarks/attention.py --heads=12 --head_dim=64 --shapes=8x512 --reps=21

Inference (no dropout, no gradient) of `dispatch.attention` with each `--implementations` entry
(`dispatch.ATTENTION`), and `torch.nn.functional.scaled_dot_product_attention` (PyTorch's CPU
flash-attention kernel, what transformers' "sdpa" attention calls) on the same q, k, v and key
padding mask (lengths drawn as `harness.make_batch` draws them: half to all of the length), all
timed alternately in one process; median of `--reps` after two untimed calls. Every jax side is
jitted with `--xla_cpu_dots` (jaxformer.runtime.onednn), as the model's programs are. Reports ms
per call and speedup against the first implementation, and checks every side against
`layers.attention` (the reference) first.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import harness
import numpy as np
import vs_pytorch as vp  # defines --shapes, --reps, --json, --xla_cpu_dots, --malloc, --threads
from absl import app, flags

from jaxformer import dispatch, layers

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "implementations", ["scan", "cpu"], f"dispatch.attention implementations {dispatch.ATTENTION}."
)
flags.DEFINE_list(
    "heads", ["12x32", "12x64"], "HEADSxHEAD_DIM list (12x32: MiniLM-L6, 12x64: bert-base)."
)
flags.DEFINE_bool("torch_sdpa", True, "Also time torch's scaled_dot_product_attention.")


def run(heads: int, head_dim: int, batch: int, length: int, reps: int) -> dict:
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(0)
    q, k, v = (
        rng.standard_normal((batch, length, heads, head_dim), dtype=np.float32) for _ in range(3)
    )
    key_mask = harness.make_batch(batch, length, 30522)["attention_mask"].astype(bool)  # (b, s)
    jq, jk, jv = (jnp.asarray(x) for x in (q, k, v))
    mask = layers.padding_mask(jnp.asarray(key_mask))  # (b, 1, 1, s)
    expected = np.asarray(layers.attention(jq, jk, jv, mask))
    sides = {}
    for impl in FLAGS.implementations:
        fn = harness.jit(
            lambda q, k, v, m, impl=impl: dispatch.attention(q, k, v, m, implementation=impl),
            FLAGS.xla_cpu_dots,
        )
        np.testing.assert_allclose(np.asarray(fn(jq, jk, jv, mask)), expected, atol=1e-4)
        sides[impl] = lambda fn=fn: fn(jq, jk, jv, mask).block_until_ready()
    if FLAGS.torch_sdpa:
        tq, tk, tv = (torch.from_numpy(x).transpose(1, 2) for x in (q, k, v))  # (b, h, t, d)
        tmask = torch.from_numpy(key_mask)[:, None, None, :]  # (b, 1, 1, s), True = attend
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def torch_side():
            with torch.no_grad():
                return sdpa(tq, tk, tv, attn_mask=tmask)

        got = torch_side().transpose(1, 2).numpy()
        # torch gives NaN rows where every key is masked; make_batch keeps at least half
        valid = key_mask.any(-1)
        np.testing.assert_allclose(got[valid], expected[valid], atol=1e-4)
        sides["torch_sdpa"] = torch_side
    for fn in sides.values():
        fn()
        fn()
    times = {name: [] for name in sides}
    for _ in range(reps):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    first = FLAGS.implementations[0]
    return {
        "heads": heads,
        "head_dim": head_dim,
        "batch": batch,
        "length": length,
        "ms": ms,
        "speedup_vs_" + first: {name: ms[first] / m for name, m in ms.items()},
    }


def main(argv: Sequence[str]) -> None:
    del argv
    import torch

    harness.configure_malloc(FLAGS.malloc)  # before the first jax computation
    torch.set_num_threads(FLAGS.threads or harness.cores())
    rows = []
    for spec in FLAGS.heads:
        heads, head_dim = map(int, spec.split("x"))
        for batch, length in vp.parse_shapes(FLAGS.shapes):
            row = run(heads, head_dim, batch, length, FLAGS.reps)
            rows.append(row)
            first = FLAGS.implementations[0]
            print(
                f"{heads}x{head_dim} heads, {batch}x{length}: "
                + "  ".join(
                    f"{name} {m:.1f} ms ({row['speedup_vs_' + first][name]:.2f}x)"
                    for name, m in row["ms"].items()
                ),
                flush=True,
            )
    if FLAGS.json:
        Path(FLAGS.json).write_text(json.dumps({"machine": vp.machine_info(), "rows": rows}))


if __name__ == "__main__":
    app.run(main)
