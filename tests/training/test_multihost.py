"""train.py --multihost as a user runs it on several hosts, here as two processes on 127.0.0.1
with one or two fake CPU devices each: the same losses as one process on as many devices, one
metrics row per step, each checkpoint written once, both processes resuming after a kill or a
signal that only one of them saw, eval.py and train.py in one process on what they wrote, and an
`error:` line instead of a hang when one of them dies. Plus the flags' bad combinations."""

import json
import shutil
import signal
import socket
import time
import types

import jax
import numpy as np
import pytest

from jaxformer.training import cli, parallel, processes

STEPS = 24
FIELDS = dict(
    num_train_steps=STEPS,
    log_every=1,
    eval_every=8,
    checkpoint_every=8,
    xla_cpu_dots="default",  # oneDNN's programs stay out of the XLA cache the scripts share
    **{"data.bucketing": False},  # one batch shape: one compilation of each step
)
HEARTBEAT_S = 5  # a dead process is noticed after this long


def devices(n: int) -> dict:
    return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}


def saved_steps(folder):
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def wait_for(condition, procs, timeout=240.0):
    """Polls `condition()` until it holds; fails if a process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.poll() is None, proc.stderr_text()
        assert time.monotonic() < deadline, procs[0].stderr_text()
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def args(archive, tmp_path_factory):
    """train.py's arguments for configs/tiny.py with FIELDS, then `changes`; a data cache of
    this module's own, so that the first two-process run builds it."""
    cache = tmp_path_factory.mktemp("multihost-cache")

    def make(workdir, **changes):
        fields = {**FIELDS, **changes}
        return [
            "train.py",
            "--config",
            "configs/tiny.py",
            "--workdir",
            str(workdir),
            f"--config.data.archive={archive}",
            f"--config.data.cache_dir={cache}",
            *(f"--config.{k}={v}" for k, v in fields.items()),
        ]

    return make


@pytest.fixture(scope="module")
def start_processes(start_script):
    """Starts `args` as the processes of one run on 127.0.0.1 (a free port), each with
    `devices_per_process` CPU devices; their logs under `logs/process<i>`."""

    def start(args, devices_per_process, logs, num_processes=2):
        port = free_port()
        return [
            start_script(
                *args,
                "--multihost",
                f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={num_processes}",
                f"--process_id={i}",
                f"--heartbeat_timeout={HEARTBEAT_S}",
                "--initialization_timeout=120",
                logs=logs / f"process{i}",
                env=devices(devices_per_process),
            )
            for i in range(num_processes)
        ]

    return start


def finish(procs, timeout=300):
    for proc in procs:
        assert proc.wait(timeout=timeout) == 0, proc.stderr_text()


def interrupted_then_rerun(n, root, args, start_processes, run_script):
    """A run of two processes with `n` devices each, interrupted (n=1: both killed with SIGKILL
    after the first checkpoint; n=2: SIGTERM to process 1 alone), then rerun to the end; and the
    same run in one process on as many devices."""
    workdir = root / "run"
    first = start_processes(args(workdir), n, root / "first")
    if n == 1:
        checkpoints = workdir / "checkpoints"
        wait_for(lambda: checkpoints.is_dir() and saved_steps(checkpoints), first)
        for proc in first:
            proc.send_signal(signal.SIGKILL)
        assert [proc.wait() for proc in first] == [-signal.SIGKILL] * 2
    else:
        metrics = workdir / "metrics.jsonl"
        wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2, first)
        first[1].send_signal(signal.SIGTERM)
        stopped = [proc.wait(timeout=120) for proc in first]
        assert stopped == [143, 143], first[0].stderr_text() + first[1].stderr_text()
    interrupted_at = max(saved_steps(workdir / "checkpoints"))
    assert interrupted_at < STEPS
    rerun = start_processes(args(workdir), n, root / "rerun")
    finish(rerun)

    reference = root / "reference"
    r = run_script(*args(reference), env=devices(2 * n))
    assert r.returncode == 0, r.stderr
    return types.SimpleNamespace(
        workdir=workdir,
        reference=reference,
        first=first,
        rerun=rerun,
        interrupted_at=interrupted_at,
    )


@pytest.fixture(scope="module")
def run_2x1(tmp_path_factory, args, start_processes, run_script):
    root = tmp_path_factory.mktemp("multihost-2x1")
    return interrupted_then_rerun(1, root, args, start_processes, run_script)


@pytest.fixture(scope="module")
def run_2x2(tmp_path_factory, args, start_processes, run_script):
    root = tmp_path_factory.mktemp("multihost-2x2")
    return interrupted_then_rerun(2, root, args, start_processes, run_script)


@pytest.fixture(params=["run_2x1", "run_2x2"])
def multihost_run(request):
    return request.getfixturevalue(request.param)


@pytest.mark.slow
def test_losses_and_validation_equal_one_process(multihost_run, read_metrics):
    for split, keys in (("train", ("loss", "accuracy")), ("validation", ("loss", "accuracy"))):
        got = read_metrics(multihost_run.workdir, split)
        want = read_metrics(multihost_run.reference, split)
        assert [r["step"] for r in got] == [r["step"] for r in want]
        for key in keys:
            np.testing.assert_allclose(
                [r[key] for r in got], [r[key] for r in want], atol=1e-5, err_msg=f"{split} {key}"
            )


