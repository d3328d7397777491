"""jaxformer.data.imdb: the tfds imdb_reviews build from a local archive, its splits and errors."""

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from jaxformer.data import imdb, token_cache
from jaxformer.testing import write_fake_imdb_archive

REAL_ARCHIVE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "aclImdb_v1.tar.gz"


def test_build_counts_labels_and_odd_reviews(builder, n_per_class):
    assert builder.is_prepared()
    assert set(builder.info.splits) == {"train", "test"}  # no unsupervised split in the archive
    for split in ("train", "test"):
        texts, labels = imdb.read_split(builder, split)
        assert len(texts) == 2 * n_per_class
        assert np.bincount(labels).tolist() == [n_per_class, n_per_class]
    texts, labels = imdb.read_split(builder, "train")
    assert "" in texts  # the empty review survives
    [bad] = [t for t in texts if t.startswith("bad bytes")]
    assert "\ufffd" in bad and bad.endswith("still awful")
    assert labels[texts.index(bad)] == 0


def test_build_is_keyed_by_archive_sha(builder, cache_dir, tmp_path, n_per_class):
    other = write_fake_imdb_archive(tmp_path / "other.tar.gz", n_per_class=3, seed=1)
    assert write_fake_imdb_archive(tmp_path / "again.tar.gz").read_bytes() == (
        write_fake_imdb_archive(tmp_path / "again2.tar.gz").read_bytes()
    )
    # A leftover of a killed build (tfds' incomplete dir) does not disturb the next build.
    sha = token_cache.file_sha256(other)[:16]
    stale = cache_dir / "tfds" / f"local-{sha}" / "imdb_reviews/plain_text/incomplete.X_1.0.0"
    stale.mkdir(parents=True)
    (stale / "imdb_reviews-train.array_record-00000-of-00001").write_bytes(b"junk")
    other_builder = imdb.imdb_builder(cache_dir / "tfds", other)
    assert other_builder.data_dir != builder.data_dir
    assert other_builder.info.splits["train"].num_examples == 6
    assert builder.info.splits["train"].num_examples == 2 * n_per_class


def test_validation_split_is_disjoint_and_deterministic(builder):
    train, validation = imdb.split_indices(25_000, 0.1, seed=0)
    assert (len(train), len(validation)) == (22_500, 2_500)
    assert not set(train) & set(validation)
    assert sorted([*train, *validation]) == list(range(25_000))
    np.testing.assert_array_equal(imdb.split_indices(25_000, 0.1, seed=0)[1], validation)
    assert not np.array_equal(imdb.split_indices(25_000, 0.1, seed=1)[1], validation)

    texts = imdb.load_texts(builder, validation_fraction=0.25, split_seed=0)
    assert {k: len(v[0]) for k, v in texts.items()} == {"train": 30, "validation": 10, "test": 40}
    again = imdb.load_texts(builder, ["validation"], validation_fraction=0.25, split_seed=0)
    assert again["validation"][0] == texts["validation"][0]
    limited = imdb.load_texts(builder, ["train", "test"], limits={"train": 5, "test": 7})
    assert limited["train"][0] == imdb.load_texts(builder, ["train"])["train"][0][:5]
    assert len(limited["test"][0]) == 7


def test_missing_archive_error(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "aclImdb_v1.tar.gz"
    with pytest.raises(imdb.ImdbArchiveError, match="not found") as e:
        imdb.imdb_builder(tmp_path / "tfds", missing)
    assert str(missing) in str(e.value) and imdb.ARCHIVE_URL in str(e.value)
    monkeypatch.setenv(imdb.ARCHIVE_ENV, str(missing))
    with pytest.raises(imdb.ImdbArchiveError, match=r"\$JAXFORMER_IMDB_ARCHIVE"):
        imdb.resolve_archive(None)
    monkeypatch.delenv(imdb.ARCHIVE_ENV)
    assert imdb.resolve_archive(None) is None  # download with tfds


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not_aclimdb"])
def test_corrupt_archive_error_leaves_nothing_built(archive, tmp_path, damage):
    bad = tmp_path / "bad.tar.gz"
    if damage == "truncated":
        bad.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    elif damage == "garbage":
        bad.write_bytes(b"\x1f\x8b" + os.urandom(2000))
    else:
        (tmp_path / "x.txt").write_text("hello")
        with tarfile.open(bad, "w:gz") as tar:
            tar.add(tmp_path / "x.txt", arcname="other/x.txt")
    match = "not an aclImdb archive" if damage == "not_aclimdb" else "corrupt or truncated"
    with pytest.raises(imdb.ImdbArchiveError, match=match):
        imdb.imdb_builder(tmp_path / "tfds", bad)
    built = list((tmp_path / "tfds").rglob("*.array_record*"))
    assert built == [] and not list((tmp_path / "tfds").rglob("incomplete*"))


@pytest.mark.slow
@pytest.mark.skipif(not REAL_ARCHIVE.exists(), reason=f"{REAL_ARCHIVE} not present")
def test_real_archive(tmp_path):
    builder = imdb.imdb_builder(tmp_path / "tfds", REAL_ARCHIVE)
    for split in ("train", "test"):
        assert builder.info.splits[split].num_examples == 25_000
        _, labels = imdb.read_split(builder, split)
        assert np.bincount(labels).tolist() == [12_500, 12_500]
