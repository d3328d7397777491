"""Hugging Face config.json <-> `BertConfig`: each family's spelling of the architecture.

Every family's config.json (transformers/models/<family>/configuration_<family>.py) names the
same architecture its own way; its `HfSpelling`, in its file in `jaxformer.families`, says how.
`from_hf` reads a config.json dict, checking every field it reads, and `to_hf` writes the one
transformers' class loads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from jaxformer import layers
from jaxformer.models.config import (
    COMPUTE_FIELDS,
    GROUPS,
    MAX_SIZE,
    POOLINGS,
    PROBLEM_TYPES,
    TOKEN_IDS,
    BertConfig,
    Biases,
)

# Fields a config.json must carry (in its family's spelling): everything else has the Hugging
# Face default.
REQUIRED_HF_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)
# What each field read from config.json must be. Sizes fit int32, as XLA's shapes do.
POSITIVE_INTS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "num_labels",
    "embedding_size",
    "sharing.num_hidden_groups",
    "sharing.inner_group_num",
    "local.window",
    "local.global_every",
)
BIAS_FLAGS = tuple(f"biases.{f.name}" for f in dataclasses.fields(Biases))
PROBABILITIES = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "qa_dropout",
    "summary_dropout",
    "mlp_dropout",
    "pooler_dropout",
)


class HfSpelling(NamedTuple):
    """How one family's config.json spells our fields."""

    name: str  # the family, in messages: "BERT", "RoBERTa"
    # our field -> its config.json key, read and written; "group.field" for a field of one of
    # BertConfig's GROUPS, which is present where the family spells one of its fields
    fields: dict[str, str]
    defaults: dict[str, Any] = {}  # our field -> transformers' default, where it is not ours
    fixed: dict[str, Any] = {}  # our field -> the family's constant (not in config.json)
    positions: tuple[str, ...] = ("absolute",)  # position_embedding_type values it has
    sinusoidal_flag: str | None = None  # a config.json bool that means sinusoidal positions
    minimums: dict[str, int] = {}  # our field -> its least value in config.json, where not 1
    # config.json key -> the one value the family's modules implement (refused otherwise).
    requires: dict[str, Any] = {}
    # group -> the config.json bool that says whether the model has it (DeBERTa's
    # relative_attention), where the group's fields are spelled either way.
    switches: dict[str, str] = {}
    # Keys that are not one field each: config.json -> our fields (after `fields`), and back.
    read: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
    write: Callable[[BertConfig], dict[str, Any]] | None = None


# transformers' activation names (ACT2FN) -> ours (jaxformer.layers.ACTIVATIONS), and ours ->
# the name config.json gets.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
WRITTEN_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}
ACTIVATION_FIELDS = ("hidden_act", "classifier_activation", "pooler_hidden_act")
# BERT's fields, as configuration_bert.py spells them; most families spell many the same.
BERT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "initializer_range",
    "position_embedding_type",
    "pad_token_id",
)


def spelling(model_type: str, source: str = "config") -> HfSpelling:
    """The spelling of `model_type`; ValueError naming the ones jaxformer reads otherwise."""
    from jaxformer import families  # whose family files import this module

    if model_type not in families.FAMILIES:
        raise ValueError(
            f"{source}: model_type={model_type!r} is not a BERT-family checkpoint jaxformer "
            f"reads; it reads model_type {tuple(families.FAMILIES)}"
        )
    return families.FAMILIES[model_type].spelling


