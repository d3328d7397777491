"""jaxformer: BERT-family Transformer encoders as pure JAX functions and Flax Linen modules."""

from jaxformer.embedding import embed
from jaxformer.hf.convert import from_pretrained, save_pretrained
from jaxformer.hf.hub import resolve_checkpoint
from jaxformer.hf.tokenizer_files import load_tokenizer
from jaxformer.lora import LoraConfig
from jaxformer.models import (
    BertConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertOutput,
    SpanLogits,
)
from jaxformer.tokenizer import Tokenizer

__all__ = ["BertConfig", "BertModel", "BertForSequenceClassification", "BertOutput"]
__all__ += ["BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice"]
__all__ += ["BertForMaskedLM", "SpanLogits"]
__all__ += ["from_pretrained", "save_pretrained", "resolve_checkpoint"]
__all__ += ["load_tokenizer", "Tokenizer", "embed", "LoraConfig"]
__version__ = "0.1.0"
