"""The pure steps: the cross-entropy on hand-computed values, what train_step averages over, and
eval_step's per-example outputs."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from jaxformer import tasks
from jaxformer.training import loop, steps


def test_cross_entropy_by_hand():
    # softmax([0, ln 3]) = [1/4, 3/4]; softmax([2, 2]) = [1/2, 1/2]
    logits = jnp.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)], [2.0, 2.0]])
    got = tasks.cross_entropy(logits, jnp.array([1, 0, 1]))
    np.testing.assert_allclose(got, [math.log(4 / 3), math.log(4.0), math.log(2.0)], rtol=1e-6)


def test_cross_entropy_is_float32_per_example_for_any_shape():
    logits = jnp.zeros((2, 3, 5), jnp.bfloat16)  # uniform over 5 labels
    got = tasks.cross_entropy(logits, jnp.zeros((2, 3), jnp.int32))
    assert got.shape == (2, 3) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, math.log(5.0), rtol=1e-6)


def linear_state(learning_rate=0.1):
    """A "model" whose logits are the token ids (b, 2) times a (2, 2) matrix."""

    def apply_fn(variables, input_ids, attention_mask, token_type_ids, train=False, rngs=None):
        return input_ids.astype(jnp.float32) @ variables["params"]["w"]

    params = {"w": jnp.array([[0.5, -0.5], [0.25, 1.0]])}
    return TrainState.create(apply_fn=apply_fn, params=params, tx=optax.sgd(learning_rate))


def linear_batch(ids, labels, weights):
    ids = jnp.asarray(ids, jnp.int32)
    return {
        "input_ids": ids,
        "attention_mask": jnp.ones_like(ids),
        "token_type_ids": jnp.zeros_like(ids),
        "labels": jnp.asarray(labels, jnp.int32),
        "weights": jnp.asarray(weights, jnp.float32),
        "index": jnp.arange(len(labels), dtype=jnp.int32),
    }


def test_train_step_averages_over_real_examples_only():
    real = linear_batch([[1, 2], [3, 1]], [0, 1], [1.0, 1.0])
    padded = linear_batch([[1, 2], [3, 1], [7, 7], [9, 0]], [0, 1, 0, 1], [1, 1, 0, 0])
    rng = jax.random.PRNGKey(0)
    a, ma = steps.train_step(linear_state(), real, rng)
    b, mb = steps.train_step(linear_state(), padded, rng)
    np.testing.assert_allclose(a.params["w"], b.params["w"], rtol=1e-6)
    logits = real["input_ids"].astype(jnp.float32) @ linear_state().params["w"]
    expected = tasks.cross_entropy(logits, real["labels"]).mean()
    np.testing.assert_allclose([ma["loss"], mb["loss"]], [expected, expected], rtol=1e-6)
    assert int(b.step) == 1


def test_train_step_accumulation_matches_one_shot_on_a_linear_model():
    batch = linear_batch([[1, 2], [3, 1], [0, 4], [2, 2]], [0, 1, 1, 0], [1, 1, 1, 0])
    rng = jax.random.PRNGKey(0)
    one, m1 = steps.train_step(linear_state(), batch, rng)
    two, m2 = steps.train_step(linear_state(), batch, rng, accum_steps=2)
    np.testing.assert_allclose(one.params["w"], two.params["w"], rtol=1e-6)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-6)


def test_eval_step_returns_logits_and_per_example_loss():
    state = linear_state()
    batch = linear_batch([[1, 2], [3, 1], [0, 0]], [0, 1, 0], [1, 1, 0])
    out = steps.eval_step(state, batch)
    logits = batch["input_ids"].astype(jnp.float32) @ state.params["w"]
    np.testing.assert_allclose(out["logits"], logits)
    np.testing.assert_allclose(out["loss"], tasks.cross_entropy(logits, batch["labels"]))
    assert out["loss"].shape == (3,)  # padding rows included; the host drops them


def test_create_state_starts_at_step_zero(make_config):
    model = types.SimpleNamespace(apply=linear_state().apply_fn)
    state = steps.create_state(model, linear_state().params, make_config().optimizer, 10)
    assert int(state.step) == 0 and state.apply_fn is model.apply
    assert set(state.params) == {"w"}


def test_gradient_accumulation_matches_one_shot(tmp_path, make_config, read_metrics):
    losses = {}
    for accum in (1, 4):
        config = make_config(num_train_steps=4, log_every=1, eval_every=100)
        config.optimizer.accum_steps = accum
        loop.train_and_evaluate(config, tmp_path / str(accum))
        losses[accum] = [r["loss"] for r in read_metrics(tmp_path / str(accum), "train")]
    np.testing.assert_allclose(losses[1], losses[4], atol=1e-5)
