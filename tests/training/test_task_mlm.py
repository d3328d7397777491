"""Masked-LM further pre-training on the tiny archive through the one training loop: the loss
falls, validation and eval report the perplexity of the chosen tokens, the export is a
transformers masked-LM folder, and a classifier fine-tunes from it."""

import json
import math

import numpy as np
import pytest

from jaxformer import tasks
from jaxformer.data import batching
from jaxformer.training import evaluate, loop


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
