"""Hugging Face BERT checkpoints in and out: `from_pretrained`, `save_pretrained`.

Mirrors the tensor names of transformers/models/bert/modeling_bert.py (BertModel, the
BertFor<Task> heads, BertForPreTraining, sentence-transformers BERT folders). The conversion is a
table, HF tensor name -> our parameter path (jaxformer/models/bert.py, heads.py), plus a few named
transforms between torch's `nn.Linear` layout `(out, in)` and ours. Every converted
tensor is checked against `param_shapes(model)`, and missing or unused tensors are reported: a
silently wrong load is the worst bug. Reading the files is `jaxformer.hf.hub`'s.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import traverse_util

from jaxformer.hf import CheckpointError
from jaxformer.hf.hub import load_config, read_weights, resolve_checkpoint
from jaxformer.models import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    param_shapes,
)
from jaxformer.models.config import BertConfig

log = logging.getLogger(__name__)


# --- Transforms: torch layout <-> ours. `to_jax(w, c)` and its inverse `to_hf(w, c)`. ---


class Transform(NamedTuple):
    to_jax: Callable[[np.ndarray, BertConfig], np.ndarray]
    to_hf: Callable[[np.ndarray, BertConfig], np.ndarray]


IDENTITY = Transform(lambda w, c: w, lambda w, c: w)
# nn.Linear weight (out, in) <-> Dense kernel (in, out).
TRANSPOSE = Transform(lambda w, c: w.T, lambda w, c: w.T)
# Q/K/V weight (h*d, m) <-> (m, h, d).
SPLIT_HEADS_IN = Transform(
    lambda w, c: w.T.reshape(c.hidden_size, c.num_attention_heads, c.head_dim),
    lambda w, c: w.reshape(c.hidden_size, c.hidden_size).T,
)
# Q/K/V bias (h*d,) <-> (h, d).
SPLIT_HEADS_BIAS = Transform(
    lambda w, c: w.reshape(c.num_attention_heads, c.head_dim),
    lambda w, c: w.reshape(c.hidden_size),
)
# Attention output weight (m, h*d) <-> (h, d, m).
SPLIT_HEADS_OUT = Transform(
    lambda w, c: w.T.reshape(c.num_attention_heads, c.head_dim, c.hidden_size),
    lambda w, c: w.reshape(c.hidden_size, c.hidden_size).T,
)

# --- The table: HF name in a BertModel checkpoint -> (path in BertModel's params, transform). ---
# The BertFor<Task> heads prefix the encoder with `bert.` (HF) and `bert/` (ours) and add their
# head's table (TASKS).

EMBEDDINGS = {
    "embeddings.word_embeddings.weight": ("embeddings/token/embedding", IDENTITY),
    "embeddings.position_embeddings.weight": ("embeddings/position/embedding", IDENTITY),
    "embeddings.token_type_embeddings.weight": ("embeddings/token_type/embedding", IDENTITY),
    "embeddings.LayerNorm.weight": ("embeddings/layer_norm/scale", IDENTITY),
    "embeddings.LayerNorm.bias": ("embeddings/layer_norm/bias", IDENTITY),
}
LAYER = {  # under `encoder.layer.{i}.` in HF, `layer_{i}/` in ours
    "attention.self.query.weight": ("attention/w_q", SPLIT_HEADS_IN),
    "attention.self.query.bias": ("attention/b_q", SPLIT_HEADS_BIAS),
    "attention.self.key.weight": ("attention/w_k", SPLIT_HEADS_IN),
    "attention.self.key.bias": ("attention/b_k", SPLIT_HEADS_BIAS),
    "attention.self.value.weight": ("attention/w_v", SPLIT_HEADS_IN),
    "attention.self.value.bias": ("attention/b_v", SPLIT_HEADS_BIAS),
    "attention.output.dense.weight": ("attention/w_o", SPLIT_HEADS_OUT),
    "attention.output.dense.bias": ("attention/b_o", IDENTITY),
    "attention.output.LayerNorm.weight": ("attention_norm/scale", IDENTITY),
    "attention.output.LayerNorm.bias": ("attention_norm/bias", IDENTITY),
    "intermediate.dense.weight": ("mlp/w1", TRANSPOSE),
    "intermediate.dense.bias": ("mlp/b1", IDENTITY),
    "output.dense.weight": ("mlp/w2", TRANSPOSE),
    "output.dense.bias": ("mlp/b2", IDENTITY),
    "output.LayerNorm.weight": ("mlp_norm/scale", IDENTITY),
    "output.LayerNorm.bias": ("mlp_norm/bias", IDENTITY),
}
POOLER = {
    "pooler.dense.weight": ("pooler/kernel", TRANSPOSE),
    "pooler.dense.bias": ("pooler/bias", IDENTITY),
}
CLASSIFIER = {
    "classifier.weight": ("classifier/kernel", TRANSPOSE),
    "classifier.bias": ("classifier/bias", IDENTITY),
}
QA_OUTPUTS = {  # (start, end) logits
    "qa_outputs.weight": ("qa_outputs/kernel", TRANSPOSE),
    "qa_outputs.bias": ("qa_outputs/bias", IDENTITY),
}
MASKED_LM = {  # the decoder's weight is the word embeddings: TIED
    "cls.predictions.transform.dense.weight": ("mlm/transform/kernel", TRANSPOSE),
    "cls.predictions.transform.dense.bias": ("mlm/transform/bias", IDENTITY),
    "cls.predictions.transform.LayerNorm.weight": ("mlm/layer_norm/scale", IDENTITY),
    "cls.predictions.transform.LayerNorm.bias": ("mlm/layer_norm/bias", IDENTITY),
    "cls.predictions.bias": ("mlm/bias", IDENTITY),
}
# Tensors transformers ties to others (and may or may not save): accepted when equal to the
# tensor they are tied to, reported otherwise; never written.
TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
HEAD_PREFIXES = ("classifier.", "cls.", "qa_outputs.")


class Task(NamedTuple):
    module: type[nn.Module]
    architecture: str  # the transformers class that loads what save_pretrained writes
    head: dict[str, tuple]  # the head's table, beside the encoder's


TASKS = {
    "classification": Task(
        BertForSequenceClassification, "BertForSequenceClassification", CLASSIFIER
    ),
    "base": Task(BertModel, "BertModel", {}),
    "token_classification": Task(
        BertForTokenClassification, "BertForTokenClassification", CLASSIFIER
    ),
    "question_answering": Task(BertForQuestionAnswering, "BertForQuestionAnswering", QA_OUTPUTS),
    "multiple_choice": Task(BertForMultipleChoice, "BertForMultipleChoice", CLASSIFIER),
    "masked_lm": Task(BertForMaskedLM, "BertForMaskedLM", MASKED_LM),
}
# The tasks whose head has one output per label (num_labels).
LABELLED = ("classification", "token_classification")
# Initialised fresh when a checkpoint lacks the whole group, as transformers initialises them:
# normal(initializer_range) kernels, unit layer norm scales, zero biases.
OPTIONAL = ("pooler/", "classifier/", "qa_outputs/", "mlm/")


def task_of(model: nn.Module) -> str:
    """The name in TASKS of `model`'s class."""
    for name, task in TASKS.items():
        if type(model) is task.module:
            return name
    raise TypeError(
        f"{type(model).__name__} is not one of {[t.module.__name__ for t in TASKS.values()]}"
    )


