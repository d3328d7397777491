"""Hugging Face PEFT's LoRA adapter folders in and out, for `jaxformer.lora.LoraModel`.

A folder is adapter_config.json (peft_type "LORA", r, lora_alpha, lora_dropout, target_modules,
modules_to_save, base_model_name_or_path, task_type) and adapter_model.safetensors: every
adapted module's "base_model.model.<module>.lora_A.weight" (r, in) and ".lora_B.weight" (out, r),
and the task head's tensors (modules_to_save) under "base_model.model.<their name>".
`peft.PeftModel.from_pretrained(transformers base model, folder)` loads what `save` writes, and
`load` reads what PEFT's `save_pretrained` writes, onto the base model given
(`from_pretrained(base, adapter=folder)`) or else the one its base_model_name_or_path names.
"""

from __future__ import annotations

import dataclasses
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
    """(the LoraConfig, the raw adapter_config.json) of a PEFT folder; ValueError naming the
    field for a PEFT method or LoRA variant jaxformer does not implement, or a bad value."""
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
    r, alpha, targets = raw.get("r"), raw.get("lora_alpha"), raw.get("target_modules")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"{folder / CONFIG}: r={r!r}; the rank is an integer >= 1")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"{folder / CONFIG}: lora_alpha={alpha!r}; a number > 0")
    if not isinstance(targets, str) and not (
        isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)
    ):
        raise ValueError(
            f"{folder / CONFIG}: target_modules={targets!r}; module names or one regular expression"
        )
    dropout = raw.get("lora_dropout") or 0.0
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"{folder / CONFIG}: lora_dropout={dropout!r}; a probability in [0, 1)")
    config = lora.LoraConfig(
        rank=r,
        alpha=alpha,
        dropout=dropout,
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
    base: str | os.PathLike | None = None,
    **config_overrides,
) -> tuple[lora.LoraModel, dict]:
    """A PEFT LoRA folder as (LoraModel, params): the base model (`base`, else the folder's
    base_model_name_or_path) with `task`'s head, the adapters and head from the folder.

    The adapters are the folder's tensors, whatever target_modules named them; one on a module
    of the task head (which trains in full, PEFT's modules_to_save) is folded into its weight,
    and a head module the folder does not hold is the base checkpoint's, as in PEFT."""
    from jaxformer.hf.convert import LABELLED, from_pretrained

    folder = Path(folder)
    if not is_adapter_folder(folder):
        raise FileNotFoundError(f"{folder} is no PEFT adapter folder: it has no {CONFIG}")
    cfg, raw = read_config(folder)
    named = raw.get("base_model_name_or_path")
    if base is None and not named:
        raise ValueError(
            f"{folder / CONFIG} names no base_model_name_or_path: set it to the base model's "
            "folder or hub id, or pass the base model (from_pretrained(base, adapter=folder))"
        )
    base = named if base is None else base
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
    if named and str(named) != str(base):
        _check_named_base(folder, str(named), model, base)
    flat = traverse_util.flatten_dict(params, sep="/")
    cfg, adapters = _read_adapters(folder, model, cfg, raw, pairs, flat, base)
    _read_head(folder, model, head_tensors, flat)
    params = {
        "base": traverse_util.unflatten_dict(flat, sep="/"),
        "lora": traverse_util.unflatten_dict(adapters, sep="/"),
    }
    return lora.LoraModel(model, cfg, str(base)), jax.tree.map(jax.numpy.asarray, params)


def _check_named_base(folder: Path, named: str, model, base) -> None:
    """ValueError where adapter_config.json's base model, when its config.json is at hand (a
    local folder, or the Hugging Face cache), is of another model_type or width than `base`."""
    config = Path(named).expanduser() / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(named, "config.json")
        except Exception:  # not a hub id either: nothing to compare
            return
        if not isinstance(cached, str):
            return
        config = Path(cached)
    theirs, c = json.loads(config.read_text()), model.config
    width = theirs.get("hidden_size", theirs.get("dim"))  # DistilBERT's config says dim
    for field, value, ours in (
        ("model_type", theirs.get("model_type"), c.model_type),
        ("hidden_size", width, c.hidden_size),
    ):
        if value is not None and value != ours:
            raise ValueError(
                f"{folder / CONFIG}: base_model_name_or_path={named!r} is a model of {field} "
                f"{value!r}, the base {str(base)!r} of {ours!r}: the adapter was made for "
                "another model"
            )


