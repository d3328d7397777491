"""IMDB movie reviews as tensorflow-datasets builds them, online or from a local archive.

Mirrors tfds' `imdb_reviews/plain_text` (Maas et al., ACL 2011; 25,000 train and 25,000 test
reviews, label 0 = neg, 1 = pos). Online, the dataset is built the ordinary tfds way. Offline, the
same tfds builder (`tensorflow_datasets/datasets/imdb_reviews/imdb_reviews_dataset_builder.py`)
is built from a local `aclImdb_v1.tar.gz` through a download manager that hands the builder the
local path instead of downloading (the copy is not byte-identical to tfds' download, so tfds'
recorded checksum cannot be used) and reads it with Python's `tarfile` (tfds' own `iter_archive`
needs TensorFlow). The unlabelled `unsupervised` split is not built: jaxformer never uses it and
the shared archive does not contain it.

Builds go to a directory keyed by the archive's sha256, so another archive never reuses a stale
build, and tfds writes each build to an `incomplete.*` directory that is renamed only on success:
a failed build removes it, a killed one leaves it behind (ignored, safe to delete), and neither
leaves a half-built dataset that a later run would read.

On top of tfds, a validation split is carved from train with a fixed seed (`split_indices`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jaxformer import cache
from jaxformer.data import locks, token_cache
from jaxformer.data.batching import TokenizedSplit

ARCHIVE_ENV = "JAXFORMER_IMDB_ARCHIVE"
ARCHIVE_URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
TFDS_NAME = "imdb_reviews/plain_text"
TFDS_VERSION = "1.0.0"
SPLITS = ("train", "validation", "test")

# The labelled reviews of the archive, e.g. "aclImdb/train/pos/0_9.txt".
_REVIEW_RE = re.compile(r"^aclImdb/(train|test)/(pos|neg)/[^/]+\.txt$")
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)

log = logging.getLogger(__name__)


class ImdbArchiveError(ValueError):
    """The local IMDB archive is missing, corrupt, truncated or not an aclImdb archive."""


def resolve_archive(archive: str | os.PathLike | None = None) -> Path | None:
    """The local archive to build from: `archive`, else $JAXFORMER_IMDB_ARCHIVE, else None.

    None means "download with tfds". A given path that does not exist raises ImdbArchiveError.
    """
    source = "argument"
    if not archive:
        archive, source = os.environ.get(ARCHIVE_ENV) or None, f"${ARCHIVE_ENV}"
    if archive is None:
        return None
    path = Path(archive).expanduser()
    if not path.is_file():
        raise ImdbArchiveError(
            f"IMDB archive not found: {path} (from the {source}). It should be the Large Movie "
            f"Review Dataset v1.0 archive aclImdb_v1.tar.gz ({ARCHIVE_URL}), holding "
            "aclImdb/{train,test}/{pos,neg}/*.txt. Download it there, point data.archive or "
            f"${ARCHIVE_ENV} at a copy, or leave both unset to let tensorflow-datasets download it."
        )
    return path


def _local_download_manager(archive: Path, download_dir: Path):
    """A tfds DownloadManager that serves `archive` for every URL and reads it with tarfile."""
    import tensorflow_datasets as tfds

    class LocalArchiveDownloadManager(tfds.download.DownloadManager):
        def download(self, url_or_urls):
            del url_or_urls  # the imdb builder asks for exactly one URL: the archive
            return archive

        def iter_archive(self, resource) -> Iterator[tuple[str, io.BytesIO]]:
            del resource
            return iter_aclimdb_archive(archive)

        @property
        def downloaded_size(self) -> int:
            return archive.stat().st_size

    return LocalArchiveDownloadManager(download_dir=download_dir)


def iter_aclimdb_archive(path: Path) -> Iterator[tuple[str, io.BytesIO]]:
    """Yield (name, file) for every file of an aclImdb tar archive, like tfds' `iter_archive`.

    Files are read here, so a corrupt or truncated archive raises ImdbArchiveError from this
    iterator, and an archive without train and test reviews of both labels raises it at the end.
    """
    found = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                data = tar.extractfile(member).read()
                match = _REVIEW_RE.match(member.name)
                if match:
                    found.add(match.groups())
                yield member.name, io.BytesIO(data)
    except _ARCHIVE_ERRORS as e:
        raise ImdbArchiveError(
            f"IMDB archive {path} is corrupt or truncated ({type(e).__name__}: {e}). "
            f"Replace it with a complete copy of aclImdb_v1.tar.gz ({ARCHIVE_URL})."
        ) from e
    missing = {(s, c) for s in ("train", "test") for c in ("pos", "neg")} - found
    if missing:
        dirs = ", ".join(f"aclImdb/{s}/{c}/" for s, c in sorted(missing))
        raise ImdbArchiveError(
            f"{path} is not an aclImdb archive: no reviews under {dirs}. It should be "
            f"aclImdb_v1.tar.gz ({ARCHIVE_URL})."
        )


def imdb_builder(data_dir: str | os.PathLike, archive: str | os.PathLike | None = None):
    """The prepared tfds `imdb_reviews/plain_text` builder, building it first if needed.

    Args:
      data_dir: root for tfds builds. A local archive builds under
        `data_dir/local-<sha256[:16]>/`, a download under `data_dir/` itself.
      archive: local aclImdb_v1.tar.gz; None reads $JAXFORMER_IMDB_ARCHIVE, then downloads.

    Read it back with `builder.as_data_source()` (array_record, no TensorFlow needed).
    """
    import tensorflow_datasets as tfds

    archive = resolve_archive(archive)
    data_dir = Path(data_dir)
    if archive is not None:
        data_dir = data_dir / f"local-{token_cache.file_sha256(archive)[:16]}"
    builder = tfds.builder(TFDS_NAME, data_dir=os.fspath(data_dir), file_format="array_record")
    if builder.is_prepared():
        return builder
    # Two processes preparing one data_dir would race on tfds' rename of its incomplete build.
    with locks.FileLock(data_dir / "build.lock", f"the tfds build in {data_dir}", wait=True):
        builder = tfds.builder(TFDS_NAME, data_dir=os.fspath(data_dir), file_format="array_record")
        if not builder.is_prepared():
            _prepare(builder, archive, data_dir)
    return builder


def _prepare(builder, archive: Path | None, data_dir: Path) -> None:
    if archive is None:
        log.info("Downloading and preparing %s into %s", TFDS_NAME, data_dir)
        builder.download_and_prepare(file_format="array_record")
        return

    log.info("Preparing %s from %s into %s", TFDS_NAME, archive, data_dir)
    dl_manager = _local_download_manager(archive, data_dir / "downloads")
    split_generators = builder._split_generators

    def labelled_split_generators(dl_manager):
        return [g for g in split_generators(dl_manager) if g.name != "unsupervised"]

    # Instance-level hooks: the builder class and its features stay tfds' own.
    builder._make_download_manager = lambda download_dir, download_config: dl_manager
    builder._split_generators = labelled_split_generators
    builder.download_and_prepare(file_format="array_record")


def read_split(builder, split: str) -> tuple[list[str], np.ndarray]:
    """All (texts, labels) of a prepared tfds split ("train" or "test") in stored order.

    tfds stores each review's raw bytes; invalid UTF-8 is replaced by U+FFFD rather than failing.
    """
    source = builder.as_data_source()[split]
    records = source.__getitems__(range(len(source))) if len(source) else []
    texts = [r["text"].decode("utf-8", errors="replace") for r in records]
    labels = np.asarray([r["label"] for r in records], dtype=np.int32)
    return texts, labels


def split_indices(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, validation) indices of range(n), each in a seeded random order.

    The first round(n * validation_fraction) indices of a seeded permutation are validation.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_validation = int(round(n * validation_fraction))
    return order[n_validation:], order[:n_validation]


def load_texts(
    builder,
    splits: Sequence[str] = SPLITS,
    *,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    limits: dict[str, int | None] | None = None,
) -> dict[str, tuple[list[str], np.ndarray]]:
    """{split: (texts, labels)} for "train", "validation" (carved from tfds train) and "test".

    Each split is in a seeded random order and `limits[split]` keeps its first N examples, so a
    limited split is a random, roughly balanced subset. tfds train is read once for both of its
    parts.
    """
    limits = limits or {}
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown IMDB splits {sorted(unknown)}; expected some of {SPLITS}")
    out = {}
    if {"train", "validation"} & set(splits):
        texts, labels = read_split(builder, "train")
        train, validation = split_indices(len(texts), validation_fraction, split_seed)
        for name, indices in (("train", train), ("validation", validation)):
            if name in splits:
                out[name] = _select(texts, labels, indices, limits.get(name))
    if "test" in splits:
        texts, labels = read_split(builder, "test")
        indices = np.random.default_rng([split_seed, 1]).permutation(len(texts))
        out["test"] = _select(texts, labels, indices, limits.get("test"))
    return out


def _select(
    texts: Sequence[str], labels: np.ndarray, indices: np.ndarray, limit: int | None
) -> tuple[list[str], np.ndarray]:
    indices = indices[:limit]
    return [texts[i] for i in indices], labels[indices]


def load_imdb(
    tokenizer: token_cache.TextEncoder,
    *,
    splits: Sequence[str] = SPLITS,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    archive: str | os.PathLike | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    limits: dict[str, int | None] | None = None,
    chunk_size: int = 1000,
) -> dict[str, TokenizedSplit]:
    """{split: TokenizedSplit} for IMDB "train", "validation" (carved from train) and "test".

    Args:
      tokenizer: has `encode_ids(list[str]) -> list[int32 array]`, `pad_id`, `fingerprint`
        (and ideally `max_length`, `truncation`).
      splits: which splits to return.
      cache_dir: token ids go to `cache_dir/tokens`; default `jaxformer.cache.cache_dir()`.
      data_dir: tfds data_dir for the IMDB build; default `cache_dir/tfds`.
      archive: local aclImdb_v1.tar.gz; None reads $JAXFORMER_IMDB_ARCHIVE, then downloads.
      validation_fraction: share of tfds train held out as "validation" (disjoint from "train").
      split_seed: seed of the validation carve-out and of each split's (limited) order.
      limits: {split: N} keeps the first N examples of the split's seeded shuffle.
      chunk_size: texts per `encode_ids` call.

    When every requested split is cached, tfds is not touched at all. Otherwise the build holds
    `cache_dir/build.lock`: a second process on the same cache waits, then reads what the first
    wrote.
    """
    cache_dir = Path(cache_dir) if cache_dir else cache.cache_dir()
    data_dir = Path(data_dir) if data_dir else cache_dir / "tfds"
    limits = dict(limits or {})
    local = resolve_archive(archive)
    if local is not None:
        source = f"archive-sha256:{token_cache.file_sha256(local)}"
    else:
        source = f"tfds:{TFDS_NAME}:{TFDS_VERSION}"

    keys, paths = {}, {}
    for name in splits:
        subset = {"split_seed": split_seed, "limit": limits.get(name)}
        if name != "test":
            subset["validation_fraction"] = validation_fraction
        keys[name] = token_cache.cache_key(tokenizer, name, source, **subset)
        paths[name] = token_cache.cache_path(cache_dir / "tokens", keys[name])

    builder, texts = None, {}

    def texts_of(name: str) -> tuple[list[str], np.ndarray]:
        nonlocal builder
        if name not in texts:
            if builder is None:
                builder = imdb_builder(data_dir, local)
            # Read every split still to tokenize at once: tfds train serves train and validation.
            todo = [s for s in splits if s == name or (s not in texts and not paths[s].exists())]
            texts.update(
                load_texts(
                    builder,
                    todo,
                    validation_fraction=validation_fraction,
                    split_seed=split_seed,
                    limits=limits,
                )
            )
        return texts[name]

    def build() -> dict[str, TokenizedSplit]:
        return {
            name: token_cache.cached_tokenize(
                paths[name], keys[name], tokenizer, lambda n=name: texts_of(n), chunk_size
            )
            for name in splits
        }

    if all(paths[name].exists() for name in splits):
        return build()  # caches are written whole (os.replace): reading needs no lock
    # Processes sharing the cache take turns to build it; the next finds it built.
    with locks.FileLock(cache_dir / "build.lock", f"the data cache {cache_dir}", wait=True):
        return build()