# Buffers, not parameters: skipped without a word.
IGNORED = re.compile(r"(^|\.)embeddings\.position_ids$")


def conversion_table(model: nn.Module) -> dict[str, tuple]:
    """{HF tensor name as transformers saves it for `model`: (our param path, Transform)}."""
    c = model.config
    if c.pre_layer_norm or c.position_embedding_type != "absolute":
        raise ValueError(
            "only post-LN BERT with learned absolute positions has Hugging Face tensors; got "
            f"pre_layer_norm={c.pre_layer_norm}, position_embedding_type="
            f"{c.position_embedding_type!r}"
        )
    encoder = dict(EMBEDDINGS)
    for i in range(c.num_hidden_layers):
        encoder |= {f"encoder.layer.{i}.{k}": (f"layer_{i}/{p}", t) for k, (p, t) in LAYER.items()}
    if isinstance(model, BertModel):
        return encoder | (POOLER if model.add_pooling_layer else {})
    head = TASKS[task_of(model)].head
    encoder |= POOLER if model.pooled else {}
    return {f"bert.{k}": (f"bert/{p}", t) for k, (p, t) in encoder.items()} | head


def _canonical_name(name: str, headed: bool) -> str:
    """A checkpoint's tensor name in the spelling `conversion_table` uses for our model (with
    `headed`, a head whose encoder is under `bert.`)."""
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight")
    name = name.replace("LayerNorm.beta", "LayerNorm.bias")
    bare = name.removeprefix("bert.")
    return f"bert.{bare}" if headed and not bare.startswith(HEAD_PREFIXES) else bare


