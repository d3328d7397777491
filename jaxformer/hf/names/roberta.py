"""RoBERTa's (and XLM-R's) tensor names: transformers/models/roberta/modeling_roberta.py, BERT's
encoder under `roberta.`, with RobertaClassificationHead and RobertaLMHead."""

from jaxformer.hf.names import IDENTITY, dense, layer_norm
from jaxformer.hf.names.bert import BERT, CLASSIFIER

ROBERTA = BERT._replace(
    prefix="roberta",
    heads=BERT.heads
    | {
        "classification": dense("classifier.dense", "classifier/dense")
        | dense("classifier.out_proj", "classifier/out_proj"),
        "multiple_choice": CLASSIFIER,
        "masked_lm": {
            **dense("lm_head.dense", "mlm/transform"),
            **layer_norm("lm_head.layer_norm", "mlm/layer_norm"),
            "lm_head.bias": ("mlm/bias", IDENTITY),
        },
    },
    outputs=BERT.outputs | {"classification": "classifier/out_proj"},
    tied={
        "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    },
    architectures={t: name.replace("Bert", "Roberta") for t, name in BERT.architectures.items()},
)
XLM_ROBERTA = ROBERTA._replace(
    architectures={t: name.replace("Bert", "XLMRoberta") for t, name in BERT.architectures.items()}
)
