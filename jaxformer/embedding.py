"""Sentence embeddings of raw texts: `embed(texts, model)` -> (n, m) float32 numpy.

Mirrors sentence-transformers' SentenceTransformer.encode: texts sorted by length so a batch
holds similar lengths, the checkpoint's tokenizer truncating at sentence_bert_config.json's
max_seq_length (and lower-casing texts first where it says do_lower_case), its pooling and
normalisation (`jaxformer.hf.sentence`), the rows returned in the input's order. Batches are
padded to a few bucket lengths (powers of two from 16, and the max length) and row counts
(powers of two up to batch_size), so jit compiles few programs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import numpy as np

from jaxformer.hf.convert import from_pretrained
from jaxformer.hf.hub import MINILM_HUB_ID, resolve_checkpoint
from jaxformer.hf.sentence import input_options
from jaxformer.hf.tokenizer_files import load_tokenizer
from jaxformer.models import max_input_length
from jaxformer.tokenizer import Tokenizer

SHORTEST_BUCKET = 16
DEFAULT_MAX_LENGTH = 512  # without max_seq_length, for encoders that take longer inputs


class Embedder(NamedTuple):
    model: nn.Module
    params: dict
    tokenizer: Tokenizer
    apply: Callable  # jitted (params, input_ids, attention_mask, token_type_ids) -> (b, m)
    max_length: int  # the default: max_seq_length, else the model's longest input (<= 512)
    longest: int  # the model's longest input
    lowercase: bool  # sentence_bert_config.json's do_lower_case: lower-case texts first


@functools.lru_cache(maxsize=4)
def load_embedder(path_or_hub_id: str | os.PathLike) -> Embedder:
    """The embedding model, tokenizer and compiled apply of a checkpoint, loaded once per process
    (the same argument gives the same Embedder)."""
    folder = resolve_checkpoint(path_or_hub_id)
    model, params = from_pretrained(folder, task="embedding")
    longest = max_input_length(model)
    length, lowercase = input_options(folder)
    max_length = min(length or DEFAULT_MAX_LENGTH, longest)
    tokenizer = load_tokenizer(folder, max_length=max_length)
    apply = jax.jit(lambda p, ids, mask, types: model.apply({"params": p}, ids, mask, types))
    return Embedder(model, params, tokenizer, apply, max_length, longest, lowercase)


def _bucket(n: int, least: int, most: int) -> int:
    """The smallest power of two >= n and >= least, capped at most."""
    return min(most, max(least, 1 << max(n - 1, 0).bit_length()))


def embed(
    texts: str | Sequence[str],
    model: str | os.PathLike = MINILM_HUB_ID,
    batch_size: int = 32,
    max_length: int | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Sentence embeddings (n, m) float32 of `texts` (a single str is a batch of one), by the
    checkpoint folder or Hub id `model`, loaded once per process.

    max_length: the tokens each text keeps (its head), default the checkpoint's max_seq_length
      (sentence_bert_config.json), else the model's longest input up to 512.
    progress: called with the number of texts each batch finished (a progress bar's update).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; it must be a positive integer")
    embedder = load_embedder(model)
    if max_length is None:
        max_length = embedder.max_length
    elif max_length > embedder.longest:
        raise ValueError(
            f"max_length={max_length}, but the model takes at most {embedder.longest} tokens"
        )
    if isinstance(texts, str):
        texts = [texts]
    if embedder.lowercase:
        texts = [t.lower() if isinstance(t, str) else t for t in texts]
    ids = embedder.tokenizer.encode_ids(texts, max_length)
    out = np.zeros((len(ids), embedder.model.config.hidden_size), np.float32)
    order = np.argsort([-len(x) for x in ids], kind="stable")  # longest first
    for start in range(0, len(ids), batch_size):
        rows = order[start : start + batch_size]
        length = _bucket(len(ids[rows[0]]), SHORTEST_BUCKET, max_length)
        n = _bucket(len(rows), 1, batch_size)
        # Filler rows repeat the last text, so none is all padding; their vectors are dropped.
        padded = list(rows) + [rows[-1]] * (n - len(rows))
        batch = embedder.tokenizer.pad([ids[i] for i in padded], "max_length", length)
        vectors = embedder.apply(
            embedder.params,
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
        )
        out[rows] = np.asarray(vectors)[: len(rows)]
        if progress is not None:
            progress(len(rows))
    return out
