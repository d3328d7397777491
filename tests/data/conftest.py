"""Fixtures of the data tests: a fake aclImdb archive and its tfds build, one per test module."""

import pytest

from jaxformer.data import imdb
from jaxformer.testing import write_fake_imdb_archive


@pytest.fixture(scope="session")
def n_per_class() -> int:
    """Reviews per label in each of the fake archive's train and test splits."""
    return 20


@pytest.fixture(scope="module")
def archive(tmp_path_factory, n_per_class):
    path = tmp_path_factory.mktemp("archive") / "aclImdb_v1.tar.gz"
    return write_fake_imdb_archive(path, n_per_class=n_per_class)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def builder(archive, cache_dir):
    return imdb.imdb_builder(cache_dir / "tfds", archive)
