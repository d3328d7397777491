"""benchmarks/vs_revision.py: this checkout against a git revision, two worker processes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "vs_revision.py"


def in_git_checkout() -> bool:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True)
    return out.returncode == 0


def test_unknown_revision_is_a_clear_error():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--baseline=no-such-revision-xyz"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert "no-such-revision-xyz" in out.stderr


@pytest.mark.slow
@pytest.mark.skipif(not in_git_checkout(), reason="needs a git checkout")
def test_tiny_model_against_head(tmp_path):
    """Both workers run the same steps; the baseline's package is HEAD's, unpacked elsewhere."""
    rows_file = tmp_path / "rows.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--baseline=HEAD",
            "--models=tiny",
            "--shapes=2x16",
            "--workloads=train,infer",
            "--reps=2",
            "--warmup=0",
            "--baseline_xla_cpu_dots=default",
            f"--json={rows_file}",
        ],
        check=True,
        timeout=900,
    )
    rows = json.loads(rows_file.read_text())
    assert [(r["workload"], r["model"], r["batch"], r["length"]) for r in rows] == [
        ("train", "tiny", 2, 16),
        ("infer", "tiny", 2, 16),
    ]
    for row in rows:
        assert row["baseline_step_s"] > 0 and row["current_step_s"] > 0
        assert row["speedup"] == pytest.approx(row["baseline_step_s"] / row["current_step_s"])
        assert Path(row["current_package"]) == REPO / "jaxformer"
        assert not Path(row["baseline_package"]).is_relative_to(REPO)
        assert (row["baseline_xla_cpu_dots"], row["current_xla_cpu_dots"]) == ("default", "onednn")
        assert row["baseline_onednn"] is False
