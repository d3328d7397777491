"""jaxformer vs PyTorch (transformers' BertForSequenceClassification): train step and inference.

Same weights (one checkpoint folder written by transformers' `save_pretrained`, read by both
sides), same token batches, same process, interleaved repetitions (jax, torch, jax, torch, ...),
median after warm-up; compile / first-call time reported separately.

  python benchmarks/vs_pytorch.py --json /tmp/bench.json --markdown docs/benchmarks.md
  python benchmarks/vs_pytorch.py --quick --json /tmp/quick.json        # about a minute on CPU
  python benchmarks/vs_pytorch.py --e2e --models= --json /tmp/e2e.json  # IMDB epoch only

FLOPs are counted analytically on padded tokens (both sides compute on them):
  forward per token = 2 * L * (4 m^2 + 2 m f)   (Q, K, V, O and the two feed-forward GEMMs)
                    + 4 * L * t * m             (q.k over t keys and probs.v, all heads)
  train = 3 x forward (backward = 2 x forward); embeddings, pooler and classifier left out.
Peak is the best float32 2048x2048 GEMM of jax and torch.mm measured in the same run.
Memory is process RSS: `*_step_mem_mb` = VmHWM during one step (after resetting it through
/proc/self/clear_refs) minus VmRSS before the step, i.e. what the step itself adds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import harness
import numpy as np
from absl import app, flags
from harness import cores, make_batch, minilm_folder, torch_model

from jaxformer import dispatch

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "models",
    ["minilm", "base"],
    "minilm (the real checkpoint), base (random bert-base shape), roberta-base, "
    "deberta-v3-base, modernbert-base (random, those checkpoints' shapes), tiny (random).",
)
flags.DEFINE_list("shapes", ["32x128", "16x256", "8x512"], "BATCHxLENGTH, comma-separated.")
flags.DEFINE_list("workloads", ["train", "infer"], "train and/or infer.")
flags.DEFINE_integer("reps", 5, "Timed repetitions per side (median reported).")
flags.DEFINE_integer("warmup", 1, "Untimed calls after the first (compile) call.")
flags.DEFINE_integer("base_reps", 3, "Timed repetitions for the bert-base model (slow on CPU).")
flags.DEFINE_bool("compile", True, "Also time torch.compile'd models.")
flags.DEFINE_list("compile_models", ["minilm", "base", "tiny"], "Models to torch.compile.")
flags.DEFINE_enum(
    "dtype",
    "float32",
    ["float32", "bfloat16"],
    "Compute dtype (jax dtype=..., torch autocast); bfloat16 is meant for GPU runs.",
)
flags.DEFINE_enum(
    "attention",
    "auto",
    list(dispatch.ATTENTION),
    "jaxformer's attention program (BertConfig.attention; jaxformer.dispatch): auto = the "
    "compiled kernel on CPU where it applies (inference), scan where it does not (training "
    "with dropout), xla on other backends.",
)
flags.DEFINE_enum(
    "matmul",
    "auto",
    list(dispatch.MATMUL),
    "The dense layers' GEMMs (BertConfig.matmul): auto = mkl (MKL's sgemm, "
    "jaxformer.kernels.cpu; needs `pip install 'jaxformer[mkl]'`) for float32 on CPU, else "
    "xla (XLA's dots).",
)
flags.DEFINE_enum(
    "xla_cpu_dots",
    "onednn",
    list(harness.XLA_CPU_DOTS),
    "XLA:CPU's library for the dots XLA compiles (jaxformer.runtime.onednn; the training "
    "config's xla_cpu_dots): onednn where the program allows it (logged where not), default = "
    "XLA's own choice (YNNPACK).",
)
flags.DEFINE_enum(
    "baseline_attention",
    None,
    list(dispatch.ATTENTION),
    "Also time jax with this --attention, interleaved with the others, as a same-run baseline "
    "(columns jax_baseline_*, speedup_vs_baseline).",
)
flags.DEFINE_enum(
    "baseline_matmul", None, list(dispatch.MATMUL), "The same-run baseline's --matmul."
)
flags.DEFINE_enum(
    "baseline_xla_cpu_dots",
    None,
    list(harness.XLA_CPU_DOTS),
    "The same-run baseline's --xla_cpu_dots (each baseline setting left unset is the measured "
    "side's).",
)
flags.DEFINE_bool("quick", False, "MiniLM, 8x128, 3 reps, eager only (CI smoke run).")
flags.DEFINE_bool("e2e", False, "Also run one IMDB epoch with and without length bucketing.")
flags.DEFINE_integer("e2e_examples", 2000, "IMDB train reviews in the end-to-end epoch.")
flags.DEFINE_integer("e2e_batch", 16, "Batch size of the end-to-end epoch.")
E2E_BUCKETS = tuple(range(64, 513, 64))  # 64, 128, ..., 512
flags.DEFINE_list(
    "e2e_buckets",
    [str(b) for b in E2E_BUCKETS],
    "Padded lengths the bucketed end-to-end epoch may use (one compiled program each).",
)
flags.DEFINE_string(
    "imdb_archive",
    None,
    "aclImdb_v1.tar.gz; default $JAXFORMER_IMDB_ARCHIVE "
    "or /work/shared/data/aclImdb_v1.tar.gz when present.",
)
flags.DEFINE_string("json", None, "Write the rows (a JSON list) here.")
flags.DEFINE_string("markdown", None, "Write the markdown report here.")
flags.DEFINE_list(
    "render",
    None,
    "Measure nothing: write --markdown from these --json "
    "outputs (rows concatenated, machine of the first).",
)


harness.malloc.define_flag()  # --malloc: host malloc for this process, both frameworks
flags.DEFINE_integer("threads", None, "torch threads; default the number of usable cores.")

# ---------------------------------------------------------------------------------------------
# Machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def step_memory_mb(fn: Callable[[], None]) -> float:
    """Peak RSS added by one call of `fn` (Linux; nan elsewhere)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return float("nan")
    before = harness.proc_status_kb("VmRSS")
    fn()
    return (harness.proc_status_kb("VmHWM") - before) / 1024


