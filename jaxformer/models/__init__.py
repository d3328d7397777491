"""The encoder families as Flax Linen modules: `bert.py` (the encoder), `heads.py` (the task
heads), `config.py` (the architecture, Hugging Face's config.json fields), and per family the
pieces it changes (`roberta.py`, `distilbert.py`, `electra.py`, `albert.py`); `jaxformer.families`
lists them by task."""

from jaxformer.models.bert import (
    BertModel,
    BertOutput,
    init_params,
    max_input_length,
    param_shapes,
)
from jaxformer.models.config import BertConfig
from jaxformer.models.heads import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    SpanLogits,
)

__all__ = ["BertConfig", "BertModel", "BertOutput", "BertForSequenceClassification"]
__all__ += ["BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice"]
__all__ += ["BertForMaskedLM", "SpanLogits", "init_params", "max_input_length", "param_shapes"]
