"""Hugging Face checkpoints of the encoder families in and out: `from_pretrained`,
`save_pretrained`.

One conversion for every family (`jaxformer.families`, chosen by config.json's model_type): the
family's table (its `Names`), HF tensor name -> our parameter path, plus a few
named transforms between torch's `nn.Linear` layout `(out, in)` and ours. Every converted tensor
is checked against `param_shapes(model)`, and missing or unused tensors are reported: a silently
wrong load is the worst bug. Reading the files is `jaxformer.hf.hub`'s. An embedding model holds
its base model's tensors; its pooling is in sentence-transformers' files (`jaxformer.hf.sentence`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import traverse_util

from jaxformer import families
from jaxformer.families import HEADS, task_of
from jaxformer.hf import CheckpointError, adapters
from jaxformer.hf.config import spelling
from jaxformer.hf.hub import load_config, read_weights, resolve_checkpoint
from jaxformer.hf.names import Names, Transform
from jaxformer.hf.sentence import SentenceConfig, read_sentence_config, write_sentence_config
from jaxformer.lora import LoraConfig, LoraModel, add_adapters
from jaxformer.lora import merge as merge_adapters
from jaxformer.models import param_shapes
from jaxformer.models.config import BertConfig

log = logging.getLogger(__name__)

# The tasks whose head has one output per label (num_labels).
LABELLED = ("classification", "token_classification")
# Buffers, not parameters: skipped without a word.
IGNORED = re.compile(r"(^|\.)embeddings\.(position_ids|token_type_ids)$")

__all__ = ["HEADS", "from_pretrained", "save_pretrained", "conversion_table", "task_of"]


def _names(model: nn.Module) -> Names:
    return families.family(model.config.model_type).names


def _tensor_task(model: nn.Module) -> str:
    """The task whose Hugging Face tensors `model` holds: an embedding model, its base model's
    (sentence-transformers saves the transformers base model, no head)."""
    task = task_of(model)
    return "base" if task == "embedding" else task


def _headed(model: nn.Module) -> bool:
    """Whether `model` is a task model, its encoder under the family's prefix."""
    return _tensor_task(model) != "base"


def _prefixed(model: nn.Module, table: dict) -> dict:
    """A base-model table (or tensors) as the task model names them: under the prefix."""
    if not _headed(model):
        return table
    p = _names(model).prefix
    return {
        f"{p}.{k}": (f"{p}/{v[0]}", v[1]) if isinstance(v, tuple) else v for k, v in table.items()
    }


def conversion_table(model: nn.Module) -> dict[str, tuple[str, Transform]]:
    """{HF tensor name as transformers saves it for `model`: (our param path, Transform)}."""
    c, names = model.config, _names(model)
    mismatch = c.hf_mismatch()
    if mismatch is not None:
        raise ValueError(mismatch)
    computed, absent = names.computed(c), names.absent(c)
    encoder = {k: v for k, v in names.embeddings.items() if k not in computed and k not in absent}
    encoder |= names.projection if c.embedding_width != c.hidden_size else {}
    layer = {k: v for k, v in names.layer.items() if k not in absent}
    if names.layer_scopes is not None:
        scopes = names.layer_scopes(c)
    else:
        scopes = {names.layers.format(i=i): f"layer_{i}" for i in range(c.num_hidden_layers)}
    for at, scope in scopes.items():
        encoder |= {f"{at}{k}": (f"{scope}/{p}", t) for k, (p, t) in layer.items()}
    task = _tensor_task(model)
    pooled = model.add_pooling_layer if task == "base" else model.pooled
    encoder |= names.pooler if pooled else {}
    head = names.heads[task]
    encoder, head = (
        {k: v for k, v in t.items() if not names.leaves_out(c, k)} for t in (encoder, head)
    )
    return _prefixed(model, encoder) | head


def computed_tensors(model: nn.Module) -> dict[str, np.ndarray]:
    """The HF tensors of `model` that its config defines, by the name transformers saves."""
    return _prefixed(model, _names(model).computed(model.config))


