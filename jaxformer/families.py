"""The encoder families jaxformer holds, by config.json's `model_type`: each family's modules
per task (jaxformer/models/<family>.py) and its Hugging Face tensor names
(jaxformer/hf/names/<family>.py). How its config.json spells the architecture is
`jaxformer.models.config.HF_SPELLINGS`.

A new family is a module file, a name-table file, its spelling, and a line here.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn

from jaxformer.hf.names import Names
from jaxformer.hf.names.albert import ALBERT
from jaxformer.hf.names.bert import BERT
from jaxformer.hf.names.deberta import DEBERTA
from jaxformer.hf.names.distilbert import DISTILBERT
from jaxformer.hf.names.electra import ELECTRA
from jaxformer.hf.names.modernbert import MODERNBERT
from jaxformer.hf.names.roberta import ROBERTA, XLM_ROBERTA
from jaxformer.models import (
    albert,
    bert,
    deberta,
    distilbert,
    electra,
    heads,
    modernbert,
    roberta,
    sentence,
)

# The tasks, in the order the docs list them; each family's transformers class for each is in
# its Names.architectures.
TASKS = (
    "classification",
    "base",
    "token_classification",
    "question_answering",
    "multiple_choice",
    "masked_lm",
    "pretraining",  # ELECTRA's replaced-token discriminator
    "embedding",  # sentence embeddings: the base model and a pooling (models/sentence.py)
)


class Family(NamedTuple):
    models: dict[str, type[nn.Module]]  # task -> our module
    names: Names


BERT_MODELS = {
    "classification": heads.BertForSequenceClassification,
    "base": bert.BertModel,
    "token_classification": heads.BertForTokenClassification,
    "question_answering": heads.BertForQuestionAnswering,
    "multiple_choice": heads.BertForMultipleChoice,
    "masked_lm": heads.BertForMaskedLM,
    "embedding": sentence.for_encoder(bert.BertModel),
}
ROBERTA_MODELS = {
    "classification": roberta.RobertaForSequenceClassification,
    "base": roberta.RobertaModel,
    "token_classification": roberta.RobertaForTokenClassification,
    "question_answering": roberta.RobertaForQuestionAnswering,
    "multiple_choice": roberta.RobertaForMultipleChoice,
    "masked_lm": roberta.RobertaForMaskedLM,
    "embedding": sentence.for_encoder(roberta.RobertaModel),
}
DISTILBERT_MODELS = {
    "classification": distilbert.DistilBertForSequenceClassification,
    "base": distilbert.DistilBertModel,
    "token_classification": distilbert.DistilBertForTokenClassification,
    "question_answering": distilbert.DistilBertForQuestionAnswering,
    "multiple_choice": distilbert.DistilBertForMultipleChoice,
    "masked_lm": distilbert.DistilBertForMaskedLM,
    "embedding": sentence.for_encoder(distilbert.DistilBertModel),
}
ELECTRA_MODELS = {
    "classification": electra.ElectraForSequenceClassification,
    "base": electra.ElectraModel,
    "token_classification": electra.ElectraForTokenClassification,
    "question_answering": electra.ElectraForQuestionAnswering,
    "multiple_choice": electra.ElectraForMultipleChoice,
    "masked_lm": electra.ElectraForMaskedLM,
    "pretraining": electra.ElectraForPreTraining,
    "embedding": sentence.for_encoder(electra.ElectraModel),
}
ALBERT_MODELS = {
    "classification": albert.AlbertForSequenceClassification,
    "base": albert.AlbertModel,
    "token_classification": albert.AlbertForTokenClassification,
    "question_answering": albert.AlbertForQuestionAnswering,
    "multiple_choice": albert.AlbertForMultipleChoice,
    "masked_lm": albert.AlbertForMaskedLM,
    "embedding": sentence.for_encoder(albert.AlbertModel),
}
MODERNBERT_MODELS = {
    "classification": modernbert.ModernBertForSequenceClassification,
    "base": modernbert.ModernBertModel,
    "token_classification": modernbert.ModernBertForTokenClassification,
    "question_answering": modernbert.ModernBertForQuestionAnswering,
    "multiple_choice": modernbert.ModernBertForMultipleChoice,
    "masked_lm": modernbert.ModernBertForMaskedLM,
    "embedding": sentence.for_encoder(modernbert.ModernBertModel),
}
DEBERTA_MODELS = {
    "classification": deberta.DebertaForSequenceClassification,
    "base": deberta.DebertaModel,
    "token_classification": deberta.DebertaForTokenClassification,
    "question_answering": deberta.DebertaForQuestionAnswering,
    "multiple_choice": deberta.DebertaForMultipleChoice,
    "masked_lm": deberta.DebertaForMaskedLM,
    "embedding": sentence.for_encoder(deberta.DebertaModel),
}
FAMILIES = {
    "bert": Family(BERT_MODELS, BERT),
    "roberta": Family(ROBERTA_MODELS, ROBERTA),
    "xlm-roberta": Family(ROBERTA_MODELS, XLM_ROBERTA),
    "distilbert": Family(DISTILBERT_MODELS, DISTILBERT),
    "electra": Family(ELECTRA_MODELS, ELECTRA),
    "albert": Family(ALBERT_MODELS, ALBERT),
    "modernbert": Family(MODERNBERT_MODELS, MODERNBERT),
    "deberta-v2": Family(DEBERTA_MODELS, DEBERTA),
}


def family(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise ValueError(
            f"model_type={model_type!r} is not a family jaxformer holds; it holds {tuple(FAMILIES)}"
        )
    return FAMILIES[model_type]


def model_class(model_type: str, task: str) -> type[nn.Module]:
    """Our module for `task` in the family of `model_type`; ValueError naming what there is."""
    if task not in TASKS:
        raise ValueError(f"task={task!r}; choose one of {TASKS}")
    models = family(model_type).models
    if task not in models:
        raise ValueError(
            f"model_type={model_type!r} has no {task!r} model in jaxformer; its tasks are "
            f"{tuple(models)}"
        )
    return models[task]


def task_of(model: nn.Module) -> str:
    """The task of `model`, a module of its config's family."""
    models = family(model.config.model_type).models
    for task, module in models.items():
        if type(model) is module:
            return task
    raise TypeError(
        f"{type(model).__name__} is not a {model.config.model_type!r} model; those are "
        f"{[m.__name__ for m in models.values()]}"
    )
