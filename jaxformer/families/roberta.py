"""RoBERTa (Liu et al. 2019) and XLM-RoBERTa: transformers/models/roberta and xlm_roberta.
BERT's encoder under `roberta.`, positions counted from pad + 1, with RobertaClassificationHead
and RobertaLMHead (jaxformer/models/roberta.py); <s> A </s></s> B </s> pairs."""

from jaxformer.families import Family, register, with_embedding
from jaxformer.families.bert import CLASSIFIER
from jaxformer.families.bert import NAMES as BERT
from jaxformer.families.bert import SPELLING as BERT_SPELLING
from jaxformer.hf.config import HfSpelling
from jaxformer.hf.names import IDENTITY, dense, layer_norm
from jaxformer.models import roberta

NAMES = BERT._replace(
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
XLM_NAMES = NAMES._replace(
    architectures={t: name.replace("Bert", "XLMRoberta") for t, name in BERT.architectures.items()}
)
# transformers/models/roberta/configuration_roberta.py: BERT's fields, <pad> = 1.
SPELLING = HfSpelling("RoBERTa", BERT_SPELLING.fields, defaults={"pad_token_id": 1})
SPECIAL_TOKENS = {
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}
MODELS = with_embedding(
    {
        "classification": roberta.RobertaForSequenceClassification,
        "base": roberta.RobertaModel,
        "token_classification": roberta.RobertaForTokenClassification,
        "question_answering": roberta.RobertaForQuestionAnswering,
        "multiple_choice": roberta.RobertaForMultipleChoice,
        "masked_lm": roberta.RobertaForMaskedLM,
    }
)
ROBERTA = Family(SPELLING, NAMES, MODELS, 20, SPECIAL_TOKENS, pair_template="roberta")
register("roberta", ROBERTA)
register("xlm-roberta", ROBERTA._replace(names=XLM_NAMES, order=21))
