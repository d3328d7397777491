"""The encoder families jaxformer holds, by config.json's `model_type`.

A family is one file in this package, which registers its `Family` under its model_type(s): how
its config.json spells the architecture (an `HfSpelling`, read and written by
`jaxformer.hf.config`), its Hugging Face tensor names (`Names`, read by `jaxformer.hf.convert`),
its tokenizer's special tokens and pair template, and its modules per head (jaxformer/models/).
The files here are found and imported when this package is: a new family is its file here, its
module file where its math is new, and its tests.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import NamedTuple

import flax.linen as nn

from jaxformer.hf.config import HfSpelling
from jaxformer.hf.names import Names
from jaxformer.models import sentence
from jaxformer.models.config import FAMILY_FIELDS, GROUPS, BertConfig, Biases

# The heads a family's modules serve, in the order the docs list them; each family's
# transformers class for each is in its Names.architectures.
HEADS = (
    "classification",
    "base",
    "token_classification",
    "question_answering",
    "multiple_choice",
    "masked_lm",
    "pretraining",  # ELECTRA's replaced-token discriminator
    "embedding",  # sentence embeddings: the base model and a pooling (models/sentence.py)
)
# transformers' BertTokenizer's special tokens; RobertaTokenizer's are RoBERTa's file's.
BERT_SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
# How a family's tokenizer lays out a pair: "bert" is [CLS] A [SEP] B [SEP] with token type 1
# for B and its [SEP]; "roberta" is <s> A </s></s> B </s> with all-zero token types.
PAIR_TEMPLATES = ("bert", "roberta")


class Family(NamedTuple):
    spelling: HfSpelling  # its config.json's spelling of the architecture
    names: Names  # its tensor names
    models: dict[str, type[nn.Module]]  # head -> our module
    order: int  # where the docs and messages list it, smallest first
    # The special tokens of its transformers tokenizer class, used where neither the tokenizer
    # files nor tokenizer.json's post_processor name one.
    special_tokens: dict[str, str] = BERT_SPECIAL_TOKENS
    pair_template: str = "bert"
    own_embeddings: bool = False  # embeddings of its own module, not bert.py's (no scale)
    # The nn.Linear modules LoRA adapts by default (jaxformer.lora): PEFT's target_modules for
    # its model_type where PEFT has them, the attention's query and value projections.
    lora_targets: tuple[str, ...] = ("query", "value")

    @property
    def name(self) -> str:
        return self.spelling.name


FAMILIES: dict[str, Family] = {}


def register(model_type: str, family: Family) -> None:
    """Registers `family` as config.json's `model_type`; a family file calls it on import."""
    if model_type in FAMILIES:
        raise ValueError(f"model_type={model_type!r} is registered twice")
    if family.pair_template not in PAIR_TEMPLATES:
        raise ValueError(f"{model_type}: pair_template={family.pair_template!r}")
    FAMILIES[model_type] = family


def with_embedding(models: dict[str, type[nn.Module]]) -> dict[str, type[nn.Module]]:
    """A family's models plus its sentence-embedding model: its base model and a pooling."""
    return models | {"embedding": sentence.for_encoder(models["base"])}


def family(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise ValueError(
            f"model_type={model_type!r} is not a family jaxformer holds; it holds {tuple(FAMILIES)}"
        )
    return FAMILIES[model_type]


def model_class(model_type: str, task: str) -> type[nn.Module]:
    """Our module for `task` in the family of `model_type`; ValueError naming what there is."""
    if task not in HEADS:
        raise ValueError(f"task={task!r}; choose one of {HEADS}")
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


def check_config(c: BertConfig) -> None:
    """ValueError unless `c` is of a registered family and sets only fields that family has."""
    from jaxformer.hf.config import spelling  # the message of a model_type jaxformer cannot read

    sp = spelling(c.model_type)
    for name, bert_value in FAMILY_FIELDS.items():
        if getattr(c, name) != bert_value and name not in sp.fields:
            raise ValueError(
                f"{name}={getattr(c, name)!r}: {sp.name} has no {name} (leave it "
                f"{bert_value!r}); the families with one are "
                f"{[t for t, f in FAMILIES.items() if name in f.spelling.fields]}"
            )
    for name, group in GROUPS.items():
        value = getattr(c, name)
        default = Biases() if group is Biases else None
        if value != default and not _has_group(sp, name):
            raise ValueError(
                f"{name}={value!r}: {sp.name} has no {group.__name__} (leave it {default!r}); "
                f"the families with one are "
                f"{[t for t, f in FAMILIES.items() if _has_group(f.spelling, name)]}"
            )
    if c.scale_embedding and FAMILIES[c.model_type].own_embeddings:
        raise ValueError(
            f"scale_embedding=True: {sp.name}'s embeddings have no scale; the families "
            f"with one are {[t for t, f in FAMILIES.items() if not f.own_embeddings]}"
        )


def _has_group(sp: HfSpelling, group: str) -> bool:
    return any(field.startswith(f"{group}.") for field in sp.fields)


def _register_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    ordered = sorted(FAMILIES.items(), key=lambda item: item[1].order)
    FAMILIES.clear()
    FAMILIES.update(ordered)


_register_all()
