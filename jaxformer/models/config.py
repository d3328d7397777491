"""Architecture config: the fields of Hugging Face's `BertConfig`, plus compute settings.

Mirrors transformers/models/bert/configuration_bert.py. Frozen (hashable) so Linen modules can
hold it as an attribute and `jax.jit` can close over it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from jaxformer import dispatch, layers

# Fields a config.json must carry: everything else has the Hugging Face default.
REQUIRED_HF_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)
POSITION_TYPES = ("absolute", "sinusoidal")
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
)
PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")
MAX_SIZE = 2**31 - 1
# Ours, not Hugging Face's: never read from or written to config.json.
COMPUTE_FIELDS = ("pre_layer_norm", "attention", "matmul", "dtype", "param_dtype", "remat")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # "gelu" is exact (erf) GELU; "gelu_new" is the tanh approximation
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None  # None: use hidden_dropout_prob, as HF does
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12  # BERT's value; Flax's nn.LayerNorm default (1e-6) is wrong here
    initializer_range: float = 0.02
    position_embedding_type: str = "absolute"  # or "sinusoidal" (Vaswani et al. 2017, fixed)
    pad_token_id: int = 0
    num_labels: int = 2
    # id2label's names, by label id; None: Hugging Face's defaults, LABEL_0 ... LABEL_{n-1}.
    label_names: tuple[str, ...] | None = None
    # Not in HF BERT: pre-LN puts layer norm before each sub-layer (x + f(LN(x))).
    pre_layer_norm: bool = False
    # Compute settings, not saved to config.json (jaxformer.dispatch lists the choices).
    attention: str = "auto"  # the program: "cpu" on CPU, "cudnn" on GPU, "splash" on TPU
    matmul: str = "auto"  # the dense layers' GEMMs: "mkl" on CPU with the mkl extra, else "xla"
    dtype: str = "float32"  # activations and matmuls
    param_dtype: str = "float32"
    remat: bool = False  # recompute each layer's activations in the backward pass

    def __post_init__(self):
        if self.label_names is not None:
            names = self.label_names
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"label_names={names!r} must be a sequence of strings")
            names = tuple(names)
            if len(names) != self.num_labels:
                raise ValueError(
                    f"label_names has {len(names)} names but num_labels={self.num_labels}"
                )
            # The defaults are stored as None, so a config equals itself after a round trip.
            defaults = tuple(f"LABEL_{i}" for i in range(self.num_labels))
            object.__setattr__(self, "label_names", None if names == defaults else names)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        for name, value, allowed in (
            ("hidden_act", self.hidden_act, tuple(layers.ACTIVATIONS)),
            ("position_embedding_type", self.position_embedding_type, POSITION_TYPES),
            ("attention", self.attention, dispatch.ATTENTION),
            ("matmul", self.matmul, dispatch.MATMUL),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported; choose one of {allowed}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    @property
    def id2label(self) -> dict[int, str]:
        """Label id -> name, Hugging Face's defaults (LABEL_{i}) where no names were given."""
        names = self.label_names or [f"LABEL_{i}" for i in range(self.num_labels)]
        return dict(enumerate(names))

    def replace(self, **changes: Any) -> BertConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf(
        cls, hf: dict[str, Any], source: str = "config.json", **overrides: Any
    ) -> BertConfig:
        """Builds a config from a Hugging Face config.json dict; `overrides` win.

        Every field read is checked (type and range) and a bad one raises ValueError naming
        `source`, the field and its value.
        """
        if not isinstance(hf, dict):
            raise ValueError(f"{source} holds a {type(hf).__name__}, not a JSON object")
        model_type = hf.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(
                f"{source}: model_type={model_type!r} is not a BERT checkpoint; jaxformer reads "
                "model_type 'bert' (BertModel, the BertFor<Task> heads, BertForPreTraining, "
                "sentence-transformers BERT models)"
            )
        missing = [f for f in REQUIRED_HF_FIELDS if f not in hf]
        if missing:
            raise ValueError(
                f"{source} lacks required field(s) {missing}; a BERT config.json needs "
                f"{list(REQUIRED_HF_FIELDS)}"
            )
        # config.json's "dtype" (transformers 5) / "torch_dtype" is the storage dtype, not our
        # compute dtype: compute settings only come from `overrides`.
        names = {f.name for f in dataclasses.fields(cls)} - set(COMPUTE_FIELDS) - {"label_names"}
        kwargs = {k: v for k, v in hf.items() if k in names}
        if hf.get("pad_token_id", 0) is None:  # some configs write null: the model never reads it
            del kwargs["pad_token_id"]
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
        if kwargs.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"{source}: position_embedding_type={hf['position_embedding_type']!r} is not "
                "supported; jaxformer reads 'absolute' position embeddings"
            )
        _check_hf_fields(kwargs, source)
        if names & set(overrides):
            _check_hf_fields(kwargs | overrides, f"{source} with overrides {sorted(overrides)}")
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self, architecture: str) -> dict[str, Any]:
        """The config.json that transformers' `architecture` (e.g. "BertModel") loads."""
        if self.pre_layer_norm or self.position_embedding_type != "absolute":
            raise ValueError(
                "Hugging Face BERT is post-LN with learned absolute positions; a model with "
                f"pre_layer_norm={self.pre_layer_norm}, position_embedding_type="
                f"{self.position_embedding_type!r} has no transformers equivalent to export to"
            )
        hf = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in (*COMPUTE_FIELDS, "num_labels", "label_names")
        }
        hf["id2label"] = {str(i): name for i, name in self.id2label.items()}
        hf["label2id"] = {name: i for i, name in self.id2label.items()}
        hf.update(model_type="bert", architectures=[architecture], torch_dtype="float32")
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


def _check_hf_fields(values: dict[str, Any], source: str) -> None:
    """Raises ValueError naming `source`, the field and its value for the first Hugging Face
    field in `values` of the wrong type or out of range. (bool is an int subclass: refused.)"""

    def bad(name: str, what: str):
        return ValueError(
            f"{source}: {name}={values[name]!r} is not valid; it must be {what}. Fix the file "
            "(or pass the field as an override)"
        )

    def is_number(x) -> bool:
        if isinstance(x, float):
            return math.isfinite(x)
        return isinstance(x, int) and not isinstance(x, bool)

    for name in POSITIVE_INTS:
        v = values.get(name, 1)
        if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIZE):
            raise bad(name, f"an integer from 1 to {MAX_SIZE}")
    pad = values.get("pad_token_id", 0)
    if not (isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0):
        raise bad("pad_token_id", "a non-negative integer")
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
    act, allowed = values.get("hidden_act", "gelu"), tuple(layers.ACTIVATIONS)
    if not (isinstance(act, str) and act in allowed):
        raise bad("hidden_act", f"one of {allowed}")
    hidden, heads = values.get("hidden_size", 768), values.get("num_attention_heads", 12)
    if hidden % heads:
        raise ValueError(
            f"{source}: hidden_size ({hidden}) must be divisible by num_attention_heads ({heads})"
        )
