"""ALBERT (Lan et al. 2020): transformers/models/albert. Factorized embeddings and layers
shared in groups (jaxformer/models/albert.py): stored once per group,
`encoder.albert_layer_groups.{g}.albert_layers.{j}.`, ours `group_{g}_layer_{j}/`; the
embeddings' projection is `encoder.embedding_hidden_mapping_in`."""

from jaxformer.families import BERT_SPECIAL_TOKENS, Family, register, with_embedding
from jaxformer.families.bert import EMBEDDINGS
from jaxformer.families.bert import NAMES as BERT
from jaxformer.hf.config import BERT_FIELDS, HfSpelling
from jaxformer.hf.names import (
    IDENTITY,
    SPLIT_HEADS_BIAS,
    SPLIT_HEADS_IN,
    SPLIT_HEADS_OUT,
    TRANSPOSE,
    Names,
    dense,
    layer_norm,
)
from jaxformer.models import albert
from jaxformer.models.config import BertConfig, LayerSharing

LAYERS = "encoder.albert_layer_groups.{g}.albert_layers.{j}."


def group_scopes(c: BertConfig) -> dict[str, str]:
    sharing = c.sharing or LayerSharing()
    return {
        LAYERS.format(g=g, j=j): f"group_{g}_layer_{j}"
        for g in range(sharing.num_hidden_groups)
        for j in range(sharing.inner_group_num)
    }


CLASSIFIER = dense("classifier", "classifier")
NAMES = Names(
    prefix="albert",
    embeddings=EMBEDDINGS | dense("encoder.embedding_hidden_mapping_in", "embeddings/project"),
    layers=LAYERS,
    layer_scopes=group_scopes,
    layer={
        "attention.query.weight": ("attention/w_q", SPLIT_HEADS_IN),
        "attention.query.bias": ("attention/b_q", SPLIT_HEADS_BIAS),
        "attention.key.weight": ("attention/w_k", SPLIT_HEADS_IN),
        "attention.key.bias": ("attention/b_k", SPLIT_HEADS_BIAS),
        "attention.value.weight": ("attention/w_v", SPLIT_HEADS_IN),
        "attention.value.bias": ("attention/b_v", SPLIT_HEADS_BIAS),
        "attention.dense.weight": ("attention/w_o", SPLIT_HEADS_OUT),
        "attention.dense.bias": ("attention/b_o", IDENTITY),
        **layer_norm("attention.LayerNorm", "attention_norm"),
        "ffn.weight": ("mlp/w1", TRANSPOSE),
        "ffn.bias": ("mlp/b1", IDENTITY),
        "ffn_output.weight": ("mlp/w2", TRANSPOSE),
        "ffn_output.bias": ("mlp/b2", IDENTITY),
        **layer_norm("full_layer_layer_norm", "mlp_norm"),
    },
    pooler=dense("pooler", "pooler"),
    heads={
        "base": {},
        "classification": CLASSIFIER,
        "token_classification": CLASSIFIER,
        "question_answering": dense("qa_outputs", "qa_outputs"),
        "multiple_choice": CLASSIFIER,
        "masked_lm": {  # the decoder's weight is the word embeddings: `tied`
            **dense("predictions.dense", "mlm/transform"),
            **layer_norm("predictions.LayerNorm", "mlm/layer_norm"),
            "predictions.bias": ("mlm/bias", IDENTITY),
        },
    },
    outputs=BERT.outputs,
    tied={
        "predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
        "predictions.decoder.bias": "predictions.bias",
    },
    architectures={t: name.replace("Bert", "Albert") for t, name in BERT.architectures.items()},
)
# transformers/models/albert/configuration_albert.py: factorized embeddings, layers shared in
# num_hidden_groups groups of inner_group_num layers.
SPELLING = HfSpelling(
    "ALBERT",
    {f: f for f in BERT_FIELDS if f != "position_embedding_type"}
    | {
        "classifier_dropout": "classifier_dropout_prob",
        "embedding_size": "embedding_size",
        "sharing.num_hidden_groups": "num_hidden_groups",
        "sharing.inner_group_num": "inner_group_num",
    },
    defaults={
        "sharing.num_hidden_groups": 1,
        "sharing.inner_group_num": 1,
        "embedding_size": 128,
        "hidden_act": "gelu_new",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout": 0.1,
    },
)
MODELS = with_embedding(
    {
        "classification": albert.AlbertForSequenceClassification,
        "base": albert.AlbertModel,
        "token_classification": albert.AlbertForTokenClassification,
        "question_answering": albert.AlbertForQuestionAnswering,
        "multiple_choice": albert.AlbertForMultipleChoice,
        "masked_lm": albert.AlbertForMaskedLM,
    }
)
register(
    "albert",
    Family(
        SPELLING,
        NAMES,
        MODELS,
        50,
        BERT_SPECIAL_TOKENS | {"pad_token": "<pad>", "unk_token": "<unk>"},
    ),
)
