"""Hugging Face PEFT's LoRA adapter folders in and out, for `jaxformer.lora.LoraModel`.

A folder is adapter_config.json (peft_type "LORA", r, lora_alpha, lora_dropout, target_modules,
modules_to_save, base_model_name_or_path, task_type) and adapter_model.safetensors: every
adapted module's "base_model.model.<module>.lora_A.weight" (r, in) and ".lora_B.weight" (out, r),
and the task head's tensors (modules_to_save) under "base_model.model.<their name>".
`peft.PeftModel.from_pretrained(transformers base model, folder)` loads what `save` writes, and
`load` reads what PEFT's `save_pretrained` writes, its base model from base_model_name_or_path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
import safetensors.numpy
from flax import traverse_util

from jaxformer import families, lora
from jaxformer.hf import CheckpointError
from jaxformer.hf.hub import load_config, resolve_checkpoint

log = logging.getLogger(__name__)

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
# Our task -> PEFT's task_type (None: a plain PeftModel).
TASK_TYPES = {
    "classification": "SEQ_CLS",
    "token_classification": "TOKEN_CLS",
    "question_answering": "QUESTION_ANS",
    "base": "FEATURE_EXTRACTION",
    "embedding": "FEATURE_EXTRACTION",
}
# adapter_config.json fields of LoRA variants jaxformer does not implement, at their neutral value.
NEUTRAL = {
    "use_dora": False,
    "bias": "none",
    "lora_bias": False,
    "fan_in_fan_out": False,
    "layers_to_transform": None,
    "layers_pattern": None,
    "rank_pattern": {},
    "alpha_pattern": {},
    "target_parameters": None,
    "trainable_token_indices": None,
    "layer_replication": None,
    "exclude_modules": None,
}


def is_adapter_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG).is_file()


def read_config(folder: Path) -> tuple[lora.LoraConfig, dict]:
    """(the LoraConfig, the raw adapter_config.json) of a PEFT folder; ValueError for a PEFT
    method or LoRA variant jaxformer does not implement."""
    raw = json.loads((folder / CONFIG).read_text())
    if raw.get("peft_type") != "LORA":
        raise ValueError(
            f"{folder / CONFIG}: peft_type={raw.get('peft_type')!r}; jaxformer reads LoRA "
            "adapters (peft_type 'LORA') only"
        )
    for field, neutral in NEUTRAL.items():
        if raw.get(field, neutral) not in (neutral, None, {}):
            raise ValueError(
                f"{folder / CONFIG}: {field}={raw[field]!r} is a LoRA variant jaxformer does not "
                f"implement (it reads {field}={neutral!r}); merge the adapter with PEFT "
                "(merge_and_unload) and load the merged model"
            )
    targets = raw.get("target_modules")
    config = lora.LoraConfig(
        rank=raw["r"],
        alpha=raw["lora_alpha"],
        dropout=raw.get("lora_dropout") or 0.0,
        targets=targets if isinstance(targets, str) else tuple(sorted(targets)),
        use_rslora=bool(raw.get("use_rslora", False)),
    )
    return config, raw


def save(model: lora.LoraModel, params: dict, out_dir: str | os.PathLike, tokenizer=None) -> Path:
    """Writes `model`'s adapters and task head as PEFT's adapter folder (see the module)."""
    from jaxformer.hf.convert import _replace_files, conversion_table

    inner, cfg, out_dir = model.model, model.lora, Path(out_dir)
    adapters = traverse_util.flatten_dict(params["lora"], sep="/")
    tensors = {}
    for module, (path, _, _) in lora.targets(inner, cfg).items():
        tensors[f"{PREFIX}{module}.lora_A.weight"] = np.asarray(adapters[f"{path}/a"], np.float32)
        tensors[f"{PREFIX}{module}.lora_B.weight"] = np.asarray(adapters[f"{path}/b"], np.float32)
    base = traverse_util.flatten_dict(params["base"], sep="/")
    head = lora.head_table(inner)
    for name, (path, transform) in conversion_table(inner).items():
        if name in head:
            w = np.asarray(base[path], np.float32)
            tensors[PREFIX + name] = np.ascontiguousarray(transform.to_hf(w, inner.config))
    targets = lora.default_targets(inner) if cfg.targets is None else cfg.targets
    config = {
        "peft_type": "LORA",
        "task_type": TASK_TYPES.get(families.task_of(inner)),
        "base_model_name_or_path": model.base_model,
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": targets if isinstance(targets, str) else list(targets),
        "modules_to_save": lora.modules_to_save(inner) or None,
        "use_rslora": cfg.use_rslora,
        "bias": "none",
        "use_dora": False,
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        safetensors.numpy.save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp)
        if not out_dir.exists():
            tmp.rename(out_dir)
        else:
            _replace_files(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load(
    folder: str | os.PathLike,
    task: str,
    num_labels: int | None,
    rng: jax.Array | None,
    **config_overrides,
) -> tuple[lora.LoraModel, dict]:
    """A PEFT LoRA folder as (LoraModel, params): the base model from the folder's
    base_model_name_or_path with `task`'s head, the adapters and head from the folder."""
    from jaxformer.hf.convert import LABELLED, _hf_shape, conversion_table, from_pretrained

    folder = Path(folder)
    cfg, raw = read_config(folder)
    base = raw.get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{folder / CONFIG} names no base_model_name_or_path: set it to the base model's "
            "folder or hub id"
        )
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS} (jaxformer reads safetensors only)")
    stored = {
        k.removeprefix(PREFIX): v for k, v in safetensors.numpy.load_file(folder / WEIGHTS).items()
    }
    pairs = {k: v for k, v in stored.items() if ".lora_A." in k or ".lora_B." in k}
    head_tensors = {k: v for k, v in stored.items() if k not in pairs}
    if num_labels is None and task in LABELLED:
        model_type = load_config(resolve_checkpoint(base), **config_overrides).model_type
        names = families.family(model_type).names
        out = f"{names.outputs[task]}/kernel"
        for name, (path, _) in names.heads[task].items():
            if path == out and name in head_tensors:
                num_labels = head_tensors[name].shape[0]
    model, params = from_pretrained(base, task, num_labels, rng=rng, **config_overrides)
    c = model.config
    flat = traverse_util.flatten_dict(params, sep="/")
    head = lora.head_table(model)
    table = {k: v for k, v in conversion_table(model).items() if k in head}
    found = [n for n in table if n in head_tensors]
    if found and len(found) != len(table):
        raise CheckpointError(
            f"{folder / WEIGHTS} holds part of the {task} head: {found}, not "
            f"{sorted(set(table) - set(found))}"
        )
    for name in found:
        path, transform = table[name]
        w, want = head_tensors.pop(name), _hf_shape(transform, c, flat[path].shape)
        if w.shape != want:
            raise CheckpointError(
                f"{name!r} in {folder / WEIGHTS} has shape {w.shape}, the model {want}; "
                "pass the head's num_labels"
            )
        flat[path] = np.asarray(transform.to_jax(w, c), flat[path].dtype)
    if head_tensors:
        log.info("unused adapter tensors: %s", sorted(head_tensors))
    adapters = {}
    for module, (path, _, (out, inp)) in lora.targets(model, cfg).items():
        for part, shape in (("A", (cfg.rank, inp)), ("B", (out, cfg.rank))):
            name = f"{module}.lora_{part}.weight"
            if name not in pairs:
                raise CheckpointError(f"{folder / WEIGHTS} lacks {PREFIX}{name}")
            w = pairs.pop(name)
            if w.shape != shape:
                raise CheckpointError(
                    f"{PREFIX}{name} in {folder / WEIGHTS} has shape {w.shape}, expected {shape}"
                )
            adapters[f"{path}/{part.lower()}"] = np.asarray(w, np.float32)
    if pairs:
        raise CheckpointError(
            f"{folder / WEIGHTS} has adapters for modules the config's target_modules do not "
            f"reach in this model: {sorted(pairs)[:6]}"
        )
    params = {
        "base": traverse_util.unflatten_dict(flat, sep="/"),
        "lora": traverse_util.unflatten_dict(adapters, sep="/"),
    }
    return lora.LoraModel(model, cfg, str(base)), jax.tree.map(jax.numpy.asarray, params)
