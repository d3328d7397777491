"""The DeBERTa-v2 family (v3 and v2 configs), every task, both ways: a random transformers
DebertaV2 model of odd shapes loaded by `jaxformer.from_pretrained` matches it at real tokens;
`jaxformer.save_pretrained` writes a folder transformers' AutoModelFor<Task> loads with nothing
missing or unexpected, and that matches too. Then every layer's hidden states, bfloat16, and the
configs jaxformer refuses. PyTorch and transformers are the reference, used only here (through
tests/hf_parity.py)."""

import json

import hf_parity
import numpy as np
import pytest

import jaxformer
from jaxformer.hf import CheckpointError

SHAPES = dict(
    vocab_size=97,
    hidden_size=36,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=50,
    max_position_embeddings=40,
    hidden_act="gelu",
)
CONFIGS = {
    # DeBERTa-v3: log buckets, both terms through W_q and W_k, relative positions only.
    "v3": SHAPES
    | dict(
        relative_attention=True,
        position_buckets=8,
        max_relative_positions=16,
        pos_att_type=["p2c", "c2p"],
        share_att_key=True,
        norm_rel_ebd="layer_norm",
        position_biased_input=False,
        type_vocab_size=0,
    ),
    # DeBERTa-v2-style: own W_pk, W_pq, distances clipped at 6 (shorter than the batch), absolute
    # positions and token types in the input, a narrower embedding projected to the width.
    "v2": SHAPES
    | dict(
        relative_attention=True,
        position_buckets=-1,
        max_relative_positions=6,
        pos_att_type="c2p|p2c",
        share_att_key=False,
        position_biased_input=True,
        type_vocab_size=2,
        embedding_size=24,
        pooler_hidden_act="relu",
        hidden_act="gelu_new",
    ),
    # One term only, no relative norm.
    "c2p": SHAPES
    | dict(
        relative_attention=True,
        position_buckets=4,
        max_relative_positions=12,
        pos_att_type=["c2p"],
        share_att_key=False,
        position_biased_input=False,
    ),
}


def random_hf_model(name, task, seed=0, **changes):
    """A transformers DebertaV2 model of CONFIGS[name], every weight perturbed."""
    return hf_parity.random_hf_model("DebertaV2", CONFIGS[name] | changes, task, seed)


def random_batch(name, task):
    """Padding 0 and, with token types, types 1 from position 3 on."""
    batch = hf_parity.random_batch(task)
    if CONFIGS[name].get("type_vocab_size"):
        mask = batch["attention_mask"]
        batch["token_type_ids"] = (np.arange(mask.shape[-1]) >= 3).astype(np.int32) * mask
    return batch


@pytest.mark.parametrize("task", hf_parity.TASKS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_deberta_matches_transformers_both_ways(name, task, tmp_path):
    hf_model = random_hf_model(name, task, seed=len(task))
    batch = random_batch(name, task)
    label = f"deberta-v2 {name}"
    model, _ = hf_parity.assert_matches_both_ways(hf_model, task, batch, tmp_path, label)
    assert model.config.model_type == "deberta-v2"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_layer_matches(name, tmp_path):
    hf_model = random_hf_model(name, "base")
    hf_model.save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    batch = random_batch(name, "base")
    hf_parity.assert_every_layer_matches(model, params, hf_model, batch, 4, f"deberta-v2 {name}")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bfloat16_is_finite_and_close_to_float32(name, tmp_path):
    random_hf_model(name, "masked_lm").save_pretrained(tmp_path)
    batch = random_batch(name, "masked_lm")
    hf_parity.assert_bfloat16_close(tmp_path, batch, f"deberta-v2 {name}")


def test_longer_than_max_position_embeddings_with_relative_positions_only(tmp_path):
    """Without absolute positions (v3) nothing bounds the length: 50 tokens over 40 positions."""
    hf_model = random_hf_model("v3", "base")
    hf_model.save_pretrained(tmp_path)
    ids = np.random.default_rng(1).integers(2, 97, (1, 50))
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    a = np.asarray(model.apply({"params": params}, ids).sequence_output)
    b = hf_model(**hf_parity.torch_inputs({"input_ids": ids})).last_hidden_state.numpy()
    assert float(np.abs(a - b).max()) < hf_parity.TOL


@pytest.mark.parametrize(
    "change, match",
    [
        ({"conv_kernel_size": 3}, r"conv_kernel_size=3 is not supported.*conv_kernel_size=0"),
        ({"legacy": False}, r"legacy=False is not supported.*legacy=True"),
        ({"pos_att_type": ["p2p"]}, r"pos_att_type=\['p2p'\] is not supported"),
        ({"share_att_key": "yes"}, r"share_att_key='yes' is not valid; it must be true or false"),
    ],
)
def test_configs_jaxformer_does_not_read_are_refused(change, match, tmp_path):
    random_hf_model("v3", "base").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(CheckpointError, match=match):
        jaxformer.from_pretrained(tmp_path, task="base")
