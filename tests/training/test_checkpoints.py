"""Checkpoints: a save restores exactly, a killed run resumes to the same parameters, and a
diverging run keeps its last good checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.training import checkpoints, evaluate, loop, metrics
from jaxformer.training.parallel import Parallelism


def test_save_then_restore_gives_the_same_state_and_meta(tmp_path):
    state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.asarray(7, jnp.int32)}
    ckpts = checkpoints.Checkpoints(tmp_path)
    ckpts.save("latest", 7, state, {"step": 7, "best_score": 0.5})
    ckpts.wait()
    got, meta = ckpts.restore("latest", None, checkpoints.abstract_state(state))
    with pytest.raises(FileNotFoundError, match=r"no best checkpoint .*steps there: none"):
        ckpts.restore("best", None, checkpoints.abstract_state(state))
    with pytest.raises(FileNotFoundError, match=r"at step 3 .*steps there: \[7\]"):
        ckpts.restore("latest", 3, checkpoints.abstract_state(state))
    ckpts.close()
    assert meta == {"step": 7, "best_score": 0.5}
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(got), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


class Crash(Exception):
    pass


def final_params(workdir, config):
    _, _, _, params, _ = evaluate.load_trained(workdir, "latest", config=config)
    return params


def test_killed_and_resumed_run_ends_with_the_same_params(tmp_path, make_config, monkeypatch):
    config = make_config(num_train_steps=8, checkpoint_every=4, eval_every=100)
    loop.train_and_evaluate(config, tmp_path / "straight")

    calls = {"n": 0}
    put_batch = Parallelism.put_batch

    def crash_after_four(self, batch):
        calls["n"] += 1
        if calls["n"] == 6:  # dies inside step 6; the last checkpoint is step 4
            raise Crash
        return put_batch(self, batch)

    monkeypatch.setattr(Parallelism, "put_batch", crash_after_four)
    with pytest.raises(Crash):
        loop.train_and_evaluate(config, tmp_path / "resumed")
    monkeypatch.setattr(Parallelism, "put_batch", put_batch)
    loop.train_and_evaluate(config, tmp_path / "resumed")

    a, b = final_params(tmp_path / "straight", config), final_params(tmp_path / "resumed", config)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, make_config):
    workdir = tmp_path / "run"
    config = make_config(num_train_steps=4, checkpoint_every=4)
    loop.train_and_evaluate(config, workdir)
    before = {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").rglob("*") if p.is_file()}

    config = make_config(num_train_steps=40, checkpoint_every=2, log_every=1)
    config.optimizer.learning_rate = 1e38
    config.optimizer.clip_norm = 1e38
    with pytest.raises(metrics.TrainingError, match="non-finite"):
        loop.train_and_evaluate(config, workdir)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and max(steps) < 40
    for p, mtime in before.items():
        assert not p.exists() or p.stat().st_mtime_ns == mtime
