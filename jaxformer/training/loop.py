"""Fine-tuning a BERT classifier: `train_step`, `eval_step`, `train_and_evaluate(config, workdir)`.

Mirrors the Flax examples' train.py (wmt, lm1b): a pure train step compiled where it is called
(jit over a device Mesh with NamedSharding, pmap, or one device), Optax AdamW with linear warmup
and decay, Orbax checkpoints that resume exactly (the data order is a function of the step).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxformer.data import pipeline as data_lib
from jaxformer.hf.convert import from_pretrained, save_pretrained
from jaxformer.models import BertForSequenceClassification, init_params
from jaxformer.models.config import BertConfig
from jaxformer.runtime import onednn
from jaxformer.tokenizer import load_tokenizer

log = logging.getLogger("jaxformer")

# Leaves that get weight decay: matrices and embedding tables. Biases and LayerNorm scales don't.
DECAYED = {"w_q", "w_k", "w_v", "w_o", "w1", "w2", "kernel", "embedding"}


class TrainState(train_state.TrainState):
    rng: jax.Array  # base dropout key; step s uses fold_in(rng, s)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad setup); the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- optimizer


def decay_mask(params) -> Any:
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key in DECAYED, params)


def make_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to the peak learning rate, then linear decay to 0."""
    warmup = (
        cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_fraction * num_steps)
    )
    warmup = min(max(warmup, 1), num_steps)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, cfg.learning_rate, warmup),
            optax.linear_schedule(cfg.learning_rate, 0.0, max(num_steps - warmup, 1)),
        ],
        [warmup],
    )


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(
            make_schedule(cfg, num_steps),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        ),
    )


# ----------------------------------------------------------------------------- steps


def _loss_sums(params, apply_fn, batch, dropout_rng):
    """Sums over real examples (weight 1), so micro-batches and devices can be added up."""
    logits = apply_fn(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        train=True,
        rngs={"dropout": dropout_rng},
    )
    logp = jax.nn.log_softmax(logits, axis=-1)  # (b, labels)
    nll = -jnp.take_along_axis(logp, batch["labels"][:, None], axis=-1)[:, 0]  # (b,)
    w = batch["weights"]
    correct = (logits.argmax(-1) == batch["labels"]) * w
    return (nll * w).sum(), (correct.sum(), w.sum())


def train_step(
    state: TrainState,
    batch: dict,
    rng: jax.Array,
    *,
    accum_steps: int = 1,
    axis_name: str | None = None,
) -> tuple[TrainState, dict]:
    """One AdamW update on a global batch of (b,) examples; gradients averaged over weights.

    With `accum_steps` > 1 the batch is split into that many micro-batches (lax.scan) whose
    gradient sums are added: the update equals the one-shot update, with less memory.
    Under pmap, `axis_name` names the device axis the sums are psum'ed over.
    """
    dropout_rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None:
        dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
    grad_fn = jax.value_and_grad(_loss_sums, has_aux=True)
    if accum_steps == 1:
        (loss_sum, (correct, count)), grads = grad_fn(
            state.params, state.apply_fn, batch, dropout_rng
        )
    else:
        micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)

        def accumulate(carry, i_mb):
            i, mb = i_mb
            (l, (c, n)), g = grad_fn(
                state.params, state.apply_fn, mb, jax.random.fold_in(dropout_rng, i)
            )
            return jax.tree.map(jnp.add, carry, (l, c, n, g)), None

        zeros = (0.0, 0.0, 0.0, jax.tree.map(jnp.zeros_like, state.params))
        (loss_sum, correct, count, grads), _ = jax.lax.scan(
            accumulate, zeros, (jnp.arange(accum_steps), micro)
        )
    if axis_name is not None:
        loss_sum, correct, count, grads = jax.lax.psum((loss_sum, correct, count, grads), axis_name)
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    new_state = state.apply_gradients(grads=grads)
    updates = jax.tree.map(jnp.subtract, new_state.params, state.params)
    metrics = {
        "loss": loss_sum / denom,
        "accuracy": correct / denom,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(new_state.params),
        "update_norm": optax.global_norm(updates),
    }
    return new_state, metrics


