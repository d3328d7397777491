"""DeBERTa-v2 and v3 (He et al. 2021, 2023): transformers/models/deberta_v2; disentangled attention
over relative positions (jaxformer/models/deberta.py). Its tensor names: modeling_deberta_v2.py
(DebertaV2Model, the DebertaV2For<Task> heads, the legacy MLM head `cls.predictions`). Which
tables a model has depends on its config: `absent` names the ones it lacks."""

from typing import Any

from jaxformer.families import Family, bert, register, with_embedding
from jaxformer.families.bert import MASKED_LM
from jaxformer.hf.config import BERT_FIELDS, HfSpelling
from jaxformer.hf.names import (
    IDENTITY,
    SPLIT_HEADS_BIAS,
    SPLIT_HEADS_IN,
    TRANSPOSE,
    Names,
    dense,
    layer_norm,
)
from jaxformer.models import deberta
from jaxformer.models.config import BertConfig

POSITIONS = "embeddings.position_embeddings.weight"
TOKEN_TYPES = "embeddings.token_type_embeddings.weight"
EMBED_PROJ = "embeddings.embed_proj.weight"
REL_EMBEDDINGS = "encoder.rel_embeddings.weight"
REL_NORM = tuple(layer_norm("encoder.LayerNorm", "rel_norm"))
POS_KEY = ("attention.self.pos_key_proj.weight", "attention.self.pos_key_proj.bias")
POS_QUERY = ("attention.self.pos_query_proj.weight", "attention.self.pos_query_proj.bias")


def absent(c: BertConfig) -> frozenset[str]:
    """The tables DebertaV2Model builds only when its config asks for them."""
    names = set()
    if not c.position_biased_input:
        names.add(POSITIONS)
    if not c.type_vocab_size:
        names.add(TOKEN_TYPES)
    if c.embedding_width == c.hidden_size:
        names.add(EMBED_PROJ)
    r = c.relative
    if r is None:
        return frozenset(names | {REL_EMBEDDINGS, *REL_NORM, *POS_KEY, *POS_QUERY})
    if "layer_norm" not in r.norm_rel_ebd:
        names |= set(REL_NORM)
    if r.share_att_key or "c2p" not in r.pos_att_type:
        names |= set(POS_KEY)
    if r.share_att_key or "p2c" not in r.pos_att_type:
        names |= set(POS_QUERY)
    return frozenset(names)


def _projection(hf: str, ours: str) -> dict:
    """A (h d, m) nn.Linear as our per-head (m, h, d) weight and (h, d) bias."""
    return {
        f"{hf}.weight": (f"attention/w_{ours}", SPLIT_HEADS_IN),
        f"{hf}.bias": (f"attention/b_{ours}", SPLIT_HEADS_BIAS),
    }


