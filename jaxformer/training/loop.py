"""`train_and_evaluate(config, workdir)`: build the model and the data, then train, validate,
checkpoint and resume.

Mirrors the Flax examples' train.py (wmt, lm1b): an importable loop around pure steps
(steps.py) compiled where they are called (parallel.py), Optax AdamW (optim.py), Orbax
checkpoints that resume exactly because the data order is a function of the step
(checkpoints.py), one log line per log step and metrics copied to the host only then (metrics.py).
The loop trains a step, then calls the `(every, fn)` hooks due there (hooks.py): the log line,
validation, the latest checkpoint.

Several processes (one per host, `train.py --multihost`) run the same loop in lockstep over one
jit Mesh (processes.py: process 0 builds the data cache and writes the workdir's files; a stop
signal and a non-finite loss are decided on values every process holds).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from jax.sharding import SingleDeviceSharding
from tqdm.auto import tqdm

from jaxformer import dispatch, families, tasks
from jaxformer.data import batching, locks
from jaxformer.hf.convert import from_pretrained, save_pretrained
from jaxformer.hf.tokenizer_files import load_tokenizer
from jaxformer.lora import LoraConfig
from jaxformer.models import init_params, max_input_length
from jaxformer.models.config import BertConfig
from jaxformer.training import checkpoints, hooks, metrics, optim, processes, steps
from jaxformer.training.parallel import Parallelism

log = logging.getLogger("jaxformer")


# ----------------------------------------------------------------------------- model & data


def build_tokenizer(config: ml_collections.ConfigDict):
    """The experiment's tokenizer: config.tokenizer, else the checkpoint's own."""
    return load_tokenizer(
        config.tokenizer or config.model.checkpoint,
        max_length=config.data.max_length,
        truncation=config.data.truncation,
    )


def build_model(config: ml_collections.ConfigDict, rng: jax.Array, tokenizer=None, task=None):
    """(tokenizer, model, params) from a pretrained checkpoint or a fresh architecture, with the
    head of the experiment's task (`task`, else the one config.task names)."""
    m = config.model
    tokenizer = tokenizer or build_tokenizer(config)
    task = task or tasks.make(config, tokenizer)
    overrides = {k: v for k, v in m.overrides.items() if v is not None}
    if (num_labels := task.num_labels()) is not None:
        overrides["num_labels"] = num_labels
        overrides["label_names"] = task.label_names()
    if (problem_type := getattr(task, "problem_type", None)) is not None:
        overrides["problem_type"] = problem_type
    adapters = lora_config(config)
    if adapters is not None and not m.checkpoint:
        raise ValueError(
            "--config.lora.rank asks for LoRA adapters on a pretrained checkpoint, but "
            "model.checkpoint is None; name one with --config.model.checkpoint"
        )
    if m.checkpoint:
        model, params = from_pretrained(m.checkpoint, task=task.head, lora=adapters, **overrides)
    else:
        fields = dict(m.arch, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
        arch = BertConfig(**(fields | overrides))
        model = families.model_class(arch.model_type, task.head)(arch)
        params = init_params(model, rng)
    if config.data.max_length > (longest := max_input_length(model)):
        raise ValueError(
            f"data.max_length={config.data.max_length} exceeds the {longest} tokens the model's "
            f"position table holds (max_position_embeddings="
            f"{model.config.max_position_embeddings}); lower --config.data.max_length"
        )
    check_vocabulary(tokenizer, model.config)
    return tokenizer, model, params


def lora_config(config: ml_collections.ConfigDict) -> LoraConfig | None:
    """The experiment's `lora` section as a LoraConfig; None when lora.rank is None."""
    section = config.lora
    if section.rank is None:
        return None
    targets = None
    if section.targets:
        targets = tuple(t.strip() for t in section.targets.split(",") if t.strip())
    return LoraConfig(
        rank=section.rank, alpha=section.alpha, dropout=section.dropout, targets=targets
    )


def log_compute(config: BertConfig) -> None:
    """One line saying which programs the model's settings choose on this backend."""
    operand = jax.ShapeDtypeStruct((), config.compute_dtype)
    log.info(
        "compute: %s on %s, attention=%r (chosen per call by jaxformer.dispatch), matmul=%r "
        "(GEMMs: %s)",
        config.dtype,
        jax.default_backend(),
        config.attention,
        config.matmul,
        dispatch.matmul_program(config.matmul, operand),
    )


def check_vocabulary(tokenizer, config: BertConfig) -> None:
    """A tokenizer whose ids run past the model's embedding table would feed it ids that a
    jitted lookup turns into NaN: refuse the pair."""
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}: use the checkpoint's own tokenizer (--config.tokenizer)"
        )


