"""Every field a jaxformer experiment reads, with its default. The experiment files in
configs/ (imdb_minilm.py, imdb_bert_base.py, imdb_scratch.py, tiny.py) start from it, and a
workdir's saved config.json is read back onto it (`from_dict`).

Mirrors the Flax examples' configs/default.py: one `ml_collections.ConfigDict` with a comment
per field.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from jaxformer import tasks

# Sections that hold any subset of BertConfig's fields: a saved value replaces the default whole.
OPEN_SECTIONS = ("model.arch", "model.overrides")


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # classification (texts or pairs; IMDB by default), token_classification (NER),
    # question_answering (SQuAD-style) or masked_lm (further pre-training): jaxformer/tasks.
    c.task = "classification"
    c.seed = 0  # parameters of fresh heads, dropout, data order
    c.num_labels = 2  # the head's width where the task has no label names of its own
    # The labels' names in id order, written to the exported config.json's id2label; None: the
    # data's (IMDB's neg/pos, a tfds ClassLabel's, or the training rows' labels sorted).
    c.label_names = placeholder(tuple)
    # classification: single_label_classification, multi_label_classification or regression
    # (transformers' problem_type, written to config.json); None: inferred from the training
    # labels (numbers that are not all integers: regression; lists: multi-label).
    c.problem_type = placeholder(str)
    c.tokenizer = placeholder(str)  # folder or hub id; None: the checkpoint's own tokenizer

    c.model = ml_collections.ConfigDict()
    # Hugging Face BERT folder or hub id to fine-tune; None: train model.arch from scratch.
    c.model.checkpoint = ml_collections.FieldReference(
        "sentence-transformers/all-MiniLM-L6-v2", field_type=str
    )
    # BertConfig fields for a model trained from scratch (vocab size comes from the tokenizer).
    c.model.arch = ml_collections.ConfigDict(
        dict(
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=1024,
            hidden_act="gelu",
            max_position_embeddings=512,
            position_embedding_type="absolute",
        )
    )
    # BertConfig fields that override the checkpoint's (and model.arch's); a dropout left None
    # keeps the checkpoint's. Attention dropout 0 lets the fused GPU/TPU kernels train
    # (docs/design.md).
    c.model.overrides = ml_collections.ConfigDict(
        dict(
            dtype="float32",
            attention="auto",
            matmul="auto",
            remat=False,
            hidden_dropout_prob=placeholder(float),
            attention_probs_dropout_prob=placeholder(float),
            classifier_dropout=placeholder(float),
        )
    )

    # LoRA (jaxformer.lora): low-rank adapters on the checkpoint's frozen weights; only the
    # adapters and the task head train, and the export is a PEFT adapter folder. rank None: off.
    c.lora = ml_collections.ConfigDict()
    c.lora.rank = placeholder(int)
    c.lora.alpha = 16.0
    c.lora.dropout = 0.0  # PEFT's lora_dropout; only 0 trains (the adapters are folded in)
    # PEFT's target_modules, comma-separated ("query,value"); None: the family's default.
    c.lora.targets = placeholder(str)

    c.data = ml_collections.ConfigDict()
    c.data.archive = placeholder(
        str
    )  # aclImdb_v1.tar.gz; None: $JAXFORMER_IMDB_ARCHIVE, ../shared/data, or tfds download
    c.data.cache_dir = "cache"  # token ids in cache_dir/tokens, keyed by tokenizer, length, split
    c.data.data_dir = placeholder(
        str
    )  # where tfds builds imdb_reviews (array_record); None: cache_dir/tfds
    c.data.max_length = 256
    c.data.truncation = "head_tail"  # "head" or "head_tail" (first 128 + last max_length-130)
    c.data.bucketing = True  # pad each batch to the smallest bucket that fits; False: to max_length
    c.data.buckets = (64, 128, 256, 512)
    c.data.validation_fraction = 0.1  # carved from train with split_seed, for model selection
    c.data.split_seed = 0
    c.data.train_limit = placeholder(int)  # first N examples of a seeded shuffle; None or -1: all
    c.data.validation_limit = placeholder(int)
    c.data.test_limit = placeholder(int)
    # Local files, each a path or a glob of shards: classification and masked_lm read CSV, TSV,
    # JSON Lines (.json, .jsonl) and Parquet (masked_lm also .txt, one document per line);
    # token_classification CoNLL columns or JSON Lines; question_answering SQuAD JSON or JSON
    # Lines. None: classification and masked_lm read IMDB, the others tfds' conll2003 / squad.
    c.data.train_file = placeholder(str)
    c.data.validation_file = placeholder(str)  # None: validation_fraction of train held out
    c.data.test_file = placeholder(str)
    # A tfds dataset by name (e.g. "glue/sst2") in place of files, built by tfds (online, or from
    # manual_dir); its features are named by the column fields below.
    c.data.tfds_name = placeholder(str)
    c.data.manual_dir = placeholder(str)
    # The columns: the text, the second text of a pair (None: single texts), the label; a
    # multi-label string cut at label_separator (None: multi-label labels are lists).
    c.data.text_column = "text"
    c.data.text_pair_column = placeholder(str)
    c.data.label_column = "label"
    c.data.label_separator = placeholder(str)
    # A bad row (an empty text, a missing or unknown label, a target that is not a number) is an
    # error naming its file and row; True: such rows are left out, and counted per file.
    c.data.skip_bad_rows = False
    # Set by training on rows given in Python (`train_and_evaluate(..., data=...)`): evaluation
    # then needs the rows in Python too, not IMDB's or files'.
    c.data.in_memory = False
    c.data.token_column = 0  # CoNLL columns: the word, and the tag (-1: the last)
    c.data.tag_column = -1
    # JSON Lines for token_classification: the columns of a row's words and of their tags (names,
    # or ids into label_names), as Hugging Face datasets' conll2003 has them.
    c.data.tokens_column = "tokens"
    c.data.tags_column = "ner_tags"
    # Each task's own settings, declared by the task (jaxformer/tasks: `settings`): ner
    # (label_all_subtokens, tag_scheme), qa (doc_stride, max_answer_length, n_best, version_2,
    # null_threshold), mlm (mask_prob, whole_word_mask).
    for name, section in tasks.config_sections().items():
        c[name] = section

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 5e-5  # peak, after linear warmup; then linear decay to 0
    c.optimizer.warmup_fraction = 0.1
    c.optimizer.warmup_steps = placeholder(int)  # wins over fraction
    c.optimizer.weight_decay = 0.01  # AdamW, not on biases and LayerNorm
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-6
    c.optimizer.clip_norm = 1.0  # global gradient norm
    c.optimizer.accum_steps = 1  # micro-batches per update (batch_size must divide)

    c.batch_size = 32  # global, over all devices and hosts
    c.eval_batch_size = 64
    c.num_epochs = 1.0
    c.num_train_steps = placeholder(int)  # wins over num_epochs
    c.parallelism = "jit"  # "jit" (Mesh + NamedSharding), "shard_map", "pmap", or "single"
    # jit and shard_map: the Mesh's axes and sizes, outermost first ("data=4,model=2"); -1: the
    # devices the other axes leave. The batch is split over `data`, replicated over `model`.
    c.mesh = "data=-1"
    # jit: where the parameters and optimizer state live (training/sharding.py's rules): "data"
    # (replicated), "fsdp" (split over `data`), "tensor" (heads and feed-forward width over
    # `model`) or "fsdp+tensor". Checkpoints restore under any mesh and sharding.
    c.sharding = "data"
    # The library of XLA:CPU's dots in the compiled steps and in prediction (runtime.onednn):
    # "onednn" (a program oneDNN cannot run falls back to XLA's choice, logged), "default"
    # (XLA's own choice), or "auto": whichever runs a dense layer's step faster on this CPU
    # (kernels.autotune, measured once per machine). Ignored on GPU/TPU and by pmap, which takes
    # no compiler options.
    c.xla_cpu_dots = "auto"

    c.log_every = 50
    c.eval_every = 500
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.export_dir = ml_collections.FieldReference(
        "hf_export", field_type=str
    )  # best checkpoint as a Hugging Face folder; None: no export
    return c


def from_dict(values: dict[str, Any], source: str) -> ml_collections.ConfigDict:
    """`get_config()` with `values` (a saved config, nested dicts) written over it.

    A key that `get_config()` does not have is an error naming it and `source` (the file), so a
    misspelt or retired field is never silently ignored."""
    config = get_config()
    _merge(config, _sections_of_saved(values), source, prefix="")
    return config


# Task settings that configs saved by earlier versions keep in `data`: data.<field> -> section.
SAVED_IN_DATA = {
    "label_all_subtokens": "ner",
    "tag_scheme": "ner",
    "doc_stride": "qa",
    "max_answer_length": "qa",
    "n_best": "qa",
    "version_2": "qa",
    "null_threshold": "qa",
    "mask_prob": "mlm",
    "whole_word_mask": "mlm",
}


def _sections_of_saved(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config with task settings it keeps in `data` moved to their task's section, so a
    workdir trained before still evaluates and resumes."""
    data = values.get("data")
    if not isinstance(data, dict) or not set(data) & set(SAVED_IN_DATA):
        return values
    values = dict(values, data={k: v for k, v in data.items() if k not in SAVED_IN_DATA})
    for field, section in SAVED_IN_DATA.items():
        if field in data:
            values[section] = {**values.get(section, {}), field: data[field]}
    return values


def _merge(config: ml_collections.ConfigDict, values: dict, source: str, prefix: str) -> None:
    for key, value in values.items():
        name = prefix + key
        if key not in config:
            raise ValueError(f"unknown config field {name!r} in {source}")
        if isinstance(config[key], ml_collections.ConfigDict) and name not in OPEN_SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(
                    f"config field {name!r} in {source} must be a section, got {value!r}"
                )
            _merge(config[key], value, source, prefix=name + ".")
        else:
            config[key] = value
