"""What a kill, a diverging run or a damaged file leaves in a workdir, and the rerun that must
still work: best/ ahead of checkpoints/, checkpoints with NaN in them, a truncated or deleted
file inside a checkpoint, the rows of metrics.jsonl written twice."""

import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxformer.models import BertForSequenceClassification, init_params
from jaxformer.models.config import BertConfig
from jaxformer.training import checkpoints, evaluate, loop, metrics, steps


class Crash(Exception):
    pass


def saved_steps(folder):
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def test_kill_between_the_best_and_the_latest_save_resumes(tmp_path, make_config, monkeypatch):
    # eval_every == checkpoint_every, as in the experiment configs: step 4 saves best/ first.
    config = make_config(num_train_steps=8, eval_every=4, checkpoint_every=4)
    workdir = tmp_path / "run"
    save = checkpoints.Checkpoints.save

    def die_before_the_latest_of_step_4(self, which, step, state, meta):
        if (which, step) == ("latest", 4):
            raise Crash
        return save(self, which, step, state, meta)

    monkeypatch.setattr(checkpoints.Checkpoints, "save", die_before_the_latest_of_step_4)
    with pytest.raises(Crash):
        loop.train_and_evaluate(config, workdir)
    assert saved_steps(workdir / "best") == [4] and saved_steps(workdir / "checkpoints") == []

    monkeypatch.setattr(checkpoints.Checkpoints, "save", save)
    loop.train_and_evaluate(config, workdir)
    assert saved_steps(workdir / "checkpoints") == [4, 8]
    best = checkpoints.Checkpoints(workdir, create=False)
    step, record = best.best_record()
    best.close()
    validation = {r["step"]: r["accuracy"] for r in _rows(workdir) if r["split"] == "validation"}
    assert record["best_score"] == max(validation.values()) == validation[step]


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_resumed_run_writes_one_metrics_row_per_step_and_split(tmp_path, make_config, monkeypatch):
    config = make_config(num_train_steps=8, checkpoint_every=4, eval_every=2, log_every=1)
    workdir = tmp_path / "run"
    evaluate_batches = metrics.evaluate_batches

    def crash_at_the_validation_of_step_6(*args, **kwargs):
        if any(r["step"] == 6 and r["split"] == "train" for r in _rows(workdir)):
            raise Crash
        return evaluate_batches(*args, **kwargs)

    monkeypatch.setattr(metrics, "evaluate_batches", crash_at_the_validation_of_step_6)
    with pytest.raises(Crash):
        loop.train_and_evaluate(config, workdir)
    assert max(r["step"] for r in _rows(workdir)) == 6  # rows of steps 5 and 6: after step 4
    monkeypatch.setattr(metrics, "evaluate_batches", evaluate_batches)
    loop.train_and_evaluate(config, workdir)

    keys = [(r["step"], r["split"]) for r in _rows(workdir)]
    assert len(keys) == len(set(keys))
    assert {s for s, split in keys if split == "train"} == set(range(1, 9))
    assert {s for s, split in keys if split == "validation"} == {2, 4, 6, 8}


def test_a_state_with_nan_is_never_saved(tmp_path):
    state = {"w": jnp.asarray([1.0, jnp.nan]), "step": jnp.asarray(3)}
    ckpts = checkpoints.Checkpoints(tmp_path)
    with pytest.raises(metrics.TrainingError, match=r"step 3: 1 arrays .*non-finite.*\['w'\]"):
        ckpts.save("best", 3, state, {"step": 3})
    ckpts.wait()
    ckpts.close()
    assert saved_steps(tmp_path / "best") == []


def _abstract_state(workdir):
    """The TrainState shapes of a workdir's checkpoints, as evaluation builds them."""
    config = evaluate.load_workdir_config(workdir)
    model = BertForSequenceClassification(
        BertConfig(**json.loads((workdir / "model_config.json").read_text()))
    )
    return jax.eval_shape(
        lambda: steps.create_state(
            model, init_params(model, jax.random.PRNGKey(0)), config.optimizer, 1
        )
    )


def test_eval_refuses_a_checkpoint_with_nan(tmp_path, trained_workdir, run_script, one_error_line):
    workdir = tmp_path / "run"
    shutil.copytree(trained_workdir, workdir)
    ckpts = checkpoints.Checkpoints(workdir)
    state, meta = ckpts.restore("best", None, _abstract_state(workdir))
    poisoned = state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
    # Written past Checkpoints.save's own check, as another program could.
    ckpts.best.save(
        5,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(poisoned), meta=ocp.args.JsonSave(dict(meta, step=5))
        ),
    )
    ckpts.wait()
    ckpts.close()

    r = run_script("eval.py", "--workdir", str(workdir), "--split", "validation")
    assert r.returncode == 1
    one_error_line(r.stderr, "best checkpoint of step 5", "NaN or inf", "--step")
    assert not (workdir / "eval_validation.json").exists()


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_restore_skips_a_damaged_newest_step(tmp_path, damage, caplog):
    states = {s: {"w": jnp.full(50_000, float(s))} for s in (4, 8)}
    ckpts = checkpoints.Checkpoints(tmp_path, keep=3)
    for s, state in states.items():
        ckpts.save("latest", s, state, {"step": s})
    ckpts.close()
    data = max(
        (p for p in (tmp_path / "checkpoints" / "8" / "state").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    if damage == "truncate":
        os.truncate(data, data.stat().st_size // 2)
    else:
        data.unlink()

    ckpts = checkpoints.Checkpoints(tmp_path, keep=3)
    with caplog.at_level(logging.WARNING, logger="jaxformer"):
        state, meta = ckpts.restore_newest_good("latest", checkpoints.abstract_state(states[4]))
    assert meta["step"] == 4 and float(state["w"][0]) == 4.0
    assert "checkpoints/8 is damaged" in caplog.text
    assert "damaged/checkpoints-8" in caplog.text
    assert saved_steps(tmp_path / "checkpoints") == [4]
    assert (tmp_path / "damaged" / "checkpoints-8" / "state").is_dir()  # kept to look at
    ckpts.save("latest", 8, states[8], {"step": 8})  # the step can be saved again
    ckpts.close()


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(
    tmp_path, trained_workdir, make_config, run_script, one_error_line, caplog
):
    workdir = tmp_path / "run"
    shutil.copytree(trained_workdir, workdir)
    for p in (workdir / "checkpoints" / "4" / "state").rglob("*"):
        if p.is_file() and p.stat().st_size > 1000:
            os.truncate(p, p.stat().st_size // 2)

    r = run_script("eval.py", "--workdir", str(workdir), "--checkpoint", "latest")
    assert r.returncode == 1
    one_error_line(r.stderr, f"{workdir}/checkpoints/4 is damaged", "--step", "[2, 4]")

    config = make_config(num_train_steps=4, checkpoint_every=2, eval_every=4)
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        loop.train_and_evaluate(config, workdir)
    assert "checkpoints/4 is damaged" in caplog.text
    assert "resuming from step 2" in caplog.text
    assert saved_steps(workdir / "checkpoints") == [2, 4]
    assert (workdir / "damaged" / "checkpoints-4").is_dir()
    _, _, _, params, source = evaluate.load_trained(workdir, "latest")
    assert source == "latest checkpoint, step 4"
    _, _, _, reference, _ = evaluate.load_trained(trained_workdir, "latest")
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(reference), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