def matmul_program(matmul: str, dtype: str = "float32") -> str:
    """The program `dispatch` runs the dense layers' GEMMs with for a --matmul setting."""
    import jax.numpy as jnp

    return dispatch.matmul_program(matmul, jnp.zeros((1,), dtype))


def _jax_matmul(matmul: str, xla_cpu_dots: str) -> Callable:
    """x @ w, jitted, by the program the dense layers get from `matmul`."""
    from jaxformer.kernels import cpu

    if matmul_program(matmul) == "mkl":
        return harness.jit(lambda x, w: cpu.gemm(x, w), xla_cpu_dots)
    return harness.jit(lambda x, w: x @ w, xla_cpu_dots)


def gemm_peak_tflops(
    n: int = 2048, reps: int = 5, matmul: str = "auto", xla_cpu_dots: str = "onednn"
) -> dict:
    """Best float32 n x n GEMM rate of jax (jitted, the dense layers' program) and torch.mm,
    TFLOP/s."""
    import jax.numpy as jnp
    import torch

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ja, ta = jnp.asarray(a), torch.from_numpy(a)
    gemm = _jax_matmul(matmul, xla_cpu_dots)
    rates = {}
    for name, fn in (
        ("jax", lambda: gemm(ja, ja).block_until_ready()),
        ("torch", lambda: torch.mm(ta, ta)),
    ):
        fn()
        best = min(harness.timed(fn) for _ in range(reps))
        rates[name] = 2 * n**3 / best / 1e12
    rates["peak"] = max(rates.values())
    return rates


MODEL_GEMMS = (  # 4096 tokens: MiniLM, then bert-base
    (4096, 384, 1536),
    (4096, 1536, 384),
    (4096, 384, 384),
    (4096, 768, 3072),
    (4096, 3072, 768),
    (4096, 768, 768),
)


def model_gemm_tflops(
    shapes=MODEL_GEMMS, reps: int = 7, matmul: str = "auto", xla_cpu_dots: str = "onednn"
) -> list[dict]:
    """Median float32 rate of jax (the dense layers' program) and torch on the encoder's own GEMM
    shapes (tokens x in x out: feed-forward in, feed-forward out, attention projection),
    interleaved; x @ W as both models write it."""
    import jax
    import torch

    rng = np.random.default_rng(0)
    gemm = _jax_matmul(matmul, xla_cpu_dots)
    out = []
    for m, k, n in shapes:
        x, w = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        jx, jw, tx, tw = jax.numpy.asarray(x), jax.numpy.asarray(w), torch.from_numpy(x), w.T
        tw = torch.from_numpy(tw.copy())  # torch.nn.Linear keeps (out, in)
        sides = {
            "jax": lambda jx=jx, jw=jw: gemm(jx, jw).block_until_ready(),
            "torch": lambda tx=tx, tw=tw: torch.nn.functional.linear(tx, tw),
        }
        times = {name: [] for name in sides}
        for fn in sides.values():
            fn()
        for _ in range(reps):
            for name, fn in sides.items():
                times[name].append(harness.timed(fn))
        row = {"shape": [m, k, n]}
        row.update({n_: 2 * m * k * n / statistics.median(t) / 1e12 for n_, t in times.items()})
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# Models: one checkpoint folder, read by both frameworks


@dataclasses.dataclass
class Pair:
    name: str
    folder: Path
    torch_model: object  # transformers' <Family>ForSequenceClassification
    jax_model: object
    jax_params: dict
    hf_config: dict
    xla_cpu_dots: str = "onednn"  # see harness.jit


