"""One GPU, one command: jaxformer's train step in bf16 and float32 beside transformers' PyTorch
(eager SDPA and torch.compile), cuDNN against XLA attention, and bf16 parity.

  python benchmarks/gpu_check.py --json /tmp/gpu_check.json --markdown /tmp/gpu_check.md
  python benchmarks/gpu_check.py --dry-run --json /tmp/dry.json   # CPU, tiny model, seconds

Rows: bert-base shapes (random weights, one checkpoint folder written by transformers and read
by both sides) at (batch, length) (32, 128) and (16, 512), dtypes bfloat16 (jax: bf16 compute on
float32 parameters; torch: autocast) and float32. Attention dropout is 0 on both sides, so the
fused attention programs run (they take no dropout: `jaxformer.dispatch`); hidden dropout 0.1.
Each step is timed `--reps` times after `--warmup` calls; the median is reported.
MFU = 3 x forward FLOPs (`vs_pytorch.fwd_flops_per_token`, padded tokens) per second over
`--peak-tflops`, the GPU's dense bf16 peak (float32 rows are measured against it too).
Parity: jax bf16 logits against jax float32 logits of the same weights, batch, train=False.
`--dry-run` runs the same code on CPU with the tiny model at (2, 16), one repetition, and no
torch.compile (its compile alone takes minutes on CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import harness
import numpy as np

sys.path.insert(0, str(harness.REPO))  # this checkout's jaxformer, not an installed one

# H200 SXM dense bf16 peak without sparsity: 989 TFLOP/s by NVIDIA's H100/H200 datasheet
# (1979 with 2:4 sparsity); /work/.library/device/H200.md gives "about 990 TFLOP/s" for the same
# part and KINDS.md measures 769-798 TFLOP/s for an 8192^3 bf16 product there.
H200_BF16_DENSE_TFLOPS = 989.0
SHAPES = [(32, 128), (16, 512)]
DTYPES = ("bfloat16", "float32")
ATTENTIONS = ("cudnn", "xla")
PARITY_ATOL = 0.05  # bf16 logits of a random bert-base: 8 significant bits through 12 layers


def build(name: str, workdir: Path):
    """transformers' model (SDPA, attention dropout 0) saved to a folder; its config dict."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        **harness.SHAPES[name],
        num_labels=2,
        attention_probs_dropout_prob=0.0,
        attn_implementation="sdpa",
    )
    model = transformers.BertForSequenceClassification(config)
    folder = workdir / name
    model.save_pretrained(folder)
    return model, folder, config.to_dict()


def jax_model(folder: Path, dtype: str, attention: str):
    import jaxformer

    return jaxformer.from_pretrained(
        folder, num_labels=2, dtype=dtype, attention=attention, matmul="xla"
    )


def attention_program(model, batch: dict) -> str:
    """The program the dispatcher runs for this model's attention on this batch."""
    import jax.numpy as jnp

    from jaxformer import dispatch, layers

    c = model.config
    b, t = batch["input_ids"].shape
    q = jnp.zeros((b, t, c.num_attention_heads, c.head_dim), c.compute_dtype)
    mask = layers.padding_mask(jnp.asarray(batch["attention_mask"]))
    return dispatch.attention_program(c.attention, q, q, q, mask)


def timed_median(run: Callable[[], None], reps: int, warmup: int) -> tuple[float, float]:
    """(first call's seconds, median seconds of `reps` calls after `warmup` more)."""
    first = harness.timed(run)
    for _ in range(warmup):
        run()
    return first, statistics.median(harness.timed(run) for _ in range(reps))


def torch_step(model, batch: dict, dtype: str, compiled: bool, device: str) -> Callable[[], None]:
    import torch

    model = model.to(device).train()
    fn = torch.compile(model) if compiled else model
    tb = {k: torch.from_numpy(v.astype(np.int64)).to(device) for k, v in batch.items()}
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=harness.LR, weight_decay=harness.WEIGHT_DECAY
    )
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def run():
        with autocast:
            out = fn(**tb)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def parity(folder: Path, batch: dict) -> dict:
    import jax
    import jax.numpy as jnp

    logits = {}
    for dtype in DTYPES:
        model, params = jax_model(folder, dtype, "auto")
        forward = jax.jit(lambda p, ids, mask, m=model: m.apply({"params": p}, ids, mask))
        ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
        logits[dtype] = np.asarray(forward(params, ids, mask), np.float32)
    diff = float(np.abs(logits["bfloat16"] - logits["float32"]).max())
    return {"max_abs_diff": diff, "atol": PARITY_ATOL, "ok": diff <= PARITY_ATOL}