def build_data(config: ml_collections.ConfigDict, task, names=("train", "validation")):
    """(train batches or None, {split name: tokenized split}) of the task's splits `names`."""
    d = config.data

    def load():
        return task.splits(tuple(names))

    # Process 0 builds the caches first (tfds' and the tokens'); the others then only read them.
    splits = processes.on_process_0("data_built", f"to build the data cache {d.cache_dir}", load)
    if not processes.is_primary():
        splits = load()
    if "train" not in splits:
        return None, splits
    train = batching.TrainBatches(
        splits["train"],
        batch_size=config.batch_size,
        seed=config.seed,
        buckets=tuple(d.buckets),
        max_length=d.max_length,
        bucketing=d.bucketing,
        pad_id=task.tokenizer.pad_id,
        transform=task.transform(),
    )
    return train, splits


def build_eval_batches(config: ml_collections.ConfigDict, split, task):
    """Every example of a tokenized split once, in batches of config.eval_batch_size."""
    d = config.data
    return batching.EvalBatches(
        split,
        batch_size=config.eval_batch_size,
        buckets=tuple(d.buckets),
        max_length=d.max_length,
        bucketing=d.bucketing,
        pad_id=task.tokenizer.pad_id,
        transform=task.transform(),
    )


# ----------------------------------------------------------------------------- checkpoints


def restore_target(par: Parallelism, state):
    """Shapes, dtypes and shardings of `state` for `Checkpoints.restore`: the shardings this
    run's Mesh gives the state (jit, shard_map) or its first device, however many processes and
    devices wrote the checkpoint."""
    if par.kind in ("jit", "shard_map"):
        return par.abstract_state(state)
    return checkpoints.abstract_state(state, SingleDeviceSharding(par.devices[0]))


def save_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """workdir/config.json, read back by evaluation; a changed config keeps the old one."""
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


# ----------------------------------------------------------------------------- the loop


