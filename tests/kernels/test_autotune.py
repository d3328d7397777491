"""kernels.autotune: "auto" runs the GEMM library measured faster on this machine, measured
once per machine and read back after."""

import json

import pytest

from jaxformer.kernels import autotune


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache dir and no remembered choice; returns the list of measurements made."""
    monkeypatch.setenv("JAXFORMER_CACHE_DIR", str(tmp_path))
    autotune.fastest_gemm.cache_clear()
    calls = []
    yield calls, monkeypatch
    autotune.fastest_gemm.cache_clear()


def test_the_faster_library_is_chosen_and_kept_per_machine(fresh, tmp_path):
    calls, monkeypatch = fresh
    times = {"mkl": 0.065, "xla": 0.035}
    monkeypatch.setattr(autotune, "measure_gemms", lambda: calls.append(1) or dict(times))
    assert autotune.fastest_gemm() == "xla" and len(calls) == 1
    [path] = (tmp_path / "autotune").iterdir()
    record = json.loads(path.read_text())
    assert record["key"] == autotune.machine_key() and record["seconds"] == times
    autotune.fastest_gemm.cache_clear()  # a new process reads the file, measures nothing
    times.update(mkl=0.01)
    assert autotune.fastest_gemm() == "xla" and len(calls) == 1
    path.write_text("{not json")  # a damaged record is measured again
    autotune.fastest_gemm.cache_clear()
    assert autotune.fastest_gemm() == "mkl" and len(calls) == 2


def test_another_machine_measures_again(fresh, tmp_path):
    calls, monkeypatch = fresh
    monkeypatch.setattr(autotune, "measure_gemms", lambda: calls.append(1) or {"mkl": 1, "xla": 2})
    assert autotune.fastest_gemm() == "mkl"
    monkeypatch.setattr(autotune, "cpu_model", lambda: "Another CPU")
    autotune.fastest_gemm.cache_clear()
    autotune.fastest_gemm()
    assert len(calls) == 2 and len(list((tmp_path / "autotune").iterdir())) == 2


def test_the_measurement_runs_both_libraries():
    from jaxformer.kernels import cpu

    if not cpu.mkl_available():
        pytest.skip("the MKL kernel is not built here")
    seconds = autotune.measure_gemms()
    assert set(seconds) == {"mkl", "xla"} and all(0 < s < 10 for s in seconds.values())
