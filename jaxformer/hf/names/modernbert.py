"""ModernBERT's tensor names: transformers/models/modernbert/modeling_modernbert.py (ModernBertModel
and its heads under `model.`). The attention's fused Wqkv stays fused; which biases exist is the
config's (attention_bias, mlp_bias, norm_bias, classifier_bias, decoder_bias), and the first
layer has no attn_norm (transformers' nn.Identity)."""

from jaxformer.hf.names import IDENTITY, SPLIT_HEADS_OUT, TRANSPOSE, Names, Transform
from jaxformer.models.config import BertConfig

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
    owner = name.removesuffix(".bias")
    if owner.endswith("norm"):
        return not c.norm_bias
    if ".attn." in owner:
        return not c.attention_bias
    if ".mlp." in owner:
        return not c.mlp_bias
    return {"head.dense": not c.classifier_bias, "decoder": not c.decoder_bias}.get(owner, False)


HEAD = dense("head.dense", "head/dense") | norm("head.norm", "head/norm")
CLASSIFIER = HEAD | dense("classifier", "classifier")
MODERNBERT = Names(
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
