"""Architecture config: the fields of Hugging Face's `BertConfig`, plus compute settings.

Mirrors transformers/models/bert/configuration_bert.py. The mechanisms only some families have
are small groups, present or absent: DeBERTa's relative attention (`RelativeAttention`),
ModernBERT's rotary positions, local attention and bias flags (`Rotary`, `LocalAttention`,
`Biases`), ALBERT's layer sharing (`LayerSharing`). Which family has which is its spelling in
`jaxformer.families`; reading and writing config.json is `jaxformer.hf.config`'s. Frozen
(hashable) so Linen modules can hold it as an attribute and `jax.jit` can close over it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from jaxformer import dispatch, layers

POSITION_TYPES = ("absolute", "sinusoidal", "rotary")
POOLINGS = ("cls", "mean")
BIAS_FLAGS = ("attention_bias", "mlp_bias", "norm_bias", "classifier_bias", "decoder_bias")
POS_ATT_TYPES = ("c2p", "p2c")  # DeBERTa's disentangled terms
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
REL_EMBEDDING_NORMS = ("none", "layer_norm")
MAX_SIZE = 2**31 - 1
# Ours, not Hugging Face's: never read from or written to config.json.
COMPUTE_FIELDS = (
    "pre_layer_norm",
    "scale_embedding",
    "attention",
    "matmul",
    "dtype",
    "param_dtype",
    "remat",
)
# Special token ids config.json keeps beside pad_token_id where a family spells them (the
# modules read none of them): an int, or null for none.
TOKEN_IDS = ("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")
# Fields only some families have (those whose spelling has them): any other family must keep
# BERT's value.
FAMILY_FIELDS = {"embedding_size": None, **dict.fromkeys(TOKEN_IDS)}


@dataclasses.dataclass(frozen=True)
class RelativeAttention:
    """DeBERTa's disentangled attention over relative positions (He et al. 2021, 2023)."""

    max_relative_positions: int = -1  # < 1: max_position_embeddings
    position_buckets: int = -1  # > 0: log-bucketed relative positions, 2 * buckets embeddings
    pos_att_type: tuple[str, ...] = ()  # of POS_ATT_TYPES; config.json's list or "p2c|c2p"
    share_att_key: bool = False  # the relative embeddings projected by W_q, W_k themselves
    norm_rel_ebd: str = "none"  # "layer_norm": the relative embeddings layer-normed

    def __post_init__(self):
        pos_att_type = self.pos_att_type
        if pos_att_type is None:
            pos_att_type = ()
        elif isinstance(pos_att_type, str):  # transformers' old spelling, "p2c|c2p"
            pos_att_type = [x.strip() for x in pos_att_type.lower().split("|")]
        if not all(isinstance(x, str) and x in POS_ATT_TYPES for x in pos_att_type):
            raise ValueError(
                f"pos_att_type={self.pos_att_type!r} is not supported; it must list some of "
                f"{POS_ATT_TYPES}"
            )
        object.__setattr__(self, "pos_att_type", tuple(pos_att_type))
        norms = [x.strip() for x in str(self.norm_rel_ebd).lower().split("|")]
        if not (isinstance(self.norm_rel_ebd, str) and set(norms) <= set(REL_EMBEDDING_NORMS)):
            raise ValueError(
                f"norm_rel_ebd={self.norm_rel_ebd!r} is not supported; choose from "
                f"{REL_EMBEDDING_NORMS}"
            )
        for name in ("max_relative_positions", "position_buckets"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_SIZE):
                raise ValueError(f"{name}={v!r} must be an integer")

    def span(self, max_position_embeddings: int) -> int:
        """P: relative embeddings 2P rows, distances clipped to [-P, P)."""
        if self.position_buckets > 0:
            return self.position_buckets
        return self.max_position(max_position_embeddings)

    def max_position(self, max_position_embeddings: int) -> int:
        """The largest distance the log buckets reach: max_relative_positions, else
        max_position_embeddings."""
        if self.max_relative_positions < 1:
            return max_position_embeddings
        return self.max_relative_positions


@dataclasses.dataclass(frozen=True)
class Rotary:
    """RoPE on q and k (Su et al. 2021) at ModernBERT's thetas."""

    global_theta: float = 160_000.0  # in the global layers
    local_theta: float = 10_000.0  # and in the sliding-window ones


