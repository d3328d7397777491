"""MPNet (Song et al. 2020): transformers/models/mpnet (MPNetModel, the MPNetFor<Task> heads,
sentence-transformers MPNet folders such as all-mpnet-base-v2). BERT's layers under `mpnet.`
with their attention at `attention.attn.{q,k,v,o}`, no token types, and the encoder's one
relative-position table (jaxformer/models/mpnet.py); RoBERTa's heads; <s> A </s></s> B </s>
pairs."""

from jaxformer.families import Family, register, with_embedding
from jaxformer.families.roberta import NAMES as ROBERTA
from jaxformer.hf.config import BERT_FIELDS, HfSpelling
from jaxformer.hf.names import IDENTITY
from jaxformer.models import mpnet

# BERT's layer names -> MPNetLayer's.
LAYER_RENAMES = (
    ("attention.self.query.", "attention.attn.q."),
    ("attention.self.key.", "attention.attn.k."),
    ("attention.self.value.", "attention.attn.v."),
    ("attention.output.dense.", "attention.attn.o."),
    ("attention.output.LayerNorm.", "attention.LayerNorm."),
)


def _mpnet_name(name: str) -> str:
    for old, new in LAYER_RENAMES:
        name = name.replace(old, new)
    return name


NAMES = ROBERTA._replace(
    prefix="mpnet",
    embeddings={
        k: v
        for k, v in ROBERTA.embeddings.items()
        if k != "embeddings.token_type_embeddings.weight"
    }
    | {"encoder.relative_attention_bias.weight": ("relative_attention_bias/embedding", IDENTITY)},
    layer={_mpnet_name(k): v for k, v in ROBERTA.layer.items()},
    tied={
        "lm_head.decoder.weight": "mpnet.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    },
    architectures={
        t: name.replace("Roberta", "MPNet") for t, name in ROBERTA.architectures.items()
    },
)
# transformers/models/mpnet/configuration_mpnet.py. No token types; no classifier_dropout (the
# heads drop at hidden_dropout_prob). The bias is always 32 buckets (compute_position_bias's
# own), so relative_attention_num_buckets, the table's rows, is read only at 32.
FIELDS = (
    *(
        f
        for f in BERT_FIELDS
        if f not in ("classifier_dropout", "type_vocab_size", "position_embedding_type")
    ),
    "bos_token_id",
    "eos_token_id",
)
SPELLING = HfSpelling(
    "MPNet",
    {f: f for f in FIELDS},
    defaults={"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
    fixed={"type_vocab_size": 0},
    requires={"relative_attention_num_buckets": mpnet.NUM_BUCKETS},
)
SPECIAL_TOKENS = {  # MPNetTokenizer's: RoBERTa's, but BERT's [UNK]
    "unk_token": "[UNK]",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}
MODELS = with_embedding(
    {
        "classification": mpnet.MPNetForSequenceClassification,
        "base": mpnet.MPNetModel,
        "token_classification": mpnet.MPNetForTokenClassification,
        "question_answering": mpnet.MPNetForQuestionAnswering,
        "multiple_choice": mpnet.MPNetForMultipleChoice,
        "masked_lm": mpnet.MPNetForMaskedLM,
    }
)
register(
    "mpnet",
    Family(
        SPELLING,
        NAMES,
        MODELS,
        80,
        SPECIAL_TOKENS,
        pair_template="roberta",
        lora_targets=("q", "v"),
    ),
)
