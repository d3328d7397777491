"""Hugging Face tensor names: a family's `Names` is a table from the name in a transformers state
dict to our parameter path, with the named transform between torch's layout and ours.

Each family's file in `jaxformer.families` holds its `Names`; `jaxformer.hf.convert` reads it.
The transforms here are shared: `to_jax(w, c)` and its inverse `to_hf(w, c)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from jaxformer.models.config import BertConfig


class Transform(NamedTuple):
    to_jax: Callable[[np.ndarray, BertConfig], np.ndarray]
    to_hf: Callable[[np.ndarray, BertConfig], np.ndarray]


IDENTITY = Transform(lambda w, c: w, lambda w, c: w)
# nn.Linear weight (out, in) <-> Dense kernel (in, out).
TRANSPOSE = Transform(lambda w, c: w.T, lambda w, c: w.T)
# Q/K/V weight (h*d, m) <-> (m, h, d).
SPLIT_HEADS_IN = Transform(
    lambda w, c: w.T.reshape(c.hidden_size, c.num_attention_heads, c.head_dim),
    lambda w, c: w.reshape(c.hidden_size, c.hidden_size).T,
)
# Q/K/V bias (h*d,) <-> (h, d).
SPLIT_HEADS_BIAS = Transform(
    lambda w, c: w.reshape(c.num_attention_heads, c.head_dim),
    lambda w, c: w.reshape(c.hidden_size),
)
# Attention output weight (m, h*d) <-> (h, d, m).
SPLIT_HEADS_OUT = Transform(
    lambda w, c: w.T.reshape(c.num_attention_heads, c.head_dim, c.hidden_size),
    lambda w, c: w.reshape(c.hidden_size, c.hidden_size).T,
)

Table = dict[str, tuple[str, Transform]]  # HF name -> (our param path, transform)


def dense(hf: str, ours: str) -> Table:
    """An nn.Linear `hf` as our Dense `ours`."""
    return {f"{hf}.weight": (f"{ours}/kernel", TRANSPOSE), f"{hf}.bias": (f"{ours}/bias", IDENTITY)}


def layer_norm(hf: str, ours: str) -> Table:
    return {f"{hf}.weight": (f"{ours}/scale", IDENTITY), f"{hf}.bias": (f"{ours}/bias", IDENTITY)}


def no_tensors(config: BertConfig) -> dict[str, np.ndarray]:
    return {}


def keeps_all(config: BertConfig, name: str) -> bool:
    return False


def none_absent(config: BertConfig) -> frozenset[str]:
    return frozenset()


class Names(NamedTuple):
    """One family's tensor names, as its transformers classes save them."""

    prefix: str  # base_model_prefix: the encoder's scope in a task model, HF's and ours
    embeddings: Table  # in the base model (no prefix)
    layers: str  # layer i's prefix in the base model, "{i}" for i: "encoder.layer.{i}."
    layer: Table  # under `layers` in HF, `layer_{i}/` in ours
    pooler: Table
    heads: dict[str, Table]  # task -> its head's names, from the task model's root
    outputs: dict[str, str]  # task -> the head's output projection (our path), for hints
    tied: dict[str, str]  # masked_lm tensors transformers ties (and may save) -> their twin
    architectures: dict[str, str]  # task -> the transformers class save_pretrained names
    # HF tensors that the config defines (not learned here), in the base model: name -> value.
    computed: Callable[[BertConfig], dict[str, np.ndarray]] = no_tensors
    # The layers with parameters of their own, {HF prefix: our scope}, where they are not
    # `layers` with i = 0 .. L-1 and `layer_{i}/` (ALBERT's shared groups).
    layer_scopes: Callable[[BertConfig], dict[str, str]] | None = None
    # The Dense from embedding_size to hidden_size that the base model has only where the two
    # differ (ELECTRA's embeddings_project); a family that always has one lists it in `embeddings`.
    projection: Table = {}
    # Whether the config leaves a table's tensor out (a bias turned off): name as in the base
    # model (no prefix) or the head.
    leaves_out: Callable[[BertConfig, str], bool] = keeps_all
    # Names in `embeddings` or `layer` that a config's model lacks (DeBERTa's optional tables).
    absent: Callable[[BertConfig], frozenset[str]] = none_absent
    # Old spellings in checkpoints -> the table's.
    renames: tuple[tuple[str, str], ...] = (
        ("LayerNorm.gamma", "LayerNorm.weight"),
        ("LayerNorm.beta", "LayerNorm.bias"),
    )
