"""Fixtures of the training tests: a tiny fake IMDB archive, a token cache shared by the session,
the tiny experiment config pointed at them, and a runner for the command-line scripts."""

import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import pytest
from helpers import set_fields

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
    names = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "__init__")
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
        return set_fields(c, changes)

    return make


@pytest.fixture(scope="session")
def read_metrics():
    """The rows of workdir/metrics.jsonl for one split."""

    def read(workdir, split):
        lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["split"] == split]

    return read


def script_env(**changes: str) -> dict:
    """The environment of a script run by a test: the CPU, and this session's XLA compilation
    cache, so that scripts compile the tiny model's steps once between them; then `changes`."""
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        **changes,
    }


@pytest.fixture(scope="session")
def run_script():
    """Runs `python *args` in the repository root on the CPU; returns the CompletedProcess
    (`input`: bytes for stdin, and stdout/stderr are then bytes too; `env`: variables to set)."""

    def run(*args, input=None, env=None):
        return subprocess.run(
            [sys.executable, *args],
            cwd=REPO,
            capture_output=True,
            text=input is None,
            input=input,
            timeout=300,
            env=script_env(**(env or {})),
        )

    return run


@pytest.fixture(scope="session")
def start_script():
    """Starts `python *args` in the repository root on the CPU; returns the Popen, its stdout
    and stderr going to files under `logs` (`proc.stderr_text()` reads what it wrote so far;
    `env`: variables to set)."""
    started = []

    def start(*args, logs: Path, env=None):
        logs.mkdir(parents=True, exist_ok=True)
        out, err = open(logs / "stdout", "w"), open(logs / "stderr", "w")
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            stdout=out,
            stderr=err,
            env=script_env(**(env or {})),
        )
        proc.stderr_text = lambda: (logs / "stderr").read_text()
        started.append(proc)
        return proc

    yield start
    for proc in started:  # a failed test leaves no process behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def train_args(archive, cache):
    """train.py's arguments for configs/tiny.py on the fake archive in `workdir`, then
    `--config.x=y` for each keyword (`train_args(w, num_train_steps=8)`)."""

    def args(workdir, **changes):
        return [
            "train.py",
            "--config",
            "configs/tiny.py",
            "--workdir",
            str(workdir),
            f"--config.data.archive={archive}",
            f"--config.data.cache_dir={cache}",
            *(f"--config.{k}={v}" for k, v in changes.items()),
        ]

    return args


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, archive, cache, experiment_configs):
    """A tiny run of four steps (checkpoints at 2 and 4, best at 4), for tests that only read
    it: copy it before changing anything."""
    from jaxformer.training import loop

    config = experiment_configs.tiny.get_config()
    config.data.archive = str(archive)
    config.data.cache_dir = str(cache)
    config.update(num_train_steps=4, checkpoint_every=2, eval_every=4)
    workdir = tmp_path_factory.mktemp("trained") / "run"
    loop.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="session")
def one_error_line():
    """Asserts that a script's stderr holds exactly one `error: ...` line, containing each of
    `words`, and no traceback; returns the line."""

    def check(stderr: str, *words: str) -> str:
        assert "Traceback" not in stderr, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, stderr
        for word in words:
            assert word in errors[0], errors[0]
        return errors[0]

    return check