def reconcile_best(meta: dict, best: tuple[int, dict] | None) -> dict:
    """`meta` (the latest checkpoint's record) with its best step and score taken from what
    best/ holds: a run killed between the two saves of one step leaves them disagreeing."""
    if best is None:
        if meta.get("best_step") is not None:
            log.warning(
                "best/ holds no checkpoint although step %s was the best; the next validation "
                "saves one",
                meta["best_step"],
            )
        return dict(meta, best_score=None, best_step=None)
    step, record = best
    if step != meta.get("best_step"):
        log.info(
            "best/ holds step %d (validation %s %.4f); the latest checkpoint's record said step %s",
            step,
            record.get("best_metric", "score"),
            record["best_score"],
            meta.get("best_step"),
        )
    return dict(meta, best_score=float(record["best_score"]), best_step=step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, data=None) -> dict:
    """Trains (or resumes) in `workdir`; returns the final validation metrics.

    `data`: the rows of the splits, given in Python in place of the files the config names:
    {"train": ..., "validation": ..., "test": ...} (validation and test optional) of pandas
    DataFrames, `datasets.Dataset`s, dicts of columns ({"text": [...], "label": [...]}) or
    `jaxformer.data.sources.Table`s, or a `datasets.DatasetDict`; the config's column fields
    name their columns. train.py passes none: the config's files, tfds dataset or IMDB.

    The workdir is locked for the run (`workdir/train.lock`): a second run on it fails at once
    with a TrainingError naming the holder."""
    workdir = Path(workdir)
    config = config.copy_and_resolve_references()  # the data's labels are written into it
    config.data.in_memory = data is not None
    par = Parallelism.from_config(config)
    processes.check_processes(par)
    par.check_batch_size(config.batch_size)
    par.check_batch_size(config.eval_batch_size, "eval_batch_size")
    if config.batch_size % config.optimizer.accum_steps:
        raise ValueError(
            f"batch_size={config.batch_size} must be divisible by "
            f"optimizer.accum_steps={config.optimizer.accum_steps}; change "
            "--config.batch_size or --config.optimizer.accum_steps"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    lock = locks.FileLock(workdir / "train.lock", f"workdir {workdir}")

    def acquire():
        try:
            lock.acquire()
        except locks.LockedError as e:
            raise metrics.TrainingError(str(e)) from None

    # The processes of one multi-process run share the workdir: process 0 holds its lock.
    processes.on_process_0(
        "workdir_locked", f"to lock the workdir {workdir}", acquire, processes.BARRIER_TIMEOUT_S
    )
    try:
        return _train_and_evaluate(config, workdir, par, data)
    finally:
        lock.release()


def resolve_labels(config: ml_collections.ConfigDict, task) -> None:
    """Writes the labels the task found in its data (names, problem type) into `config`, so the
    saved config.json says what the head's outputs mean without reading the data again."""
    if task.label_names() is not None:
        config.label_names = tuple(task.label_names())
    if getattr(task, "problem_type", None) is not None:
        config.problem_type = task.problem_type


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: Path, par: Parallelism, data):
    tokenizer = build_tokenizer(config)
    task = tasks.make(config, tokenizer, data)
    _, model, params = build_model(config, jax.random.PRNGKey(config.seed), tokenizer, task)
    resolve_labels(config, task)
    if config.export_dir and (mismatch := model.config.hf_mismatch()):
        raise ValueError(
            f"--config.export_dir={config.export_dir!r} asks for a Hugging Face export of the "
            f"best checkpoint, but {mismatch}; set --config.export_dir=None to train without one"
        )
    model = par.adapt_model(model)
    log_compute(model.config)
    train_batches, splits = build_data(config, task)
    steps_per_epoch = train_batches.num_batches_per_epoch
    log.info(
        "%d training examples, %d steps per epoch, padding fraction %.3f (%s)",
        len(splits["train"]),
        steps_per_epoch,
        train_batches.padding_fraction(0),
        f"buckets {train_batches.buckets}" if config.data.bucketing else "no bucketing",
    )
    num_steps = config.num_train_steps or int(config.num_epochs * steps_per_epoch)
    if num_steps <= 0:
        raise ValueError(
            f"nothing to train: num_train_steps={num_steps} "
            f"({len(splits['train'])} training examples, batch {config.batch_size})"
        )
    state = steps.create_state(model, params, config.optimizer, num_steps)
    del params

    ckpts = checkpoints.Checkpoints(workdir, keep=config.keep_checkpoints)
    meta = {"step": 0, "best_score": None, "best_metric": task.selection, "best_step": None}
    restored = ckpts.restore_newest_good("latest", restore_target(par, state))
    if restored is not None:
        state, meta = restored
        log.info("resuming from step %d in %s", meta["step"], workdir)
    meta = reconcile_best(meta, ckpts.best_record())
    if processes.is_primary():
        save_config(config, workdir)
        (workdir / "model_config.json").write_text(
            json.dumps(dataclasses.asdict(model.config), indent=2)
        )
    start = int(meta["step"])
    if start >= num_steps:
        log.info("already trained to step %d of %d", start, num_steps)

    state = par.put_state(state)
    train_fn = par.compile_train(
        functools.partial(
            steps.train_step,
            loss_terms=task.loss_terms,
            accum_steps=config.optimizer.accum_steps,
            model_inputs=task.model_inputs,
        )
    )
    eval_fn = par.compile_eval(
        functools.partial(
            steps.eval_step, eval_outputs=task.eval_outputs, model_inputs=task.model_inputs
        )
    )
    schedule = optim.make_schedule(config.optimizer, num_steps)
    # A key of its own, not the parameter-init one (seed): dropout masks independent of heads.
    dropout_rng = jax.random.PRNGKey(config.seed + 1)
    writer = metrics.MetricWriter(workdir, start_step=start)
    val_metrics: dict = {}
    pending: list[dict] = []

    def check_pending(step):
        """Never validate or save a state whose loss was not checked."""
        if pending:
            metrics.check_finite(step, metrics.host_rows(par, pending))

    def host_state():
        return par.host_state(state)

    def validate(step):
        nonlocal val_metrics
        check_pending(step)
        batches = build_eval_batches(config, splits["validation"], task)
        val_metrics = metrics.evaluate_batches(
            eval_fn, par, state, batches, task, "validation", "validation", len(batches)
        )
        writer.write(step, "validation", val_metrics)
        processes.say(
            f"step {step} | validation {task.summary(val_metrics)} | "
            f"{val_metrics['examples_per_s']:.0f} ex/s"
        )
        if task.better(val_metrics[task.selection], meta["best_score"]):
            meta.update(best_score=val_metrics[task.selection], best_step=step)
            ckpts.save("best", step, host_state(), dict(meta, step=step))

    window_start, window_examples = time.perf_counter(), 0

    def log_train(info: hooks.StepInfo):
        """One metrics row, progress-bar postfix and console line for the steps since the last."""
        nonlocal window_start, window_examples
        rows = metrics.host_rows(par, pending)
        pending.clear()
        metrics.check_finite(info.step, rows)
        elapsed = time.perf_counter() - window_start
        summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        summary.update(
            learning_rate=float(schedule(info.step - 1)),
            epoch=(info.step - 1) // steps_per_epoch,
            examples_per_s=window_examples * jax.process_count() / elapsed,
        )
        writer.write(info.step, "train", summary)
        bar.set_postfix(loss=f"{summary['loss']:.3f}", ex_s=f"{summary['examples_per_s']:.0f}")
        acc = f" | acc {summary['accuracy']:.3f}" if task.train_accuracy else ""
        processes.say(
            f"step {info.step} | loss {summary['loss']:.3f}{acc} | lr "
            f"{summary['learning_rate']:.1e} | {summary['examples_per_s']:.0f} ex/s"
        )
        window_start, window_examples = time.perf_counter(), 0

    def save_latest(info: hooks.StepInfo):
        check_pending(info.step)
        meta["step"] = info.step
        ckpts.save("latest", info.step, host_state(), meta)

    # In this order where several are due at one step: the train line before the validation
    # line, and the latest checkpoint records the best step that this step's validation chose.
    train_hooks = (
        hooks.Hook(config.log_every, log_train, at_stop=True),
        hooks.Hook(config.eval_every, lambda info: validate(info.step)),
        hooks.Hook(config.checkpoint_every, save_latest, at_stop=True),
    )
    with (
        processes.StopRequest() as stop,
        tqdm(
            total=num_steps,
            initial=start,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=not processes.is_primary(),
        ) as bar,
    ):
        try:
            for step in range(start + 1, num_steps + 1):
                batch = train_batches.batch(*divmod(step - 1, steps_per_epoch))
                state, step_metrics = train_fn(state, par.put_batch(batch), dropout_rng)
                pending.append(step_metrics)
                if len(pending) > 1:  # at most two steps in flight: honest progress and ETA
                    jax.block_until_ready(pending[-2]["loss"])
                window_examples += int(batch["weights"].sum())
                bar.update(1)
                info = hooks.StepInfo(
                    step, last=step == num_steps, signum=processes.agreed_signal(stop.signal)
                )
                hooks.run_hooks(train_hooks, info)
                if info.stopping:
                    ckpts.wait()
                    raise processes.Stopped(info.signum, step)
            ckpts.wait()
            if config.export_dir:
                best_state, _ = ckpts.restore("best", None, restore_target(par, host_state()))
                params = best_state.params
                # Replicated: the copy on any of this process's devices is the whole array.
                params = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), params)
                export = functools.partial(
                    save_pretrained, model, params, workdir / config.export_dir, tokenizer=tokenizer
                )
                out = processes.on_process_0("exported", "to export the best checkpoint", export)
                if out is not None:
                    log.info("exported the best checkpoint as a Hugging Face folder: %s", out)
        finally:
            try:
                ckpts.wait()
            finally:
                ckpts.close()
                writer.close()
    if processes.is_primary():
        metrics.plot_metrics(workdir, task.selection)
    return val_metrics
