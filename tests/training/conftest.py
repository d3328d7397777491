"""Fixtures of the training tests: a tiny fake IMDB archive, a token cache shared by the session,
the tiny experiment config pointed at them, and a runner for the command-line scripts."""

import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from jaxformer.testing import write_fake_imdb_archive

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def archive(tmp_path_factory):
    return write_fake_imdb_archive(
        tmp_path_factory.mktemp("imdb") / "aclImdb_v1.tar.gz", n_per_class=24, seed=0
    )


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def experiment_configs():
    """The configs/ package (experiment files are scripts' arguments, not part of jaxformer)."""
    names = ("tiny", "imdb_minilm", "imdb_bert_base", "imdb_scratch")
    sys.path.insert(0, str(REPO))
    try:
        modules = {name: importlib.import_module(f"configs.{name}") for name in names}
    finally:
        sys.path.remove(str(REPO))
    return types.SimpleNamespace(**modules)


@pytest.fixture
def make_config(archive, cache, experiment_configs):
    """configs/tiny.py on the fake archive; keyword arguments set dotted fields
    (`make_config(**{"optimizer.accum_steps": 4})`)."""

    def make(archive=archive, **changes):
        c = experiment_configs.tiny.get_config()
        c.data.archive = str(archive)
        c.data.cache_dir = str(cache)
        for key, value in changes.items():
            target = c
            *path, last = key.split(".")
            for p in path:
                target = target[p]
            target[last] = value
        return c

    return make


@pytest.fixture(scope="session")
def read_metrics():
    """The rows of workdir/metrics.jsonl for one split."""

    def read(workdir, split):
        lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["split"] == split]

    return read


@pytest.fixture(scope="session")
def run_script():
    """Runs `python *args` in the repository root on the CPU; returns the CompletedProcess."""

    def run(*args):
        return subprocess.run(
            [sys.executable, *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )

    return run
