"""The benchmark scripts import each other by module name (harness, vs_pytorch), as they do when
run from benchmarks/; tests import them the same way."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