def eval_step(state: TrainState, batch: dict) -> jax.Array:
    """Deterministic logits (b, labels) for a batch; metrics are computed on the host."""
    return state.apply_fn(
        {"params": state.params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
    )


# ----------------------------------------------------------------------------- parallelism


@dataclasses.dataclass
class Parallelism:
    """Where the state lives and how steps compile: "jit" (Mesh + NamedSharding, batch split over
    all devices, params replicated; multi-host ready), "pmap" (replicated state, psum of
    gradient sums over local devices) or "single" (one device)."""

    kind: str = "jit"
    cpu_matmul: str = "xla"  # see onednn; jit and single only (jax.pmap takes no options)

    def __post_init__(self):
        if self.kind not in ("jit", "pmap", "single"):
            raise ValueError(f"parallelism must be 'jit', 'pmap' or 'single', got {self.kind!r}")
        if self.cpu_matmul not in onednn.MATMUL_LIBRARIES:
            raise ValueError(
                f"cpu_matmul must be one of {onednn.MATMUL_LIBRARIES}, got {self.cpu_matmul!r}"
            )
        if self.kind == "jit":
            self.mesh = Mesh(np.asarray(jax.devices()), ("data",))
            self.replicated = NamedSharding(self.mesh, P())
            self.sharded = NamedSharding(self.mesh, P("data"))
        self.devices = jax.local_devices() if self.kind == "pmap" else jax.devices()
        if self.kind == "single":
            self.devices = self.devices[:1]
        if self.kind == "pmap":  # a leading axis of one slice per local device
            self.stacked = NamedSharding(Mesh(np.asarray(self.devices), ("batch",)), P("batch"))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def check_batch_size(self, global_batch: int, what: str = "batch_size") -> None:
        per = jax.process_count() * (jax.local_device_count() if self.kind != "single" else 1)
        if global_batch % per:
            raise ValueError(
                f"{what}={global_batch} must be divisible by {per} (devices used by "
                f"parallelism={self.kind!r}); change --config.{what} or the device count"
            )

    def put_state(self, state):
        if self.kind == "jit":
            return jax.device_put(state, self.replicated)
        if self.kind == "pmap":
            n = self.num_devices
            return jax.device_put(
                jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), state),
                self.stacked,
            )
        return jax.device_put(state, self.devices[0])

    def put_batch(self, batch: dict):
        """This process's slice of the global batch -> device arrays."""
        if self.kind == "jit":
            return jax.tree.map(
                lambda x: jax.make_array_from_process_local_data(self.sharded, x), batch
            )
        if self.kind == "pmap":
            n = self.num_devices
            return jax.device_put(
                jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), batch), self.stacked
            )
        return jax.device_put(batch, self.devices[0])

    def adapt_model(self, model: BertForSequenceClassification) -> BertForSequenceClassification:
        """The model with XLA's GEMMs when jit splits the batch over several devices: the MKL
        GEMM kernel (matmul "auto" or "mkl" on CPU) is a custom call that XLA's partitioner
        would gather onto every device. pmap and single compile one device's program."""
        if self.kind != "jit" or self.num_devices == 1 or model.config.matmul == "xla":
            return model
        log.info(
            "matmul=%r -> 'xla': the MKL GEMM kernel does not partition across the %d "
            "devices of a jit Mesh (parallelism='pmap' or 'single' keep it)",
            model.config.matmul,
            self.num_devices,
        )
        return model.clone(config=model.config.replace(matmul="xla"))

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Parallelism:
        return cls(config.parallelism, config.get("cpu_matmul", "xla"))  # older configs: "xla"

    def _jit(self, step: Callable, **kwargs) -> Callable:
        return onednn.jit(step, matmul=self.cpu_matmul, **kwargs)

    def compile_train(self, step: Callable) -> Callable:
        if self.kind == "jit":
            return self._jit(
                step,
                in_shardings=(self.replicated, self.sharded, self.replicated),
                out_shardings=(self.replicated, self.replicated),
                donate_argnums=0,
            )
        if self.kind == "pmap":
            return jax.pmap(
                functools.partial(step, axis_name="batch"),
                axis_name="batch",
                in_axes=(0, 0, None),
                donate_argnums=0,
            )
        return self._jit(step, donate_argnums=0)

    def compile_eval(self, step: Callable) -> Callable:
        if self.kind == "jit":
            return self._jit(
                step, in_shardings=(self.replicated, self.sharded), out_shardings=self.sharded
            )
        if self.kind == "pmap":
            return jax.pmap(step, axis_name="batch")
        return self._jit(step)

    def to_host(self, tree):
        """Device results -> numpy; pmap's leading device axis is removed (metrics are psum'ed,
        so every replica holds the same value; per-example outputs are concatenated)."""
        if self.kind == "pmap":
            return jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), tree)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(tree, tiled=True)
        return jax.tree.map(np.asarray, tree)

    def host_state(self, state):
        """The state as one copy (for checkpoints and export)."""
        if self.kind == "pmap":
            return jax.tree.map(lambda x: x[0], state)
        return state


