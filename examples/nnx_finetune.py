"""Fine-tuning a converted checkpoint from Flax NNX code.

The jaxformer model stays the Linen module that `jaxformer.from_pretrained` gives; `to_nnx` holds
it and the checkpoint's weights as an NNX module (`flax.nnx.bridge.ToNNX`), which trains with
`nnx.Optimizer` under `nnx.jit` like any NNX model, and `params_of` hands the weights back to
`jaxformer.save_pretrained`:

    python examples/nnx_finetune.py CHECKPOINT [--steps 20] [--out finetuned/]

CHECKPOINT is a Hugging Face folder or hub id of any family; the batch is a few toy sentences.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import optax
from flax import nnx

import jaxformer
from jaxformer.nnx import params_of, to_nnx

TEXTS = ["a fine film", "a dull, long film", "I loved it", "I hated every minute"]
LABELS = [1, 0, 1, 0]


def loss_fn(module, batch):
    logits = module(batch["input_ids"], batch["attention_mask"], train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()


@nnx.jit
def train_step(module, optimizer, batch):
    loss, grads = nnx.value_and_grad(loss_fn)(module, batch)
    optimizer.update(module, grads)
    return loss


def finetune(model, params, batch, steps=20, learning_rate=1e-3, seed=0):
    """(the NNX module trained for `steps` on `batch`, the losses): `model` and `params` are a
    jaxformer classification model and its weights."""
    module = to_nnx(model, params, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    optimizer = nnx.Optimizer(module, optax.adamw(learning_rate), wrt=nnx.Param)
    losses = [float(train_step(module, optimizer, batch)) for _ in range(steps)]
    return module, losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=None, help="where to save the fine-tuned checkpoint")
    args = parser.parse_args(argv)
    model, params = jaxformer.from_pretrained(args.checkpoint, task="classification", num_labels=2)
    tokenizer = jaxformer.load_tokenizer(args.checkpoint)
    batch = {k: jnp.asarray(v) for k, v in tokenizer(TEXTS).items()}
    batch["labels"] = jnp.asarray(LABELS)
    module, losses = finetune(model, params, batch, args.steps)
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {args.steps} steps")
    if args.out:
        jaxformer.save_pretrained(model, params_of(module), args.out, tokenizer=tokenizer)
        print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