def build_pair(
    name: str,
    workdir: Path,
    dtype: str = "float32",
    attention: str = "auto",
    matmul: str = "auto",
    xla_cpu_dots: str = "onednn",
) -> Pair:
    """transformers model (`torch_model`) -> save_pretrained -> jaxformer.from_pretrained on
    that folder, so both sides hold the same weights."""
    import jaxformer

    model = torch_model(name)
    folder = workdir / name
    model.save_pretrained(folder)
    jax_model, params = jaxformer.from_pretrained(
        folder, num_labels=2, dtype=dtype, attention=attention, matmul=matmul
    )
    return Pair(name, folder, model, jax_model, params, model.config.to_dict(), xla_cpu_dots)


def fwd_flops_per_token(hf: dict, length: int) -> float:
    """Forward FLOPs per token of the encoder's GEMMs (the attention projections, the
    feed-forward block, the scores and the weighted values). ModernBERT's GeGLU multiplies by
    a (m, 2f) and an (f, m) matrix; DeBERTa's relative-position projections are not counted."""
    L, m, f = hf["num_hidden_layers"], hf["hidden_size"], hf["intermediate_size"]
    ffn = 3 * m * f if hf.get("model_type") == "modernbert" else 2 * m * f
    return 2 * L * (4 * m * m + ffn) + 4 * L * length * m


# ---------------------------------------------------------------------------------------------
# Steps


def jax_runner(pair: Pair, workload: str, batch: dict) -> Callable[[], None]:
    """The jax step (`harness.runner`) as a no-argument callable."""
    return harness.runner(pair.jax_model, pair.jax_params, workload, batch, pair.xla_cpu_dots)


def torch_runner(pair: Pair, workload: str, batch: dict, compiled: bool, dtype: str):
    import torch

    model = pair.torch_model
    fn = torch.compile(model) if compiled else model
    tb = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}
    autocast = (
        torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16)
        if dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    if workload == "infer":

        def run():
            model.eval()
            with torch.no_grad(), autocast:
                fn(input_ids=tb["input_ids"], attention_mask=tb["attention_mask"]).logits.sum()

        return run
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=harness.LR, weight_decay=harness.WEIGHT_DECAY
    )

    def run():
        model.train()
        with autocast:
            out = fn(
                input_ids=tb["input_ids"], attention_mask=tb["attention_mask"], labels=tb["labels"]
            )
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


# ---------------------------------------------------------------------------------------------
# The side-by-side measurement


def attention_program(config, workload: str, batch_size: int, length: int) -> str:
    """The program `dispatch` runs an (unbiased) attention layer of `config` with in `workload`
    at this shape: training with attention dropout runs the reference."""
    import jax.numpy as jnp

    q = jnp.zeros((batch_size, length, config.num_attention_heads, config.head_dim), config.dtype)
    mask = jnp.ones((batch_size, 1, 1, length), bool)
    dropout = workload == "train" and config.attention_probs_dropout_prob > 0
    return dispatch.attention_program(config.attention, q, q, q, mask, dropout=dropout)


def settings(side: str, pair: Pair, workload: str, batch_size: int, length: int) -> dict:
    """The compute settings of a jax side ("jax" or "jax_baseline"), and the programs they
    choose for this row, as row fields."""
    config = pair.jax_model.config
    return {
        f"{side}_attention": config.attention,
        f"{side}_attention_program": attention_program(config, workload, batch_size, length),
        f"{side}_matmul": config.matmul,
        f"{side}_matmul_program": matmul_program(config.matmul, config.dtype),
        f"{side}_xla_cpu_dots": pair.xla_cpu_dots,
    }