# ----------------------------------------------------------------------------- model & data


def build_model(config: ml_collections.ConfigDict, rng: jax.Array):
    """(tokenizer, model, params) from a pretrained checkpoint or a fresh architecture."""
    m = config.model
    overrides = dict(m.overrides)
    tokenizer = load_tokenizer(
        config.tokenizer or m.checkpoint,
        max_length=config.data.max_length,
        truncation=config.data.truncation,
    )
    if m.checkpoint:
        model, params = from_pretrained(
            m.checkpoint, task="classification", num_labels=config.num_labels, **overrides
        )
    else:
        arch = BertConfig(
            **dict(m.arch),
            num_labels=config.num_labels,
            vocab_size=tokenizer.vocab_size,
            pad_token_id=tokenizer.pad_id,
            **overrides,
        )
        model = BertForSequenceClassification(arch)
        params = init_params(model, rng)
    if config.data.max_length > model.config.max_position_embeddings:
        raise ValueError(
            f"data.max_length={config.data.max_length} exceeds the model's "
            f"max_position_embeddings={model.config.max_position_embeddings}"
        )
    return tokenizer, model, params


def build_data(config: ml_collections.ConfigDict, tokenizer):
    """(train batches, {split name: tokenized split}) for IMDB as the config asks."""
    d = config.data
    splits = data_lib.load_imdb(
        tokenizer,
        archive=d.archive,
        data_dir=d.data_dir,
        cache_dir=d.cache_dir,
        validation_fraction=d.validation_fraction,
        split_seed=d.split_seed,
        limits={
            name: limit if limit and limit > 0 else None  # None or -1: the whole split
            for name, limit in (
                ("train", d.train_limit),
                ("validation", d.validation_limit),
                ("test", d.test_limit),
            )
        },
    )
    train = data_lib.TrainBatches(
        splits["train"],
        batch_size=config.batch_size,
        seed=config.seed,
        buckets=tuple(d.buckets),
        max_length=d.max_length,
        bucketing=d.bucketing,
        pad_id=tokenizer.pad_id,
    )
    return train, splits


def eval_batches(config, split, tokenizer) -> data_lib.EvalBatches:
    d = config.data
    return data_lib.EvalBatches(
        split,
        batch_size=config.eval_batch_size,
        buckets=tuple(d.buckets),
        max_length=d.max_length,
        bucketing=d.bucketing,
        pad_id=tokenizer.pad_id,
    )


def create_state(model, params, config, num_steps: int) -> TrainState:
    return TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=make_optimizer(config.optimizer, num_steps),
        rng=jax.random.PRNGKey(config.seed),
    )


# ----------------------------------------------------------------------------- evaluation


