"""DeBERTa (He et al. 2021), v1 (microsoft/deberta-base): transformers/models/deberta;
disentangled attention over unbucketed relative positions (jaxformer/models/deberta_v1.py). Its
tensor names: modeling_deberta.py (DebertaModel, the DebertaFor<Task> heads, the legacy MLM head
`cls.predictions`); DeBERTa-v2's (families/deberta_v2.py) but for the attention's. transformers
has no DeBERTa multiple-choice model, nor has this family. Its tokenizer (DebertaTokenizer) is
byte-level BPE with BERT's special tokens, and lays out a pair as [CLS] A [SEP] [SEP] B [SEP],
all token types 0: RoBERTa's template."""

from jaxformer.families import BERT_SPECIAL_TOKENS, Family, register, with_embedding
from jaxformer.families import deberta_v2 as v2
from jaxformer.hf.config import HfSpelling
from jaxformer.hf.names import (
    SPLIT_HEADS_BIAS,
    SPLIT_HEADS_IN,
    Names,
    Transform,
)
from jaxformer.models import deberta_v1
from jaxformer.models.config import BertConfig

POS_KEY = ("attention.self.pos_proj.weight",)
POS_QUERY = ("attention.self.pos_q_proj.weight", "attention.self.pos_q_proj.bias")
# in_proj's (3 h d, m) weight, rows [q_h; k_h; v_h] head by head <-> our (m, h, 3, d).
FUSED_QKV = Transform(
    lambda w, c: w.T.reshape(c.hidden_size, c.num_attention_heads, 3, c.head_dim),
    lambda w, c: w.reshape(c.hidden_size, 3 * c.hidden_size).T,
)


def absent(c: BertConfig) -> frozenset[str]:
    """The tables DebertaModel builds only when its config asks for them."""
    names = set()
    if not c.position_biased_input:
        names.add(v2.POSITIONS)
    if not c.type_vocab_size:
        names.add(v2.TOKEN_TYPES)
    if c.embedding_width == c.hidden_size:
        names.add(v2.EMBED_PROJ)
    if c.relative is None:
        return frozenset(names | {v2.REL_EMBEDDINGS, *POS_KEY, *POS_QUERY})
    if "c2p" not in c.relative.pos_att_type:
        names |= set(POS_KEY)
    if "p2c" not in c.relative.pos_att_type:
        names |= set(POS_QUERY)
    return frozenset(names)


EMBEDDINGS = {k: v for k, v in v2.EMBEDDINGS.items() if k not in v2.REL_NORM}
ATTENTION = {
    "attention.self.in_proj.weight": ("attention/w_qkv", FUSED_QKV),
    "attention.self.q_bias": ("attention/b_q", SPLIT_HEADS_BIAS),
    "attention.self.v_bias": ("attention/b_v", SPLIT_HEADS_BIAS),
    "attention.self.pos_proj.weight": ("attention/w_pk", SPLIT_HEADS_IN),  # c2p's
    "attention.self.pos_q_proj.weight": ("attention/w_pq", SPLIT_HEADS_IN),  # p2c's
    "attention.self.pos_q_proj.bias": ("attention/b_pq", SPLIT_HEADS_BIAS),
}
LAYER = ATTENTION | {k: v for k, v in v2.LAYER.items() if not k.startswith("attention.self.")}
HEADS = {k: v for k, v in v2.NAMES.heads.items() if k != "multiple_choice"}
NAMES = Names(
    prefix="deberta",
    embeddings=EMBEDDINGS,
    layers="encoder.layer.{i}.",
    layer=LAYER,
    pooler={},  # DebertaModel has none; the ContextPooler is the heads'
    heads=HEADS,
    outputs={k: v for k, v in v2.NAMES.outputs.items() if k != "multiple_choice"},
    tied=v2.NAMES.tied,
    architectures={
        "base": "DebertaModel",
        "classification": "DebertaForSequenceClassification",
        "token_classification": "DebertaForTokenClassification",
        "question_answering": "DebertaForQuestionAnswering",
        "masked_lm": "DebertaForMaskedLM",
    },
    absent=absent,
)
# transformers/models/deberta/configuration_deberta.py; modeling_deberta.py reads embedding_size
# and cls_dropout with getattr, config.json keys all the same. DebertaConfig has no
# position_buckets, share_att_key or norm_rel_ebd: they keep DeBERTa-v2's "off" values.
RELATIVE_FIELDS = ("max_relative_positions", "pos_att_type")
SPELLING = HfSpelling(
    "DeBERTa",
    {f: k for f, k in v2.SPELLING.fields.items() if not f.startswith("relative.")}
    | {f"relative.{f}": f for f in RELATIVE_FIELDS},
    defaults={"layer_norm_eps": 1e-7, "type_vocab_size": 0},
    minimums={"type_vocab_size": 0},
    # talking_head=true: heads mixed before and after the softmax, which jaxformer has not;
    # legacy=false: the MLM head under lm_predictions, decoding at the hidden width.
    requires={"talking_head": False, "legacy": True},
    switches={"relative": "relative_attention"},
    read=v2.read_relative,
)
MODELS = with_embedding(
    {
        "classification": deberta_v1.DebertaForSequenceClassification,
        "base": deberta_v1.DebertaModel,
        "token_classification": deberta_v1.DebertaForTokenClassification,
        "question_answering": deberta_v1.DebertaForQuestionAnswering,
        "masked_lm": deberta_v1.DebertaForMaskedLM,
    }
)
register(
    "deberta",
    Family(
        SPELLING,
        NAMES,
        MODELS,
        order=65,
        special_tokens=BERT_SPECIAL_TOKENS,
        pair_template="roberta",
        own_embeddings=True,
        lora_targets=("in_proj",),  # PEFT's default for deberta
    ),
)
