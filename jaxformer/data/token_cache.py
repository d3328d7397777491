"""Tokenization with its cache: a split's token ids are computed once per everything they depend
on and kept as one .npz file under `cache_dir/tokens`.

The key of an entry holds the tokenizer's fingerprint (its JSON, max length and truncation), the
split, and the source: an archive's or a file's sha256, or the hash of the texts and labels
themselves, so an edited file is tokenized again and an unchanged one is not. Entries are written
through a temporary file and `os.replace`, so a reader never sees half of one. An entry that
cannot be read (truncated, for another key, a folder in its place) is rebuilt with a warning; one
that cannot be written (a folder in its place, no permission, a full disk) is named in a warning
and the split is used from memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from jaxformer.data.batching import TokenizedSplit, from_sequences, label_array

log = logging.getLogger(__name__)

_CACHE_FORMAT = 2


class TextEncoder(Protocol):
    """What tokenization needs of a tokenizer (`jaxformer.Tokenizer`, or a test's fake)."""

    pad_id: int
    fingerprint: str

    def encode_ids(self, texts: list[str]) -> list[np.ndarray]: ...


def tokenize(
    texts: Sequence[str],
    labels: np.ndarray,
    tokenizer: TextEncoder,
    chunk_size: int = 1000,
    desc: str = "tokenize",
    pairs: Sequence[str] | None = None,
) -> TokenizedSplit:
    """Tokenize texts (or (text, pair) pairs, whose token types become the split's
    token_type_ids) in chunks of `chunk_size`, with a progress bar. Each chunk is one call of
    the `tokenizers` batch encoder, which spreads it over its threads."""
    ids, types = [], []
    with tqdm(total=len(texts), desc=desc, unit="ex", disable=not texts) as bar:
        for start in range(0, len(texts), chunk_size):
            chunk = list(texts[start : start + chunk_size])
            if pairs is None:
                ids.extend(tokenizer.encode_ids(chunk))
            else:
                more, more_types = tokenizer.encode(
                    chunk, pairs=list(pairs[start : start + chunk_size])
                )
                ids.extend(more)
                types.extend(more_types)
            bar.update(len(chunk))
    return from_sequences(
        ids,
        label_array(labels),
        token_fields={"token_type_ids": types} if pairs is not None else None,
        pad_id=int(tokenizer.pad_id),
        max_length=getattr(tokenizer, "max_length", None),
    )


def content_hash(*parts) -> str:
    """sha256 of JSON-able values (texts, labels as lists): the key of data held in memory."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, ensure_ascii=False, sort_keys=True).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(tokenizer: TextEncoder, split: str, source: str, **subset) -> dict:
    """Everything the cached token ids of one split depend on."""
    return {
        "format": _CACHE_FORMAT,
        "tokenizer": tokenizer.fingerprint,
        "max_length": getattr(tokenizer, "max_length", None),
        "truncation": getattr(tokenizer, "truncation", None),
        "split": split,
        "source": source,
        **subset,
    }


def cache_path(cache_dir: str | os.PathLike, key: dict) -> Path:
    """`cache_dir/<split>-<sha256(key)[:16]>.npz`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{key['split']}-{digest}.npz"


def save_tokenized(path: Path, split: TokenizedSplit, key: dict) -> None:
    """Write the cache through a temporary file and `os.replace`, so it is never half-written.
    OSError if it cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"ids": split.ids, "offsets": split.offsets, "labels": split.labels}
    arrays |= {f"token.{k}": v for k, v in split.token_fields.items()}
    arrays |= {f"example.{k}": v for k, v in split.example_fields.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.asarray(json.dumps(key, sort_keys=True)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tokenized(path: Path, key: dict, pad_id: int, max_length: int | None) -> TokenizedSplit:
    """Read a cache written by `save_tokenized`; ValueError if it is corrupt or for another key."""
    try:
        with np.load(path, allow_pickle=False) as z:
            stored_key = json.loads(str(z["key"]))
            arrays = {name: z[name] for name in z.files if name != "key"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"unreadable token cache {path}: {type(e).__name__}: {e}") from e
    if stored_key != json.loads(json.dumps(key, sort_keys=True)):
        raise ValueError(f"token cache {path} was written for another key: {stored_key}")
    ids, offsets, labels = (arrays.get(k) for k in ("ids", "offsets", "labels"))
    consistent = (
        ids is not None
        and offsets is not None
        and labels is not None
        and ids.dtype == np.int32
        and labels.dtype in (np.int32, np.float32)
        and offsets.ndim == 1
        and len(offsets) == len(labels) + 1
        and offsets[0] == 0
        and offsets[-1] == len(ids)
        and bool(np.all(np.diff(offsets) >= 0))
    )
    token = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("token.")}
    example = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("example.")}
    consistent = consistent and all(len(v) == len(ids) for v in token.values())
    consistent = consistent and all(len(v) == len(labels) for v in example.values())
    if not consistent:
        raise ValueError(f"token cache {path} has inconsistent arrays")
    return TokenizedSplit(
        ids,
        offsets,
        labels,
        pad_id=int(pad_id),
        max_length=max_length,
        token_fields=token,
        example_fields=example,
    )


def cached_split(
    path: Path, key: dict, tokenizer: TextEncoder, build: Callable[[], TokenizedSplit]
) -> TokenizedSplit:
    """The split cached at `path`, or `build()` cached there.

    An entry that cannot be read is rebuilt with a warning; one that cannot be written is named
    in a warning, and the split is returned all the same."""
    max_length = getattr(tokenizer, "max_length", None)
    if path.exists():
        try:
            return load_tokenized(path, key, tokenizer.pad_id, max_length)
        except ValueError as e:
            log.warning("Rebuilding token cache: %s", e)
    split = build()
    try:
        save_tokenized(path, split, key)
    except OSError as e:
        log.warning(
            "could not write the token cache %s (%s: %s); the tokens are used from memory and "
            "computed again next time: remove what is there, or set --config.data.cache_dir",
            path,
            type(e).__name__,
            e.strerror or e,
        )
    return split


def cached_tokenize(
    path: Path,
    key: dict,
    tokenizer: TextEncoder,
    load_texts: Callable[[], tuple[Sequence[str], np.ndarray]],
    chunk_size: int = 1000,
) -> TokenizedSplit:
    """The split cached at `path`, or `load_texts()` tokenized and cached there."""

    def build():
        texts, labels = load_texts()
        return tokenize(texts, labels, tokenizer, chunk_size, desc=f"tokenize {key['split']}")

    return cached_split(path, key, tokenizer, build)