def measure(
    pair: Pair,
    workload: str,
    batch_size: int,
    length: int,
    *,
    reps: int,
    warmup: int,
    compile_torch: bool,
    dtype: str,
    peak: float,
    baseline_attention: str | None = None,
    baseline_matmul: str | None = None,
    baseline_xla_cpu_dots: str | None = None,
) -> dict:
    """One row: jax, torch eager (and torch.compile, and a jax baseline with other settings)
    on one batch, interleaved."""
    batch = make_batch(batch_size, length, pair.hf_config["vocab_size"])
    sides = {
        "jax": lambda: jax_runner(pair, workload, batch),
        "torch_eager": lambda: torch_runner(pair, workload, batch, False, dtype),
    }
    row = {
        "workload": workload,
        "model": pair.name,
        "batch": batch_size,
        "length": length,
        "dtype": dtype,
        **settings("jax", pair, workload, batch_size, length),
    }
    if baseline_attention or baseline_matmul or baseline_xla_cpu_dots:  # same weights
        config = pair.jax_model.config.replace(
            attention=baseline_attention or pair.jax_model.config.attention,
            matmul=baseline_matmul or pair.jax_model.config.matmul,
        )
        baseline = dataclasses.replace(
            pair,
            jax_model=type(pair.jax_model)(config),
            xla_cpu_dots=baseline_xla_cpu_dots or pair.xla_cpu_dots,
        )
        sides["jax_baseline"] = lambda: jax_runner(baseline, workload, batch)
        row.update(settings("jax_baseline", baseline, workload, batch_size, length))
    if compile_torch:
        sides["torch_compile"] = lambda: torch_runner(pair, workload, batch, True, dtype)
    runners = {}
    for side, make in sides.items():
        try:
            run = make()
            row[f"{side}_first_call_s"] = harness.timed(run)  # compile + first step
            if side.startswith("jax"):  # did oneDNN run it, or XLA's default (see onednn)?
                row[f"{side}_onednn"] = harness.uses_onednn(run)
            for _ in range(warmup):
                run()
            row[f"{side}_step_mem_mb"] = step_memory_mb(run)
            runners[side] = run
        except Exception as e:  # torch.compile needs a working toolchain
            if side != "torch_compile":
                raise
            row["torch_compile_error"] = f"not available: {type(e).__name__}: {str(e)[:200]}"
    times = {side: [] for side in runners}
    for _ in range(reps):
        for side, run in runners.items():  # interleaved: jax, torch, torch-compile, jax, ...
            times[side].append(harness.timed(run))
    flops = (3 if workload == "train" else 1) * fwd_flops_per_token(pair.hf_config, length)
    tokens = batch_size * length
    for side, ts in times.items():
        median = statistics.median(ts)
        row[f"{side}_step_s"] = median
        row[f"{side}_examples_per_s"] = batch_size / median
        row[f"{side}_tokens_per_s"] = tokens / median
        row[f"{side}_tflops"] = flops * tokens / median / 1e12
        row[f"{side}_peak_fraction"] = row[f"{side}_tflops"] / peak
    row["ratio_vs_eager"] = row["jax_examples_per_s"] / row["torch_eager_examples_per_s"]
    if "jax_baseline" in times:
        row["speedup_vs_baseline"] = row["jax_examples_per_s"] / row["jax_baseline_examples_per_s"]
        row["baseline_ratio_vs_eager"] = (
            row["jax_baseline_examples_per_s"] / row["torch_eager_examples_per_s"]
        )
    if "torch_compile" in times:
        row["ratio_vs_compile"] = row["jax_examples_per_s"] / row["torch_compile_examples_per_s"]
    return row


def run_benchmark(
    models: Sequence[str],
    shapes: Sequence[tuple[int, int]],
    workloads: Sequence[str],
    *,
    reps: int = 5,
    base_reps: int = 3,
    warmup: int = 1,
    compile_models: Sequence[str] = (),
    dtype: str = "float32",
    attention: str = "auto",
    matmul: str = "auto",
    xla_cpu_dots: str = "onednn",
    baseline_attention: str | None = None,
    baseline_matmul: str | None = None,
    baseline_xla_cpu_dots: str | None = None,
    workdir: Path | None = None,
    progress: bool = True,
    partial_json: str | None = None,
) -> tuple[list[dict], dict]:
    """All (model, shape, workload) rows, and the machine description (with the GEMM peak)."""
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(FLAGS.threads if FLAGS.is_parsed() and FLAGS.threads else cores())
    machine = machine_info()
    machine["jax_attention"] = attention
    machine["jax_matmul"], machine["jax_matmul_program"] = matmul, matmul_program(matmul, dtype)
    machine["jax_xla_cpu_dots"] = xla_cpu_dots
    machine["gemm_tflops"] = gemm_peak_tflops(matmul=matmul, xla_cpu_dots=xla_cpu_dots)
    machine["model_gemm_tflops"] = model_gemm_tflops(matmul=matmul, xla_cpu_dots=xla_cpu_dots)
    rows = []
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        todo = [(m, s, w) for m in models for s in shapes for w in workloads]
        bar = tqdm(todo, desc="vs_pytorch", disable=not progress)
        pairs = {}
        for model, (b, t), workload in bar:
            bar.set_postfix_str(f"{model} {workload} {b}x{t}")
            if model not in pairs:
                pairs.clear()  # one model resident at a time
                pairs[model] = build_pair(model, workdir, dtype, attention, matmul, xla_cpu_dots)
            rows.append(
                measure(
                    pairs[model],
                    workload,
                    b,
                    t,
                    reps=base_reps if model == "base" else reps,
                    warmup=warmup,
                    compile_torch=model in compile_models,
                    dtype=dtype,
                    peak=machine["gemm_tflops"]["peak"],
                    baseline_attention=baseline_attention,
                    baseline_matmul=baseline_matmul,
                    baseline_xla_cpu_dots=baseline_xla_cpu_dots,
                )
            )
            bar.write(summary_line(rows[-1]))
            if partial_json:  # a long run that is stopped still leaves its rows
                Path(partial_json).write_text(json.dumps(rows, indent=1))
    machine["load_avg_after"] = os.getloadavg()
    return rows, machine