def from_hf(hf: dict[str, Any], source: str = "config.json", **overrides: Any) -> BertConfig:
    """Builds a config from a Hugging Face config.json dict; `overrides` win.

    Every field read is checked (type and range) and a bad one raises ValueError naming
    `source`, the field and its value.
    """
    if not isinstance(hf, dict):
        raise ValueError(f"{source} holds a {type(hf).__name__}, not a JSON object")
    model_type = hf.get("model_type", "bert")
    sp = spelling(model_type, source)
    missing = [sp.fields[f] for f in REQUIRED_HF_FIELDS if sp.fields[f] not in hf]
    if missing:
        raise ValueError(
            f"{source} lacks required field(s) {missing}; a {sp.name} config.json needs "
            f"{[sp.fields[f] for f in REQUIRED_HF_FIELDS]}"
        )
    for key, value in sp.requires.items():
        if key in hf and hf[key] != value:
            raise ValueError(
                f"{source}: {key}={hf[key]!r} is not supported; jaxformer reads {sp.name} "
                f"checkpoints with {key}={value!r}"
            )
    # config.json's "dtype" (transformers 5) / "torch_dtype" is the storage dtype, not our
    # compute dtype: compute settings only come from `overrides`.
    names = {f.name for f in dataclasses.fields(BertConfig)} - set(COMPUTE_FIELDS) - {"label_names"}
    kwargs = dict(sp.defaults)
    kwargs |= {ours: hf[key] for ours, key in sp.fields.items() if key in hf}
    kwargs |= {"num_labels": hf["num_labels"]} if "num_labels" in hf else {}
    if hf.get(sp.fields["pad_token_id"], 0) is None:  # null in some configs: never read
        kwargs.pop("pad_token_id")
    if hf.get("problem_type") is not None:
        if hf["problem_type"] not in PROBLEM_TYPES:
            raise ValueError(
                f"{source}: problem_type={hf['problem_type']!r} is not valid; it must be one "
                f"of {PROBLEM_TYPES} or null"
            )
        kwargs["problem_type"] = hf["problem_type"]
    if "id2label" in hf:
        kwargs["label_names"] = _label_names(hf["id2label"], source)
        if "num_labels" not in hf:
            kwargs["num_labels"] = len(kwargs["label_names"])
    if overrides.get("label_names") is not None and "num_labels" not in overrides:
        overrides = overrides | {"num_labels": len(overrides["label_names"])}
    # Names are kept only for the head they name: another width means a fresh head.
    num_labels = overrides.get("num_labels", kwargs.get("num_labels", 2))
    if len(kwargs.get("label_names") or ()) != num_labels:
        kwargs.pop("label_names", None)
    if sp.sinusoidal_flag is not None:
        sinusoidal = hf.get(sp.sinusoidal_flag, False)
        if not isinstance(sinusoidal, bool):
            raise ValueError(
                f"{source}: {sp.sinusoidal_flag}={sinusoidal!r} is not valid; it must be "
                "true or false"
            )
        kwargs["position_embedding_type"] = "sinusoidal" if sinusoidal else "absolute"
    elif kwargs.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"{source}: position_embedding_type={hf['position_embedding_type']!r} is not "
            "supported; jaxformer reads 'absolute' position embeddings"
        )
    if sp.read is not None:
        kwargs |= sp.read(hf, source)
    for group, key in sp.switches.items():
        if not isinstance(present := hf.get(key, False), bool):
            raise ValueError(f"{source}: {key}={present!r} is not valid; it must be true or false")
        if not present:
            kwargs = {k: v for k, v in kwargs.items() if not k.startswith(f"{group}.")}
    _check_hf_fields(kwargs, source, sp)
    if names & set(overrides):
        _check_hf_fields(kwargs | overrides, f"{source} with overrides {sorted(overrides)}", sp)
    kwargs |= sp.fixed | {"model_type": model_type}
    kwargs = _grouped(kwargs) | overrides
    return BertConfig(**activations_as_ours(kwargs))


