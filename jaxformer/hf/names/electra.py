"""ELECTRA's tensor names: transformers/models/electra/modeling_electra.py, BERT's encoder under
`electra.` without a pooler, `embeddings_project` where embedding_size != hidden_size, and the
ELECTRA heads."""

from jaxformer.hf.names import IDENTITY, dense, layer_norm
from jaxformer.hf.names.bert import BERT, CLASSIFIER

ELECTRA = BERT._replace(
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
