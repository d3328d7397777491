"""Host-side metrics on hand-made values: classification metrics, the finite check, and the
evaluation loop dropping padding rows."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.tasks.classification import Classification
from jaxformer.training import metrics, scores
from jaxformer.training.parallel import Parallelism


def test_classification_metrics_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    labels = np.array([0, 0, 1, 1])  # predicted 0, 1, 1, 0
    loss = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    m = scores.single_label(logits, labels, loss, label_names=("0", "1"))
    assert m["examples"] == 4
    assert m["accuracy"] == 0.5
    assert m["loss"] == pytest.approx(0.25)
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    assert (m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5)


def test_classification_metrics_of_no_examples_are_nan():
    m = scores.single_label(np.zeros((0, 2)), np.zeros(0, int), np.zeros(0), ("0", "1"))
    assert m["examples"] == 0 and math.isnan(m["accuracy"]) and math.isnan(m["loss"])


def test_check_finite_names_the_step_and_the_metric():
    rows = [{"loss": 0.5, "grad_norm": 1.0}, {"loss": float("nan"), "grad_norm": 1.0}]
    metrics.check_finite(10, rows[:1])
    with pytest.raises(metrics.TrainingError, match=r"non-finite loss at step 10 \(loss=nan\)"):
        metrics.check_finite(10, rows)


def test_evaluate_batches_drops_padding_rows_and_restores_the_order(make_config):
    def eval_fn(state, batch):  # logits favour label 1 where the id is odd
        odd = (batch["input_ids"][:, 0] % 2).astype(jnp.float32)
        logits = jnp.stack([1 - odd, odd], -1)
        return {"logits": logits, "loss": odd + 1, "labels": batch["labels"]} | {
            k: batch[k] for k in ("weights", "index")
        }

    batches = [
        {"input_ids": np.array([[1], [2]]), "labels": np.array([1, 0]), "weights": np.ones(2)},
        {"input_ids": np.array([[3], [9]]), "labels": np.array([0, 0]), "weights": np.eye(2)[0]},
    ]
    for batch, index in zip(batches, ([2, 0], [1, -1]), strict=True):
        batch["index"] = np.array(index)
    task = Classification(make_config(), tokenizer=None)
    par = Parallelism("single")
    m = metrics.evaluate_batches(eval_fn, par, None, batches, task, "test")
    assert m["examples"] == 3
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["loss"] == pytest.approx((2 + 1 + 2) / 3)
    kept = {"index": [np.array([2, 0]), np.array([1])], "x": [np.ones((2, 3)), np.ones((1, 5))]}
    outputs = metrics.split_outputs(kept, token_outputs=("x",))
    np.testing.assert_array_equal(outputs["index"], [0, 1, 2])
    np.testing.assert_array_equal(outputs["x"].sum(1), [3, 5, 3])  # padded to 5, reordered