def summary_line(row: dict) -> str:
    line = (
        f"{row['workload']:5s} {row['model']:6s} {row['batch']}x{row['length']}: "
        f"jax {row['jax_examples_per_s']:.2f} ex/s, torch {row['torch_eager_examples_per_s']:.2f}"
        f" ex/s, ratio {row['ratio_vs_eager']:.2f}"
    )
    if "ratio_vs_compile" in row:
        line += f", vs compile {row['ratio_vs_compile']:.2f}"
    if "speedup_vs_baseline" in row:
        line += (
            f"; jax with {_setting(row, 'jax_baseline')} "
            f"{row['jax_baseline_examples_per_s']:.2f} ex/s (ratio "
            f"{row['baseline_ratio_vs_eager']:.2f}), speedup {row['speedup_vs_baseline']:.2f}"
        )
    return line


def _settings(record: dict, side: str) -> dict[str, str]:
    """{"attention": "auto", "matmul": "auto (mkl)", "XLA dots": "onednn"} for side "jax" or
    "jax_baseline" of a row (or "jax" of the machine record)."""
    matmul = record.get(f"{side}_matmul", "?")
    program = record.get(f"{side}_matmul_program")
    if program and program != matmul:
        matmul += f" ({program})"
    dots = record.get(f"{side}_xla_cpu_dots", "?")
    if dots == "onednn" and record.get(f"{side}_onednn") is False:
        dots = "default (oneDNN declined the program)"
    attention = record.get(f"{side}_attention", "?")
    program = record.get(f"{side}_attention_program")
    if program and program != attention:
        attention += f" ({program})"
    return {"attention": attention, "matmul": matmul, "XLA dots": dots}


def _setting(record: dict, side: str) -> str:
    """ "attention auto, matmul auto (mkl), XLA dots onednn" """
    return ", ".join(f"{name} {value}" for name, value in _settings(record, side).items())


def _setting_change(row: dict) -> str:
    """ "matmul xla -> mkl": the settings in which the baseline differs from the jax side."""
    baseline, now = _settings(row, "jax_baseline"), _settings(row, "jax")
    changes = [f"{k} {baseline[k]} -> {now[k]}" for k in now if baseline[k] != now[k]]
    return "; ".join(changes) or "none"


def _gemm_program(machine: dict) -> str:
    program = machine.get("jax_matmul_program") or machine.get("jax_matmul", "?")
    return "MKL" if program == "mkl" else f"XLA dots, {machine.get('jax_xla_cpu_dots', '?')}"


def machine_info() -> dict:
    import jax
    import torch
    import transformers

    return {
        "cpu": cpu_model(),
        "cores": cores(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_avg_before": os.getloadavg(),
    }


# ---------------------------------------------------------------------------------------------
# End to end: one IMDB epoch, bucketed vs padded to the max length


def _model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}