def run_check(dry_run: bool, peak_tflops: float, reps: int, warmup: int) -> dict:
    import jax
    import torch
    from vs_pytorch import fwd_flops_per_token  # imports jaxformer: after the path is set

    name, shapes = ("tiny", [(2, 16)]) if dry_run else ("base", SHAPES)
    if dry_run:
        reps, warmup = 1, 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows, parities = [], []
    with tempfile.TemporaryDirectory() as tmp:
        torch_model, folder, hf = build(name, Path(tmp))
        for b, t in shapes:
            batch = harness.make_batch(b, t, hf["vocab_size"])
            train_flops = 3 * fwd_flops_per_token(hf, t) * b * t
            for dtype in DTYPES:
                row = {"model": name, "batch": b, "length": t, "dtype": dtype}
                for attention in ATTENTIONS:
                    model, params = jax_model(folder, dtype, attention)
                    run = harness.runner(model, params, "train", batch, "default")
                    first, median = timed_median(run, reps, warmup)
                    row[f"jax_{attention}_program"] = attention_program(model, batch)
                    row[f"jax_{attention}_first_s"] = first
                    row[f"jax_{attention}_examples_per_s"] = b / median
                    row[f"jax_{attention}_mfu"] = train_flops / median / (peak_tflops * 1e12)
                for side, compiled in (("torch_eager", False), ("torch_compile", True)):
                    if compiled and dry_run:
                        row[f"{side}_examples_per_s"] = None
                        continue
                    step = torch_step(torch_model, batch, dtype, compiled, device)
                    _, median = timed_median(step, reps, warmup)
                    row[f"{side}_examples_per_s"] = b / median
                    row[f"{side}_mfu"] = train_flops / median / (peak_tflops * 1e12)
                rows.append(row)
            parities.append({"batch": b, "length": t, **parity(folder, batch)})
    machine = {
        "jax_backend": jax.default_backend(),
        "jax_device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torch_device": torch.cuda.get_device_name() if device == "cuda" else platform.machine(),
        "peak_tflops": peak_tflops,
        "dry_run": dry_run,
        "reps": reps,
        "warmup": warmup,
    }
    return {"machine": machine, "rows": rows, "parity": parities}


def _num(x, digits=1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# GPU check: {m['jax_device']} (jax {m['jax']}, torch {m['torch']})",
        "",
        f"Train step, examples/s (MFU against {m['peak_tflops']:.0f} TFLOP/s dense bf16); "
        f"median of {m['reps']} after {m['warmup']} warm-up calls.",
        "",
        "| model | batch x length | dtype | jax cuDNN (program) | jax XLA | torch eager | "
        "torch.compile |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:

        def cell(prefix, r=r):
            speed = r.get(f"{prefix}_examples_per_s")
            mfu = r.get(f"{prefix}_mfu")
            return "-" if speed is None else f"{_num(speed)} ({_num(100 * mfu)}%)"

        lines.append(
            f"| {r['model']} | {r['batch']} x {r['length']} | {r['dtype']} | "
            f"{cell('jax_cudnn')} `{r['jax_cudnn_program']}` | {cell('jax_xla')} | "
            f"{cell('torch_eager')} | {cell('torch_compile')} |"
        )
    lines += ["", "bf16 parity (jax bf16 vs float32 logits, max |diff|):", ""]
    for p in report["parity"]:
        verdict = "ok" if p["ok"] else "FAIL"
        lines.append(
            f"- {p['batch']} x {p['length']}: {p['max_abs_diff']:.4f} (atol {p['atol']}) {verdict}"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, one rep")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default="gpu_check.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    report = run_check(args.dry_run, args.peak_tflops, args.reps, args.warmup)
    report["machine"]["seconds"] = time.perf_counter() - t0
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table)
    return 0 if all(p["ok"] for p in report["parity"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