def _read_head(folder: Path, model, head_tensors: dict, flat: dict) -> None:
    """The folder's task-head tensors (PEFT's modules_to_save) into `flat`; the head's others
    stay the base checkpoint's."""
    from jaxformer.hf.convert import _hf_shape, conversion_table

    c, head = model.config, lora.head_table(model)
    table = {k: v for k, v in conversion_table(model).items() if k in head}
    for name in [n for n in table if n in head_tensors]:
        path, transform = table[name]
        w, want = head_tensors.pop(name), _hf_shape(transform, c, flat[path].shape)
        if w.shape != want:
            labels = len(want) == w.ndim and w.shape[1:] == want[1:]
            raise CheckpointError(
                f"{name!r} in {folder / WEIGHTS} has shape {w.shape}, the model {want}; "
                + ("pass the head's num_labels" if labels else "it was made for another width")
            )
        flat[path] = np.asarray(transform.to_jax(w, c), flat[path].dtype)
    if head_tensors:
        log.info("unused adapter tensors: %s", sorted(head_tensors))


def _read_adapters(folder: Path, model, cfg, raw, pairs: dict, flat: dict, base):
    """(the LoraConfig, {our path/a|b: array}) of the folder's lora_A/lora_B pairs; adapters on
    head modules are folded into `flat`. CheckpointError, naming the tensor, for a pair of no
    module of the model (another architecture), a shape that is not (r, in) / (out, r), or a
    targeted module without its pair."""
    c, file = model.config, folder / WEIGHTS
    encoder, head = lora.linear_weights(model), lora.linear_weights(model, head=True)
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in pairs})
    adapters = {}
    for module in modules:
        if module not in encoder and module not in head:
            raise CheckpointError(
                f"{file}: {PREFIX}{module}.lora_A/B adapt no nn.Linear of the {c.model_type} "
                f"model {str(base)!r} (its modules are like {sorted(encoder)[:2]}): the adapter "
                f"was made for another architecture (adapter_config.json base_model_name_or_path="
                f"{raw.get('base_model_name_or_path')!r})"
            )
        path, transform, (out, inp) = encoder.get(module) or head[module]
        ab = []
        for part, shape in (("A", (cfg.rank, inp)), ("B", (out, cfg.rank))):
            name = f"{PREFIX}{module}.lora_{part}.weight"
            w = pairs.get(name.removeprefix(PREFIX))
            if w is None:
                raise CheckpointError(f"{file} lacks {name}")
            if w.ndim == 2 and w.shape[1 - (part == "A")] != cfg.rank:
                raise CheckpointError(
                    f"{name} in {file} has shape {w.shape}: rank "
                    f"{w.shape[1 - (part == 'A')]}, not adapter_config.json's r={cfg.rank}"
                )
            if w.shape != shape:
                raise CheckpointError(
                    f"{name} in {file} has shape {w.shape}, the {c.model_type} model "
                    f"{str(base)!r} {shape} (its {module} is {(out, inp)}): the adapter was made "
                    "for a model of another width"
                )
            ab.append(np.asarray(w, np.float32))
        if module in encoder:
            adapters[f"{path}/a"], adapters[f"{path}/b"] = ab
        else:  # the head trains in full: its adapter folds into its weight
            delta = (ab[1] @ ab[0]) * cfg.scale
            flat[path] = (flat[path] + transform.to_jax(delta, c)).astype(flat[path].dtype)
    wanted = cfg.targets
    targeted = [m for m in encoder if wanted == "all-linear" or lora._matches(m, wanted)]
    missing = sorted(set(targeted) - set(modules))
    if missing:
        raise CheckpointError(
            f"{file} lacks {PREFIX}{missing[0]}.lora_A.weight, which adapter_config.json's "
            f"target_modules={raw['target_modules']!r} name"
        )
    found = tuple(m for m in modules if m in encoder)
    if not found:
        raise CheckpointError(f"{file} holds no adapter of the model's encoder")
    try:  # target_modules as they are where they name just these modules, else their names
        same = set(lora.targets(model, cfg)) == set(found)
    except ValueError:
        same = False
    if not same:
        cfg = dataclasses.replace(cfg, targets=found)
    return cfg, adapters
