"""CamemBERT (Martin et al. 2020): transformers/models/camembert, RoBERTa's architecture, tensor
names and pair template under its own model_type and classes; its modules are RoBERTa's."""

from jaxformer.families import register
from jaxformer.families.bert import NAMES as BERT
from jaxformer.families.roberta import NAMES as ROBERTA_NAMES
from jaxformer.families.roberta import ROBERTA, SPELLING

NAMES = ROBERTA_NAMES._replace(
    architectures={t: name.replace("Bert", "Camembert") for t, name in BERT.architectures.items()}
)
register(
    "camembert",
    ROBERTA._replace(spelling=SPELLING._replace(name="CamemBERT"), names=NAMES, order=90),
)
