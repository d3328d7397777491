"""jaxformer: BERT-family Transformer encoders as pure JAX functions and Flax Linen modules."""

from jaxformer.hf.convert import from_pretrained, save_pretrained
from jaxformer.hf.hub import resolve_checkpoint
from jaxformer.models import BertConfig, BertForSequenceClassification, BertModel, BertOutput
from jaxformer.tokenizer import Tokenizer, load_tokenizer

__all__ = ["BertConfig", "BertModel", "BertForSequenceClassification", "BertOutput"]
__all__ += ["from_pretrained", "save_pretrained", "resolve_checkpoint"]
__all__ += ["load_tokenizer", "Tokenizer"]
__version__ = "0.1.0"
