"""Architecture config: the fields of Hugging Face's `BertConfig`, plus compute settings.

Mirrors transformers/models/bert/configuration_bert.py; the other encoder families' config.json
files (configuration_roberta.py, configuration_distilbert.py, ...) name the same architecture
differently, and `HF_SPELLINGS` says how, by `model_type`. Fields that only some families
have (ELECTRA's and ALBERT's embedding_size and layer groups; DeBERTa's relative attention
and ContextPooler; ModernBERT's rotary positions, local attention, bias flags and pooling)
default to values that leave the other families as they are. Frozen (hashable) so Linen
modules can hold it as an attribute and `jax.jit` can close over it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

from jaxformer import dispatch, layers

# Fields a config.json must carry (in its family's spelling): everything else has the Hugging
# Face default.
REQUIRED_HF_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)
POSITION_TYPES = ("absolute", "sinusoidal", "rotary")
POOLINGS = ("cls", "mean")
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
    "num_hidden_groups",
    "inner_group_num",
    "local_attention",
    "global_attn_every_n_layers",
)
PROBABILITIES = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "qa_dropout",
    "summary_dropout",
    "mlp_dropout",
    "pooler_dropout",
)
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
# Families whose embeddings are their own module, not bert.py's (no scale_embedding there).
OWN_EMBEDDINGS = ("deberta-v2", "modernbert")
# Fields only some families have: any other family must keep BERT's value.
FAMILY_FIELDS = {"embedding_size": None, "num_hidden_groups": 1, "inner_group_num": 1}
FAMILY_FIELDS |= dict.fromkeys(TOKEN_IDS)


class HfSpelling(NamedTuple):
    """How one family's config.json spells our fields."""

    name: str  # the family, in messages: "BERT", "RoBERTa"
    fields: dict[str, str]  # our field -> its config.json key, read and written
    defaults: dict[str, Any] = {}  # our field -> transformers' default, where it is not ours
    fixed: dict[str, Any] = {}  # our field -> the family's constant (not in config.json)
    positions: tuple[str, ...] = ("absolute",)  # position_embedding_type values it has
    sinusoidal_flag: str | None = None  # a config.json bool that means sinusoidal positions
    minimums: dict[str, int] = {}  # our field -> its least value in config.json, where not 1
    # config.json key -> the one value the family's modules implement (refused otherwise).
    requires: dict[str, Any] = {}
    # Keys that are not one field each: config.json -> our fields (after `fields`), and back.
    read: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
    write: Callable[[BertConfig], dict[str, Any]] | None = None


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
BERT = HfSpelling("BERT", {f: f for f in BERT_FIELDS})
# transformers/models/roberta/configuration_roberta.py: BERT's fields, <pad> = 1.
ROBERTA = HfSpelling("RoBERTa", BERT.fields, defaults={"pad_token_id": 1})
# transformers/models/distilbert/configuration_distilbert.py.
DISTILBERT = HfSpelling(
    "DistilBERT",
    {
        "vocab_size": "vocab_size",
        "hidden_size": "dim",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "intermediate_size": "hidden_dim",
        "hidden_act": "activation",
        "hidden_dropout_prob": "dropout",
        "attention_probs_dropout_prob": "attention_dropout",
        "classifier_dropout": "seq_classif_dropout",
        "qa_dropout": "qa_dropout",
        "max_position_embeddings": "max_position_embeddings",
        "initializer_range": "initializer_range",
        "pad_token_id": "pad_token_id",
    },
    defaults={"classifier_dropout": 0.2, "qa_dropout": 0.1},
    fixed={"layer_norm_eps": 1e-12, "type_vocab_size": 0},  # no token types
    positions=("absolute", "sinusoidal"),
    sinusoidal_flag="sinusoidal_pos_embds",
)
# transformers/models/electra/configuration_electra.py: BERT's fields (transformers 5 has no
# position_embedding_type), embeddings embedding_size wide; the multiple-choice head is a
# SequenceSummary of the first token, projected and GELU'd, then summary_last_dropout.
ELECTRA = HfSpelling(
    "ELECTRA",
    {f: f for f in BERT_FIELDS if f != "position_embedding_type"}
    | {"embedding_size": "embedding_size", "summary_dropout": "summary_last_dropout"},
    defaults={"embedding_size": 128, "summary_dropout": 0.1},
    requires={"summary_type": "first", "summary_use_proj": True, "summary_activation": "gelu"},
)
# transformers/models/albert/configuration_albert.py: factorized embeddings, layers shared in
# num_hidden_groups groups of inner_group_num layers.
ALBERT = HfSpelling(
    "ALBERT",
    {f: f for f in BERT_FIELDS if f != "position_embedding_type"}
    | {
        "classifier_dropout": "classifier_dropout_prob",
        "embedding_size": "embedding_size",
        "num_hidden_groups": "num_hidden_groups",
        "inner_group_num": "inner_group_num",
    },
    defaults={
        "embedding_size": 128,
        "hidden_act": "gelu_new",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout": 0.1,
    },
)


def _modernbert_read(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """transformers 5's `layer_types` and `rope_parameters`, which win over the older
    `global_attn_every_n_layers` and `{global,local}_rope_theta` (read by `fields`)."""
    out = {}
    types = hf.get("layer_types")
    if types is not None:
        n = len(types)
        if isinstance(types, list) and "full_attention" in types[1:]:
            n = types.index("full_attention", 1)
        pattern = [_layer_type(i, n) for i in range(len(types))]
        if types != pattern or len(types) != hf.get("num_hidden_layers"):
            raise ValueError(
                f"{source}: layer_types={types!r} is not supported; jaxformer reads one global "
                "('full_attention') layer every n from layer 0, the others 'sliding_attention', "
                "one entry per layer"
            )
        out["global_attn_every_n_layers"] = n
    if hf.get("rope_scaling") is not None:
        raise ValueError(f"{source}: rope_scaling={hf['rope_scaling']!r} is not supported")
    rope = hf.get("rope_parameters") or {}
    for kind, field in (
        ("full_attention", "global_rope_theta"),
        ("sliding_attention", "local_rope_theta"),
    ):
        params = rope.get(kind) or {}
        other = set(params) - {"rope_type", "rope_theta"}
        if params.get("rope_type", "default") != "default" or other:
            raise ValueError(
                f"{source}: rope_parameters[{kind!r}]={params!r} is not supported; jaxformer "
                "reads the default RoPE (rope_type 'default', a rope_theta)"
            )
        if "rope_theta" in params:
            out[field] = params["rope_theta"]
    return out


def _modernbert_write(c: BertConfig) -> dict[str, Any]:
    return {
        "layer_types": list(c.layer_types),
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": c.global_rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": c.local_rope_theta},
        },
    }


def _layer_type(i: int, every: int) -> str:
    return "sliding_attention" if i % every else "full_attention"


MODERNBERT_FIELDS = (
    "global_rope_theta",
    "local_rope_theta",
    "local_attention",
    "global_attn_every_n_layers",
    "mlp_dropout",
    "classifier_dropout",
    "max_position_embeddings",
    "initializer_range",
    "pad_token_id",
    *TOKEN_IDS,
    "classifier_pooling",
    "classifier_activation",
    *BIAS_FLAGS,
)
# transformers/models/modernbert/configuration_modernbert.py: pre-LN, rotary, no token types.
MODERNBERT = HfSpelling(
    "ModernBERT",
    {f: f for f in REQUIRED_HF_FIELDS + MODERNBERT_FIELDS}
    | {
        "hidden_act": "hidden_activation",
        "hidden_dropout_prob": "embedding_dropout",
        "attention_probs_dropout_prob": "attention_dropout",  # on the weights and the output
        "layer_norm_eps": "norm_eps",
    },
    defaults={
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout": 0.0,
        "max_position_embeddings": 8192,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 50283,
        "bos_token_id": 50281,
        "eos_token_id": 50282,
        "cls_token_id": 50281,
        "sep_token_id": 50282,
        "global_attn_every_n_layers": 3,
        **{flag: flag == "decoder_bias" for flag in BIAS_FLAGS},
    },
    fixed={"type_vocab_size": 0, "position_embedding_type": "rotary", "pre_layer_norm": True},
    positions=("rotary",),
    read=_modernbert_read,
    write=_modernbert_write,
)
# transformers/models/deberta_v2/configuration_deberta_v2.py (DeBERTa-v2 and v3); the fields that
# DebertaV2Config reads with getattr (position_buckets, share_att_key, norm_rel_ebd,
# embedding_size, cls_dropout) are config.json keys all the same.
DEBERTA_FIELDS = (
    "relative_attention",
    "max_relative_positions",
    "position_buckets",
    "pos_att_type",
    "share_att_key",
    "norm_rel_ebd",
    "position_biased_input",
    "pooler_dropout",
    "pooler_hidden_act",
    "embedding_size",
)
DEBERTA = HfSpelling(
    "DeBERTa-v2",
    {f: f for f in BERT_FIELDS if f != "position_embedding_type"}
    | {f: f for f in DEBERTA_FIELDS}
    | {"classifier_dropout": "cls_dropout"},
    defaults={"layer_norm_eps": 1e-7, "type_vocab_size": 0},
    minimums={"type_vocab_size": 0},
    # conv_kernel_size > 0: deberta-v2-xlarge's ConvLayer after the first layer; legacy=false:
    # the MLM head under lm_predictions, decoding hidden states without the embedding width.
    requires={"conv_kernel_size": 0, "legacy": True},
)
# config.json's model_type -> its spelling (jaxformer.families has each family's modules).
HF_SPELLINGS = {
    "bert": BERT,
    "roberta": ROBERTA,
    "xlm-roberta": ROBERTA,
    "distilbert": DISTILBERT,
    "electra": ELECTRA,
    "albert": ALBERT,
    "modernbert": MODERNBERT,
    "deberta-v2": DEBERTA,
}


def spelling(model_type: str, source: str = "config") -> HfSpelling:
    """The spelling of `model_type`; ValueError naming the ones jaxformer reads otherwise."""
    if model_type not in HF_SPELLINGS:
        raise ValueError(
            f"{source}: model_type={model_type!r} is not a BERT-family checkpoint jaxformer "
            f"reads; it reads model_type {tuple(HF_SPELLINGS)}"
        )
    return HF_SPELLINGS[model_type]


@dataclasses.dataclass(frozen=True)
class BertConfig:
    model_type: str = "bert"  # the family (HF_SPELLINGS; jaxformer.families has its modules)
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # "gelu" is exact (erf) GELU; "gelu_new" is the tanh approximation
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
    # ALBERT's parameter sharing: the layers fall into num_hidden_groups consecutive runs, each
    # run applying one group (inner_group_num layers) per layer.
    num_hidden_groups: int = 1
    inner_group_num: int = 1
    # DeBERTa (He et al. 2021): disentangled attention over relative positions.
    relative_attention: bool = False
    max_relative_positions: int = -1  # < 1: max_position_embeddings
    position_buckets: int = -1  # > 0: log-bucketed relative positions, 2 * buckets embeddings
    pos_att_type: tuple[str, ...] = ()  # of POS_ATT_TYPES; config.json's list or "p2c|c2p"
    share_att_key: bool = False  # the relative embeddings projected by W_q, W_k themselves
    norm_rel_ebd: str = "none"  # "layer_norm": the relative embeddings layer-normed
    position_biased_input: bool = True  # False: no absolute position embeddings (DeBERTa-v3)
    pooler_dropout: float = 0.0  # ContextPooler's dropout before its dense
    pooler_hidden_act: str = "gelu"  # ContextPooler's activation
    num_labels: int = 2
    # id2label's names, by label id; None: Hugging Face's defaults, LABEL_0 ... LABEL_{n-1}.
    label_names: tuple[str, ...] | None = None
    # transformers' problem_type of a classifier (its loss): one of PROBLEM_TYPES, or None.
    problem_type: str | None = None
    # ModernBERT's (configuration_modernbert.py); the defaults are the other families' layers.
    global_rope_theta: float = 160_000.0  # RoPE's theta in the global layers
    local_rope_theta: float = 10_000.0  # and in the sliding-window ones
    local_attention: int = 128  # the whole window: each query sees keys within half of it
    global_attn_every_n_layers: int = 1  # layer i is global iff i % n == 0; 1: all global
    mlp_dropout: float = 0.0  # inside the feed-forward, before its output projection
    attention_bias: bool = True  # the biases of the attention projections,
    mlp_bias: bool = True  # of the feed-forward's,
    norm_bias: bool = True  # of the layer norms,
    classifier_bias: bool = True  # of the heads' dense transform,
    decoder_bias: bool = True  # and the masked-LM decoder's
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
        sp = spelling(self.model_type)
        for name, bert_value in FAMILY_FIELDS.items():
            if getattr(self, name) != bert_value and name not in sp.fields:
                raise ValueError(
                    f"{name}={getattr(self, name)!r}: {sp.name} has no {name} (leave it "
                    f"{bert_value!r}); the families with one are "
                    f"{[t for t, s in HF_SPELLINGS.items() if name in s.fields]}"
                )
        if self.scale_embedding and self.model_type in OWN_EMBEDDINGS:
            raise ValueError(
                f"scale_embedding=True: {sp.name}'s embeddings have no scale; the families "
                f"with one are {[t for t in HF_SPELLINGS if t not in OWN_EMBEDDINGS]}"
            )
        if self.num_hidden_groups > self.num_hidden_layers:
            raise ValueError(
                f"num_hidden_groups ({self.num_hidden_groups}) must be at most num_hidden_layers "
                f"({self.num_hidden_layers}): each group serves at least one layer"
            )
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
        if not (self.embedding_size is None or _is_size(self.embedding_size)):
            raise ValueError(f"embedding_size={self.embedding_size!r} must be a positive integer")
        for name in ("max_relative_positions", "position_buckets"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_SIZE):
                raise ValueError(f"{name}={v!r} must be an integer")
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
        (a window of local_attention tokens)."""
        every = self.global_attn_every_n_layers
        return tuple(_layer_type(i, every) for i in range(self.num_hidden_layers))

    @property
    def relative_span(self) -> int:
        """DeBERTa's P: relative embeddings 2P rows, distances clipped to [-P, P)."""
        if self.position_buckets > 0:
            return self.position_buckets
        if self.max_relative_positions < 1:
            return self.max_position_embeddings
        return self.max_relative_positions

    @property
    def relative_max_position(self) -> int:
        """The largest distance DeBERTa's log buckets reach: max_relative_positions, else
        max_position_embeddings."""
        if self.max_relative_positions < 1:
            return self.max_position_embeddings
        return self.max_relative_positions

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
        names = {f.name for f in dataclasses.fields(cls)} - set(COMPUTE_FIELDS) - {"label_names"}
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
        _check_hf_fields(kwargs, source, sp)
        if names & set(overrides):
            _check_hf_fields(kwargs | overrides, f"{source} with overrides {sorted(overrides)}", sp)
        kwargs |= sp.fixed | {"model_type": model_type}
        kwargs.update(overrides)
        return cls(**kwargs)

    def hf_mismatch(self) -> str | None:
        """Why transformers has no model of this architecture to export to; None if it has."""
        sp = spelling(self.model_type)
        pre = sp.fixed.get("pre_layer_norm", False)
        fixed = {k: v for k, v in sp.fixed.items() if k != "pre_layer_norm"}
        unlike = "".join(
            f", {k}={getattr(self, k)!r}" for k, v in fixed.items() if getattr(self, k) != v
        )
        if (
            self.pre_layer_norm == pre
            and self.position_embedding_type in sp.positions
            and not self.scale_embedding
            and not unlike
        ):
            return None
        fixed = "".join(f", {k}={v!r}" for k, v in fixed.items())
        return (
            f"Hugging Face {sp.name} is {'pre' if pre else 'post'}-LN with "
            f"{' or '.join(sp.positions)} positions{fixed} and unscaled token embeddings; a "
            f"model with pre_layer_norm={self.pre_layer_norm}, position_embedding_type="
            f"{self.position_embedding_type!r}, scale_embedding={self.scale_embedding}{unlike} "
            "has no transformers equivalent to export to"
        )

    def to_hf(self, architecture: str) -> dict[str, Any]:
        """The config.json that transformers' `architecture` (e.g. "BertModel") loads."""
        sp = spelling(self.model_type)
        mismatch = self.hf_mismatch()
        if mismatch is not None:
            raise ValueError(mismatch)
        hf = {key: getattr(self, ours) for ours, key in sp.fields.items()}
        if "embedding_size" in sp.fields:  # absent means the family's default width
            if self.embedding_size is None and sp.defaults.get("embedding_size") is None:
                hf.pop(sp.fields["embedding_size"], None)  # hidden_size (DeBERTa's reading)
            else:
                hf[sp.fields["embedding_size"]] = self.embedding_width
        hf |= sp.requires
        if sp.sinusoidal_flag is not None:
            hf[sp.sinusoidal_flag] = self.position_embedding_type == "sinusoidal"
        if sp.write is not None:
            hf |= sp.write(self)
        hf["id2label"] = {str(i): name for i, name in self.id2label.items()}
        hf["label2id"] = {name: i for i, name in self.id2label.items()}
        if self.problem_type is not None:
            hf["problem_type"] = self.problem_type
        hf.update(model_type=self.model_type, architectures=[architecture], torch_dtype="float32")
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


def _is_size(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIZE


def _check_hf_fields(values: dict[str, Any], source: str, sp: HfSpelling = BERT) -> None:
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
    for name in ("global_rope_theta", "local_rope_theta"):
        if not (is_number(theta := values.get(name, 1.0)) and theta > 0):
            raise bad(name, "a positive number")
    for name in BIAS_FLAGS:
        if not isinstance(values.get(name, True), bool):
            raise bad(name, "true or false")
    if values.get("classifier_pooling", "cls") not in POOLINGS:
        raise bad("classifier_pooling", f"one of {POOLINGS}")
    allowed = tuple(layers.ACTIVATIONS)
    for name in ("hidden_act", "classifier_activation", "pooler_hidden_act"):
        if not (isinstance(act := values.get(name, "gelu"), str) and act in allowed):
            raise bad(name, f"one of {allowed}")
    for name in ("relative_attention", "share_att_key", "position_biased_input"):
        if not isinstance(values.get(name, False), bool):
            raise bad(name, "true or false")
    hidden, heads = values.get("hidden_size", 768), values.get("num_attention_heads", 12)
    if hidden % heads:
        raise ValueError(
            f"{source}: {sp.fields['hidden_size']} ({hidden}) must be divisible by "
            f"{sp.fields['num_attention_heads']} ({heads})"
        )
