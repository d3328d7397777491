"""benchmarks/gpu_check.py --dry-run, in a subprocess: the GPU check's code path on CPU with a
tiny model; checks the JSON's fields, never the timings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
ROW_FIELDS = (
    "model",
    "batch",
    "length",
    "dtype",
    "jax_cudnn_program",
    "jax_cudnn_examples_per_s",
    "jax_cudnn_mfu",
    "jax_xla_program",
    "jax_xla_examples_per_s",
    "jax_xla_mfu",
    "torch_eager_examples_per_s",
    "torch_eager_mfu",
    "torch_compile_examples_per_s",
)


def test_dry_run_writes_the_report(tmp_path):
    out, table = tmp_path / "check.json", tmp_path / "check.md"
    cmd = [sys.executable, str(SCRIPT), "--dry-run"]
    cmd += ["--json", str(out), "--markdown", str(table)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["dry_run"] and report["machine"]["peak_tflops"] == 989.0
    assert [r["dtype"] for r in report["rows"]] == ["bfloat16", "float32"]
    for row in report["rows"]:
        assert set(ROW_FIELDS) <= set(row), sorted(set(ROW_FIELDS) - set(row))
        for key in ("jax_cudnn", "jax_xla", "torch_eager"):
            assert row[f"{key}_examples_per_s"] > 0 and row[f"{key}_mfu"] > 0, key
        assert row["torch_compile_examples_per_s"] is None  # skipped in a dry run
        assert row["jax_xla_program"] == "xla"
    [parity] = report["parity"]
    assert parity["ok"] and 0 <= parity["max_abs_diff"] <= parity["atol"]
    assert "| tiny | 2 x 16 | bfloat16 |" in table.read_text()
