"""Evaluating and predicting with a trained model of any task (jaxformer.tasks): from a workdir's
Orbax checkpoint (best, latest or a given step) or from a Hugging Face folder written by
`save_pretrained`.

Mirrors the evaluation half of the Flax examples' train.py, run on its own: the workdir's saved
config (read back onto training/config.py's defaults), the same `eval_step`, compiled the same
way, and the same host-side metrics as validation during training.
"""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from flax.training.train_state import TrainState
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxformer import families, tasks
from jaxformer.data import conll, ner_words, squad
from jaxformer.hf import config as hf_config
from jaxformer.hf.convert import from_pretrained
from jaxformer.hf.tokenizer_files import load_tokenizer
from jaxformer.lora import LoraModel
from jaxformer.models import init_params, max_input_length
from jaxformer.models.config import BertConfig
from jaxformer.tokenizer import HEAD_TOKENS
from jaxformer.training import checkpoints, loop, metrics, parallel, processes, seqeval, steps
from jaxformer.training import config as base_config


def load_workdir_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a training run saved in workdir/config.json, over today's defaults."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {workdir} is not a training workdir (train.py writes config.json "
            "there); pass the --workdir of a training run, or --hf_dir for an exported folder"
        )
    return base_config.from_dict(json.loads(path.read_text()), source=str(path))


# model_config.json's flat spellings of fields that are now in BertConfig's groups: flat name ->
# (group, its field), and the flat value that meant the group was absent.
FLAT_GROUP_FIELDS = {
    "max_relative_positions": ("relative", "max_relative_positions"),
    "position_buckets": ("relative", "position_buckets"),
    "pos_att_type": ("relative", "pos_att_type"),
    "share_att_key": ("relative", "share_att_key"),
    "norm_rel_ebd": ("relative", "norm_rel_ebd"),
    "global_rope_theta": ("rotary", "global_theta"),
    "local_rope_theta": ("rotary", "local_theta"),
    "local_attention": ("local", "window"),
    "global_attn_every_n_layers": ("local", "global_every"),
    "num_hidden_groups": ("sharing", "num_hidden_groups"),
    "inner_group_num": ("sharing", "inner_group_num"),
    **{f"{flag}_bias": ("biases", flag) for flag in ("attention", "mlp", "norm", "classifier")},
    "decoder_bias": ("biases", "decoder"),
}


def read_model_config(path: Path) -> BertConfig:
    """A run's model_config.json (`dataclasses.asdict` of its BertConfig). Activations spelled
    as Hugging Face spells them ("gelu_new") and the flat fields of FLAT_GROUP_FIELDS are read
    into ours."""
    fields = hf_config.activations_as_ours(json.loads(path.read_text()))
    groups: dict[str, dict] = {}
    for flat, (group, field) in FLAT_GROUP_FIELDS.items():
        if flat in fields:
            groups.setdefault(group, {})[field] = fields.pop(flat)
    present = {
        "relative": fields.pop("relative_attention", False),
        "rotary": fields.get("position_embedding_type") == "rotary",
        "local": groups.get("local", {}).get("global_every", 1) != 1,
        "sharing": fields.get("model_type") == "albert",
        "biases": True,
    }
    fields |= {group: values for group, values in groups.items() if present[group]}
    return BertConfig(**fields)


def _max_length(config: ml_collections.ConfigDict, model) -> int:
    """The config's max length, cut to the positions the model has: longer inputs would look up
    positions past its table."""
    return min(config.data.max_length, max_input_length(model))


def _truncation(config: ml_collections.ConfigDict, max_length: int) -> str:
    """The config's truncation, "head" where max_length has no room for head_tail's head and
    tail (a model of few positions): any model predicts."""
    if config.data.truncation == "head_tail" and max_length < HEAD_TOKENS + 3:
        return "head"
    return config.data.truncation


