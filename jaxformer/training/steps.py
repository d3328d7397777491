"""The pure steps: `train_step(state, batch, rng) -> (state, metrics)` and `eval_step`.

Mirrors the Flax examples' train.py (wmt, lm1b): the steps are plain functions of the state and
a batch, compiled where they are called (parallel.py). The state is flax's TrainState; dropout
keys come from the `rng` argument folded with the step, so the state holds no key. What a batch's
loss and evaluation outputs are is the task's (jaxformer.tasks): the steps take its functions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training.train_state import TrainState

from jaxformer.tasks import classification
from jaxformer.training import optim


def create_state(model, params, optimizer: ml_collections.ConfigDict, num_steps: int) -> TrainState:
    """A fresh state at step 0; `optimizer` is the experiment's `optimizer` section."""
    return TrainState.create(
        apply_fn=model.apply, params=params, tx=optim.make_optimizer(optimizer, num_steps)
    )


def _loss_sums(params, apply_fn, batch, dropout_rng, loss_terms):
    """Sums over scored items (weight 1), so micro-batches and devices can be added up."""
    outputs = apply_fn(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        train=True,
        rngs={"dropout": dropout_rng},
    )
    loss, w, correct = loss_terms(outputs, batch)
    return (loss * w).sum(), ((correct * w).sum(), w.sum())


def train_step(
    state: TrainState,
    batch: dict,
    rng: jax.Array,
    *,
    loss_terms=classification.single_label_terms,
    accum_steps: int = 1,
    axis_name: str | None = None,
) -> tuple[TrainState, dict]:
    """One AdamW update on a global batch of (b,) examples; gradients averaged over the weights
    of the scored items (examples, or tokens), which `loss_terms` (a task's) gives.

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
            state.params, state.apply_fn, batch, dropout_rng, loss_terms
        )
    else:
        micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)

        def accumulate(carry, i_mb):
            i, mb = i_mb
            (l, (c, n)), g = grad_fn(
                state.params, state.apply_fn, mb, jax.random.fold_in(dropout_rng, i), loss_terms
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


def eval_step(
    state: TrainState, batch: dict, *, eval_outputs=classification.single_label_outputs
) -> dict[str, jax.Array]:
    """The task's deterministic per-example outputs of a batch (classification: "logits" (b,
    labels), "loss" (b,), "labels"), with the batch's "weights" and "index", padding rows
    included: the host drops them (weight 0) and puts the split back in order."""
    outputs = state.apply_fn(
        {"params": state.params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
    )
    return {
        **eval_outputs(outputs, batch),
        "weights": batch["weights"],
        "index": batch["index"],
    }
