"""Training with LoRA (--config.lora.*): the base weights stay bit-identical, only the adapters
and the task head train, the optimizer holds moments for those alone, and the run exports a
PEFT adapter folder that loads back."""

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

import jaxformer
from jaxformer.training import config as config_lib
from jaxformer.training import evaluate, loop, steps

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

SHAPE = dict(
    vocab_size=30522,
    pad_token_id=0,
    num_labels=2,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    hf_config = transformers.BertConfig(**SHAPE)
    transformers.BertForSequenceClassification(hf_config).save_pretrained(tmp_path / "checkpoint")
    return tmp_path / "checkpoint"


def test_only_adapters_and_head_train(checkpoint):
    lora = jaxformer.LoraConfig(rank=4, alpha=8, targets=("query", "value"))
    model, params = jaxformer.from_pretrained(checkpoint, num_labels=2, lora=lora)
    optimizer = config_lib.get_config().optimizer
    optimizer.learning_rate, optimizer.warmup_steps = 1e-2, 1
    state = steps.create_state(model, params, optimizer, num_steps=5)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, (4, 10)).astype(np.int32)
    batch = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "labels": np.array([0, 1, 0, 1], np.int32),
        "weights": np.ones(4, np.float32),
    }
    step = jax.jit(steps.train_step)
    new = state
    for _ in range(3):
        new, metrics = step(new, batch, jax.random.key(0))
    assert np.isfinite(metrics["loss"])

    before, after = (traverse_util.flatten_dict(s.params, sep="/") for s in (state, new))
    trained = [k for k in before if k.startswith("lora/") or k.startswith("base/classifier/")]
    frozen = [k for k in before if k not in trained]
    assert len(trained) == 2 * 2 * 2 + 2 and frozen
    for k in frozen:
        np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(before[k]), err_msg=k)
    for k in trained:
        assert not np.array_equal(np.asarray(after[k]), np.asarray(before[k])), k

    # Adam's moments: one tree of the trained leaves for mu and one for nu, nothing else.
    moments = [leaf for leaf in jax.tree.leaves(new.opt_state) if np.ndim(leaf) > 0]
    shapes = sorted(np.shape(before[k]) for k in trained)
    assert sorted(np.shape(m) for m in moments) == sorted(shapes + shapes)


def test_lora_config_flags_train_and_export_a_peft_folder(
    checkpoint, tmp_path, make_config, read_metrics
):
    config = make_config(num_epochs=2.0, log_every=4, eval_every=1000, export_dir="hf")
    config.model.checkpoint = str(checkpoint)
    config.lora.rank, config.lora.alpha, config.lora.targets = 4, 8.0, "query, value"
    loop.train_and_evaluate(config, tmp_path / "run")
    assert read_metrics(tmp_path / "run", "train")
    folder = tmp_path / "run" / "hf"
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["query", "value"]
    assert adapter["base_model_name_or_path"] == str(checkpoint)
    assert adapter["modules_to_save"] == ["classifier"]
    model, params = jaxformer.from_pretrained(folder)
    assert model.lora.rank == 4 and "lora" in params
    # eval.py reads the run's LoRA checkpoint (base and adapters) and the exported folder alike
    from_checkpoint = evaluate.evaluate_split(tmp_path / "run", "test", checkpoint="latest")
    from_folder = evaluate.evaluate_split(tmp_path / "run", "test", hf_dir=folder)
    assert from_checkpoint["accuracy"] == pytest.approx(from_folder["accuracy"])
    assert from_checkpoint["loss"] == pytest.approx(from_folder["loss"], abs=1e-4)


def test_lora_without_a_checkpoint_is_refused(make_config):
    config = make_config()
    config.model.checkpoint = None
    config.lora.rank = 4
    with pytest.raises(ValueError, match="model.checkpoint"):
        loop.build_model(config, jax.random.key(0))