def load_trained(
    workdir: str | Path | None = None,
    checkpoint: str = "best",
    step: int | None = None,
    hf_dir: str | Path | None = None,
    config: ml_collections.ConfigDict | None = None,
):
    """(config, tokenizer, model, params, description) for a trained model: its head is the
    task's of the workdir's config (an --hf_dir alone: classification)."""
    if hf_dir is not None:
        if config is None:
            config = load_workdir_config(workdir) if workdir else base_config.get_config()
        model, params = from_pretrained(str(hf_dir), task=head_of(config))
        length = _max_length(config, model)
        tokenizer = load_tokenizer(
            str(hf_dir), max_length=length, truncation=_truncation(config, length)
        )
        loop.check_vocabulary(tokenizer, model.config)
        return config, tokenizer, model, params, f"Hugging Face folder {hf_dir}"
    if workdir is None:
        raise ValueError("give a --workdir (Orbax checkpoints) or an --hf_dir (exported folder)")
    workdir = Path(workdir)
    if config is None:
        config = load_workdir_config(workdir)
    arch = read_model_config(workdir / "model_config.json")
    model = families.model_class(arch.model_type, head_of(config))(arch)
    length = _max_length(config, model)
    tokenizer = load_tokenizer(
        config.tokenizer or config.model.checkpoint,
        max_length=length,
        truncation=_truncation(config, length),
    )
    loop.check_vocabulary(tokenizer, model.config)
    if (adapters := loop.lora_config(config)) is not None:  # the state holds {base, lora}
        model = LoraModel(model, adapters, config.model.checkpoint)
    which = "latest" if step is not None else checkpoint
    # The optimizer state's shapes come from the params alone; the step count is irrelevant.
    shapes = jax.eval_shape(
        lambda: steps.create_state(
            model, init_params(model, jax.random.PRNGKey(0)), config.optimizer, 1
        )
    )
    # Replicated on this run's devices, whatever devices and processes wrote the checkpoint.
    replicated = NamedSharding(Mesh(np.asarray(jax.devices()), ("data",)), P())
    abstract = checkpoints.abstract_state(shapes, replicated)
    ckpts = checkpoints.Checkpoints(workdir, create=False)
    try:
        steps_there = sorted(ckpts.latest.all_steps())
        state, meta = ckpts.restore(which, step, abstract)
    except checkpoints.DamagedCheckpointError as e:
        raise checkpoints.DamagedCheckpointError(
            f"{e}; evaluate another with --step (steps in checkpoints/: {steps_there or 'none'})"
        ) from None
    finally:
        ckpts.close()
    bad = checkpoints.non_finite_leaves(state.params)
    if bad:
        raise ValueError(
            f"the {which} checkpoint of step {meta['step']} in {workdir} holds NaN or inf in "
            f"{len(bad)} parameter arrays (first: {bad[0]}): its predictions mean nothing; "
            f"evaluate another with --step (steps in checkpoints/: {steps_there or 'none'})"
        )
    return config, tokenizer, model, state.params, f"{which} checkpoint, step {meta['step']}"


def head_of(config: ml_collections.ConfigDict) -> str:
    """The model head (jaxformer.families task) of the experiment's task."""
    return tasks.task_class(config.task).head


def evaluate_split(
    workdir=None,
    split: str = "test",
    checkpoint: str = "best",
    step: int | None = None,
    hf_dir=None,
    limit: int | None = None,
    batch_size: int | None = None,
    file: str | None = None,
    data=None,
) -> dict:
    """Metrics of a trained model on a split of its task's data; written to
    workdir/eval_<split>.json. `file`: the split's rows from this file instead of the config's;
    `data`: its rows given in Python ({split: rows}, as `loop.train_and_evaluate` takes them)."""
    config, tokenizer, model, params, source = load_trained(workdir, checkpoint, step, hf_dir)
    config = config.copy_and_resolve_references()  # the changes below stay in this call
    if limit is not None:
        config.data[f"{split}_limit"] = limit
    if batch_size is not None:
        config.eval_batch_size = batch_size
    if file is not None:
        config.data[f"{split}_file"] = file
    task = tasks.make(config, tokenizer, data)
    task.check_split_name(split)
    par = parallel.Parallelism.from_config(config)
    processes.check_processes(par)
    par.check_batch_size(config.eval_batch_size, "eval_batch_size")
    model = par.adapt_model(model)
    _, splits = loop.build_data(config, task, names=(split,))
    # eval_step reads only apply_fn and params: no optimizer.
    state = TrainState(step=0, apply_fn=model.apply, params=params, tx=None, opt_state=None)
    state = par.put_state(state)
    eval_fn = par.compile_eval(
        functools.partial(
            steps.eval_step, eval_outputs=task.eval_outputs, model_inputs=task.model_inputs
        )
    )
    start = time.perf_counter()
    result = metrics.evaluate_batches(
        eval_fn,
        par,
        state,
        loop.build_eval_batches(config, splits[split], task),
        task,
        split,
        desc=f"eval {split}",
    )
    result.update(
        split=split,
        source=source,
        wall_seconds=time.perf_counter() - start,
        max_length=config.data.max_length,
        truncation=config.data.truncation,
    )
    if workdir is not None and processes.is_primary():
        out = Path(workdir) / f"eval_{split}{'_hf' if hf_dir is not None else ''}.json"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(out)
    return result


def format_metrics(m: dict) -> str:
    """The metrics of `evaluate_split` as a table for the console."""
    lines = [
        f"{m['split']} split, {m['source']}: {m['examples']} examples "
        f"(max length {m['max_length']}, {m['truncation']} truncation)"
    ]
    skip = {"split", "source", "examples", "max_length", "truncation", "seconds", "wall_seconds"}
    for k, v in m.items():
        if k not in skip and isinstance(v, float | int) and k != "examples_per_s":
            lines.append(f"  {k:<16} {v:.4f}")
    lines.append(f"  {'speed':<16} {m['examples_per_s']:.1f} examples/s ({m['seconds']:.1f} s)")
    if "confusion_matrix" in m:
        lines.append("  confusion matrix (rows: true labels, columns: predicted)")
        cm = np.asarray(m["confusion_matrix"])
        lines += ["    " + "  ".join(f"{v:6d}" for v in row) for row in cm]
    return "\n".join(lines)


