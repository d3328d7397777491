"""BERT (Devlin et al. 2019): transformers/models/bert (BertModel, the BertFor<Task> heads,
BertForPreTraining's tensors, sentence-transformers BERT folders). Its modules are
jaxformer/models/bert.py and heads.py; most families build on its tables."""

from jaxformer.families import Family, register, with_embedding
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
from jaxformer.models import bert, heads

EMBEDDINGS = {
    "embeddings.word_embeddings.weight": ("embeddings/token/embedding", IDENTITY),
    "embeddings.position_embeddings.weight": ("embeddings/position/embedding", IDENTITY),
    "embeddings.token_type_embeddings.weight": ("embeddings/token_type/embedding", IDENTITY),
    **layer_norm("embeddings.LayerNorm", "embeddings/layer_norm"),
}
LAYER = {  # under `encoder.layer.{i}.` in HF, `layer_{i}/` in ours
    "attention.self.query.weight": ("attention/w_q", SPLIT_HEADS_IN),
    "attention.self.query.bias": ("attention/b_q", SPLIT_HEADS_BIAS),
    "attention.self.key.weight": ("attention/w_k", SPLIT_HEADS_IN),
    "attention.self.key.bias": ("attention/b_k", SPLIT_HEADS_BIAS),
    "attention.self.value.weight": ("attention/w_v", SPLIT_HEADS_IN),
    "attention.self.value.bias": ("attention/b_v", SPLIT_HEADS_BIAS),
    "attention.output.dense.weight": ("attention/w_o", SPLIT_HEADS_OUT),
    "attention.output.dense.bias": ("attention/b_o", IDENTITY),
    **layer_norm("attention.output.LayerNorm", "attention_norm"),
    "intermediate.dense.weight": ("mlp/w1", TRANSPOSE),
    "intermediate.dense.bias": ("mlp/b1", IDENTITY),
    "output.dense.weight": ("mlp/w2", TRANSPOSE),
    "output.dense.bias": ("mlp/b2", IDENTITY),
    **layer_norm("output.LayerNorm", "mlp_norm"),
}
POOLER = dense("pooler.dense", "pooler")
CLASSIFIER = dense("classifier", "classifier")
MASKED_LM = {  # the decoder's weight is the word embeddings: `tied`
    **dense("cls.predictions.transform.dense", "mlm/transform"),
    **layer_norm("cls.predictions.transform.LayerNorm", "mlm/layer_norm"),
    "cls.predictions.bias": ("mlm/bias", IDENTITY),
}
NAMES = Names(
    prefix="bert",
    embeddings=EMBEDDINGS,
    layers="encoder.layer.{i}.",
    layer=LAYER,
    pooler=POOLER,
    heads={
        "base": {},
        "classification": CLASSIFIER,
        "token_classification": CLASSIFIER,
        "question_answering": dense("qa_outputs", "qa_outputs"),  # (start, end) logits
        "multiple_choice": CLASSIFIER,
        "masked_lm": MASKED_LM,
    },
    outputs={
        "classification": "classifier",
        "token_classification": "classifier",
        "question_answering": "qa_outputs",
        "multiple_choice": "classifier",
    },
    tied={
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    },
    architectures={
        "base": "BertModel",
        "classification": "BertForSequenceClassification",
        "token_classification": "BertForTokenClassification",
        "question_answering": "BertForQuestionAnswering",
        "multiple_choice": "BertForMultipleChoice",
        "masked_lm": "BertForMaskedLM",
    },
)

SPELLING = HfSpelling("BERT", {f: f for f in BERT_FIELDS})
MODELS = with_embedding(
    {
        "classification": heads.BertForSequenceClassification,
        "base": bert.BertModel,
        "token_classification": heads.BertForTokenClassification,
        "question_answering": heads.BertForQuestionAnswering,
        "multiple_choice": heads.BertForMultipleChoice,
        "masked_lm": heads.BertForMaskedLM,
    }
)
register("bert", Family(SPELLING, NAMES, MODELS, order=10))
