"""The MPNet family, every task, both ways: a random transformers MPNet model of odd shapes loaded
by `jaxformer.from_pretrained` matches it at real tokens; `jaxformer.save_pretrained` writes a
folder transformers' AutoModelFor<Task> loads with nothing missing or unexpected, and that
matches too. Then every layer's hidden states, the attention programs with the relative-position
bias, bfloat16, config.json both ways, the bucket function against transformers' and the configs
jaxformer refuses. PyTorch and transformers are the reference, used only here (through
tests/hf_parity.py)."""

import json

import hf_parity
import numpy as np
import pytest
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

import jaxformer
from jaxformer.hf import CheckpointError
from jaxformer.models import mpnet
from jaxformer.models.config import BertConfig

transformers = hf_parity.transformers
torch = hf_parity.torch

SHAPES = dict(
    vocab_size=99,
    hidden_size=40,
    num_hidden_layers=3,
    num_attention_heads=5,
    intermediate_size=52,
    max_position_embeddings=64,
    pad_token_id=1,
    hidden_act="gelu_new",  # the LM head's GELU stays exact: MPNetLMHead's own
    layer_norm_eps=1e-5,
)
# The longest row reaches past the 8 exact distances into the log buckets.
LENGTHS = (40, 17, 9, 1)
CHOICE_LENGTHS = ((30, 6, 2), (4, 11, 23))


def random_hf_model(task, seed=0, **changes):
    """A transformers MPNet model of SHAPES, every weight perturbed (the bias table too)."""
    return hf_parity.random_hf_model("MPNet", SHAPES | changes, task, seed)


def random_batch(task):
    """Right-padded with <pad> = 1, real tokens from 3 on."""
    return hf_parity.random_batch(
        task, vocab=99, pad=1, low=3, lengths=LENGTHS, choice_lengths=CHOICE_LENGTHS
    )


@pytest.mark.parametrize("task", hf_parity.TASKS)
def test_mpnet_matches_transformers_both_ways(task, tmp_path):
    hf_model = random_hf_model(task, seed=len(task))
    batch = random_batch(task)
    model, _ = hf_parity.assert_matches_both_ways(hf_model, task, batch, tmp_path, "mpnet")
    assert model.config.model_type == "mpnet" and model.config.type_vocab_size == 0


def test_every_layer_matches(tmp_path):
    hf_model = random_hf_model("base")
    hf_model.save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    assert params["relative_attention_bias"]["embedding"].shape == (32, 5)
    hf_parity.assert_every_layer_matches(model, params, hf_model, random_batch("base"), 4, "mpnet")


@pytest.mark.parametrize("attention", ["reference", "xla", "scan", "cpu"])
def test_attention_programs_take_the_bias(attention, tmp_path):
    """The programs that take an additive bias run it; "cpu" (no bias) runs "scan"."""
    hf_model = random_hf_model("base")
    hf_model.save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="base", attention=attention)
    batch = random_batch("base")
    diff = hf_parity.max_diff(
        "base",
        hf_parity.ours(model, params, batch),
        hf_parity.theirs(hf_model, "base", batch),
        batch,
    )
    print(f"mpnet attention={attention}: {diff:.2e}")
    assert diff < hf_parity.TOL


def test_bfloat16_is_finite_and_close_to_float32(tmp_path):
    random_hf_model("masked_lm").save_pretrained(tmp_path)
    hf_parity.assert_bfloat16_close(tmp_path, random_batch("masked_lm"), "mpnet")


@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (16, 20), (8, 6)])
def test_buckets_equal_transformers(num_buckets, max_distance):
    """Every distance from -300 to 300: the exact ones, the log-spaced ones, past max_distance."""
    ours = mpnet.relative_position_buckets(301, 301, num_buckets, max_distance)
    position = torch.arange(301)
    relative = position[None, :] - position[:, None]  # key - query, as transformers passes it
    want = MPNetEncoder.relative_position_bucket(relative, num_buckets, max_distance).numpy()
    np.testing.assert_array_equal(ours, want)
    assert len(np.unique(ours)) == num_buckets - 1  # all but the upper half's distance 0


def test_config_json_round_trip(tmp_path):
    """config.json -> ours -> config.json: transformers reads back the same MPNetConfig, and
    ours reads back the same config."""
    hf_config = transformers.MPNetConfig(**SHAPES, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    c = BertConfig.from_hf(hf_config.to_dict())
    assert (c.model_type, c.type_vocab_size, c.pad_token_id) == ("mpnet", 0, 1)
    assert (c.bos_token_id, c.eos_token_id, c.label_names) == (0, 2, ("a", "b", "c"))
    written = c.to_hf("MPNetForSequenceClassification")
    assert written["relative_attention_num_buckets"] == 32 and "type_vocab_size" not in written
    (tmp_path / "config.json").write_text(json.dumps(written))
    again = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(again) is transformers.MPNetConfig
    for key in (*SHAPES, "relative_attention_num_buckets", "bos_token_id", "eos_token_id"):
        assert getattr(again, key) == getattr(hf_config, key), key
    assert again.id2label == hf_config.id2label
    assert BertConfig.from_hf(again.to_dict()) == c


def test_longer_than_the_positions_is_refused(tmp_path):
    """Positions start after <pad> = 1: 64 positions take 62 tokens."""
    random_hf_model("base").save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    ids = np.full((1, 63), 5)
    with pytest.raises(ValueError, match="input of 63 tokens.*truncate the input to 62 tokens"):
        model.apply({"params": params}, ids)
    model.apply({"params": params}, ids[:, :62])


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"relative_attention_num_buckets": 16},
            r"config\.json: relative_attention_num_buckets=16 is not supported; jaxformer reads "
            r"MPNet checkpoints with relative_attention_num_buckets=32$",
        ),
        ({"eos_token_id": -2}, r"eos_token_id=-2 is not valid; it must be a non-negative"),
        ({"hidden_act": "swish2"}, r"hidden_act='swish2' is not valid; it must be one of"),
    ],
)
def test_configs_jaxformer_does_not_read_are_refused(change, match, tmp_path):
    random_hf_model("base").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(CheckpointError, match=match) as caught:
        jaxformer.from_pretrained(tmp_path, task="base")
    assert "\n" not in str(caught.value)
