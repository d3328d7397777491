"""Architecture config: the fields of Hugging Face's `BertConfig`, plus compute settings.

Mirrors transformers/models/bert/configuration_bert.py. Frozen (hashable) so Linen modules can
hold it as an attribute and `jax.jit` can close over it.
"""

from __future__ import annotations

import dataclasses
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
        """Builds a config from a Hugging Face config.json dict; `overrides` win."""
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
        if "id2label" in hf and "num_labels" not in hf:
            kwargs["num_labels"] = len(hf["id2label"])
        if kwargs.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"{source}: position_embedding_type={hf['position_embedding_type']!r} is not "
                "supported; jaxformer reads 'absolute' position embeddings"
            )
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
