"""The pure steps: `train_step(state, batch, rng) -> (state, metrics)` and `eval_step`.

Mirrors the Flax examples' train.py (wmt, lm1b): the steps are plain functions of the state and
a batch, compiled where they are called (parallel.py). The state is flax's TrainState; dropout
keys come from the `rng` argument folded with the step, so the state holds no key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training.train_state import TrainState

from jaxformer.training import optim


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example negative log-likelihood -log softmax(logits)[label], in float32.

    logits: (..., labels) of any float dtype; labels: (...) int -> (...) float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def create_state(model, params, optimizer: ml_collections.ConfigDict, num_steps: int) -> TrainState:
    """A fresh state at step 0; `optimizer` is the experiment's `optimizer` section."""
    return TrainState.create(
        apply_fn=model.apply, params=params, tx=optim.make_optimizer(optimizer, num_steps)
    )


def _loss_sums(params, apply_fn, batch, dropout_rng):
    """Sums over real examples (weight 1), so micro-batches and devices can be added up."""
    logits = apply_fn(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        train=True,
        rngs={"dropout": dropout_rng},
    )
    w = batch["weights"]
    correct = (logits.argmax(-1) == batch["labels"]) * w
    return (cross_entropy(logits, batch["labels"]) * w).sum(), (correct.sum(), w.sum())


def train_step(
    state: TrainState,
    batch: dict,
    rng: jax.Array,
    *,
    accum_steps: int = 1,
    axis_name: str | None = None,
) -> tuple[TrainState, dict]:
    """One AdamW update on a global batch of (b,) examples; gradients averaged over weights.

    With `accum_steps` > 1 the batch is split into that many micro-batches (lax.scan) whose
    gradient sums are added: the update equals the one-shot update, with less memory.
    Under pmap, `axis_name` names the device axis the sums are psum'ed over.
    """
    dropout_rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None:
        dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
    grad_fn = jax.value_and_grad(_loss_sums, has_aux=True)
    if accum_steps == 1:
        (loss_sum, (correct, count)), grads = grad_fn(
            state.params, state.apply_fn, batch, dropout_rng
        )
    else:
        micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)

        def accumulate(carry, i_mb):
            i, mb = i_mb
            (l, (c, n)), g = grad_fn(
                state.params, state.apply_fn, mb, jax.random.fold_in(dropout_rng, i)
            )
            return jax.tree.map(jnp.add, carry, (l, c, n, g)), None

        zeros = (0.0, 0.0, 0.0, jax.tree.map(jnp.zeros_like, state.params))
        (loss_sum, correct, count, grads), _ = jax.lax.scan(
            accumulate, zeros, (jnp.arange(accum_steps), micro)
        )
    if axis_name is not None:
        loss_sum, correct, count, grads = jax.lax.psum((loss_sum, correct, count, grads), axis_name)
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    new_state = state.apply_gradients(grads=grads)
    updates = jax.tree.map(jnp.subtract, new_state.params, state.params)
    metrics = {
        "loss": loss_sum / denom,
        "accuracy": correct / denom,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(new_state.params),
        "update_norm": optax.global_norm(updates),
    }
    return new_state, metrics


def eval_step(state: TrainState, batch: dict) -> dict[str, jax.Array]:
    """Deterministic "logits" (b, labels) and per-example "loss" (b,) of a batch, padding rows
    included: the host drops them (weight 0) and reduces over the whole split."""
    logits = state.apply_fn(
        {"params": state.params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
    )
    return {"logits": logits, "loss": cross_entropy(logits, batch["labels"])}