def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> dict:
    """Accuracy, loss, per-class precision/recall/F1 (positive class = 1 for two labels)."""
    logits = logits.astype(np.float64)
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    preds = logits.argmax(-1)
    confusion = np.zeros((num_labels, num_labels), np.int64)  # [true, predicted]
    np.add.at(confusion, (labels, preds), 1)
    tp = np.diag(confusion).astype(np.float64)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros_like(tp), where=confusion.sum(0) > 0)
    recall = np.divide(tp, confusion.sum(1), out=np.zeros_like(tp), where=confusion.sum(1) > 0)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(tp),
        where=(precision + recall) > 0,
    )
    pos = 1 if num_labels == 2 else slice(None)
    return {
        "examples": int(len(labels)),
        "accuracy": float((preds == labels).mean()) if len(labels) else float("nan"),
        "loss": float(-logp[np.arange(len(labels)), labels].mean())
        if len(labels)
        else float("nan"),
        "precision": np.mean(precision[pos]).item(),
        "recall": np.mean(recall[pos]).item(),
        "f1": np.mean(f1[pos]).item(),
        "confusion_matrix": confusion.tolist(),
    }


def evaluate(
    eval_fn,
    par: Parallelism,
    state,
    batches: Iterable[dict],
    num_labels: int,
    desc: str = "eval",
    total: int | None = None,
) -> dict:
    """Runs `eval_fn` over every batch; padding examples (weight 0) are dropped on the host."""
    all_logits, all_labels = [], []
    start = time.perf_counter()
    for batch in tqdm(batches, desc=desc, total=total, leave=False, unit="batch"):
        logits = par.to_host(eval_fn(state, par.put_batch(batch)))
        labels = par.to_host(batch["labels"]) if jax.process_count() > 1 else batch["labels"]
        weights = par.to_host(batch["weights"]) if jax.process_count() > 1 else batch["weights"]
        keep = weights > 0
        all_logits.append(logits[keep])
        all_labels.append(labels[keep])
    seconds = time.perf_counter() - start
    logits = np.concatenate(all_logits) if all_logits else np.zeros((0, num_labels))
    labels = np.concatenate(all_labels) if all_labels else np.zeros((0,), np.int64)
    metrics = classification_metrics(logits, labels, num_labels)
    metrics.update(seconds=seconds, examples_per_s=len(labels) / max(seconds, 1e-9))
    return metrics


# ----------------------------------------------------------------------------- checkpoints


class Checkpoints:
    """Orbax managers under the workdir: `checkpoints/` keeps the last K (every N steps and at
    the end), `best/` keeps the one with the best validation accuracy."""

    def __init__(self, workdir: Path, keep: int = 2, create: bool = True):
        opts = lambda k: ocp.CheckpointManagerOptions(max_to_keep=k, create=create)  # noqa: E731
        self.latest = ocp.CheckpointManager(
            Path(workdir).absolute() / "checkpoints", options=opts(keep)
        )
        self.best = ocp.CheckpointManager(Path(workdir).absolute() / "best", options=opts(1))

    def manager(self, which: str) -> ocp.CheckpointManager:
        return self.best if which == "best" else self.latest

    def save(self, which: str, step: int, state, meta: dict) -> None:
        self.manager(which).save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def restore(self, which: str, step: int | None, abstract_state) -> tuple[Any, dict]:
        mngr = self.manager(which)
        step = mngr.latest_step() if step is None else step
        if step is None or step not in mngr.all_steps():
            raise FileNotFoundError(
                f"no {which} checkpoint{'' if step is None else f' at step {step}'} in "
                f"{mngr.directory} (steps there: {list(mngr.all_steps()) or 'none'})"
            )
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.meta

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def abstract_state_for(state, par: Parallelism | None = None):
    """ShapeDtypeStructs (with the target sharding under jit) for restoring `state`."""
    sharding = par.replicated if par is not None and par.kind == "jit" else None
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype, sharding=sharding), state
    )


# ----------------------------------------------------------------------------- the loop


class _StopRequest:
    """Ctrl-C / SIGTERM: finish the current step, save a checkpoint, then exit."""

    def __init__(self):
        self.signal: int | None = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.signal = signum
        tqdm.write(f"received {signal.Signals(signum).name}: saving a checkpoint, then stopping")

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


class MetricWriter:
    """One JSON line per record in workdir/metrics.jsonl and TensorBoard scalars (process 0)."""

    def __init__(self, workdir: Path):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            from tensorboardX import SummaryWriter

            self.jsonl = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115
            self.tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        self.jsonl.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")
        self.jsonl.flush()
        for k, v in scalars.items():
            self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()