@pytest.mark.slow
def test_one_metrics_row_per_step_and_each_checkpoint_once(multihost_run, read_metrics):
    workdir = multihost_run.workdir
    assert [r["step"] for r in read_metrics(workdir, "train")] == list(range(1, STEPS + 1))
    assert [r["step"] for r in read_metrics(workdir, "validation")] == [8, 16, 24]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["16", "24"]
    assert len(list((workdir / "best").iterdir())) == 1
    leftovers = [p for p in workdir.rglob("*") if "tmp" in p.name or "previous" in p.name]
    assert leftovers == []
    for proc in multihost_run.rerun:  # both processes resumed, from the same step
        assert f"resuming from step {multihost_run.interrupted_at}" in proc.stderr_text()


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_at_the_same_step(run_2x2):
    lines = [
        next(line for line in proc.stderr_text().splitlines() if "stopped by SIGTERM" in line)
        for proc in run_2x2.first
    ]
    assert lines[0] == lines[1]
    assert f"at step {run_2x2.interrupted_at} " in lines[0]


@pytest.mark.slow
def test_one_process_evaluates_and_resumes_what_two_wrote(
    run_2x2, read_metrics, run_script, args, tmp_path
):
    """One device reads the checkpoints of four devices in two processes."""
    workdir = tmp_path / "run"
    shutil.copytree(run_2x2.workdir, workdir)
    r = run_script(
        "eval.py", "--workdir", str(workdir), "--split", "validation", "--json", env=devices(1)
    )
    assert r.returncode == 0, r.stderr
    best = max(read_metrics(workdir, "validation"), key=lambda row: row["accuracy"])
    assert json.loads(r.stdout)["accuracy"] == best["accuracy"]

    r = run_script(*args(workdir, num_train_steps=STEPS + 2), env=devices(1))
    assert r.returncode == 0, r.stderr
    assert f"resuming from step {STEPS}" in r.stderr
    assert saved_steps(workdir / "checkpoints") == [24, 26]


@pytest.mark.slow
@pytest.mark.parametrize("dies", [1, 0], ids=["worker-dies", "coordinator-dies"])
def test_a_dead_process_ends_the_other_with_an_error(tmp_path, args, start_processes, dies):
    workdir = tmp_path / "run"
    procs = start_processes(args(workdir), 1, tmp_path / "logs")
    metrics = workdir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, procs)
    procs[dies].send_signal(signal.SIGKILL)
    survivor = procs[1 - dies]
    start = time.monotonic()
    status = survivor.wait(timeout=6 * HEARTBEAT_S + 30)
    assert status != 0 and time.monotonic() - start < 6 * HEARTBEAT_S
    stderr = survivor.stderr_text()
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    if dies == 1:  # the coordinator's process reports it in one line
        assert len(errors) == 1 and "another process most likely died" in errors[0], stderr
    else:  # jax ends a process that lost the coordinator itself, or the collective fails first
        assert errors or "another task died" in stderr, stderr


@pytest.mark.slow
def test_a_diverging_run_stops_every_process(tmp_path, args, start_processes, one_error_line):
    procs = start_processes(
        args(
            tmp_path / "run",
            num_train_steps=6,
            log_every=5,
            eval_every=3,
            **{"optimizer.learning_rate": 1e30},
        ),
        1,
        tmp_path / "logs",
    )
    for proc in procs:
        assert proc.wait(timeout=300) == 1
        one_error_line(proc.stderr_text(), "non-finite", "learning_rate")


# ----------------------------------------------------------------------------- flags and checks


def test_distributed_arguments_from_flags_then_environment():
    none = dict.fromkeys(cli.DISTRIBUTED)
    assert cli.distributed_arguments(False, none, {}) is None
    assert cli.distributed_arguments(True, none, {}) == {}  # jax detects the cluster
    given = dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)
    assert cli.distributed_arguments(True, given, {}) == given
    environ = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:99", "JAX_NUM_PROCESSES": "4"}
    assert cli.distributed_arguments(True, dict(none, process_id=3), environ) == dict(
        coordinator_address="10.0.0.1:99", num_processes=4, process_id=3
    )
    # Without --multihost the environment is not read.
    assert cli.distributed_arguments(False, none, environ) is None


@pytest.mark.parametrize(
    "multihost, given, environ, words",
    [
        (False, dict(num_processes=2), {}, ["--num_processes", "add --multihost"]),
        (True, dict(num_processes=2, process_id=0), {}, ["--coordinator_address", "give all"]),
        (
            True,
            dict(coordinator_address="x:1", num_processes=2, process_id=2),
            {},
            ["process_id=2 must be in [0, num_processes=2)"],
        ),
        (True, dict(coordinator_address="host", num_processes=2, process_id=0), {}, ["host:port"]),
        (True, {}, {"JAX_NUM_PROCESSES": "two"}, ["$JAX_NUM_PROCESSES='two'", "integer"]),
    ],
)
def test_distributed_arguments_refuse_a_bad_combination(multihost, given, environ, words):
    with pytest.raises(ValueError) as e:
        cli.distributed_arguments(multihost, dict(dict.fromkeys(cli.DISTRIBUTED), **given), environ)
    for word in words:
        assert word in str(e.value)


def test_train_says_which_flag_is_missing(tmp_path, run_script, one_error_line):
    r = run_script(
        "train.py", "--workdir", str(tmp_path), "--multihost", "--num_processes=2", "--process_id=1"
    )
    assert r.returncode == 1
    one_error_line(r.stderr, "--coordinator_address (or $JAX_COORDINATOR_ADDRESS)")


def test_several_processes_train_only_under_jit(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    processes.check_processes(parallel.Parallelism("jit"))
    for kind in ("pmap", "single"):
        with pytest.raises(ValueError, match=f"parallelism='{kind}'.*2 processes.*=jit"):
            processes.check_processes(parallel.Parallelism(kind))


def test_one_process_needs_no_agreement():
    calls = []
    assert processes.on_process_0("data", "to build", lambda: calls.append(1) or "built") == "built"
    assert calls == [1]
    assert processes.agreed_signal(None) is None and processes.agreed_signal(15) == 15
