"""The IMDB pipeline: tfds build from a local archive, token cache, bucketed and eval batches."""

import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from jaxformer.data import imdb
from jaxformer.data import pipeline as data
from jaxformer.testing import FakeTokenizer, write_fake_imdb_archive

N_PER_CLASS = 20
REAL_ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "aclImdb_v1.tar.gz"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_fake_imdb_archive(tmp_path_factory.mktemp("archive") / "aclImdb_v1.tar.gz")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def builder(archive, cache_dir):
    return imdb.imdb_builder(cache_dir / "tfds", archive)


def synthetic_split(n=101, max_length=64, seed=0):
    """n examples of random lengths 2..max_length whose ids are never the pad id 0."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, max_length + 1, size=n)
    ids = [rng.integers(1, 50, size=k).astype(np.int32) for k in lengths]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    labels = rng.integers(0, 2, size=n).astype(np.int32)
    return data.TokenizedSplit(np.concatenate(ids), offsets, labels, 0, max_length)


def assert_batch_well_formed(batch, split, indices):
    b, length = batch["input_ids"].shape
    assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
        "input_ids": (np.int32, (b, length)),
        "attention_mask": (np.int32, (b, length)),
        "token_type_ids": (np.int32, (b, length)),
        "labels": (np.int32, (b,)),
        "weights": (np.float32, (b,)),
    }
    assert not batch["token_type_ids"].any()
    # Ids are never 0 = pad_id, so the mask is 0 exactly at pad positions.
    np.testing.assert_array_equal(batch["attention_mask"], batch["input_ids"] != 0)
    np.testing.assert_array_equal(batch["weights"], indices >= 0)
    for row, i in enumerate(indices):
        if i >= 0:
            np.testing.assert_array_equal(batch["input_ids"][row, : len(split[i])], split[i])
            assert batch["labels"][row] == split.labels[i]


# ---------------------------------------------------------------------------------------------
# tfds build


def test_build_counts_labels_and_odd_reviews(builder):
    assert builder.is_prepared()
    assert set(builder.info.splits) == {"train", "test"}  # no unsupervised split in the archive
    for split in ("train", "test"):
        texts, labels = imdb.read_split(builder, split)
        assert len(texts) == 2 * N_PER_CLASS
        assert np.bincount(labels).tolist() == [N_PER_CLASS, N_PER_CLASS]
    texts, labels = imdb.read_split(builder, "train")
    assert "" in texts  # the empty review survives
    [bad] = [t for t in texts if t.startswith("bad bytes")]
    assert "\ufffd" in bad and bad.endswith("still awful")
    assert labels[texts.index(bad)] == 0


def test_build_is_keyed_by_archive_sha(builder, cache_dir, tmp_path):
    other = write_fake_imdb_archive(tmp_path / "other.tar.gz", n_per_class=3, seed=1)
    assert write_fake_imdb_archive(tmp_path / "again.tar.gz").read_bytes() == (
        write_fake_imdb_archive(tmp_path / "again2.tar.gz").read_bytes()
    )
    # A leftover of a killed build (tfds' incomplete dir) does not disturb the next build.
    sha = imdb.archive_sha256(other)[:16]
    stale = cache_dir / "tfds" / f"local-{sha}" / "imdb_reviews/plain_text/incomplete.X_1.0.0"
    stale.mkdir(parents=True)
    (stale / "imdb_reviews-train.array_record-00000-of-00001").write_bytes(b"junk")
    other_builder = imdb.imdb_builder(cache_dir / "tfds", other)
    assert other_builder.data_dir != builder.data_dir
    assert other_builder.info.splits["train"].num_examples == 6
    assert builder.info.splits["train"].num_examples == 2 * N_PER_CLASS


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


# ---------------------------------------------------------------------------------------------
# Token cache


def test_token_cache_is_hit_and_tfds_untouched(archive, cache_dir, builder, monkeypatch):
    tok = FakeTokenizer()
    first = data.load_imdb(tok, cache_dir=cache_dir, archive=archive, chunk_size=16)
    assert {k: len(v) for k, v in first.items()} == {"train": 36, "validation": 4, "test": 40}
    assert tok.calls == 3 + 1 + 3  # ceil(36 / 16) + ceil(4 / 16) + ceil(40 / 16)
    assert first["train"].lengths.max() <= tok.max_length
    assert np.bincount(first["test"].labels).tolist() == [N_PER_CLASS, N_PER_CLASS]

    def no_tfds(*args, **kwargs):
        raise AssertionError("tfds touched on a cache hit")

    monkeypatch.setattr(imdb, "imdb_builder", no_tfds)
    again = data.load_imdb(tok, cache_dir=cache_dir, archive=archive)
    assert tok.calls == 7
    for name in first:
        for field in ("ids", "offsets", "labels"):
            np.testing.assert_array_equal(getattr(again[name], field), getattr(first[name], field))

    # Another tokenizer, max length or subset is another cache entry.
    monkeypatch.undo()
    short = FakeTokenizer(max_length=32)
    data.load_imdb(short, splits=["test"], cache_dir=cache_dir, archive=archive)
    data.load_imdb(tok, splits=["test"], cache_dir=cache_dir, archive=archive, limits={"test": 9})
    assert len(list((cache_dir / "tokens").glob("test-*.npz"))) == 3


def test_corrupt_token_cache_is_rebuilt(archive, cache_dir, builder, tmp_path, caplog):
    tok = FakeTokenizer()
    kwargs = dict(splits=["test"], cache_dir=tmp_path, data_dir=cache_dir / "tfds", archive=archive)
    good = data.load_imdb(tok, **kwargs)["test"]
    [path] = (tmp_path / "tokens").glob("test-*.npz")
    path.write_bytes(path.read_bytes()[:100])
    calls = tok.calls
    with caplog.at_level(logging.WARNING, logger="jaxformer"):
        rebuilt = data.load_imdb(tok, **kwargs)["test"]
    assert "Rebuilding token cache" in caplog.text and tok.calls > calls
    np.testing.assert_array_equal(rebuilt.ids, good.ids)
    assert list((tmp_path / "tokens").iterdir()) == [path]  # no temp files left behind
    assert not (tmp_path / "tfds").exists()


# ---------------------------------------------------------------------------------------------
# Batches


def test_bucket_lengths():
    assert data.bucket_lengths((64, 128, 256, 512), 512) == (64, 128, 256, 512)
    assert data.bucket_lengths((512, 64, 128), 200) == (64, 128, 200)
    assert data.bucket_lengths(None, 512) == (512,)


def test_train_batches_bucketed_cover_each_example_once():
    split = synthetic_split(n=101)
    batches = data.TrainBatches(split, batch_size=8, seed=0, buckets=(16, 32), sort_chunk_batches=4)
    assert batches.num_batches_per_epoch == 13  # ceil(101 / 8), the last one filled with weight 0
    for epoch in range(2):
        seen = []
        for step in range(batches.num_batches_per_epoch):
            indices = batches.batch_indices(epoch, step)
            batch = batches.batch(epoch, step)
            assert_batch_well_formed(batch, split, indices)
            length = batch["input_ids"].shape[1]
            longest = split.lengths[indices[indices >= 0]].max()
            assert length in (16, 32, 64) and longest <= length
            assert length == min(b for b in (16, 32, 64) if b >= longest)  # smallest bucket
            seen.extend(indices[indices >= 0])
        assert sorted(seen) == list(range(101))
    plain = data.TrainBatches(split, batch_size=8, seed=0, bucketing=False)
    assert {plain.batch(0, s)["input_ids"].shape[1] for s in range(13)} == {64}
    assert batches.padding_fraction(0) < plain.padding_fraction(0)
    # The padding fraction is what the batches hold.
    pad = sum((batches.batch(0, s)["attention_mask"] == 0).sum() for s in range(13))
    total = sum(batches.batch(0, s)["attention_mask"].size for s in range(13))
    assert batches.padding_fraction(0) == pytest.approx(pad / total)


def test_train_order_is_a_function_of_seed_epoch_step():
    split = synthetic_split(n=50)
    a = data.TrainBatches(split, batch_size=4, seed=3, buckets=(16, 32))
    b = data.TrainBatches(split, batch_size=4, seed=3, buckets=(16, 32))
    nb = a.num_batches_per_epoch
    resumed = b.iterate(start_step=nb + 5)  # a fresh object resumed at epoch 1, step 5
    for step in range(5, 9):
        expected, got = a.batch(1, step), next(resumed)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k])
    np.testing.assert_array_equal(a.batch_at(2 * nb + 1)["labels"], a.batch(2, 1)["labels"])
    assert [len(x["labels"]) for x in a.iterate(0, num_steps=3)] == [4, 4, 4]
    order = lambda t, e: np.concatenate([t.batch_indices(e, s) for s in range(nb)])  # noqa: E731
    assert not np.array_equal(order(a, 0), order(a, 1))
    c = data.TrainBatches(split, batch_size=4, seed=4, buckets=(16, 32))
    assert not np.array_equal(order(a, 0), order(c, 0))


def test_eval_batches_cover_each_example_once_with_filler():
    split = synthetic_split(n=23)
    for bucketing in (True, False):
        batches = data.EvalBatches(split, batch_size=5, buckets=(16, 32), bucketing=bucketing)
        assert len(batches) == 5
        seen, weights = [], 0.0
        for step, batch in enumerate(batches):
            indices = batches.batch_indices(step)
            assert_batch_well_formed(batch, split, indices)
            assert batch["input_ids"].shape[0] == 5
            seen.extend(indices[indices >= 0])
            weights += batch["weights"].sum()
        assert sorted(seen) == list(range(23)) and weights == 23
        assert batches.batch_indices(4).tolist()[-2:] == [-1, -1]
        if not bucketing:
            assert seen == list(range(23))  # the split's order
    other_pad = data.eval_batches(split, 5, bucketing=False, pad_id=99).batch(0)
    np.testing.assert_array_equal(other_pad["input_ids"] == 99, other_pad["attention_mask"] == 0)


def test_process_sharding():
    split = synthetic_split(n=30)
    whole = data.TrainBatches(split, 8, seed=1, process_index=0, process_count=1)
    parts = [
        data.TrainBatches(split, 8, seed=1, process_index=i, process_count=4) for i in range(4)
    ]
    assert parts[0].per_process_batch_size == 2
    for step in range(whole.num_batches_per_epoch):
        glued = [p.batch(0, step) for p in parts]
        for k, v in whole.batch(0, step).items():
            np.testing.assert_array_equal(np.concatenate([g[k] for g in glued]), v)
    eval_parts = [data.EvalBatches(split, 8, process_index=i, process_count=2) for i in range(2)]
    assert eval_parts[1].batch(0)["input_ids"].shape[0] == 4
    batch = whole.batch(0, 0)
    np.testing.assert_array_equal(data.shard_batch(batch, 1, 2)["labels"], batch["labels"][4:])
    assert data.shard_batch(batch)["labels"].shape == (8,)  # one jax process here
    with pytest.raises(ValueError, match="does not divide by the process count 3"):
        data.TrainBatches(split, 8, process_index=0, process_count=3)


def test_batches_from_fake_archive(archive, cache_dir, builder):
    splits = data.load_imdb(FakeTokenizer(), cache_dir=cache_dir, archive=archive)
    train = data.TrainBatches(splits["train"], batch_size=8, seed=0, buckets=(16, 32))
    assert train.max_length == 64 and train.buckets == (16, 32, 64)
    for step in range(train.num_batches_per_epoch):
        assert_batch_well_formed(
            train.batch(0, step), splits["train"], train.batch_indices(0, step)
        )
    with pytest.raises(ValueError, match="longer than max_length 16"):
        data.TrainBatches(splits["train"], batch_size=8, max_length=16)