def e2e_epochs(
    examples: int,
    batch_size: int,
    max_length: int = 512,
    archive: str | None = None,
    dtype: str = "float32",
    buckets: Sequence[int] = E2E_BUCKETS,
    attention: str = "auto",
    matmul: str = "auto",
    xla_cpu_dots: str = "onednn",
) -> list[dict]:
    """One epoch of jax MiniLM train steps over `examples` IMDB reviews, with the data pipeline's
    length bucketing (padded lengths `buckets`) and with every batch padded to `max_length`, the two
    interleaved batch by batch; compile time kept apart."""
    import jax
    import tqdm

    import jaxformer
    from jaxformer.data import batching, imdb

    folder = minilm_folder()
    tokenizer = jaxformer.load_tokenizer(folder, max_length=max_length)
    archive = archive or os.environ.get("JAXFORMER_IMDB_ARCHIVE")
    beside_repo = Path(__file__).resolve().parents[2] / "shared/data/aclImdb_v1.tar.gz"
    if archive is None and beside_repo.exists():
        archive = str(beside_repo)
    split = imdb.load_imdb(
        tokenizer, splits=("train",), archive=archive, limits={"train": examples}
    )["train"]
    model, params0 = jaxformer.from_pretrained(
        folder, num_labels=2, dtype=dtype, attention=attention, matmul=matmul
    )
    tx, step = harness.train_step(model, xla_cpu_dots)
    key = jax.random.key(0)
    sides = []
    for bucketing in (True, False):
        batches = batching.TrainBatches(
            split, batch_size, seed=0, buckets=buckets, max_length=max_length, bucketing=bucketing
        )
        params = jax.tree.map(lambda x: x.copy(), params0)
        side = {"bucketing": bucketing, "batches": batches, "state": (params, tx.init(params))}
        side["epoch"] = [batches.batch(0, i) for i in range(batches.num_batches_per_epoch)]
        side["lengths"] = sorted({b["input_ids"].shape[1] for b in side["epoch"]})
        t0 = time.perf_counter()
        for length in side["lengths"]:  # compile each shape (and run it once)
            first = next(b for b in side["epoch"] if b["input_ids"].shape[1] == length)
            params, opt, loss = step(*side["state"], _model_inputs(first), key)
            jax.block_until_ready(loss)
            side["state"] = (params, opt)
        side["compile_s"], side["seconds"] = time.perf_counter() - t0, 0.0
        sides.append(side)
    # The two epochs advance in lockstep, one batch of each in turn, so that a change in the
    # machine's speed during the run (it happens) slows both alike and cancels in the ratio.
    steps = max(len(side["epoch"]) for side in sides)
    for i in tqdm.trange(steps, desc="e2e epochs (interleaved)"):
        for side in sides:
            if i >= len(side["epoch"]):
                continue
            t0 = time.perf_counter()
            params, opt, loss = step(
                *side["state"], _model_inputs(side["epoch"][i]), jax.random.fold_in(key, i)
            )
            jax.block_until_ready(loss)
            side["seconds"] += time.perf_counter() - t0
            side["state"] = (params, opt)
    rows = []
    for side in sides:
        real = float(sum(b["weights"].sum() for b in side["epoch"]))
        rows.append(
            {
                "workload": "e2e_epoch",
                "model": "minilm",
                "batch": batch_size,
                "length": max_length,
                "bucketing": side["bucketing"],
                "interleaved": True,
                "examples": real,
                "epoch_s": side["seconds"],
                "compile_s": side["compile_s"],
                "jax_examples_per_s": real / side["seconds"],
                "padding_fraction": side["batches"].padding_fraction(0),
                "lengths": side["lengths"],
            }
        )
    rows[0]["speedup_vs_padded"] = rows[0]["jax_examples_per_s"] / rows[1]["jax_examples_per_s"]
    return rows


# ---------------------------------------------------------------------------------------------
# Report


