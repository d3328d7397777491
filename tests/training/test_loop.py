"""The training loop end to end on a tiny archive: it learns, evaluation and export read what it
wrote, a signal stops it cleanly, and bad setups fail before anything is written."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from jaxformer import tasks
from jaxformer.training import evaluate, loop, processes
from jaxformer.training.parallel import Parallelism


def test_tiny_run_learns_and_eval_reads_it(tmp_path, make_config, read_metrics):
    config = make_config(num_epochs=10.0, log_every=6, export_dir="hf")
    workdir = tmp_path / "run"
    loop.train_and_evaluate(config, workdir)
    train = read_metrics(workdir, "train")
    assert train[-1]["loss"] < train[0]["loss"] - 0.2
    assert (workdir / "metrics.png").stat().st_size > 0
    assert any((workdir / "tensorboard").iterdir())
    exported = json.loads((workdir / "hf" / "config.json").read_text())
    assert exported["id2label"] == {"0": "neg", "1": "pos"}  # IMDB's names, not LABEL_i
    assert exported["label2id"] == {"neg": 0, "pos": 1}

    metrics = evaluate.evaluate_split(workdir, "test")
    assert metrics["examples"] == 48  # the last partial batch is padded and masked, not dropped
    assert metrics["accuracy"] > 0.7
    assert json.loads((workdir / "eval_test.json").read_text())["accuracy"] == metrics["accuracy"]
    assert "confusion matrix" in evaluate.format_metrics(metrics)

    # The exported Hugging Face folder gives the same predictions in transformers.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config, tok, model, params, _ = evaluate.load_trained(workdir)
    texts = ["a wonderful superb film", "awful boring waste of time"]
    ours = evaluate.predict(texts, tok, model, params, xla_cpu_dots=config.xla_cpu_dots)
    hf = transformers.BertForSequenceClassification.from_pretrained(workdir / "hf").eval()
    enc = tok(texts)
    with torch.no_grad():
        logits = hf(
            input_ids=torch.tensor(enc["input_ids"], dtype=torch.long),
            attention_mask=torch.tensor(enc["attention_mask"], dtype=torch.long),
        ).logits
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), ours, atol=1e-5)
    hf_metrics = evaluate.evaluate_split(workdir, "test", hf_dir=workdir / "hf")
    assert hf_metrics["accuracy"] == metrics["accuracy"]


def test_sigterm_saves_a_checkpoint_then_stops(tmp_path, make_config, monkeypatch):
    config = make_config(num_train_steps=20, checkpoint_every=100)
    calls = {"n": 0}
    put_batch = Parallelism.put_batch

    def sigterm_at_three(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return put_batch(self, batch)

    monkeypatch.setattr(Parallelism, "put_batch", sigterm_at_three)
    with pytest.raises(processes.Stopped, match="SIGTERM at step 3 .*resume"):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["3"]


def test_eval_batches_follow_the_config(make_config):
    config = make_config(eval_batch_size=20)
    task = tasks.make(config, loop.build_tokenizer(config))
    _, splits = loop.build_data(config, task, names=("test",))
    batches = loop.build_eval_batches(config, splits["test"], task)
    weights = np.concatenate([b["weights"] for b in batches])
    assert {len(b["labels"]) for b in batches} == {20}
    assert len(weights) == 60 and weights.sum() == len(splits["test"]) == 48  # filler weighs 0


def test_missing_archive_is_a_clear_error(tmp_path, make_config):
    config = make_config(archive=tmp_path / "nowhere" / "aclImdb_v1.tar.gz")
    with pytest.raises(Exception, match="aclImdb_v1.tar.gz"):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() or not any(
        (tmp_path / "run" / "checkpoints").iterdir()
    )


@pytest.mark.slow
def test_an_architecture_transformers_lacks_is_refused_before_training_unless_unexported(
    tmp_path, make_config
):
    fields = {"model.arch.position_embedding_type": "sinusoidal", "export_dir": "hf_export"}
    config = make_config(**fields)
    with pytest.raises(ValueError, match="--config.export_dir='hf_export'.*sinusoidal.*=None"):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    config = make_config(num_train_steps=1, **{"model.arch.scale_embedding": True})
    loop.train_and_evaluate(config, tmp_path / "unexported")
    assert not (tmp_path / "unexported" / "hf_export").exists()


def test_minilm_fine_tunes_on_real_imdb(tmp_path, minilm_dir, repo, experiment_configs):
    """1,000 IMDB train reviews, max length 128, one epoch: >= 75% on 1,000 test reviews."""
    archive = repo.parent / "shared" / "data" / "aclImdb_v1.tar.gz"
    if not archive.exists():
        pytest.skip(f"{archive} not found")
    config = experiment_configs.imdb_minilm.get_config()
    config.model.checkpoint = str(minilm_dir)
    config.data.update(
        archive=str(archive),
        cache_dir=str(tmp_path / "cache"),
        max_length=128,
        truncation="head",
        train_limit=1000,
        validation_limit=200,
        test_limit=1000,
    )
    # With only 1,000 reviews, more and larger updates than batch 32 at 5e-5: batch 8 at 1e-4
    # gives 125 steps and reached 79.0% (batch 32 at 5e-5: 64.6%).
    config.update(
        num_epochs=1.0,
        eval_every=1000,
        checkpoint_every=1000,
        export_dir=None,
        log_every=10,
        batch_size=8,
        eval_batch_size=32,
    )
    config.optimizer.learning_rate = 1e-4
    loop.train_and_evaluate(config, tmp_path / "run")
    metrics = evaluate.evaluate_split(tmp_path / "run", "test")
    print(f"MiniLM, 1,000 train reviews, length 128: test accuracy {metrics['accuracy']:.4f}")
    assert metrics["examples"] == 1000
    assert metrics["accuracy"] >= 0.75


def test_a_tokenizer_larger_than_the_model_is_refused(make_config):
    config = make_config()
    tokenizer, model, _ = loop.build_model(config, jax.random.key(0))
    assert model.config.label_names == ("neg", "pos")
    small = model.config.replace(vocab_size=tokenizer.vocab_size - 1)
    with pytest.raises(ValueError, match=f"{tokenizer.vocab_size} tokens but the model's vocab"):
        loop.check_vocabulary(tokenizer, small)


def test_evaluation_truncates_to_the_positions_the_model_has(trained_workdir):
    """A model whose position table is shorter than the config's max length gets inputs cut to
    its table, so a long review gets finite probabilities (not NaN from positions past it)."""
    config, tok, model, params, _ = evaluate.load_trained(trained_workdir)
    short = model.clone(config=model.config.replace(max_position_embeddings=40))
    config.unlock()
    config.data.max_length = 64
    assert evaluate._max_length(config, short) == 40
    long_review = " ".join(["great"] * 200)
    tok40 = type(tok)(tok.tokenizer, max_length=40, truncation=config.data.truncation)
    params40 = jax.tree_util.tree_map_with_path(
        lambda path, x: x[:40] if "position" in jax.tree_util.keystr(path) else x, params
    )
    probs = evaluate.predict([long_review], tok40, short, params40)
    assert np.isfinite(probs).all()


def test_dropout_overrides_reach_the_model_and_none_keeps_the_architecture(make_config):
    config = make_config()
    _, model, _ = loop.build_model(config, jax.random.key(0))
    assert model.config.attention_probs_dropout_prob == 0.0  # tiny.py's arch
    config.model.overrides.attention_probs_dropout_prob = 0.25
    _, model, _ = loop.build_model(config, jax.random.key(0))
    assert model.config.attention_probs_dropout_prob == 0.25
    assert model.config.hidden_dropout_prob == 0.0  # left None: the arch's value