EMBEDDINGS = {
    "embeddings.word_embeddings.weight": ("embeddings/token/embedding", IDENTITY),
    POSITIONS: ("embeddings/position/embedding", IDENTITY),
    TOKEN_TYPES: ("embeddings/token_type/embedding", IDENTITY),
    EMBED_PROJ: ("embeddings/embed_proj/kernel", TRANSPOSE),
    **layer_norm("embeddings.LayerNorm", "embeddings/layer_norm"),
    # The encoder's, shared by its layers.
    REL_EMBEDDINGS: ("rel_embeddings/embedding", IDENTITY),
    **layer_norm("encoder.LayerNorm", "rel_norm"),
}
LAYER = {  # under `encoder.layer.{i}.` in HF, `layer_{i}/` in ours
    **_projection("attention.self.query_proj", "q"),
    **_projection("attention.self.key_proj", "k"),
    **_projection("attention.self.value_proj", "v"),
    **_projection("attention.self.pos_key_proj", "pk"),  # c2p's, without share_att_key
    **_projection("attention.self.pos_query_proj", "pq"),  # p2c's, without share_att_key
    # then BERT's: the attention's output, its norm, the feed-forward
    **{k: v for k, v in bert.LAYER.items() if not k.startswith("attention.self.")},
}
CLASSIFIER = dense("classifier", "classifier")
POOLED_CLASSIFIER = dense("pooler.dense", "pooler") | CLASSIFIER  # ContextPooler, then W
NAMES = Names(
    prefix="deberta",
    embeddings=EMBEDDINGS,
    layers="encoder.layer.{i}.",
    layer=LAYER,
    pooler={},  # DebertaV2Model has none; the ContextPooler is the heads'
    heads={
        "base": {},
        "classification": POOLED_CLASSIFIER,
        "token_classification": CLASSIFIER,
        "question_answering": dense("qa_outputs", "qa_outputs"),
        "multiple_choice": POOLED_CLASSIFIER,
        "masked_lm": MASKED_LM,  # the legacy head's names are BERT's
    },
    outputs={
        "classification": "classifier",
        "token_classification": "classifier",
        "question_answering": "qa_outputs",
        "multiple_choice": "classifier",
    },
    tied={
        "cls.predictions.decoder.weight": "deberta.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    },
    architectures={
        "base": "DebertaV2Model",
        "classification": "DebertaV2ForSequenceClassification",
        "token_classification": "DebertaV2ForTokenClassification",
        "question_answering": "DebertaV2ForQuestionAnswering",
        "multiple_choice": "DebertaV2ForMultipleChoice",
        "masked_lm": "DebertaV2ForMaskedLM",
    },
    absent=absent,
)
# transformers/models/deberta_v2/configuration_deberta_v2.py (DeBERTa-v2 and v3); the fields that
# DebertaV2Config reads with getattr (position_buckets, share_att_key, norm_rel_ebd,
# embedding_size, cls_dropout) are config.json keys all the same.
RELATIVE_FIELDS = (
    "max_relative_positions",
    "position_buckets",
    "pos_att_type",
    "share_att_key",
    "norm_rel_ebd",
)
DEBERTA_FIELDS = (
    "position_biased_input",
    "pooler_dropout",
    "pooler_hidden_act",
    "embedding_size",
)


def read_relative(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """Nothing more to read; refuses pos_att_type without relative_attention, with which
    transformers scales the scores by 1 / sqrt(d (1 + the terms named)) yet adds none of them."""
    if not hf.get("relative_attention", False) and hf.get("pos_att_type"):
        raise ValueError(
            f"{source}: pos_att_type={hf['pos_att_type']!r} with relative_attention=false is not "
            "supported; jaxformer reads pos_att_type only with relative_attention=true"
        )
    return {}


SPELLING = HfSpelling(
    "DeBERTa-v2",
    {f: f for f in BERT_FIELDS if f != "position_embedding_type"}
    | {f: f for f in DEBERTA_FIELDS}
    | {f"relative.{f}": f for f in RELATIVE_FIELDS}
    | {"classifier_dropout": "cls_dropout"},
    defaults={"layer_norm_eps": 1e-7, "type_vocab_size": 0},
    minimums={"type_vocab_size": 0},
    # conv_kernel_size > 0: deberta-v2-xlarge's ConvLayer after the first layer; legacy=false:
    # the MLM head under lm_predictions, decoding hidden states without the embedding width.
    requires={"conv_kernel_size": 0, "legacy": True},
    switches={"relative": "relative_attention"},
    read=read_relative,
)
MODELS = with_embedding(
    {
        "classification": deberta.DebertaForSequenceClassification,
        "base": deberta.DebertaModel,
        "token_classification": deberta.DebertaForTokenClassification,
        "question_answering": deberta.DebertaForQuestionAnswering,
        "multiple_choice": deberta.DebertaForMultipleChoice,
        "masked_lm": deberta.DebertaForMaskedLM,
    }
)
# PEFT's default LoRA targets for deberta-v2.
LORA_TARGETS = ("query_proj", "value_proj")
register(
    "deberta-v2",
    Family(SPELLING, NAMES, MODELS, order=70, own_embeddings=True, lora_targets=LORA_TARGETS),
)