def _shape_hint(model: nn.Module, path: str, shape: tuple[int, ...]) -> str:
    """What to do when a head's tensor in the checkpoint has another width than ours."""
    task = task_of(model)
    if path == "classifier/kernel" and task in LABELLED:
        return (
            f"; the checkpoint's classifier has {shape[0]} labels: pass num_labels={shape[0]}, "
            "or load with task='base' and add your own head"
        )
    widths = {"multiple_choice": "1 output (per choice)", "question_answering": "2 outputs"}
    if path.startswith(("classifier/", "qa_outputs/")) and task in widths:
        return (
            f"; a {task} head has {widths[task]}, the checkpoint's {shape[0]}: is it another "
            "task's head? Load it with that task, or with task='base' and add your own head"
        )
    return ""


@functools.cache
def _hf_shape(transform: Transform, config: BertConfig, shape: tuple[int, ...]) -> tuple:
    """The shape a tensor must have in the checkpoint to become a `shape` parameter."""
    spec = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda w: transform.to_hf(w, config), spec).shape


def hf_to_params(
    tensors: dict[str, np.ndarray],
    model: nn.Module,
    files: dict[str, str] | None = None,
    rng: jax.Array | None = None,
) -> dict:
    """Converts HF tensors (numpy, by name) into `model`'s parameter tree.

    `files` names the file each tensor came from, for error messages. A pooler or head that
    the checkpoint lacks entirely is initialised fresh from `rng` (and logged); other missing
    tensors, half a head, and any shape or dtype mismatch raise CheckpointError (a ValueError).
    Tensors the model has no place for are logged as unused; a tied tensor (TIED) is accepted
    when it equals the tensor it is tied to, and reported otherwise.
    """
    c, files = model.config, files or {}
    shapes = traverse_util.flatten_dict(param_shapes(model), sep="/")
    table = conversion_table(model)
    assert {p for p, _ in table.values()} == set(shapes), "conversion table and model disagree"

    headed = not isinstance(model, BertModel)
    by_name = {_canonical_name(k, headed): k for k in tensors if not IGNORED.search(k)}
    flat, missing = {}, []
    for name, (path, transform) in table.items():
        if name not in by_name:
            missing.append(name)
            continue
        original = by_name[name]
        w, want = tensors[original], shapes[path]
        source = files.get(original, "the checkpoint")
        if not jnp.issubdtype(w.dtype, jnp.floating):
            raise CheckpointError(
                f"tensor {original!r} in {source} is {w.dtype.name}, not floating point; the "
                "file is damaged or not a BERT checkpoint"
            )
        hf_shape = _hf_shape(transform, c, want.shape)
        if w.shape != hf_shape:
            raise CheckpointError(
                f"tensor {original!r} in {source} has shape "
                f"{tuple(w.shape)}, but the config expects {hf_shape} (our {path}: {want.shape})"
                f"{_shape_hint(model, path, tuple(w.shape))}; does config.json match the weights?"
            )
        flat[path] = jnp.asarray(np.asarray(transform.to_jax(w, c)), dtype=want.dtype)

    where = ", ".join(sorted(set(files.values()))) or "the checkpoint"
    required = [n for n in missing if not table[n][0].removeprefix("bert/").startswith(OPTIONAL)]
    # A head is fresh only when wholly absent: half of one means a damaged checkpoint.
    for head in OPTIONAL:
        group = [n for n, (p, _) in table.items() if p.removeprefix("bert/").startswith(head)]
        if set(group) & set(missing) and not set(group) <= set(missing):
            required += [n for n in group if n in missing]
    if required:
        raise CheckpointError(
            f"{where} lacks {len(required)} required tensor(s) for a {c.num_hidden_layers}-layer "
            f"BERT: {required[:8]}{' ...' if len(required) > 8 else ''}; is it a BERT checkpoint "
            "with the config.json next to it?"
        )
    fresh = [table[n][0] for n in missing]
    rng = jax.random.key(0) if rng is None else rng
    for i, path in enumerate(fresh):
        want = shapes[path]
        if path.endswith("kernel"):
            noise = jax.random.normal(jax.random.fold_in(rng, i), want.shape, jnp.float32)
            flat[path] = (noise * c.initializer_range).astype(want.dtype)
        elif path.endswith("scale"):
            flat[path] = jnp.ones(want.shape, want.dtype)
        else:
            flat[path] = jnp.zeros(want.shape, want.dtype)
    if fresh:
        log.info("%s has no %s: initialised fresh (train before use)", where, sorted(fresh))

    tied = {}
    if isinstance(model, BertForMaskedLM):
        tied = {k: t for k, t in TIED.items() if k in by_name}
    for name, target in list(tied.items()):
        w, ref = tensors[by_name[name]], tensors.get(by_name.get(target, ""))
        if ref is None or w.shape != ref.shape or not np.array_equal(w, ref):
            log.warning(
                "%s in %s is not equal to %s, which transformers ties it to: not loaded (the "
                "decoder is the word embeddings, its bias cls.predictions.bias)",
                by_name[name],
                files.get(by_name[name], "the checkpoint"),
                target,
            )
            del tied[name]
    unused = sorted(k for k in by_name if k not in table and k not in tied)
    if unused:
        log.info("unused checkpoint tensors (%d): %s", len(unused), [by_name[k] for k in unused])
    return traverse_util.unflatten_dict(flat, sep="/")


