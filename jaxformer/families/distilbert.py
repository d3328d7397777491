"""DistilBERT (Sanh et al. 2019): transformers/models/distilbert. BERT's layers under its own
names (jaxformer/models/distilbert.py), no token types; with sinusoidal_pos_embds the position
table is the config's, computed, not learned."""

import numpy as np

from jaxformer import layers
from jaxformer.families import Family, register, with_embedding
from jaxformer.hf.config import HfSpelling
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
from jaxformer.models import distilbert
from jaxformer.models.config import BertConfig

POSITIONS = "embeddings.position_embeddings.weight"


def sinusoidal_table(c: BertConfig) -> dict[str, np.ndarray]:
    if c.position_embedding_type != "sinusoidal":
        return {}
    table = layers.sinusoidal_positions(c.max_position_embeddings, c.hidden_size)
    return {POSITIONS: np.asarray(table, np.float32)}


CLASSIFIER = dense("pre_classifier", "pre_classifier") | dense("classifier", "classifier")
NAMES = Names(
    prefix="distilbert",
    embeddings={
        "embeddings.word_embeddings.weight": ("embeddings/token/embedding", IDENTITY),
        POSITIONS: ("embeddings/position/embedding", IDENTITY),
        **layer_norm("embeddings.LayerNorm", "embeddings/layer_norm"),
    },
    layers="transformer.layer.{i}.",
    layer={
        "attention.q_lin.weight": ("attention/w_q", SPLIT_HEADS_IN),
        "attention.q_lin.bias": ("attention/b_q", SPLIT_HEADS_BIAS),
        "attention.k_lin.weight": ("attention/w_k", SPLIT_HEADS_IN),
        "attention.k_lin.bias": ("attention/b_k", SPLIT_HEADS_BIAS),
        "attention.v_lin.weight": ("attention/w_v", SPLIT_HEADS_IN),
        "attention.v_lin.bias": ("attention/b_v", SPLIT_HEADS_BIAS),
        "attention.out_lin.weight": ("attention/w_o", SPLIT_HEADS_OUT),
        "attention.out_lin.bias": ("attention/b_o", IDENTITY),
        **layer_norm("sa_layer_norm", "attention_norm"),
        "ffn.lin1.weight": ("mlp/w1", TRANSPOSE),
        "ffn.lin1.bias": ("mlp/b1", IDENTITY),
        "ffn.lin2.weight": ("mlp/w2", TRANSPOSE),
        "ffn.lin2.bias": ("mlp/b2", IDENTITY),
        **layer_norm("output_layer_norm", "mlp_norm"),
    },
    pooler={},
    heads={
        "base": {},
        "classification": CLASSIFIER,
        "token_classification": dense("classifier", "classifier"),
        "question_answering": dense("qa_outputs", "qa_outputs"),
        "multiple_choice": CLASSIFIER,
        "masked_lm": {  # vocab_projector's weight is the word embeddings: `tied`
            **dense("vocab_transform", "mlm/transform"),
            **layer_norm("vocab_layer_norm", "mlm/layer_norm"),
            "vocab_projector.bias": ("mlm/bias", IDENTITY),
        },
    },
    outputs={
        "classification": "classifier",
        "token_classification": "classifier",
        "question_answering": "qa_outputs",
        "multiple_choice": "classifier",
    },
    tied={"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"},
    architectures={
        "base": "DistilBertModel",
        "classification": "DistilBertForSequenceClassification",
        "token_classification": "DistilBertForTokenClassification",
        "question_answering": "DistilBertForQuestionAnswering",
        "multiple_choice": "DistilBertForMultipleChoice",
        "masked_lm": "DistilBertForMaskedLM",
    },
    computed=sinusoidal_table,
)
# transformers/models/distilbert/configuration_distilbert.py.
SPELLING = HfSpelling(
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
MODELS = with_embedding(
    {
        "classification": distilbert.DistilBertForSequenceClassification,
        "base": distilbert.DistilBertModel,
        "token_classification": distilbert.DistilBertForTokenClassification,
        "question_answering": distilbert.DistilBertForQuestionAnswering,
        "multiple_choice": distilbert.DistilBertForMultipleChoice,
        "masked_lm": distilbert.DistilBertForMaskedLM,
    }
)
register("distilbert", Family(SPELLING, NAMES, MODELS, order=30, lora_targets=("q_lin", "v_lin")))
