"""Sentence embeddings: a family's base model, then one pooling of its last hidden states over
the real tokens, then optionally L2 normalisation.

Mirrors sentence-transformers' Transformer -> Pooling -> Normalize pipeline (Reimers and
Gurevych 2019, "Sentence-BERT"; sentence_transformers/models/Pooling.py): pooling "mean",
"cls", "max" or "mean_sqrt_len_tokens", its names, one mode at a time. The encoder shares this
module's scope, so the parameter tree is the base model's without the pooler (embeddings/...,
layer_{i}/...), as sentence-transformers saves it, and the family's Hugging Face table applies
unchanged. `jaxformer.hf.sentence` reads and writes the pooling files.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer import layers
from jaxformer.models.bert import BertModel
from jaxformer.models.config import BertConfig

Array = jax.Array

POOLINGS: dict[str, Callable[[Array, Array], Array]] = {
    "mean": layers.mean_pool,
    "cls": layers.cls_pool,
    "max": layers.max_pool,
    "mean_sqrt_len_tokens": layers.mean_sqrt_len_pool,
}


class SentenceEmbedding(nn.Module):
    """e = Normalize(Pool(Encoder(ids)_{real tokens})): one float32 vector per sequence.

    pooling: a key of POOLINGS; normalize: e / ||e||_2. The encoder is `encoder` (the family's
    base model) without its pooler: sentence-transformers never reads it.
    """

    config: BertConfig
    pooling: str = "mean"
    normalize: bool = False
    encoder: ClassVar[type[nn.Module]] = BertModel
    add_pooling_layer: ClassVar[bool] = False  # the encoder's, read by the conversion table

    def setup(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}; choose one of {tuple(POOLINGS)}")
        self.base = self.encoder(self.config, add_pooling_layer=self.add_pooling_layer)
        nn.share_scope(self, self.base)  # the base model's parameter names, unprefixed

    def __call__(
        self,
        input_ids: Array,  # (b, t) int
        attention_mask: Array | None = None,  # (b, t) 1 = real token, 0 = padding
        token_type_ids: Array | None = None,  # (b, t) int
        position_ids: Array | None = None,  # (b, t) int
        *,
        train: bool = False,
    ) -> Array:
        if attention_mask is None:
            attention_mask = jnp.ones(jnp.shape(input_ids), jnp.int32)
        out = self.base(input_ids, attention_mask, token_type_ids, position_ids, train=train)
        x = out.sequence_output.astype(jnp.float32)  # (b, t, m)
        e = POOLINGS[self.pooling](x, attention_mask)  # (b, m)
        return layers.l2_normalize(e) if self.normalize else e


@functools.cache
def for_encoder(encoder: type[nn.Module]) -> type[SentenceEmbedding]:
    """The embedding model of a family's base model class, e.g. BertModel ->
    BertForSentenceEmbedding; one class per encoder, so `families.task_of` knows it."""
    name = encoder.__name__.removesuffix("Model") + "ForSentenceEmbedding"
    return type(name, (SentenceEmbedding,), {"encoder": encoder, "__module__": __name__})
