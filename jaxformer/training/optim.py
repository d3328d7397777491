"""AdamW with linear warmup and linear decay, no weight decay on biases and LayerNorm scales.

Mirrors the optimizer of BERT's fine-tuning recipe (Devlin et al. 2019) as the Flax examples'
train.py builds it: an Optax chain of global-norm clipping and `optax.adamw` with a mask.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

# Leaves that get weight decay: matrices and embedding tables (and LoRA's A and B, as PEFT
# models train under transformers' Trainer). Biases and LayerNorm scales don't.
DECAYED = {"w_q", "w_k", "w_v", "w_o", "w1", "w2", "kernel", "embedding", "a", "b"}


def decay_mask(params) -> Any:
    """A tree like `params`: True where the leaf's name is in DECAYED."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key in DECAYED, params)


def make_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to the peak learning rate, then linear decay to 0."""
    warmup = (
        cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_fraction * num_steps)
    )
    warmup = min(max(warmup, 1), num_steps)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, cfg.learning_rate, warmup),
            optax.linear_schedule(cfg.learning_rate, 0.0, max(num_steps - warmup, 1)),
        ],
        [warmup],
    )


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """`cfg` is the experiment's `optimizer` section."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(
            make_schedule(cfg, num_steps),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        ),
    )
