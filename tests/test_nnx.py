"""jaxformer models from Flax NNX code (jaxformer/nnx.py, examples/nnx_finetune.py): a converted
checkpoint held by `to_nnx` gives the Linen model's outputs with the same weights, fine-tunes
with nnx.Optimizer under nnx.jit (the loss falls) and saves back through `params_of`; a LoRA
model trains its adapters alone through a path filter."""

import importlib.util
from pathlib import Path

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, traverse_util

import jaxformer
from jaxformer import lora
from jaxformer.models import init_params
from jaxformer.nnx import params_of, to_nnx

pytest.importorskip("transformers")  # helpers.save_folder writes the tokenizer through it

EXAMPLE = Path(__file__).parents[1] / "examples" / "nnx_finetune.py"
SHAPES = dict(
    vocab_size=128,
    hidden_size=24,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=40,
    max_position_embeddings=32,
    num_labels=2,
)


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny random BERT classifier's checkpoint folder, with a WordPiece tokenizer."""
    folder = helpers.save_folder(tmp_path / "checkpoint", "bert")
    model = jaxformer.BertForSequenceClassification(jaxformer.BertConfig(**SHAPES))
    jaxformer.save_pretrained(model, init_params(model, jax.random.key(0)), folder)
    return folder


def example():
    spec = importlib.util.spec_from_file_location("nnx_finetune", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batch_of(folder):
    tokenizer = jaxformer.load_tokenizer(folder)
    batch = {k: jnp.asarray(v) for k, v in tokenizer(example().TEXTS).items()}
    return batch | {"labels": jnp.asarray(example().LABELS)}


def test_finetune_converted_checkpoint(checkpoint, tmp_path):
    model, params = jaxformer.from_pretrained(checkpoint, num_labels=2)
    batch = batch_of(checkpoint)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    module = to_nnx(model, params)
    np.testing.assert_array_equal(module(ids, mask), model.apply({"params": params}, ids, mask))
    assert jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), params_of(module), params))

    trained, losses = example().finetune(model, params, batch, steps=8, learning_rate=1e-2)
    print("losses", [f"{x:.4f}" for x in losses])
    assert losses[-1] < 0.7 * losses[0]
    tuned = params_of(trained)
    assert not np.array_equal(tuned["classifier"]["kernel"], params["classifier"]["kernel"])

    example().main([str(checkpoint), "--steps", "3", "--out", str(tmp_path / "out")])
    back, back_params = jaxformer.from_pretrained(tmp_path / "out")
    assert back_params["classifier"]["kernel"].shape == params["classifier"]["kernel"].shape


def test_lora_adapters_alone_train(checkpoint):
    config = jaxformer.LoraConfig(rank=2, alpha=4)
    model, params = jaxformer.from_pretrained(checkpoint, num_labels=2, lora=config)
    batch = batch_of(checkpoint)
    module = to_nnx(model, params)
    adapters = nnx.All(nnx.Param, nnx.PathContains("lora"))
    optimizer = nnx.Optimizer(module, optax.sgd(0.5), wrt=adapters)

    @nnx.jit
    def step(module, optimizer, batch):
        diff = nnx.DiffState(0, adapters)
        loss, grads = nnx.value_and_grad(example().loss_fn, argnums=diff)(module, batch)
        optimizer.update(module, grads)
        return loss

    for _ in range(2):
        step(module, optimizer, batch)
    after = params_of(module)
    same = jax.tree.map(lambda a, b: bool((a == b).all()), after["base"], params["base"])
    assert all(traverse_util.flatten_dict(same).values())
    b = traverse_util.flatten_dict(after["lora"])
    assert any(k[-1] == "b" and np.abs(v).max() > 0 for k, v in b.items())
    assert isinstance(model, lora.LoraModel)
