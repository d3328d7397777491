"""jaxformer.data.batching: bucketed training batches, eval batches, process slices."""

import numpy as np
import pytest

from jaxformer.data import batching as data
from jaxformer.data import imdb
from jaxformer.testing import FakeTokenizer


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
        "index": (np.int32, (b,)),
    }
    np.testing.assert_array_equal(batch["index"], indices)
    assert not batch["token_type_ids"].any()
    # Ids are never 0 = pad_id, so the mask is 0 exactly at pad positions.
    np.testing.assert_array_equal(batch["attention_mask"], batch["input_ids"] != 0)
    np.testing.assert_array_equal(batch["weights"], indices >= 0)
    for row, i in enumerate(indices):
        if i >= 0:
            np.testing.assert_array_equal(batch["input_ids"][row, : len(split[i])], split[i])
            assert batch["labels"][row] == split.labels[i]


# ---------------------------------------------------------------------------------------------
# Batches


def test_bucket_lengths():
    assert data.bucket_lengths((64, 128, 256, 512), 512) == (64, 128, 256, 512)
    assert data.bucket_lengths((512, 64, 128), 200) == (64, 128, 200)
    assert data.bucket_lengths(None, 512) == (512,)


def test_pad_ids_lays_ragged_ids_into_a_batch():
    ids = [np.array([5, 6, 7], np.int32), np.array([8], np.int32), np.zeros(0, np.int32)]
    batch = data.pad_ids(ids, 4, pad_id=9)
    assert list(batch) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(v.dtype == np.int32 and v.shape == (3, 4) for v in batch.values())
    np.testing.assert_array_equal(batch["input_ids"], [[5, 6, 7, 9], [8, 9, 9, 9], [9, 9, 9, 9]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1, 0], [1, 0, 0, 0], [0] * 4])
    assert not batch["token_type_ids"].any()
    assert data.pad_ids([], 4, pad_id=9)["input_ids"].shape == (0, 4)
    with pytest.raises(ValueError, match="a sequence of 3 ids does not fit padding to 2"):
        data.pad_ids(ids, 2, pad_id=9)


def test_collate_pads_with_pad_ids():
    ids = np.array([5, 6, 7, 8], np.int32)
    split = data.TokenizedSplit(ids, np.array([0, 3, 4]), np.array([1, 0], np.int32), pad_id=9)
    batch = data.collate(split, np.array([1, -1, 0]), 4)  # the middle row is filler
    expected = data.pad_ids([split[1], ids[:0], split[0]], 4, pad_id=9)
    assert list(batch) == [*expected, "labels", "weights", "index"]
    for k, v in expected.items():
        np.testing.assert_array_equal(batch[k], v, err_msg=k)
        assert batch[k].dtype == v.dtype
    np.testing.assert_array_equal(batch["input_ids"], [[8, 9, 9, 9], [9, 9, 9, 9], [5, 6, 7, 9]])
    np.testing.assert_array_equal(batch["labels"], [0, 0, 1])
    np.testing.assert_array_equal(batch["weights"], [1.0, 0.0, 1.0])
    assert (batch["labels"].dtype, batch["weights"].dtype) == (np.int32, np.float32)
    np.testing.assert_array_equal(batch["index"], [1, -1, 0])


def test_token_and_example_fields_are_padded_beside_the_ids():
    split = data.from_sequences(
        [np.array([5, 6, 7]), np.array([8])],
        token_fields={"labels": [[1, 2, 3], [4]], "token_type_ids": [[0, 1, 1], [0]]},
        example_fields={"start_positions": np.array([2, 0])},
        pad_id=9,
    )
    batch = data.collate(split, np.array([1, -1, 0]), 4)
    np.testing.assert_array_equal(batch["input_ids"], [[8, 9, 9, 9], [9] * 4, [5, 6, 7, 9]])
    # Per-token labels replace the per-example ones, padded with the ignored label.
    np.testing.assert_array_equal(
        batch["labels"], [[4, -100, -100, -100], [-100] * 4, [1, 2, 3, -100]]
    )
    np.testing.assert_array_equal(batch["token_type_ids"], [[0, 0, 0, 0], [0] * 4, [0, 1, 1, 0]])
    np.testing.assert_array_equal(batch["start_positions"], [0, 0, 2])
    with pytest.raises(ValueError, match="token field 'labels' does not have one value per token"):
        data.from_sequences([np.array([5, 6])], token_fields={"labels": [[1]]})


def test_a_transform_sees_the_global_batch_and_a_generator_of_its_position():
    split = synthetic_split(n=40)
    seen = []

    def transform(batch, rng):
        seen.append(len(batch["input_ids"]))
        return dict(batch, noise=rng.integers(0, 1000, len(batch["input_ids"])))

    def run(process_index, process_count):
        batches = data.TrainBatches(
            split,
            8,
            seed=3,
            process_index=process_index,
            process_count=process_count,
            transform=transform,
        )
        return [batches.batch(e, s)["noise"] for e in range(2) for s in range(3)]

    whole = run(0, 1)
    halves = [run(i, 2) for i in range(2)]
    assert set(seen) == {8}  # always the global batch, then this process's rows
    for one, a, b in zip(whole, *halves, strict=True):
        np.testing.assert_array_equal(one, np.concatenate([a, b]))
    assert len({tuple(x) for x in whole}) == len(whole)  # each position draws its own


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

    def order(batches, epoch):
        return np.concatenate([batches.batch_indices(epoch, s) for s in range(nb)])

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
    other_pad = data.EvalBatches(split, 5, bucketing=False, pad_id=99).batch(0)
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
    splits = imdb.load_imdb(FakeTokenizer(), cache_dir=cache_dir, archive=archive)
    train = data.TrainBatches(splits["train"], batch_size=8, seed=0, buckets=(16, 32))
    assert train.max_length == 64 and train.buckets == (16, 32, 64)
    for step in range(train.num_batches_per_epoch):
        assert_batch_well_formed(
            train.batch(0, step), splits["train"], train.batch_indices(0, step)
        )
    with pytest.raises(ValueError, match="longer than max_length 16"):
        data.TrainBatches(splits["train"], batch_size=8, max_length=16)
