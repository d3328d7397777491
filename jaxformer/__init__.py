"""jaxformer: BERT-family Transformer encoders as pure JAX functions and Flax Linen modules."""

from jaxformer.config import BertConfig
from jaxformer.model import BertModel, BertForSequenceClassification, BertOutput

__all__ = ["BertConfig", "BertModel", "BertForSequenceClassification", "BertOutput"]
__version__ = "0.1.0"