# The prediction programs compiled in this process, kept until it exits: XLA:CPU aborts when a
# oneDNN program is destroyed while its last run, whose outputs are already ready, still holds
# its object pool (object_pool.h: "Check failed: available_.size() == num_created_").
_PROGRAMS: list = []


def _kept(program):
    _PROGRAMS.append(program)
    return program


def predict(
    texts: list[str],
    tokenizer,
    model,
    params,
    batch_size: int = 32,
    xla_cpu_dots: str = "default",
    pairs: list[str] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(n, labels) scores of raw texts (or (text, pair) pairs), batch by batch, padded to the
    longest: class probabilities (softmax) for a single-label classifier, each label's
    probability (sigmoid) for a multi-label one, the value (n, 1) for regression, as the model's
    config.problem_type says. `xla_cpu_dots`: the library of XLA:CPU's dots, as the experiment
    field of that name; `progress`: a progress bar."""
    activation = {
        "multi_label_classification": jax.nn.sigmoid,
        "regression": lambda x: x,
    }.get(model.config.problem_type, jax.nn.softmax)
    apply = _kept(
        parallel.jit(
            lambda p, ids, mask, types: activation(model.apply({"params": p}, ids, mask, types)),
            xla_cpu_dots,
        )
    )
    probs = []
    starts = range(0, len(texts), batch_size)
    for i in tqdm(starts, desc="predict", unit="batch", disable=not progress):
        rows = slice(i, i + batch_size)
        enc = tokenizer(texts[rows], pairs=None if pairs is None else pairs[rows])
        out = apply(params, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        probs.append(np.asarray(out))
    return np.concatenate(probs) if probs else np.zeros((0, model.config.num_labels))


class Entity(NamedTuple):
    """A named entity found in a text: its type and its characters text[start:end]."""

    type: str
    start: int
    end: int
    text: str


# Words as CoNLL-2003 splits them: runs of word characters (with inner hyphens and apostrophes),
# and each punctuation mark on its own.
WORD = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]")


def predict_entities(
    texts: list[str],
    tokenizer,
    model,
    params,
    scheme: str = "IOB2",
    batch_size: int = 32,
    xla_cpu_dots: str = "default",
) -> list[list[Entity]]:
    """The entities a token classifier finds in raw texts: each text is split into words
    (`WORD`), each word tagged by its first sub-token, and the tags read as entity spans."""
    names = model.config.label_names
    if not names:
        raise ValueError(
            "the model's config has no label names (id2label): it was not trained "
            "for named entities by jaxformer"
        )
    outside = names.index("O") if "O" in names else 0
    apply = _kept(
        parallel.jit(
            lambda p, ids, mask: model.apply({"params": p}, ids, mask).argmax(-1), xla_cpu_dots
        )
    )
    found = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        spans = [[m.span() for m in WORD.finditer(text)] for text in chunk]
        words = [[text[a:b] for a, b in row] for text, row in zip(chunk, spans, strict=True)]
        ids, word_ids = ner_words.encode_words(tokenizer, words)
        enc = tokenizer.pad(ids)
        predictions = np.asarray(apply(params, enc["input_ids"], enc["attention_mask"]))
        for text, row, sentence_spans, w_ids, n in zip(
            chunk, predictions, spans, word_ids, map(len, words), strict=True
        ):
            tags = [names[j] for j in conll.word_predictions(row, w_ids, n, outside)]
            entities = []
            for kind, first, last in seqeval.get_entities(tags, scheme):
                start, end = sentence_spans[first][0], sentence_spans[last][1]
                entities.append(Entity(kind, start, end, text[start:end]))
            found.append(entities)
    return found


def predict_answers(
    questions: list[str],
    contexts: list[str],
    tokenizer,
    model,
    params,
    config: ml_collections.ConfigDict,
) -> list[squad.Answer]:
    """Each question's answer in its context, decoded as validation decodes it (the config's
    max_length, doc_stride, n_best, max_answer_length, version_2 and null_threshold)."""
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts; give one each")
    d = config.data
    examples = [
        squad.QAExample(str(i), q, c, answers=(), is_impossible=False)
        for i, (q, c) in enumerate(zip(questions, contexts, strict=True))
    ]
    features = squad.make_features(tokenizer, examples, d.max_length, config.qa.doc_stride)
    apply = _kept(
        parallel.jit(
            lambda p, ids, mask, types: tuple(model.apply({"params": p}, ids, mask, types)),
            config.xla_cpu_dots,
        )
    )
    starts, ends = [], []
    for i in range(0, len(features.input_ids), config.eval_batch_size):
        rows = slice(i, i + config.eval_batch_size)
        enc = tokenizer.pad(
            features.input_ids[rows], "max_length", d.max_length, features.token_type_ids[rows]
        )
        start, end = apply(params, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        starts.append(np.asarray(start))
        ends.append(np.asarray(end))
    answers = squad.decode_answers(
        np.concatenate(starts),
        np.concatenate(ends),
        features,
        examples,
        n_best=config.qa.n_best,
        max_answer_length=config.qa.max_answer_length,
        version_2=config.qa.version_2,
        null_threshold=config.qa.null_threshold,
    )
    return [answers[e.id] for e in examples]
