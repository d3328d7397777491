"""train.py, eval.py and `python -m jaxformer.predict` as a user runs them: killed, stopped by a
signal, run twice at once, out of disk, given bad input. Each ends in a workdir that resumes and in
one `error:` line (no traceback) and the conventional exit status."""

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from jaxformer.training import loop


def saved_steps(folder):
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def wait_for(condition, proc, timeout=240.0):
    """Polls `condition()` until it holds; fails if `proc` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.stderr_text()
        assert time.monotonic() < deadline, proc.stderr_text()
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_after_a_best_save_then_rerun_finishes(tmp_path, train_args, start_script):
    """best/ saved at step 2 while checkpoints/ has nothing yet: the rerun trains through step
    2 again and must not save best/2 a second time."""
    workdir = tmp_path / "run"
    args = train_args(workdir, num_train_steps=12, eval_every=2, checkpoint_every=100)
    proc = start_script(*args, logs=tmp_path / "first")
    wait_for(lambda: (workdir / "best").is_dir() and saved_steps(workdir / "best"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert saved_steps(workdir / "checkpoints") == []

    rerun = start_script(*args, logs=tmp_path / "second")
    assert rerun.wait(timeout=300) == 0, rerun.stderr_text()
    assert saved_steps(workdir / "checkpoints") == [12]
    assert len(saved_steps(workdir / "best")) == 1


def test_diverging_run_saves_nothing_and_says_so(tmp_path, train_args, run_script, one_error_line):
    # Validation at step 3 comes before the log of step 5 would check the losses.
    workdir = tmp_path / "run"
    r = run_script(
        *train_args(
            workdir,
            num_train_steps=6,
            log_every=5,
            eval_every=3,
            **{"optimizer.learning_rate": 1e30},
        )
    )
    assert r.returncode == 1
    one_error_line(r.stderr, "non-finite", "learning_rate")
    assert saved_steps(workdir / "best") == [] and saved_steps(workdir / "checkpoints") == []


HOLD_LOCK = """
import sys, time
from jaxformer.data.locks import FileLock
FileLock(sys.argv[1], "workdir").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_second_run_on_a_workdir_exits_at_once_naming_the_holder(
    tmp_path, train_args, run_script, one_error_line, caplog
):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(workdir / "train.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = run_script(*train_args(workdir, num_train_steps=2))
        assert r.returncode == 1
        one_error_line(r.stderr, "in use", f"pid {holder.pid}", f"host {socket.gethostname()}")
        assert not (workdir / "checkpoints").exists()
    finally:
        holder.kill()  # SIGKILL: the lock file keeps its record
        holder.wait()

    from jaxformer.data.locks import FileLock

    with caplog.at_level(logging.WARNING, logger="jaxformer"):
        lock = FileLock(workdir / "train.lock", f"workdir {workdir}").acquire()
    lock.release()
    assert f"left by pid {holder.pid}" in caplog.text and "no longer running" in caplog.text


BUILD_CACHE = """
import logging, sys
from jaxformer.data import imdb
from jaxformer.testing import FakeTokenizer
logging.basicConfig(level=logging.INFO)
imdb.load_imdb(FakeTokenizer(), archive=sys.argv[1], cache_dir=sys.argv[2])
print("built", flush=True)
"""


def test_a_process_waits_for_another_building_the_data_cache(tmp_path, archive):
    from jaxformer.data.locks import FileLock

    cache = tmp_path / "cache"
    lock = FileLock(cache / "build.lock", "the data cache").acquire()  # another process's build
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILD_CACHE, str(archive), str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:
            if "waiting for the data cache" in line:
                break
        else:
            pytest.fail(f"no wait: {proc.communicate()}")
        time.sleep(0.5)
        assert proc.poll() is None and not (cache / "tokens").exists()
    finally:
        lock.release()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "built" and len(list((cache / "tokens").glob("*.npz"))) == 3


@pytest.mark.parametrize(
    "signum, status",
    [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
)
def test_signal_saves_then_exits_with_its_status(
    tmp_path, train_args, start_script, signum, status
):
    workdir = tmp_path / "run"
    args = train_args(workdir, num_train_steps=500, checkpoint_every=1000, log_every=1)
    proc = start_script(*args, logs=tmp_path / "logs")
    metrics = workdir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().strip(), proc)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == status
    stderr = proc.stderr_text()
    assert "Traceback" not in stderr
    name = signal.Signals(signum).name
    assert f"stopped by {name} at step" in stderr and "rerun the same command" in stderr
    (step,) = saved_steps(workdir / "checkpoints")
    assert 1 <= step < 500


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB tmpfs: room for the tiny model's first checkpoint (4 MB), not for a second."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True
    )
    if mount.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_full_disk_says_so_once_and_resumes(small_disk, make_config, train_args, run_script):
    workdir = small_disk / "run"
    fields = dict(num_train_steps=8, checkpoint_every=4, eval_every=100)
    r = run_script(*train_args(workdir, **fields))
    assert r.returncode == 1
    # Orbax's writer threads may still print tracebacks of their own (an asyncio loop closed
    # under them), so the traceback check of `one_error_line` is left out here.
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    for words in ("could not save", "step 8", "intact (steps [4])", "RESOURCE_EXHAUSTED"):
        assert words in errors[0]
    assert not [p for p in workdir.rglob("*") if "orbax-checkpoint-tmp" in p.name]

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    loop.train_and_evaluate(make_config(**fields), workdir)
    assert saved_steps(workdir / "checkpoints") == [4, 8]
    assert saved_steps(workdir / "best") == [8]


