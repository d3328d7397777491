"""ELECTRA (Clark et al. 2020): transformers/models/electra. BERT's encoder under `electra.`
without a pooler, `embeddings_project` where embedding_size != hidden_size, and the ELECTRA
heads (jaxformer/models/electra.py), the replaced-token discriminator among them."""

from jaxformer.families import Family, register, with_embedding
from jaxformer.families.bert import CLASSIFIER
from jaxformer.families.bert import NAMES as BERT
from jaxformer.hf.config import BERT_FIELDS, HfSpelling
from jaxformer.hf.names import IDENTITY, dense, layer_norm
from jaxformer.models import electra

NAMES = BERT._replace(
    prefix="electra",
    projection=dense("embeddings_project", "embeddings/project"),
    pooler={},
    heads=BERT.heads
    | {
        "classification": dense("classifier.dense", "classifier/dense")
        | dense("classifier.out_proj", "classifier/out_proj"),
        "multiple_choice": dense("sequence_summary.summary", "summary") | CLASSIFIER,
        "masked_lm": {  # generator_lm_head's weight is the word embeddings: `tied`
            **dense("generator_predictions.dense", "mlm/transform"),
            **layer_norm("generator_predictions.LayerNorm", "mlm/layer_norm"),
            "generator_lm_head.bias": ("mlm/bias", IDENTITY),
        },
        "pretraining": dense("discriminator_predictions.dense", "discriminator")
        | dense("discriminator_predictions.dense_prediction", "discriminator_prediction"),
    },
    outputs=BERT.outputs
    | {"classification": "classifier/out_proj", "pretraining": "discriminator_prediction"},
    tied={"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"},
    architectures={t: name.replace("Bert", "Electra") for t, name in BERT.architectures.items()}
    | {"pretraining": "ElectraForPreTraining"},
)
# transformers/models/electra/configuration_electra.py: BERT's fields (transformers 5 has no
# position_embedding_type), embeddings embedding_size wide; the multiple-choice head is a
# SequenceSummary of the first token, projected and GELU'd, then summary_last_dropout.
SPELLING = HfSpelling(
    "ELECTRA",
    {f: f for f in BERT_FIELDS if f != "position_embedding_type"}
    | {"embedding_size": "embedding_size", "summary_dropout": "summary_last_dropout"},
    defaults={"embedding_size": 128, "summary_dropout": 0.1},
    requires={"summary_type": "first", "summary_use_proj": True, "summary_activation": "gelu"},
)
MODELS = with_embedding(
    {
        "classification": electra.ElectraForSequenceClassification,
        "base": electra.ElectraModel,
        "token_classification": electra.ElectraForTokenClassification,
        "question_answering": electra.ElectraForQuestionAnswering,
        "multiple_choice": electra.ElectraForMultipleChoice,
        "masked_lm": electra.ElectraForMaskedLM,
        "pretraining": electra.ElectraForPreTraining,
    }
)
register("electra", Family(SPELLING, NAMES, MODELS, order=40))
