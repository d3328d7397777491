"""sentence-transformers' files in a checkpoint folder: which pooling and normalisation the
folder's modules.json and its Pooling module's config.json declare, and writing them back.

Mirrors sentence-transformers' SentenceTransformer.save/load: modules.json lists the modules
in order ({"idx", "name", "path", "type"}: a Transformer at the folder's top, a Pooling in e.g.
"1_Pooling" with its config.json, optionally a Normalize); a Pooling config.json names its mode
as `pooling_mode` ("mean", or a list of modes to concatenate) or, in the older spelling, as
booleans `pooling_mode_mean_tokens`, `pooling_mode_cls_token`, ... (none set: mean). Its
`include_prompt` changes nothing here: jaxformer puts no prompt before a text.
sentence_bert_config.json's `max_seq_length` is the length it truncates inputs to, and its
`do_lower_case` whether it lower-cases them first.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

from jaxformer.hf import CheckpointError
from jaxformer.models.sentence import POOLINGS

log = logging.getLogger(__name__)

# The older Pooling config.json booleans, in the order sentence-transformers concatenates them.
LEGACY_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
MODULES = ("Transformer", "Pooling", "Normalize")  # the modules jaxformer reads
POOLING_PATH = "1_Pooling"


class SentenceConfig(NamedTuple):
    pooling: str  # a key of jaxformer.models.sentence.POOLINGS
    normalize: bool  # L2-normalise the pooled vector
    max_seq_length: int | None  # sentence_bert_config.json's, None without one


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); download or save it again") from e


def input_options(folder: Path) -> tuple[int | None, bool]:
    """sentence_bert_config.json's (max_seq_length, do_lower_case): the tokens
    sentence-transformers keeps of a text, and whether it lower-cases texts before tokenizing;
    (None, False) without the file."""
    path = folder / "sentence_bert_config.json"
    if not path.is_file():
        return None, False
    config = _read_json(path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a JSON {type(config).__name__}, not an object")
    n, lowercase = config.get("max_seq_length"), config.get("do_lower_case", False)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise CheckpointError(f"{path}: max_seq_length={n!r} is not a positive integer")
    if not isinstance(lowercase, bool):
        raise CheckpointError(f"{path}: do_lower_case={lowercase!r} is not true or false")
    return n, lowercase


def _pooling_mode(path: Path, width: int | None) -> str:
    """The one pooling mode that a Pooling module's config.json asks for."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist, but modules.json lists a Pooling module there; copy the "
            "checkpoint's pooling folder too"
        )
    config = _read_json(path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a JSON {type(config).__name__}, not an object")
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else mode
        if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
            raise CheckpointError(
                f"{path}: pooling_mode={mode!r} is neither a mode name nor a list of them"
            )
    else:
        modes = [m for key, m in LEGACY_MODES.items() if config.get(key)] or ["mean"]
    supported = ", ".join(POOLINGS)
    if len(modes) != 1:
        raise CheckpointError(
            f"{path} asks for {len(modes)} pooling modes at once ({' + '.join(modes)}, "
            f"concatenated); jaxformer pools one way: one of {supported}"
        )
    if modes[0] not in POOLINGS:
        raise CheckpointError(
            f"{path} asks for pooling mode {modes[0]!r}, which jaxformer does not have; it pools "
            f"{supported}"
        )
    dim = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    if width is not None and dim is not None and dim != width:
        raise CheckpointError(
            f"{path}: the pooled vectors are {dim} wide, but config.json's hidden_size is "
            f"{width}; is this the pooling folder of this checkpoint?"
        )
    return modes[0]


def read_sentence_config(folder: Path, width: int | None = None) -> SentenceConfig:
    """The pooling, normalisation and max_seq_length that `folder`'s sentence-transformers
    files declare; `width`: the encoder's hidden_size, which the pooled vectors must have.

    A folder without modules.json gets mean pooling and no normalisation (sentence-transformers'
    own default for a plain transformers folder), and a log line says so. CheckpointError for a
    module jaxformer does not hold (Dense, LayerNorm, ...), a transformer outside the folder's
    top, or a pooling it cannot do (weightedmean, lasttoken, several at once).
    """
    length, _ = input_options(folder)
    path = folder / "modules.json"
    if not path.is_file():
        log.warning(
            "%s has no modules.json (not a sentence-transformers folder): mean pooling over the "
            "real tokens, no normalisation",
            folder,
        )
        return SentenceConfig("mean", False, length)
    modules = _read_json(path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError(f"{path} is not a JSON list of modules; download or save it again")
    pooling_path, normalize = None, False
    for i, module in enumerate(modules):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        where = f"{path}: module {i} ({module.get('type')!r}, path {module.get('path')!r})"
        if kind not in MODULES:
            raise CheckpointError(
                f"{where} is not one jaxformer's embedding task holds; it reads "
                f"{', '.join(MODULES)} only (a Dense or other module would change the vectors)"
            )
        if kind == "Transformer" and module.get("path", "") not in ("", "."):
            raise CheckpointError(
                f"{where}: the transformer sits in a subfolder; jaxformer reads it from the "
                "folder's top, as sentence-transformers 2 and later save it"
            )
        if kind == "Pooling":
            if pooling_path is not None:
                raise CheckpointError(f"{where} is a second Pooling module; jaxformer pools once")
            pooling_path = str(module.get("path") or "")
        if kind == "Normalize":
            if pooling_path is None:
                raise CheckpointError(f"{where}: Normalize comes before the Pooling module")
            normalize = True
    if pooling_path is None:
        raise CheckpointError(
            f"{path} lists no Pooling module: the model gives token vectors, not sentence vectors"
        )
    mode = _pooling_mode(folder / pooling_path / "config.json", width)
    return SentenceConfig(mode, normalize, length)


def write_sentence_config(folder: Path, config: SentenceConfig, width: int) -> None:
    """modules.json, 1_Pooling/config.json and, with a max_seq_length, sentence_bert_config.json,
    as sentence-transformers saves them (the older boolean spelling, which every version reads)."""
    kinds = [("", "Transformer"), (POOLING_PATH, "Pooling")]
    kinds += [("2_Normalize", "Normalize")] if config.normalize else []
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(kinds)
    ]
    pooling = {"word_embedding_dimension": width}
    pooling |= {key: mode == config.pooling for key, mode in LEGACY_MODES.items()}
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / POOLING_PATH).mkdir(exist_ok=True)
    (folder / POOLING_PATH / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    if config.max_seq_length is not None:
        st_config = {"max_seq_length": config.max_seq_length, "do_lower_case": False}
        (folder / "sentence_bert_config.json").write_text(json.dumps(st_config, indent=2) + "\n")