# ----------------------------------------------------------------------------- bad input


def test_train_unknown_config_key(tmp_path, train_args, run_script, one_error_line):
    workdir = tmp_path / "run"
    r = run_script(*train_args(workdir, **{"optimizer.learnin_rate": 1e-3}))
    assert r.returncode == 2
    one_error_line(r.stderr, "--config.optimizer.learnin_rate", '"learning_rate"')
    assert not workdir.exists()


def test_train_missing_archive(tmp_path, train_args, run_script, one_error_line):
    missing = tmp_path / "nowhere" / "aclImdb_v1.tar.gz"
    r = run_script(*train_args(tmp_path / "run", **{"data.archive": missing}))
    assert r.returncode == 1
    one_error_line(r.stderr, str(missing), "data.archive")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_batch_size_not_divisible_by_the_devices(
    tmp_path, train_args, run_script, one_error_line
):
    r = run_script(*train_args(tmp_path / "run", batch_size=6))  # 4 devices (XLA_FLAGS)
    assert r.returncode == 1
    one_error_line(r.stderr, "batch_size=6", "divisible by 4", "--config.batch_size")
    assert not (tmp_path / "run").exists()


def test_eval_batch_size_not_divisible_by_the_devices(trained_workdir, run_script, one_error_line):
    r = run_script("eval.py", "--workdir", str(trained_workdir), "--batch_size", "6")
    assert r.returncode == 1
    one_error_line(r.stderr, "eval_batch_size=6", "divisible by 4")


def test_eval_missing_archive(tmp_path, trained_workdir, run_script, one_error_line):
    workdir = tmp_path / "run"
    shutil.copytree(trained_workdir, workdir)
    config = json.loads((workdir / "config.json").read_text())
    missing = tmp_path / "moved" / "aclImdb_v1.tar.gz"
    config["data"]["archive"] = str(missing)
    (workdir / "config.json").write_text(json.dumps(config))
    r = run_script("eval.py", "--workdir", str(workdir), "--limit", "3")
    assert r.returncode == 1
    one_error_line(r.stderr, str(missing))


def test_predict_reads_bytes_that_are_not_utf8(trained_workdir, run_script):
    workdir = ["--workdir", str(trained_workdir), "--checkpoint", "latest"]
    r = run_script("-m", "jaxformer.predict", *workdir, b"caf\xe9 awful \xff", input=b"")
    assert r.returncode == 0, r.stderr.decode()
    assert "caf\ufffd awful \ufffd".encode() in r.stdout

    r = run_script("-m", "jaxformer.predict", *workdir, input=b"superb \xc3\n\xfe boring\n")
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    assert [line.split("\t")[2] for line in lines] == ["superb \ufffd", "\ufffd boring"]


FULL_DISK = """
import errno, sys
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jaxformer.training import checkpoints, cli

def full_disk(self, step, *args, **kwargs):
    if step == 8:
        if sys.argv[2] == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        # tensorstore's error of a write that ran out of disk: a status text, no errno
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database')
    return save(self, step, *args, **kwargs)

save = ocp.CheckpointManager.save
ocp.CheckpointManager.save = full_disk

def main(argv):
    ckpts = checkpoints.Checkpoints(argv[1])
    try:
        for step in (4, 8):
            ckpts.save("latest", step, {"w": jnp.ones(1000)}, {"step": step})
            ckpts.wait()
    finally:
        ckpts.close()

cli.run(main)
"""


@pytest.mark.parametrize("raised", ["oserror", "tensorstore"])
def test_a_save_on_a_full_disk_says_no_space_left(tmp_path, run_script, one_error_line, raised):
    r = run_script("-c", FULL_DISK, str(tmp_path), raised)
    assert r.returncode == 1
    line = one_error_line(
        r.stderr, "could not save", "step 8", "no space left on device", str(tmp_path)
    )
    assert re.search(r"\d+ bytes free", line), line
    assert "intact (steps [4])" in line
    assert "Event loop is closed" not in r.stderr


def test_eval_of_a_damaged_checkpoint_prints_its_error_line_and_nothing_more(
    tmp_path, trained_workdir, run_script, one_error_line
):
    workdir = tmp_path / "run"
    shutil.copytree(trained_workdir, workdir)
    for p in (workdir / "best").rglob("*"):  # every array's file cut short: reads fail at once
        if p.is_file() and p.stat().st_size > 1000:
            os.truncate(p, p.stat().st_size // 2)
    r = run_script("eval.py", "--workdir", str(workdir))
    assert r.returncode == 1
    one_error_line(r.stderr, f"{workdir}/best/4 is damaged")
    assert "Event loop is closed" not in r.stderr and "Exception ignored" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: "), r.stderr