def markdown(rows: list[dict], machine: dict, command: str) -> str:
    gemm = machine["gemm_tflops"]
    out = [
        "# Benchmarks: jaxformer vs PyTorch",
        "",
        "Produced by `benchmarks/vs_pytorch.py`; regenerate with:",
        "",
        f"    {command}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; jax {machine['jax']} "
        f"({machine['jax_backend']}, XLA's own thread pool over all cores), "
        f"torch {machine['torch']} ({machine['torch_threads']} threads), "
        f"transformers {machine['transformers']}, Python {machine['python']}. "
        f"XLA_FLAGS={machine['xla_flags'] or '(none)'}. "
        f"jaxformer: {_setting(machine, 'jax')} (jaxformer.dispatch, jaxformer.runtime.onednn). "
        f"Host malloc: {machine.get('malloc', 'default')} (jaxformer.runtime.malloc). "
        f"Load average before/after: {_fmt_load(machine['load_avg_before'])} / "
        f"{_fmt_load(machine.get('load_avg_after'))}.",
        "",
        f"Measured float32 2048x2048 GEMM: jax ({_gemm_program(machine)}) "
        f"{gemm['jax']:.3f}, "
        f"torch {gemm['torch']:.3f} TFLOP/s; peak = {gemm['peak']:.3f} TFLOP/s."
        + (
            " On the encoder's own GEMM shapes (tokens x in x out, median, interleaved): "
            + "; ".join(
                f"{'x'.join(map(str, g['shape']))} jax {g['jax']:.3f} / torch {g['torch']:.3f}"
                for g in machine["model_gemm_tflops"]
            )
            + " TFLOP/s."
            if machine.get("model_gemm_tflops")
            else ""
        ),
        "",
        "Rows: median step time over interleaved repetitions after warm-up. ex/s = examples/s, "
        "tok/s = padded tokens/s, ratio = jax / torch (>1: jax faster), TFLOP/s and % of the GEMM "
        "peak from the analytic count in the script's docstring, mem = peak RSS added by one step "
        "(MiB), first = compile + first call (s), jax programs = the settings and, in brackets, "
        "what each chose for the row (jaxformer.dispatch). PyTorch: transformers "
        'BertForSequenceClassification with attn_implementation="sdpa"; compile = '
        "`torch.compile(model)` (default mode, inductor), optimizer step eager.",
        "",
        "| workload | model | batch x len | jax ex/s | jax tok/s | torch ex/s | compile ex/s "
        "| jax/eager | jax/compile | jax TFLOP/s (% peak) | torch TFLOP/s (% peak) "
        "| mem jax / torch MiB | first jax / torch / compile s | jax programs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["workload"] == "e2e_epoch":
            continue
        comp = r.get("torch_compile_examples_per_s")
        out.append(
            f"| {r['workload']} | {r['model']} | {r['batch']}x{r['length']} "
            f"| {r['jax_examples_per_s']:.2f} | {r['jax_tokens_per_s']:.0f} "
            f"| {r['torch_eager_examples_per_s']:.2f} "
            f"| {_num(comp) if comp else r.get('torch_compile_error', 'not run')} "
            f"| **{r['ratio_vs_eager']:.2f}** "
            f"| {_num(r.get('ratio_vs_compile'))} "
            f"| {r['jax_tflops']:.3f} ({100 * r['jax_peak_fraction']:.0f}%) "
            f"| {r['torch_eager_tflops']:.3f} ({100 * r['torch_eager_peak_fraction']:.0f}%) "
            f"| {r['jax_step_mem_mb']:.0f} / {r['torch_eager_step_mem_mb']:.0f} "
            f"| {r['jax_first_call_s']:.1f} / {r['torch_eager_first_call_s']:.1f} / "
            f"{_num(r.get('torch_compile_first_call_s'), 1)} | {_setting(r, 'jax')} |"
        )
    based = [r for r in rows if "speedup_vs_baseline" in r]
    if based:
        out += [
            "",
            "Same run, same weights and batches, a third side interleaved with the two above: "
            "jax with other compute settings (the baseline).",
            "",
            "| workload | model | batch x len | jax settings changed (baseline -> now) "
            "| jax ex/s baseline "
            "-> now | speedup | jax/eager baseline -> now |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in based:
            out.append(
                f"| {r['workload']} | {r['model']} | {r['batch']}x{r['length']} "
                f"| {_setting_change(r)} "
                f"| {r['jax_baseline_examples_per_s']:.2f} -> {r['jax_examples_per_s']:.2f} "
                f"| **{r['speedup_vs_baseline']:.2f}x** "
                f"| {r['baseline_ratio_vs_eager']:.2f} -> {r['ratio_vs_eager']:.2f} |"
            )
    e2e = [r for r in rows if r["workload"] == "e2e_epoch"]
    for bucketed, padded in zip(e2e[::2], e2e[1::2], strict=True):  # pairs from e2e_epochs
        out += [
            "",
            f"## End to end: one IMDB epoch ({int(bucketed['examples'])} train reviews, "
            f"MiniLM-L6, batch {bucketed['batch']}, max length {bucketed['length']}, "
            "jax train steps, "
            + (
                "the two epochs interleaved batch by batch)"
                if bucketed.get("interleaved")
                else "the two epochs one after the other)"
            ),
            "",
            "| batching | padded lengths | padding fraction | ex/s | epoch s | compile s |",
            "|---|---|---|---|---|---|",
        ]
        for r in (bucketed, padded):
            out.append(
                f"| {'length buckets' if r['bucketing'] else 'all padded to max'} "
                f"| {', '.join(map(str, r['lengths']))} | {r['padding_fraction']:.2f} "
                f"| {r['jax_examples_per_s']:.2f} | {r['epoch_s']:.1f} | {r['compile_s']:.1f} |"
            )
        out += ["", f"Bucketing speedup: **{bucketed['speedup_vs_padded']:.2f}x**."]
    return "\n".join(out) + "\n"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _fmt_load(load) -> str:
    return "n/a" if load is None else ", ".join(f"{x:.1f}" for x in load)


def parse_shapes(shapes: Sequence[str]) -> list[tuple[int, int]]:
    return [tuple(int(n) for n in s.lower().split("x")) for s in shapes]


NOTES_MARKER = "<!-- Everything below is kept when the report above is regenerated. -->"


def write_markdown(path: str, report: str) -> None:
    """Writes `report`, keeping the hand-written notes after NOTES_MARKER in an existing file."""
    notes = ""
    if Path(path).exists():
        _, marker, notes = Path(path).read_text().partition(NOTES_MARKER)
        notes = marker + notes
    Path(path).write_text(report + ("\n" + notes if notes else ""))


# Files written with the earlier setting names: --attention_impl's values, and --jax_cpu_matmul,
# which named the dense layers' GEMMs and XLA's dot library together (matmul, xla_cpu_dots).
_OLD_ATTENTION = {"einsum": "reference", "fused": "xla", "cpu_kernel": "cpu"}
_OLD_GEMMS = {"mkl": ("mkl", "onednn"), "onednn": ("xla", "onednn"), "xla": ("xla", "default")}


def current_names(record: dict) -> dict:
    """A row or machine record of a --json file, with the setting fields named as now."""
    record = dict(record)
    for old in ("attention_impl", "jax_attention_impl"):
        if old in record:
            record.setdefault("jax_attention", record.pop(old))
    for side in ("jax", "jax_baseline"):
        if f"{side}_attention" in record:
            value = record[f"{side}_attention"]
            record[f"{side}_attention"] = _OLD_ATTENTION.get(value, value)
        if f"{side}_cpu_matmul" in record:
            matmul, dots = _OLD_GEMMS[record.pop(f"{side}_cpu_matmul")]
            record.setdefault(f"{side}_matmul", matmul)
            record.setdefault(f"{side}_xla_cpu_dots", dots)
    return record


def current_command(command: str, machine: dict) -> str:
    """A recorded command line with the flags named as now, and the settings its run recorded
    (`machine`, named as now) where they differ from today's defaults."""

    def gemms(match: re.Match) -> str:
        matmul, dots = _OLD_GEMMS[match.group(2)]
        prefix = match.group(1) or ""
        return f"--{prefix}matmul={matmul}" + (
            f" --{prefix}xla_cpu_dots={dots}" if dots != "onednn" else ""
        )

    command = re.sub(r"--(baseline_|jax_)?cpu_matmul=(\w+)", gemms, command)
    for flag, default in (("matmul", ("auto", "mkl")), ("xla_cpu_dots", ("onednn",))):
        value = machine.get(f"jax_{flag}")
        if value and value not in default and f" --{flag}=" not in command:
            command += f" --{flag}={value}"
    return re.sub(
        r"--(baseline_attention|attention_impl)=(\w+)",
        lambda m: f"--{m.group(1).replace('_impl', '')}={_OLD_ATTENTION.get(m[2], m[2])}",
        command,
    )


def render(json_files: Sequence[str], out: str) -> None:
    rows, commands, machine = [], [], None
    for name in json_files:
        rows += [current_names(r) for r in json.loads(Path(name).read_text())]
        meta = json.loads(Path(name).with_suffix(".machine.json").read_text())
        machine = machine or current_names(meta["machine"])
        machine["load_avg_after"] = meta["machine"].get("load_avg_after")
        commands.append(current_command(meta["command"], current_names(meta["machine"])))
    write_markdown(out, markdown(rows, machine, "\n    ".join(commands)))


def main(argv: Sequence[str]) -> None:
    del argv
    if FLAGS.render:
        render(FLAGS.render, FLAGS.markdown)
        return
    malloc = harness.configure_malloc(FLAGS.malloc)  # before any jax work
    models, shapes, workloads = FLAGS.models, parse_shapes(FLAGS.shapes), FLAGS.workloads
    reps, compile_models = FLAGS.reps, FLAGS.compile_models if FLAGS.compile else []
    if FLAGS.quick:
        models, shapes, reps, compile_models = ["minilm"], [(8, 128)], 3, []
    rows, machine = run_benchmark(
        models,
        shapes,
        workloads,
        reps=reps,
        base_reps=FLAGS.base_reps,
        warmup=FLAGS.warmup,
        compile_models=compile_models,
        dtype=FLAGS.dtype,
        attention=FLAGS.attention,
        matmul=FLAGS.matmul,
        xla_cpu_dots=FLAGS.xla_cpu_dots,
        baseline_attention=FLAGS.baseline_attention,
        baseline_matmul=FLAGS.baseline_matmul,
        baseline_xla_cpu_dots=FLAGS.baseline_xla_cpu_dots,
        partial_json=FLAGS.json,
    )
    machine["malloc"] = malloc
    if FLAGS.e2e:
        rows += e2e_epochs(
            FLAGS.e2e_examples,
            FLAGS.e2e_batch,
            archive=FLAGS.imdb_archive,
            dtype=FLAGS.dtype,
            buckets=[int(b) for b in FLAGS.e2e_buckets],
            attention=FLAGS.attention,
            matmul=FLAGS.matmul,
            xla_cpu_dots=FLAGS.xla_cpu_dots,
        )
        print(
            f"e2e: bucketing {rows[-2]['jax_examples_per_s']:.2f} ex/s "
            f"(padding {rows[-2]['padding_fraction']:.2f}) vs padded "
            f"{rows[-1]['jax_examples_per_s']:.2f} ex/s (padding "
            f"{rows[-1]['padding_fraction']:.2f}): {rows[-2]['speedup_vs_padded']:.2f}x"
        )
    command = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    if FLAGS.json:  # the rows; the machine and command go next to them
        Path(FLAGS.json).write_text(json.dumps(rows, indent=1))
        Path(FLAGS.json).with_suffix(".machine.json").write_text(
            json.dumps({"machine": machine, "command": command}, indent=1)
        )
    if FLAGS.markdown:
        write_markdown(FLAGS.markdown, markdown(rows, machine, command))


if __name__ == "__main__":
    app.run(main)
