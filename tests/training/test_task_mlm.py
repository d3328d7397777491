"""Masked-LM further pre-training on the tiny archive through the one training loop: the loss
falls, validation and eval report the perplexity of the chosen tokens, the export is a
transformers masked-LM folder, and a classifier fine-tunes from it."""

import functools
import json
import math

import jax
import numpy as np
import pytest

from jaxformer import tasks
from jaxformer.data import batching, masking
from jaxformer.training import evaluate, loop, steps


def test_masked_lm_learns_and_a_classifier_fine_tunes_from_its_export(
    tmp_path, make_config, read_metrics
):
    config = make_config(
        task="masked_lm", label_names=None, num_epochs=6.0, log_every=6, export_dir="hf"
    )
    workdir = tmp_path / "mlm"
    loop.train_and_evaluate(config, workdir)
    train = read_metrics(workdir, "train")
    assert train[-1]["loss"] < train[0]["loss"] - 1.0
    validation = read_metrics(workdir, "validation")
    assert validation[-1]["perplexity"] < validation[0]["perplexity"]
    assert validation[0]["perplexity"] == pytest.approx(math.exp(validation[0]["loss"]))

    m = evaluate.evaluate_split(workdir, "test")
    assert m["masked_tokens"] > 0 and m["perplexity"] == pytest.approx(math.exp(m["loss"]))
    again = evaluate.evaluate_split(workdir, "test")
    assert (again["loss"], again["masked_tokens"]) == (m["loss"], m["masked_tokens"])  # same masks
    exported = json.loads((workdir / "hf" / "config.json").read_text())
    assert exported["architectures"] == ["BertForMaskedLM"]

    # A checkpoint's masked-LM head goes on training, and a classifier starts from it.
    further = make_config(task="masked_lm", num_train_steps=2, label_names=None)
    further.model.checkpoint, further.tokenizer = str(workdir / "hf"), None
    loop.train_and_evaluate(further, tmp_path / "further")
    fine_tune = make_config(num_train_steps=4, **{"model.checkpoint": str(workdir / "hf")})
    fine_tune.tokenizer = None  # the export's own
    loop.train_and_evaluate(fine_tune, tmp_path / "cls")
    assert len(read_metrics(tmp_path / "cls", "train")) >= 1


def test_masking_never_touches_padding_or_special_tokens(make_config):
    config = make_config(task="masked_lm", label_names=None)
    task = tasks.make(config, loop.build_tokenizer(config))
    split = task.splits(("train",))["train"]
    batches = batching.TrainBatches(split, 8, seed=0, transform=task.transform())
    special = set(tasks.mlm.special_ids(task.tokenizer))
    chosen = 0
    for step in range(batches.num_batches_per_epoch):
        batch = batches.batch(0, step)
        plain = batching.collate(split, batches.batch_indices(0, step), batch["input_ids"].shape[1])
        picked = batch["labels"] != batching.IGNORE
        np.testing.assert_array_equal(batch["labels"][picked], plain["input_ids"][picked])
        assert not np.isin(plain["input_ids"][picked], list(special)).any()
        assert (plain["attention_mask"][picked] == 1).all()
        chosen += picked.sum()
    real = split.lengths.sum() - 2 * len(split)  # [CLS] and [SEP] are never chosen
    assert 0.10 < chosen / real < 0.20


def mlm_setup(make_config, **changes):
    """The tiny masked-LM model, its train state, and the first training batches, masked."""
    config = make_config(task="masked_lm", label_names=None, **changes)
    tokenizer = loop.build_tokenizer(config)
    task = tasks.make(config, tokenizer)
    _, model, params = loop.build_model(config, jax.random.key(0), tokenizer, task)
    state = steps.create_state(model, params, config.optimizer, 10)
    split = task.splits(("train",))["train"]
    batches = batching.TrainBatches(split, 8, seed=0, transform=task.transform())
    return task, state, batches


def dense(batch):
    """The batch without its target lists: the model decodes every position."""
    return {k: v for k, v in batch.items() if k not in ("masked_positions", "masked_labels")}


def assert_sparse_equals_dense(task, state, batch):
    b, t = batch["input_ids"].shape
    p = batch["masked_positions"].shape[1]
    assert batch["masked_labels"].shape == (b, p) and p <= t
    picked = batch["labels"] != batching.IGNORE
    assert (batch["masked_labels"] != batching.IGNORE).sum() == picked.sum()  # none dropped
    eval_fn = functools.partial(
        steps.eval_step, eval_outputs=task.eval_outputs, model_inputs=task.model_inputs
    )
    sparse_out, dense_out = eval_fn(state, batch), eval_fn(state, dense(batch))
    for k in ("loss_sum", "correct", "tokens"):
        np.testing.assert_allclose(sparse_out[k], dense_out[k], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(dense_out["tokens"], picked.sum(1) * batch["weights"])
    for accum in (1, 2):  # micro-batches reshape the (b, p) arrays like the (b, t) ones
        train = functools.partial(
            steps.train_step,
            loss_terms=task.loss_terms,
            accum_steps=accum,
            model_inputs=task.model_inputs,
        )
        rng = jax.random.key(3)
        (s1, m1), (s2, m2) = train(state, batch, rng), train(state, dense(batch), rng)
        for k in ("loss", "accuracy", "grad_norm"):
            np.testing.assert_allclose(m1[k], m2[k], rtol=1e-5)
        for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_decoding_the_targets_only_gives_the_dense_loss_and_metrics(make_config):
    task, state, batches = mlm_setup(make_config)
    batch = batches.batch(0, 0)
    t = batch["input_ids"].shape[1]
    assert batch["masked_positions"].shape[1] == masking.target_slots(t, 0.15)
    assert_sparse_equals_dense(task, state, batch)
    with pytest.raises(ValueError, match="pass the batch's masked_positions to the model"):
        steps.eval_step(state, batch, eval_outputs=task.eval_outputs)  # dense logits, sparse labels


def test_a_batch_with_more_targets_than_the_default_slots_keeps_them_all(make_config, monkeypatch):
    task, state, batches = mlm_setup(make_config)
    monkeypatch.setattr(masking, "target_slots", lambda length, mask_prob: 2)
    batch = batches.batch(0, 0)
    most = int((batch["labels"] != batching.IGNORE).sum(1).max())
    assert most > 2
    assert batch["masked_positions"].shape[1] == 1 << (most - 1).bit_length()
    assert_sparse_equals_dense(task, state, batch)
