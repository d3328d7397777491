"""Smoke test of benchmarks/mlm_step.py on one layer and a small batch: both sides run and start
from the same loss; never timings against each other."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_mlm_step_runs_both_sides_to_the_same_first_loss(tmp_path):
    out = tmp_path / "mlm.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    args = ["--shape=4x16", "--layers=1", "--reps=1", "--warmup=0", f"--json={out}"]
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "mlm_step.py"), *args],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    r = json.loads(out.read_text())
    assert r["target_slots"] == 16 and r["targets"] > 0 and r["layers"] == 1
    assert abs(r["first_loss"]["dense"] - r["first_loss"]["sparse"]) < 1e-4
    assert all(len(r["times_s"][side]) == 1 and r["median_s"][side] > 0 for side in r["times_s"])