def params_to_hf(model: nn.Module, params: dict) -> dict:
    """The inverse of `hf_to_params`: {HF tensor name: float32 numpy array} for `model`; tied
    tensors are left out, as transformers leaves them out."""
    c = model.config
    flat = traverse_util.flatten_dict(params, sep="/")
    shapes = traverse_util.flatten_dict(param_shapes(model), sep="/")
    if set(flat) != set(shapes):
        raise ValueError(
            f"params do not fit the model: missing {sorted(set(shapes) - set(flat))}, "
            f"unexpected {sorted(set(flat) - set(shapes))}"
        )
    out = {}
    for name, (path, transform) in conversion_table(model).items():
        w = np.asarray(flat[path], np.float32)
        if w.shape != shapes[path].shape:
            raise ValueError(
                f"params[{path!r}] has shape {w.shape}, the model {shapes[path].shape}"
            )
        out[name] = np.ascontiguousarray(transform.to_hf(w, c))
    return out


# --- Public API. ---


def from_pretrained(
    path_or_hub_id: str | os.PathLike,
    task: str = "classification",
    num_labels: int | None = None,
    *,
    rng: jax.Array | None = None,
    **config_overrides: Any,
) -> tuple[nn.Module, dict]:
    """Loads a Hugging Face BERT checkpoint: `(model, params)`.

    task: the head, one of TASKS: "classification" (BertForSequenceClassification), "base"
      (BertModel), "token_classification", "question_answering", "multiple_choice",
      "masked_lm" (BertFor<Task>). A checkpoint without the task's head gets a fresh one (logged);
      a BertForPreTraining checkpoint gives masked_lm its MLM head.
    num_labels: the classifier's width, for classification and token_classification; None takes
      the checkpoint's config (id2label), else 2. A width other than id2label's drops its names.
    rng: for a fresh head or pooler when the checkpoint has none (default key 0).
    config_overrides: BertConfig fields, e.g. dtype="bfloat16", attention="reference",
      label_names=("neg", "pos") (which also sets num_labels).
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}; choose one of {tuple(TASKS)}")
    if num_labels is not None:
        if task not in LABELLED and not (task == "question_answering" and num_labels == 2):
            raise ValueError(
                f"num_labels={num_labels} does not apply to task={task!r}; it is the width of "
                f"the classifier of {LABELLED} (question_answering's is 2)"
            )
        config_overrides["num_labels"] = num_labels
    if task == "question_answering":  # transformers' qa_outputs has num_labels = 2 outputs
        config_overrides.setdefault("num_labels", 2)
    folder = resolve_checkpoint(path_or_hub_id)
    config = load_config(folder, **config_overrides)
    model = TASKS[task].module(config)
    tensors, files = read_weights(folder)
    return model, hf_to_params(tensors, model, files, rng)


def save_pretrained(
    model: nn.Module,
    params: dict,
    out_dir: str | os.PathLike,
    tokenizer=None,
) -> Path:
    """Writes a folder transformers loads with the model's class (`BertModel`,
    `BertFor<Task>`, also named in config.json's `architectures`, so the `AutoModelFor<Task>`
    classes load it): config.json, model.safetensors (float32) and, with `tokenizer`, its files.

    Everything is written to a temporary folder first, so a failure leaves `out_dir` as it was.
    """
    out_dir = Path(out_dir)
    arch = TASKS[task_of(model)].architecture
    config = model.config
    if isinstance(model, BertForQuestionAnswering) and config.num_labels != 2:
        config = config.replace(num_labels=2, label_names=None)  # qa_outputs' width
    tensors = params_to_hf(model, params)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config.to_hf(arch), indent=2) + "\n")
        safetensors.numpy.save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp)
        if not out_dir.exists():
            tmp.rename(out_dir)
        else:  # keep other files in an existing folder; replace ours one by one
            for f in tmp.iterdir():
                os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