@dataclasses.dataclass(frozen=True)
class LocalAttention:
    """ModernBERT's layer pattern: layer i is global iff i % global_every == 0, the others
    attend within a window of `window` tokens (each query sees keys within half of it)."""

    window: int = 128
    global_every: int = 3


@dataclasses.dataclass(frozen=True)
class LayerSharing:
    """ALBERT's parameter sharing: the layers fall into num_hidden_groups consecutive runs, each
    run applying one group (inner_group_num layers) per layer."""

    num_hidden_groups: int = 1
    inner_group_num: int = 1


@dataclasses.dataclass(frozen=True)
class Biases:
    """Which biases the layers have (ModernBERT turns some off): the attention projections',
    the feed-forward's, the layer norms', the heads' dense transform's, the masked-LM decoder's."""

    attention: bool = True
    mlp: bool = True
    norm: bool = True
    classifier: bool = True
    decoder: bool = True


# BertConfig's fields that are one of the groups above: present (a family's mechanism) or absent.
GROUPS = {
    "relative": RelativeAttention,
    "rotary": Rotary,
    "local": LocalAttention,
    "sharing": LayerSharing,
    "biases": Biases,
}


def layer_type(i: int, every: int) -> str:
    """Layer i's attention when every n-th layer from 0 is global (transformers' names)."""
    return "sliding_attention" if i % every else "full_attention"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    model_type: str = "bert"  # the family: jaxformer.families
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # of layers.ACTIVATIONS: "gelu" is exact (erf); "gelu_tanh" is not
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None  # None: use hidden_dropout_prob, as HF does
    qa_dropout: float = 0.0  # before qa_outputs: DistilBERT's; BERT and RoBERTa have none
    summary_dropout: float = 0.1  # after ELECTRA's multiple-choice summary; no other family's
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0: no token type embeddings (DistilBERT)
    layer_norm_eps: float = 1e-12  # BERT's value; Flax's nn.LayerNorm default (1e-6) is wrong here
    initializer_range: float = 0.02
    # Or "sinusoidal" (Vaswani et al. 2017, fixed), or "rotary" (RoPE on q and k: ModernBERT).
    position_embedding_type: str = "absolute"
    pad_token_id: int = 0
    # ModernBERT's [CLS], [SEP] and bos / eos ids (TOKEN_IDS), for config.json only; None for the
    # families that do not spell them.
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    cls_token_id: int | None = None
    sep_token_id: int | None = None
    # ELECTRA's and ALBERT's factorized embeddings: tables this wide, then a Dense to hidden_size
    # (ELECTRA's only where the widths differ). None: hidden_size wide, as BERT's.
    embedding_size: int | None = None
    sharing: LayerSharing | None = None  # ALBERT's; None: each layer its own parameters
    relative: RelativeAttention | None = None  # DeBERTa's; None: no relative positions
    rotary: Rotary | None = None  # with position_embedding_type "rotary" (ModernBERT)
    local: LocalAttention | None = None  # ModernBERT's; None: every layer global
    biases: Biases = Biases()
    position_biased_input: bool = True  # False: no absolute position embeddings (DeBERTa-v3)
    pooler_dropout: float = 0.0  # ContextPooler's dropout before its dense
    pooler_hidden_act: str = "gelu"  # ContextPooler's activation
    num_labels: int = 2
    # id2label's names, by label id; None: Hugging Face's defaults, LABEL_0 ... LABEL_{n-1}.
    label_names: tuple[str, ...] | None = None
    # transformers' problem_type of a classifier (its loss): one of PROBLEM_TYPES, or None.
    problem_type: str | None = None
    # ModernBERT's (configuration_modernbert.py); the defaults are the other families' layers.
    mlp_dropout: float = 0.0  # inside the feed-forward, before its output projection
    classifier_pooling: str = "cls"  # the sequence's vector for classification: "cls" or "mean"
    classifier_activation: str = "gelu"  # the heads' dense transform's
    # Not in HF BERT: pre-LN puts layer norm before each sub-layer (x + f(LN(x))); ModernBERT's.
    pre_layer_norm: bool = False
    # Not in HF BERT: E_tok[ids] * sqrt(e), the table stored at N(0, 1/e) (Vaswani et al. 2017,
    # 3.4): a fresh table then sits at the scale of sinusoidal positions, and Adam's steps move it
    # as fast, relative to its size, as BERT's N(0, 0.02) table beside learned positions. A
    # tied masked-LM decoder reads the stored table, as the textbook's pre-softmax layer does.
    scale_embedding: bool = False
    # Compute settings, not saved to config.json (jaxformer.dispatch lists the choices).
    attention: str = "auto"  # the program: "cpu" on CPU, "cudnn" on GPU, "splash" on TPU
    matmul: str = "auto"  # the dense layers' GEMMs: "mkl" on CPU with the mkl extra, else "xla"
    dtype: str = "float32"  # activations and matmuls
    param_dtype: str = "float32"
    remat: bool = False  # recompute each layer's activations in the backward pass

    def __post_init__(self):
        from jaxformer import families  # whose family files import this module

        for name, group in GROUPS.items():
            value = getattr(self, name)
            if isinstance(value, dict):  # as model_config.json holds it
                object.__setattr__(self, name, value := group(**value))
            if not (value is None or isinstance(value, group)):
                raise ValueError(f"{name}={value!r} must be a {group.__name__} or None")
        families.check_config(self)
        if self.position_embedding_type == "rotary" and self.rotary is None:
            object.__setattr__(self, "rotary", Rotary())
        if self.rotary is not None and self.position_embedding_type != "rotary":
            raise ValueError(
                f"rotary={self.rotary!r} needs position_embedding_type='rotary', not "
                f"{self.position_embedding_type!r}"
            )
        if self.sharing is not None and self.sharing.num_hidden_groups > self.num_hidden_layers:
            raise ValueError(
                f"num_hidden_groups ({self.sharing.num_hidden_groups}) must be at most "
                f"num_hidden_layers ({self.num_hidden_layers}): each group serves one layer or more"
            )
        if not (self.embedding_size is None or _is_size(self.embedding_size)):
            raise ValueError(f"embedding_size={self.embedding_size!r} must be a positive integer")
        if not (isinstance(self.type_vocab_size, int) and self.type_vocab_size >= 0):
            raise ValueError(f"type_vocab_size={self.type_vocab_size!r} must be an integer >= 0")
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
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(
                f"problem_type={self.problem_type!r} is not supported; choose one of "
                f"{PROBLEM_TYPES} or None"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        for name, value, allowed in (
            ("hidden_act", self.hidden_act, tuple(layers.ACTIVATIONS)),
            ("pooler_hidden_act", self.pooler_hidden_act, tuple(layers.ACTIVATIONS)),
            ("position_embedding_type", self.position_embedding_type, POSITION_TYPES),
            ("classifier_pooling", self.classifier_pooling, POOLINGS),
            ("classifier_activation", self.classifier_activation, tuple(layers.ACTIVATIONS)),
            ("attention", self.attention, dispatch.ATTENTION),
            ("matmul", self.matmul, dispatch.MATMUL),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported; choose one of {allowed}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def embedding_width(self) -> int:
        """The embedding tables' width: embedding_size, else hidden_size."""
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    @property
    def layer_types(self) -> tuple[str, ...]:
        """Each layer's attention, transformers' names: "full_attention" or "sliding_attention"
        (a window of local.window tokens)."""
        every = 1 if self.local is None else self.local.global_every
        return tuple(layer_type(i, every) for i in range(self.num_hidden_layers))

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
        """The config of a Hugging Face config.json dict; `overrides` win
        (`jaxformer.hf.config.from_hf`, which checks every field it reads)."""
        from jaxformer.hf import config as hf_config  # Hugging Face I/O builds on this module

        return hf_config.from_hf(hf, source, **overrides)

    def to_hf(self, architecture: str) -> dict[str, Any]:
        """The config.json that transformers' `architecture` (e.g. "BertModel") loads."""
        from jaxformer.hf import config as hf_config

        return hf_config.to_hf(self, architecture)

    def hf_mismatch(self) -> str | None:
        """Why transformers has no model of this architecture to export to; None if it has."""
        from jaxformer.hf import config as hf_config

        return hf_config.hf_mismatch(self)


def _is_size(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIZE
