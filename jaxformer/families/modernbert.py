"""ModernBERT (Warner et al. 2024): transformers/models/modernbert, jaxformer/models/modernbert.py.
Its tensor names: modeling_modernbert.py (ModernBertModel
and its heads under `model.`). The attention's fused Wqkv stays fused; which biases exist is the
config's (attention_bias, mlp_bias, norm_bias, classifier_bias, decoder_bias), and the first
layer has no attn_norm (transformers' nn.Identity)."""

import dataclasses
from typing import Any

from jaxformer.families import Family, register, with_embedding
from jaxformer.hf.config import REQUIRED_HF_FIELDS, HfSpelling
from jaxformer.hf.names import IDENTITY, SPLIT_HEADS_OUT, TRANSPOSE, Names, Transform
from jaxformer.models import modernbert
from jaxformer.models.config import TOKEN_IDS, BertConfig, Biases, layer_type

# Wqkv weight (3 h d, m) <-> (m, 3, h, d): q, k, v stacked on the output axis.
SPLIT_QKV = Transform(
    lambda w, c: w.T.reshape(c.hidden_size, 3, c.num_attention_heads, c.head_dim),
    lambda w, c: w.reshape(c.hidden_size, 3 * c.hidden_size).T,
)
# Wqkv bias (3 h d,) <-> (3, h, d).
SPLIT_QKV_BIAS = Transform(
    lambda w, c: w.reshape(3, c.num_attention_heads, c.head_dim),
    lambda w, c: w.reshape(3 * c.hidden_size),
)


def linear(hf: str, w: str, b: str, to_w: Transform = TRANSPOSE, to_b: Transform = IDENTITY):
    """An nn.Linear `hf` as our parameters `w` and `b`."""
    return {f"{hf}.weight": (w, to_w), f"{hf}.bias": (b, to_b)}


def norm(hf: str, ours: str) -> dict:  # nn.LayerNorm
    return {f"{hf}.weight": (f"{ours}/scale", IDENTITY), f"{hf}.bias": (f"{ours}/bias", IDENTITY)}


def dense(hf: str, ours: str) -> dict:
    return linear(hf, f"{ours}/kernel", f"{ours}/bias")


def leaves_out(c: BertConfig, name: str) -> bool:
    if name.startswith("layers.0.attn_norm."):
        return True
    if not name.endswith(".bias"):
        return False
    owner, b = name.removesuffix(".bias"), c.biases
    if owner.endswith("norm"):
        return not b.norm
    if ".attn." in owner:
        return not b.attention
    if ".mlp." in owner:
        return not b.mlp
    return {"head.dense": not b.classifier, "decoder": not b.decoder}.get(owner, False)


HEAD = dense("head.dense", "head/dense") | norm("head.norm", "head/norm")
CLASSIFIER = HEAD | dense("classifier", "classifier")
NAMES = Names(
    prefix="model",
    embeddings={
        "embeddings.tok_embeddings.weight": ("embeddings/token/embedding", IDENTITY),
        **norm("embeddings.norm", "embeddings/layer_norm"),
        **norm("final_norm", "final_norm"),  # not an embedding: the encoder's, outside its layers
    },
    layers="layers.{i}.",
    layer={
        **norm("attn_norm", "attention_norm"),
        **linear("attn.Wqkv", "attention/w_qkv", "attention/b_qkv", SPLIT_QKV, SPLIT_QKV_BIAS),
        **linear("attn.Wo", "attention/w_o", "attention/b_o", SPLIT_HEADS_OUT),
        **norm("mlp_norm", "mlp_norm"),
        **linear("mlp.Wi", "mlp/w_in", "mlp/b_in"),
        **linear("mlp.Wo", "mlp/w_out", "mlp/b_out"),
    },
    pooler={},
    heads={
        "base": {},
        "classification": CLASSIFIER,
        "token_classification": CLASSIFIER,
        "question_answering": CLASSIFIER,  # (start, end) logits
        "multiple_choice": CLASSIFIER,
        "masked_lm": HEAD | {"decoder.bias": ("decoder/bias", IDENTITY)},  # weight: `tied`
    },
    outputs={
        "classification": "classifier",
        "token_classification": "classifier",
        "question_answering": "classifier",
        "multiple_choice": "classifier",
    },
    tied={"decoder.weight": "model.embeddings.tok_embeddings.weight"},
    architectures={
        "base": "ModernBertModel",
        "classification": "ModernBertForSequenceClassification",
        "token_classification": "ModernBertForTokenClassification",
        "question_answering": "ModernBertForQuestionAnswering",
        "multiple_choice": "ModernBertForMultipleChoice",
        "masked_lm": "ModernBertForMaskedLM",
    },
    leaves_out=leaves_out,
    renames=(),
)


def _read(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """transformers 5's `layer_types` and `rope_parameters`, which win over the older
    `global_attn_every_n_layers` and `{global,local}_rope_theta` (read by `fields`)."""
    out = {}
    types = hf.get("layer_types")
    if types is not None:
        n = len(types)
        if isinstance(types, list) and "full_attention" in types[1:]:
            n = types.index("full_attention", 1)
        pattern = [layer_type(i, n) for i in range(len(types))]
        if types != pattern or len(types) != hf.get("num_hidden_layers"):
            raise ValueError(
                f"{source}: layer_types={types!r} is not supported; jaxformer reads one global "
                "('full_attention') layer every n from layer 0, the others 'sliding_attention', "
                "one entry per layer"
            )
        out["local.global_every"] = n
    if hf.get("rope_scaling") is not None:
        raise ValueError(f"{source}: rope_scaling={hf['rope_scaling']!r} is not supported")
    rope = hf.get("rope_parameters") or {}
    for kind, field in (
        ("full_attention", "rotary.global_theta"),
        ("sliding_attention", "rotary.local_theta"),
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


def _write(c: BertConfig) -> dict[str, Any]:
    return {
        "layer_types": list(c.layer_types),
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": c.rotary.global_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": c.rotary.local_theta},
        },
    }


MODERNBERT_FIELDS = (
    "mlp_dropout",
    "classifier_dropout",
    "max_position_embeddings",
    "initializer_range",
    "pad_token_id",
    *TOKEN_IDS,
    "classifier_pooling",
    "classifier_activation",
)
BIAS_FLAGS = {f"biases.{f.name}": f"{f.name}_bias" for f in dataclasses.fields(Biases)}
# transformers/models/modernbert/configuration_modernbert.py: pre-LN, rotary, no token types.
SPELLING = HfSpelling(
    "ModernBERT",
    {f: f for f in REQUIRED_HF_FIELDS + MODERNBERT_FIELDS}
    | {
        "hidden_act": "hidden_activation",
        "hidden_dropout_prob": "embedding_dropout",
        "attention_probs_dropout_prob": "attention_dropout",  # on the weights and the output
        "layer_norm_eps": "norm_eps",
        "rotary.global_theta": "global_rope_theta",
        "rotary.local_theta": "local_rope_theta",
        "local.window": "local_attention",
        "local.global_every": "global_attn_every_n_layers",
    }
    | BIAS_FLAGS,
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
        "local.global_every": 3,
        **{flag: flag == "biases.decoder" for flag in BIAS_FLAGS},
    },
    fixed={"type_vocab_size": 0, "position_embedding_type": "rotary", "pre_layer_norm": True},
    positions=("rotary",),
    read=_read,
    write=_write,
)
MODELS = with_embedding(
    {
        "classification": modernbert.ModernBertForSequenceClassification,
        "base": modernbert.ModernBertModel,
        "token_classification": modernbert.ModernBertForTokenClassification,
        "question_answering": modernbert.ModernBertForQuestionAnswering,
        "multiple_choice": modernbert.ModernBertForMultipleChoice,
        "masked_lm": modernbert.ModernBertForMaskedLM,
    }
)
register(
    "modernbert",
    Family(SPELLING, NAMES, MODELS, order=60, own_embeddings=True, lora_targets=("Wqkv",)),
)