def _grouped(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with each "group.field" gathered into its group's config (BertConfig.GROUPS)."""
    out = {k: v for k, v in fields.items() if "." not in k}
    for group, cls in GROUPS.items():
        named = {k.split(".", 1)[1]: v for k, v in fields.items() if k.startswith(f"{group}.")}
        if named:
            out[group] = cls(**named)
    return out


def _field(c: BertConfig, name: str) -> Any:
    """BertConfig's field `name`, a "group.field" read from the group's defaults if absent."""
    group, _, field = name.rpartition(".")
    if not group:
        return getattr(c, name)
    return getattr(getattr(c, group) or GROUPS[group](), field)


def activations_as_ours(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` (BertConfig's) with each activation spelled as jaxformer.layers names it."""
    return fields | {
        name: HF_ACTIVATIONS.get(fields[name], fields[name])
        for name in ACTIVATION_FIELDS
        if name in fields
    }


def hf_mismatch(c: BertConfig) -> str | None:
    """Why transformers has no model of this architecture to export to; None if it has."""
    sp = spelling(c.model_type)
    pre = sp.fixed.get("pre_layer_norm", False)
    fixed = {k: v for k, v in sp.fixed.items() if k != "pre_layer_norm"}
    unlike = "".join(f", {k}={getattr(c, k)!r}" for k, v in fixed.items() if getattr(c, k) != v)
    if (
        c.pre_layer_norm == pre
        and c.position_embedding_type in sp.positions
        and not c.scale_embedding
        and not unlike
    ):
        return None
    fixed = "".join(f", {k}={v!r}" for k, v in fixed.items())
    return (
        f"Hugging Face {sp.name} is {'pre' if pre else 'post'}-LN with "
        f"{' or '.join(sp.positions)} positions{fixed} and unscaled token embeddings; a "
        f"model with pre_layer_norm={c.pre_layer_norm}, position_embedding_type="
        f"{c.position_embedding_type!r}, scale_embedding={c.scale_embedding}{unlike} "
        "has no transformers equivalent to export to"
    )


def to_hf(c: BertConfig, architecture: str) -> dict[str, Any]:
    """The config.json that transformers' `architecture` (e.g. "BertModel") loads."""
    sp = spelling(c.model_type)
    mismatch = hf_mismatch(c)
    if mismatch is not None:
        raise ValueError(mismatch)
    hf = {key: _field(c, ours) for ours, key in sp.fields.items()}
    hf |= {key: getattr(c, group) is not None for group, key in sp.switches.items()}
    hf |= {
        sp.fields[f]: WRITTEN_ACTIVATIONS[getattr(c, f)]
        for f in ACTIVATION_FIELDS
        if f in sp.fields
    }
    if "embedding_size" in sp.fields:  # absent means the family's default width
        if c.embedding_size is None and sp.defaults.get("embedding_size") is None:
            hf.pop(sp.fields["embedding_size"], None)  # hidden_size (DeBERTa's reading)
        else:
            hf[sp.fields["embedding_size"]] = c.embedding_width
    hf |= sp.requires
    if sp.sinusoidal_flag is not None:
        hf[sp.sinusoidal_flag] = c.position_embedding_type == "sinusoidal"
    if sp.write is not None:
        hf |= sp.write(c)
    hf["id2label"] = {str(i): name for i, name in c.id2label.items()}
    hf["label2id"] = {name: i for i, name in c.id2label.items()}
    if c.problem_type is not None:
        hf["problem_type"] = c.problem_type
    hf.update(model_type=c.model_type, architectures=[architecture], torch_dtype="float32")
    return hf


def _label_names(id2label: Any, source: str) -> tuple[str, ...]:
    """The names of config.json's `id2label` ({"0": name, ..., "n-1": name}) in id order;
    ValueError naming `source` unless its keys are exactly the ids 0..n-1 and its names strings."""
    if not isinstance(id2label, dict) or not id2label:
        raise ValueError(
            f"{source}: id2label={id2label!r} is not an object (label id -> name) with a label"
        )
    # JSON keys are strings; transformers' in-memory `config.to_dict()` has ints.
    named = {str(k) if type(k) is int else k: v for k, v in id2label.items()}
    ids = [str(i) for i in range(len(id2label))]
    if set(named) != set(ids) or not all(isinstance(n, str) for n in named.values()):
        raise ValueError(
            f"{source}: id2label={id2label!r} is not valid; its keys must be the label ids "
            f'"0".."{len(id2label) - 1}", each once, and its values the label names (strings)'
        )
    return tuple(named[i] for i in ids)


def _check_hf_fields(values: dict[str, Any], source: str, sp: HfSpelling) -> None:
    """Raises ValueError naming `source`, the field (as config.json spells it) and its value for
    the first field in `values` (ours) of the wrong type or out of range. (bool is an int
    subclass: refused.)"""

    def bad(name: str, what: str):
        return ValueError(
            f"{source}: {sp.fields.get(name, name)}={values[name]!r} is not valid; it must be "
            f"{what}. Fix the file (or pass the field as an override)"
        )

    def is_number(x) -> bool:
        if isinstance(x, float):
            return math.isfinite(x)
        return isinstance(x, int) and not isinstance(x, bool)

    for name in POSITIVE_INTS:
        v, low = values.get(name, 1), sp.minimums.get(name, 1)
        if name == "embedding_size" and v is None:
            continue
        if not (isinstance(v, int) and not isinstance(v, bool) and low <= v <= MAX_SIZE):
            raise bad(name, f"an integer from {low} to {MAX_SIZE}")
    pad = values.get("pad_token_id", 0)
    if not (isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0):
        raise bad("pad_token_id", "a non-negative integer")
    for name in TOKEN_IDS:
        v = values.get(name)
        if not (v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)):
            raise bad(name, "a non-negative integer or null")
    for name in PROBABILITIES:
        v = values.get(name, 0.0)
        if not (name == "classifier_dropout" and v is None) and not (is_number(v) and 0 <= v < 1):
            raise bad(
                name, "a number in [0, 1)" + (" or null" if name == "classifier_dropout" else "")
            )
    if not (is_number(eps := values.get("layer_norm_eps", 1.0)) and eps > 0):
        raise bad("layer_norm_eps", "a positive number")
    if not (is_number(std := values.get("initializer_range", 0.0)) and std >= 0):
        raise bad("initializer_range", "a non-negative number")
    for name in ("rotary.global_theta", "rotary.local_theta"):
        if not (is_number(theta := values.get(name, 1.0)) and theta > 0):
            raise bad(name, "a positive number")
    for name in BIAS_FLAGS:
        if not isinstance(values.get(name, True), bool):
            raise bad(name, "true or false")
    if values.get("classifier_pooling", "cls") not in POOLINGS:
        raise bad("classifier_pooling", f"one of {POOLINGS}")
    allowed = (*HF_ACTIVATIONS, *layers.ACTIVATIONS.keys() - HF_ACTIVATIONS.keys())
    for name in ACTIVATION_FIELDS:
        if not (isinstance(act := values.get(name, "gelu"), str) and act in allowed):
            raise bad(name, f"one of {allowed}")
    for name in ("relative.share_att_key", "position_biased_input"):
        if not isinstance(values.get(name, False), bool):
            raise bad(name, "true or false")
    hidden, heads = values.get("hidden_size", 768), values.get("num_attention_heads", 12)
    if hidden % heads:
        raise ValueError(
            f"{source}: {sp.fields['hidden_size']} ({hidden}) must be divisible by "
            f"{sp.fields['num_attention_heads']} ({heads})"
        )
