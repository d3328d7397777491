"""jaxformer.data.token_cache: token ids cached per tokenizer, split and source, rebuilt when
unreadable, never half-written."""

import logging

import numpy as np

from jaxformer.data import imdb
from jaxformer.testing import FakeTokenizer


def test_token_cache_is_hit_and_tfds_untouched(
    archive, cache_dir, builder, monkeypatch, n_per_class
):
    tok = FakeTokenizer()
    first = imdb.load_imdb(tok, cache_dir=cache_dir, archive=archive, chunk_size=16)
    assert {k: len(v) for k, v in first.items()} == {"train": 36, "validation": 4, "test": 40}
    assert tok.calls == 3 + 1 + 3  # ceil(36 / 16) + ceil(4 / 16) + ceil(40 / 16)
    assert first["train"].lengths.max() <= tok.max_length
    assert np.bincount(first["test"].labels).tolist() == [n_per_class, n_per_class]

    def no_tfds(*args, **kwargs):
        raise AssertionError("tfds touched on a cache hit")

    monkeypatch.setattr(imdb, "imdb_builder", no_tfds)
    again = imdb.load_imdb(tok, cache_dir=cache_dir, archive=archive)
    assert tok.calls == 7
    for name in first:
        for field in ("ids", "offsets", "labels"):
            np.testing.assert_array_equal(getattr(again[name], field), getattr(first[name], field))

    # Another tokenizer, max length or subset is another cache entry.
    monkeypatch.undo()
    short = FakeTokenizer(max_length=32)
    imdb.load_imdb(short, splits=["test"], cache_dir=cache_dir, archive=archive)
    imdb.load_imdb(tok, splits=["test"], cache_dir=cache_dir, archive=archive, limits={"test": 9})
    assert len(list((cache_dir / "tokens").glob("test-*.npz"))) == 3


def test_corrupt_token_cache_is_rebuilt(archive, cache_dir, builder, tmp_path, caplog):
    tok = FakeTokenizer()
    kwargs = dict(splits=["test"], cache_dir=tmp_path, data_dir=cache_dir / "tfds", archive=archive)
    good = imdb.load_imdb(tok, **kwargs)["test"]
    [path] = (tmp_path / "tokens").glob("test-*.npz")
    path.write_bytes(path.read_bytes()[:100])
    calls = tok.calls
    with caplog.at_level(logging.WARNING, logger="jaxformer"):
        rebuilt = imdb.load_imdb(tok, **kwargs)["test"]
    assert "Rebuilding token cache" in caplog.text and tok.calls > calls
    np.testing.assert_array_equal(rebuilt.ids, good.ids)
    assert list((tmp_path / "tokens").iterdir()) == [path]  # no temp files left behind
    assert not (tmp_path / "tfds").exists()


def test_token_cache_defaults_to_cache_dir(archive, cache_dir, builder, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXFORMER_CACHE_DIR", str(tmp_path / "ours"))
    imdb.load_imdb(FakeTokenizer(), splits=["test"], data_dir=cache_dir / "tfds", archive=archive)
    assert len(list((tmp_path / "ours" / "tokens").glob("test-*.npz"))) == 1
