"""MPNet (Song et al. 2020): BERT's post-LN encoder with no token types, RoBERTa's position ids,
and a relative-position bias on every layer's attention scores.

Mirrors transformers/models/mpnet/modeling_mpnet.py. The scores of every layer are

    q_t . k_s / sqrt(d) + R[bucket(t - s), head]

R the encoder's one table of NUM_BUCKETS x heads (`relative_attention_bias`), the bias computed
once per input length and shared by the layers (`relative_position_buckets`); the attention
programs that take no bias fall back as `jaxformer.dispatch` says ("cpu" to "scan", cuDNN's and
splash to XLA's). Positions count the real tokens from
PADDING_IDX + 1, as RoBERTa's do. The heads are RoBERTa's: MPNetClassificationHead on <s>, the
multiple-choice classifier on the pooler, MPNetLMHead (exact GELU) decoding with the tied word
embeddings. Parameters sit under `mpnet`: BERT's tree without embeddings/token_type, plus
relative_attention_bias/embedding (NUM_BUCKETS, h).
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer import layers
from jaxformer.models import heads, roberta
from jaxformer.models.bert import _init

Array = jax.Array

# MPNetEmbeddings' padding_idx, which counts the positions whatever pad_token_id says.
PADDING_IDX = 1
# MPNetEncoder.compute_position_bias's buckets and relative_position_bucket's max_distance: the
# same for every checkpoint (the config's relative_attention_num_buckets is the table's rows).
NUM_BUCKETS = 32
MAX_DISTANCE = 128


def relative_position_buckets(
    t: int, s: int, num_buckets: int = NUM_BUCKETS, max_distance: int = MAX_DISTANCE
) -> np.ndarray:
    """The bucket of each (query i, key j) pair: T5's bidirectional log buckets of n = i - j.

    With B = num_buckets // 2 buckets per direction and E = B // 2 exact ones:

        bucket(n) = B [n < 0] + |n|                                        if |n| < E
                  = B [n < 0] + min(B - 1, E + floor(log(|n| / E) / log(max_distance / E)
                                                          * (B - E)))       otherwise

    so a key after its query (n < 0) falls in the upper half, distances under E each have their
    own bucket, and longer ones share log-spaced buckets up to max_distance and beyond. The log
    is taken in float32, as transformers takes it. -> (t, s) int32, a constant of the shapes.
    """
    n = np.arange(t)[:, None] - np.arange(s)[None, :]  # (t, s): i - j
    half = num_buckets // 2
    exact = half // 2
    distance = np.abs(n)
    scaled = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(exact))
    scaled = scaled / np.float32(math.log(max_distance / exact)) * np.float32(half - exact)
    large = np.minimum(exact + scaled.astype(np.int64), half - 1)
    bucket = (n < 0) * half + np.where(distance < exact, distance, large)
    return bucket.astype(np.int32)


class MPNetModel(roberta.RobertaModel):
    """BERT's encoder with positions from PADDING_IDX + 1 and the shared relative-position bias;
    no token types (type_vocab_size 0)."""

    def positions(self, input_ids):
        return layers.padded_positions(input_ids, PADDING_IDX)

    @property
    def max_length(self) -> int:  # positions start after PADDING_IDX
        return self.config.max_position_embeddings - PADDING_IDX - 1

    def attention_bias(self, length: int) -> Array:
        """R[bucket(t - s)] per head, float32 (1, h, t, s)."""
        c = self.config
        table = nn.Embed(
            NUM_BUCKETS,
            c.num_attention_heads,
            embedding_init=_init(c),
            param_dtype=c.params_dtype,
            name="relative_attention_bias",
        ).embedding  # (NUM_BUCKETS, h)
        buckets = relative_position_buckets(length, length)  # (t, s)
        bias = jnp.take(table.astype(jnp.float32), jnp.asarray(buckets), axis=0)  # (t, s, h)
        return jnp.transpose(bias, (2, 0, 1))[None]  # (1, h, t, s)


class _MPNet:
    encoder: ClassVar[type[nn.Module]] = MPNetModel
    prefix: ClassVar[str] = "mpnet"

    def dropout_rate(self) -> float:  # hidden_dropout_prob: MPNet has no classifier_dropout
        return self.config.hidden_dropout_prob


class MPNetForSequenceClassification(_MPNet, roberta.RobertaForSequenceClassification):
    """MPNetClassificationHead on <s> (RoBERTa's); no pooler."""


class MPNetForTokenClassification(_MPNet, heads.BertForTokenClassification):
    pass


class MPNetForQuestionAnswering(_MPNet, heads.BertForQuestionAnswering):
    pass


class MPNetForMultipleChoice(_MPNet, roberta.RobertaForMultipleChoice):
    pass


class MPNetForMaskedLM(_MPNet, roberta.RobertaForMaskedLM):
    """MPNetLMHead: RobertaLMHead's dense, exact GELU, layer norm and tied decoder."""
