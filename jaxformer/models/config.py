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
    # Not in HF BERT: pre-LN puts layer norm before each sub-layer (x + f(LN(x))).
    pre_layer_norm: bool = False
    # Compute settings, not saved to config.json (jaxformer.dispatch lists the choices).
    attention: str = "auto"  # the attention program: "cpu" kernel on CPU, "xla" elsewhere
    matmul: str = "auto"  # the dense layers' GEMMs: "mkl" on CPU with the mkl extra, else "xla"
    dtype: str = "float32"  # activations and matmuls
    param_dtype: str = "float32"
    remat: bool = False  # recompute each layer's activations in the backward pass

    def __post_init__(self):
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
                "model_type 'bert' (BertModel, BertForSequenceClassification, BertForPreTraining, "
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
        names = {f.name for f in dataclasses.fields(cls)} - set(COMPUTE_FIELDS)
        kwargs = {k: v for k, v in hf.items() if k in names}
        if hf.get("pad_token_id", 0) is None:  # some configs write null: the model never reads it
            del kwargs["pad_token_id"]
        if "id2label" in hf and "num_labels" not in hf:
            if not isinstance(hf["id2label"], dict):
                raise ValueError(
                    f"{source}: id2label={hf['id2label']!r} is not an object (label id -> name)"
                )
            kwargs["num_labels"] = len(hf["id2label"])
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
            if f.name not in COMPUTE_FIELDS
        }
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
        hf["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        del hf["num_labels"]
        hf.update(model_type="bert", architectures=[architecture], torch_dtype="float32")
        return hf


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