def plot_metrics(workdir: Path) -> Path | None:
    """PNG of training loss and validation accuracy against step, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if r["split"] == "train" and "loss" in r]
    val = [(r["step"], r["accuracy"]) for r in rows if r["split"] == "validation"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), "o-", label="validation accuracy", color="tab:orange")
        ax2.set_ylabel("validation accuracy")
    fig.legend(loc="upper center", ncol=2, frameon=False)  # above the axes, over no curve
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    out = workdir / "metrics.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _host_rows(par: Parallelism, pending: list[dict]) -> list[dict[str, float]]:
    """Per-step device metrics -> floats on the host (the only device-to-host copy of them)."""
    return [{k: float(np.ravel(v)[0]) for k, v in par.to_host(m).items()} for m in pending]


def _check_finite(step: int, rows: list[dict]) -> None:
    for i, row in enumerate(rows):
        bad = [k for k in ("loss", "grad_norm") if not math.isfinite(row[k])]
        if bad:
            raise TrainingError(
                f"non-finite {', '.join(bad)} at step {step - len(rows) + i + 1} "
                f"({', '.join(f'{k}={row[k]}' for k in bad)}); training stopped. The last good "
                "checkpoint is kept; lower --config.optimizer.learning_rate or check the data"
            )


def quiet_library_logs() -> None:
    """Keep Orbax's and tfds' INFO chatter (one line per checkpoint operation) out of the
    console: their warnings still show."""

    def keep(record: logging.LogRecord) -> bool:
        noisy = any(
            f"{os.sep}{lib}{os.sep}" in record.pathname
            for lib in ("orbax", "tensorflow_datasets", "etils")
        )
        return record.levelno >= logging.WARNING or not noisy

    from absl import logging as absl_logging

    absl_logging.get_absl_handler().addFilter(keep)


def save_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    path = workdir / "config.json"
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if path.exists() and path.read_text() != text:
        log.warning(
            "config differs from the one this workdir was started with; the new one "
            "is saved as %s (the old one as config.previous.json)",
            path,
        )
        path.replace(workdir / "config.previous.json")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains (or resumes) in `workdir`; returns the final validation metrics."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    par = Parallelism.from_config(config)
    par.check_batch_size(config.batch_size)
    par.check_batch_size(config.eval_batch_size, "eval_batch_size")
    if config.batch_size % config.optimizer.accum_steps:
        raise ValueError(
            f"batch_size={config.batch_size} must be divisible by "
            f"optimizer.accum_steps={config.optimizer.accum_steps}"
        )
    rng = jax.random.PRNGKey(config.seed)
    tokenizer, model, params = build_model(config, rng)
    model = par.adapt_model(model)
    train_batches, splits = build_data(config, tokenizer)
    steps_per_epoch = train_batches.num_batches_per_epoch
    padding = train_batches.padding_fraction(0)
    log.info(
        "%d training examples, %d steps per epoch, padding fraction %.3f (%s)",
        len(splits["train"]),
        steps_per_epoch,
        padding,
        f"buckets {train_batches.buckets}" if config.data.bucketing else "no bucketing",
    )
    num_steps = config.num_train_steps or int(config.num_epochs * steps_per_epoch)
    if num_steps <= 0:
        raise ValueError(
            f"nothing to train: num_train_steps={num_steps} "
            f"({len(splits['train'])} training examples, batch {config.batch_size})"
        )
    state = create_state(model, params, config, num_steps)
    del params

    ckpts = Checkpoints(workdir, keep=config.keep_checkpoints)
    meta = {"step": 0, "best_accuracy": -1.0, "best_step": None}
    if ckpts.latest.latest_step() is not None:
        state, meta = ckpts.restore("latest", None, abstract_state_for(state))
        log.info("resuming from step %d in %s", meta["step"], workdir)
    save_config(config, workdir)
    (workdir / "model_config.json").write_text(
        json.dumps(dataclasses.asdict(model.config), indent=2)
    )
    start = int(meta["step"])
    if start >= num_steps:
        log.info("already trained to step %d of %d", start, num_steps)

    state = par.put_state(state)
    train_fn = par.compile_train(
        functools.partial(train_step, accum_steps=config.optimizer.accum_steps)
    )
    eval_fn = par.compile_eval(eval_step)
    schedule = make_schedule(config.optimizer, num_steps)
    dropout_rng = jax.random.PRNGKey(config.seed + 1)
    writer = MetricWriter(workdir)
    host_state = lambda: par.host_state(state)  # noqa: E731
    val_metrics: dict = {}

    def validate(step):
        nonlocal val_metrics
        batches = eval_batches(config, splits["validation"], tokenizer)
        val_metrics = evaluate(
            eval_fn, par, state, batches, config.num_labels, desc="validation", total=len(batches)
        )
        writer.write(step, "validation", val_metrics)
        tqdm.write(
            f"step {step} | validation accuracy {val_metrics['accuracy']:.4f} | "
            f"loss {val_metrics['loss']:.4f} | {val_metrics['examples_per_s']:.0f} ex/s"
        )
        if val_metrics["accuracy"] > meta["best_accuracy"]:
            meta.update(best_accuracy=val_metrics["accuracy"], best_step=step)
            ckpts.save("best", step, host_state(), dict(meta, step=step))

    pending: list[dict] = []
    window_start, window_examples = time.perf_counter(), 0
    with (
        _StopRequest() as stop,
        tqdm(total=num_steps, initial=start, desc="train", unit="step", dynamic_ncols=True) as bar,
    ):
        step = start
        try:
            for step in range(start + 1, num_steps + 1):
                epoch, index = divmod(step - 1, steps_per_epoch)
                batch = train_batches.batch(epoch, index)
                state, metrics = train_fn(state, par.put_batch(batch), dropout_rng)
                pending.append(metrics)
                if len(pending) > 1:  # at most two steps in flight: honest progress and ETA
                    jax.block_until_ready(pending[-2]["loss"])
                window_examples += int(batch["weights"].sum())
                bar.update(1)
                last = step == num_steps
                if step % config.log_every == 0 or last or stop.signal is not None:
                    rows = _host_rows(par, pending)
                    pending.clear()
                    _check_finite(step, rows)
                    elapsed = time.perf_counter() - window_start
                    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
                    summary.update(
                        learning_rate=float(schedule(step - 1)),
                        epoch=epoch,
                        examples_per_s=window_examples * jax.process_count() / elapsed,
                    )
                    writer.write(step, "train", summary)
                    bar.set_postfix(
                        loss=f"{summary['loss']:.3f}", ex_s=f"{summary['examples_per_s']:.0f}"
                    )
                    tqdm.write(
                        f"step {step} | loss {summary['loss']:.3f} | acc "
                        f"{summary['accuracy']:.3f} | lr {summary['learning_rate']:.1e} | "
                        f"{summary['examples_per_s']:.0f} ex/s"
                    )
                    window_start, window_examples = time.perf_counter(), 0
                if step % config.eval_every == 0 or last:
                    validate(step)
                if step % config.checkpoint_every == 0 or last or stop.signal is not None:
                    if pending:  # never save a state whose loss was not checked
                        _check_finite(step, _host_rows(par, pending))
                    meta["step"] = step
                    ckpts.save("latest", step, host_state(), meta)
                if stop.signal is not None:
                    ckpts.wait()
                    raise KeyboardInterrupt(
                        f"stopped by signal at step {step}; rerun the same command to resume"
                    )
        finally:
            ckpts.wait()
            ckpts.close()
            writer.close()
    plot_metrics(workdir)
    if config.export_dir:
        best = Checkpoints(workdir, create=False)
        best_state, _ = best.restore("best", None, abstract_state_for(host_state()))
        best.close()
        out = save_pretrained(
            model, best_state.params, workdir / config.export_dir, tokenizer=tokenizer
        )
        log.info("exported the best checkpoint as a Hugging Face folder: %s", out)
    return val_metrics
