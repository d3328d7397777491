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
from flax import struct, traverse_util
from flax.training import train_state

from jaxformer import lora
from jaxformer.tasks import classification
from jaxformer.training import optim


class TrainState(train_state.TrainState):
    """flax's TrainState with frozen leaves (a LoRA model's base weights): `frozen` holds their
    paths; gradients and optimizer moments exist only for the other leaves (`split`)."""

    frozen: frozenset = struct.field(pytree_node=False, default=frozenset())

    @classmethod
    def create(cls, *, apply_fn, params, tx, frozen=frozenset(), **kwargs):
        trained, _ = _split(params, frozen)
        opt_state = tx.init(trained)
        return cls(
            step=0,
            apply_fn=apply_fn,
            params=params,
            tx=tx,
            opt_state=opt_state,
            frozen=frozen,
            **kwargs,
        )

    def split(self) -> tuple[dict, dict]:
        """(the trained leaves, the frozen ones), each a tree of `params`' paths."""
        return _split(self.params, self.frozen)

    def apply_gradients(self, *, grads, **kwargs):
        """One update of the trained leaves by `grads` (a tree of theirs); frozen leaves are
        carried over as they are."""
        trained, frozen = self.split()
        updates, opt_state = self.tx.update(grads, self.opt_state, trained)
        params = join(optax.apply_updates(trained, updates), frozen)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **kwargs)


def _split(params, frozen: frozenset) -> tuple[dict, dict]:
    if not frozen:
        return params, {}
    flat = traverse_util.flatten_dict(params)
    trained = {k: v for k, v in flat.items() if k not in frozen}
    fixed = {k: v for k, v in flat.items() if k in frozen}
    return traverse_util.unflatten_dict(trained), traverse_util.unflatten_dict(fixed)


def join(trained: dict, frozen: dict) -> dict:
    if not frozen:
        return trained
    flat = traverse_util.flatten_dict(trained) | traverse_util.flatten_dict(frozen)
    return traverse_util.unflatten_dict(flat)


def frozen_paths(model, params) -> frozenset:
    """The leaves of `params` that do not train: a LoRA model's base weights but its head."""
    if not isinstance(model, lora.LoraModel):
        return frozenset()
    mask = traverse_util.flatten_dict(lora.trainable(model, params))
    return frozenset(k for k, trains in mask.items() if not trains)


def create_state(model, params, optimizer: ml_collections.ConfigDict, num_steps: int) -> TrainState:
    """A fresh state at step 0; `optimizer` is the experiment's `optimizer` section."""
    return TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=optim.make_optimizer(optimizer, num_steps),
        frozen=frozen_paths(model, params),
    )


def _keywords(batch: dict, model_inputs: tuple[str, ...]) -> dict:
    """The model's keyword inputs: the fields of `model_inputs` (a task's) the batch has."""
    return {k: batch[k] for k in model_inputs if k in batch}


def _loss_sums(trained, frozen, apply_fn, batch, dropout_rng, loss_terms, model_inputs):
    """Sums over scored items (weight 1), so micro-batches and devices can be added up."""
    outputs = apply_fn(
        {"params": join(trained, frozen)},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        train=True,
        rngs={"dropout": dropout_rng},
        **_keywords(batch, model_inputs),
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
    model_inputs: tuple[str, ...] = (),
) -> tuple[TrainState, dict]:
    """One AdamW update on a global batch of (b,) examples; gradients averaged over the weights
    of the scored items (examples, or tokens), which `loss_terms` (a task's) gives.

    With `accum_steps` > 1 the batch is split into that many micro-batches (lax.scan) whose
    gradient sums are added: the update equals the one-shot update, with less memory.
    Under pmap, `axis_name` names the device axis the sums are psum'ed over. `model_inputs`
    (a task's): batch fields passed to the model as keywords, where the batch has them.
    """
    dropout_rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None:
        dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
    grad_fn = jax.value_and_grad(_loss_sums, has_aux=True)  # of the trained leaves only
    # flax's own TrainState (no frozen leaves) trains all of them.
    trained, frozen = _split(state.params, getattr(state, "frozen", frozenset()))
    if accum_steps == 1:
        (loss_sum, (correct, count)), grads = grad_fn(
            trained, frozen, state.apply_fn, batch, dropout_rng, loss_terms, model_inputs
        )
    else:
        micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)

        def accumulate(carry, i_mb):
            i, mb = i_mb
            rng = jax.random.fold_in(dropout_rng, i)
            (l, (c, n)), g = grad_fn(
                trained, frozen, state.apply_fn, mb, rng, loss_terms, model_inputs
            )
            return jax.tree.map(jnp.add, carry, (l, c, n, g)), None

        zeros = (0.0, 0.0, 0.0, jax.tree.map(jnp.zeros_like, trained))
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
    state: TrainState,
    batch: dict,
    *,
    eval_outputs=classification.single_label_outputs,
    model_inputs: tuple[str, ...] = (),
) -> dict[str, jax.Array]:
    """The task's deterministic per-example outputs of a batch (classification: "logits" (b,
    labels), "loss" (b,), "labels"), with the batch's "weights" and "index", padding rows
    included: the host drops them (weight 0) and puts the split back in order. `model_inputs`:
    as for `train_step`."""
    outputs = state.apply_fn(
        {"params": state.params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        **_keywords(batch, model_inputs),
    )
    return {
        **eval_outputs(outputs, batch),
        "weights": batch["weights"],
        "index": batch["index"],
    }