def _head_prefixes(names: Names) -> tuple[str, ...]:
    """The first names of every head's tensors: never under the encoder's prefix."""
    heads = [n for table in names.heads.values() for n in table] + list(names.tied)
    return tuple(sorted({n.split(".")[0] + "." for n in heads}))


def _canonical_name(name: str, model: nn.Module) -> str:
    """A checkpoint's tensor name in the spelling `conversion_table` uses for our model (a head
    model's encoder under the family's prefix, whether or not the checkpoint has one)."""
    names = _names(model)
    for old, new in names.renames:
        name = name.replace(old, new)
    bare = name.removeprefix(f"{names.prefix}.")
    if _headed(model) and not bare.startswith(_head_prefixes(names)):
        return f"{names.prefix}.{bare}"
    return bare


def _shape_hint(model: nn.Module, path: str, shape: tuple[int, ...]) -> str:
    """What to do when a head's tensor in the checkpoint has another width than ours."""
    task = task_of(model)
    if path.rsplit("/", 1)[0] != _names(model).outputs.get(task):
        return ""
    if task in LABELLED and path.endswith("kernel"):
        return (
            f"; the checkpoint's classifier has {shape[0]} labels: pass num_labels={shape[0]}, "
            "or load with task='base' and add your own head"
        )
    widths = {"multiple_choice": "1 output (per choice)", "question_answering": "2 outputs"}
    if task in widths:
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
    Tensors the model has no place for are logged as unused; a tied tensor (the family's
    `tied`) is accepted when it equals the tensor it is tied to, and reported otherwise; a tensor
    the config defines (`computed`, e.g. DistilBERT's sinusoidal positions) must equal it.
    """
    c, files, names = model.config, files or {}, _names(model)
    family = spelling(c.model_type).name
    shapes = traverse_util.flatten_dict(param_shapes(model), sep="/")
    table = conversion_table(model)
    assert {p for p, _ in table.values()} == set(shapes), "conversion table and model disagree"

    by_name = {_canonical_name(k, model): k for k in tensors if not IGNORED.search(k)}
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
                f"file is damaged or not a {family} checkpoint"
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
    # Initialised fresh when a checkpoint lacks the whole group, as transformers initialises
    # them: the pooler, and the task's head.
    task = _tensor_task(model)
    groups = [list(_prefixed(model, names.pooler)), list(names.heads[task])]
    required = [n for n in missing if not any(n in g for g in groups)]
    # A head is fresh only when wholly absent: half of one means a damaged checkpoint.
    for group in groups:
        if set(group) & set(missing) and not set(group) <= set(missing):
            required += [n for n in group if n in missing]
    if required:
        raise CheckpointError(
            f"{where} lacks {len(required)} required tensor(s) for a {c.num_hidden_layers}-layer "
            f"{family}: {required[:8]}{' ...' if len(required) > 8 else ''}; is it a {family} "
            "checkpoint with the config.json next to it?"
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
        if task == "masked_lm" and set(names.heads[task]) <= set(missing):
            log.info("the masked-LM head starts fresh; its decoder is the word embeddings (tied)")

    for name, value in computed_tensors(model).items():
        if name not in by_name:
            continue
        w = tensors[by_name[name]]
        if w.shape != value.shape or not np.allclose(w, value, rtol=0, atol=1e-6):
            raise CheckpointError(
                f"tensor {by_name[name]!r} in {files.get(by_name[name], 'the checkpoint')} is not "
                f"the fixed table its config.json defines (shape {value.shape}); the model "
                "computes it and cannot load another. For learned positions, load with "
                "position_embedding_type='absolute'"
            )
    tied = {}
    if task == "masked_lm":
        tied = {k: t for k, t in names.tied.items() if k in by_name}
    for name, target in list(tied.items()):
        w, ref = tensors[by_name[name]], tensors.get(by_name.get(target, ""))
        if ref is None or w.shape != ref.shape or not np.array_equal(w, ref):
            log.warning(
                "%s in %s is not equal to %s, which transformers ties it to: not loaded (the "
                "decoder is the word embeddings, its bias the head's own)",
                by_name[name],
                files.get(by_name[name], "the checkpoint"),
                target,
            )
            del tied[name]
    computed = computed_tensors(model)
    unused = sorted(k for k in by_name if k not in table and k not in tied and k not in computed)
    if unused:
        log.info("unused checkpoint tensors (%d): %s", len(unused), [by_name[k] for k in unused])
    return traverse_util.unflatten_dict(flat, sep="/")


def params_to_hf(model: nn.Module, params: dict) -> dict:
    """The inverse of `hf_to_params`: {HF tensor name: float32 numpy array} for `model`; tied
    tensors are left out, as transformers leaves them out; computed ones are written."""
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
    return out | computed_tensors(model)


# --- Public API. ---


def from_pretrained(
    path_or_hub_id: str | os.PathLike,
    task: str = "classification",
    num_labels: int | None = None,
    *,
    rng: jax.Array | None = None,
    lora: LoraConfig | None = None,
    adapter: str | os.PathLike | None = None,
    **config_overrides: Any,
) -> tuple[nn.Module, dict]:
    """Loads a Hugging Face checkpoint of a family in `jaxformer.families` (config.json's
    model_type: bert, roberta, xlm-roberta, distilbert, electra, albert, deberta-v2,
    modernbert): `(model, params)`.

    task: the head, one of HEADS: "classification" (BertForSequenceClassification), "base"
      (BertModel), "token_classification", "question_answering", "multiple_choice",
      "masked_lm" (BertFor<Task>; the family's classes for the others), and for ELECTRA
      "pretraining" (ElectraForPreTraining's discriminator). A checkpoint without the
      task's head gets a fresh one (logged); a BertForPreTraining checkpoint gives masked_lm its
      MLM head. "embedding": the base model pooled to one float32 vector per sequence
      (`jaxformer.models.sentence`), with the pooling and normalisation that the folder's
      sentence-transformers files declare (modules.json, its Pooling module's config.json; see
      `jaxformer.hf.sentence`), mean pooling without them; `model.clone(pooling="cls")` etc.
      changes them.
    num_labels: the classifier's width, for classification and token_classification; None takes
      the checkpoint's config (id2label), else 2. A width other than id2label's drops its names.
      The other tasks have no such classifier: a num_labels for them is logged as unused.
    rng: for a fresh head or pooler when the checkpoint has none (default key 0).
    lora: a `jaxformer.lora.LoraConfig`: the model with fresh low-rank adapters, a
      `jaxformer.lora.LoraModel` whose params are {"base": ..., "lora": ...}. A PEFT adapter folder
      (adapter_config.json) loads as one with its adapters and head, on the base model that
      its base_model_name_or_path names (`jaxformer.hf.adapters`).
    adapter: a PEFT LoRA adapter folder to load onto this checkpoint (the base model): a
      LoraModel with the folder's adapters and head, whatever base its config names.
    config_overrides: BertConfig fields, e.g. dtype="bfloat16", attention="reference",
      label_names=("neg", "pos") (which also sets num_labels).
    """
    if adapter is not None:
        if lora is not None or adapters.is_adapter_folder(path_or_hub_id):
            raise ValueError(
                f"adapter={str(adapter)!r} loads onto a base model: pass the base checkpoint "
                f"(not {str(path_or_hub_id)!r}, an adapter folder) and no lora="
            )
        return adapters.load(adapter, task, num_labels, rng, path_or_hub_id, **config_overrides)
    if adapters.is_adapter_folder(path_or_hub_id):
        if lora is not None:
            raise ValueError(
                f"{path_or_hub_id} is a PEFT adapter folder, which carries its LoRA config: "
                "load it with lora=None"
            )
        return adapters.load(path_or_hub_id, task, num_labels, rng, **config_overrides)
    if lora is not None:
        model, params = from_pretrained(
            path_or_hub_id, task, num_labels, rng=rng, **config_overrides
        )
        key = jax.random.fold_in(jax.random.key(0) if rng is None else rng, 1)
        return add_adapters(model, params, lora, key, base_model=str(path_or_hub_id))
    if task not in HEADS:
        raise ValueError(f"task={task!r}; choose one of {HEADS}")
    if num_labels is not None and task not in LABELLED:
        # As transformers' from_pretrained takes it for any head: code that loops over tasks
        # passes one num_labels.
        if not (task == "question_answering" and num_labels == 2):
            log.info(
                "num_labels=%s is unused: task=%r has no classifier of labels (those of %s "
                "have; question_answering's outputs are a start and an end)",
                num_labels,
                task,
                LABELLED,
            )
    elif num_labels is not None:
        config_overrides["num_labels"] = num_labels
    if task == "question_answering":  # transformers' qa_outputs has num_labels = 2 outputs
        config_overrides.setdefault("num_labels", 2)
    folder = resolve_checkpoint(path_or_hub_id)
    config = load_config(folder, **config_overrides)
    model_class = families.model_class(config.model_type, task)
    if task == "embedding":
        sentence = read_sentence_config(folder, config.hidden_size)
        model = model_class(config, pooling=sentence.pooling, normalize=sentence.normalize)
    else:
        model = model_class(config)
    tensors, files = read_weights(folder)
    return model, hf_to_params(tensors, model, files, rng)


def save_pretrained(
    model: nn.Module,
    params: dict,
    out_dir: str | os.PathLike,
    tokenizer=None,
    *,
    merge: bool = False,
) -> Path:
    """Writes a folder transformers loads with the model's class (`BertModel`,
    `BertFor<Task>`, the family's others, also named in config.json's `architectures`, so the
    `AutoModelFor<Task>` classes load it): config.json, model.safetensors (float32) and, with
    `tokenizer`, its files. An embedding model writes its base model (`BertModel`, ...) and
    sentence-transformers' modules.json and 1_Pooling/config.json for its pooling, with
    `tokenizer` also sentence_bert_config.json (max_seq_length: the tokenizer's max_length).

    A `jaxformer.lora.LoraModel` writes PEFT's adapter folder (`jaxformer.hf.adapters`): its
    adapters and task head, loaded by `peft.PeftModel.from_pretrained(base model, folder)`;
    with merge=True, the plain model with the adapters folded in (`jaxformer.lora.merge`), an
    ordinary checkpoint.

    Everything is written to a temporary folder first, so a failure leaves `out_dir` as it was.
    """
    if merge:
        model, params = merge_adapters(model, params)
    elif isinstance(model, LoraModel):
        return adapters.save(model, params, out_dir, tokenizer)
    out_dir = Path(out_dir)
    task = task_of(model)
    arch = _names(model).architectures[_tensor_task(model)]
    config = model.config
    if task == "question_answering" and config.num_labels != 2:
        config = config.replace(num_labels=2, label_names=None)  # qa_outputs' width
    tensors = params_to_hf(model, params)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config.to_hf(arch), indent=2) + "\n")
        safetensors.numpy.save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp)
        if task == "embedding":
            length = None if tokenizer is None else tokenizer.max_length
            sentence = SentenceConfig(model.pooling, model.normalize, length)
            write_sentence_config(tmp, sentence, config.hidden_size)
        if not out_dir.exists():
            tmp.rename(out_dir)
        else:  # keep other files in an existing folder; replace ours one by one
            _replace_files(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _replace_files(src: Path, dst: Path) -> None:
    """Moves every file under `src` to the same place under `dst`, keeping dst's others."""
    for f in src.iterdir():
        if f.is_dir():
            (dst / f.name).mkdir(exist_ok=True)
            _replace_files(f, dst / f.name)
        else:
            os.replace(f, dst / f.name)
