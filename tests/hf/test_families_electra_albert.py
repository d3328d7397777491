"""The ELECTRA and ALBERT families, every task, both ways: a random transformers model of odd
shapes (embeddings narrower than the hidden width; ALBERT in one group of two layers and in three
groups of one) loaded by `jaxformer.from_pretrained` matches it at real tokens;
`jaxformer.save_pretrained` writes a folder transformers' AutoModelFor<Task> loads with nothing
missing or unexpected, and that matches too. Then every layer's hidden states, ALBERT's shared
parameters held once per group, and bfloat16. PyTorch and transformers are the reference, used
only here (through tests/hf_parity.py)."""

import hf_parity
import numpy as np
import pytest

import jaxformer

# Odd, non-default shapes, so a transposed or mis-split tensor cannot go unnoticed; embeddings
# 20 wide under a hidden width of 36, so the projections and the MLM heads' widths are exercised.
SHAPES = dict(
    vocab_size=97,
    embedding_size=20,
    hidden_size=36,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=50,
    max_position_embeddings=40,
    initializer_range=0.2,  # O(1) pre-activations in the heads, where the GELUs part
)
# The heads' exact GELU (ELECTRA's classification, summary and generator heads) differs from
# hidden_act's tanh GELU, so a head that took hidden_act would not match.
ELECTRA_SHAPES = SHAPES | {"hidden_act": "gelu_new"}
# name: (transformers class name stem, config fields)
FAMILIES = {
    "electra": ("Electra", ELECTRA_SHAPES),
    "albert": ("Albert", SHAPES | {"num_hidden_groups": 1, "inner_group_num": 2}),
    "albert-3-groups": ("Albert", SHAPES | {"num_hidden_groups": 3, "inner_group_num": 1}),
}
CASES = [
    (family, task)
    for family in FAMILIES
    for task in (*hf_parity.TASKS, "pretraining")
    if task != "pretraining" or family == "electra"
]


def random_hf_model(family, task, seed=0, **changes):
    """A transformers model of FAMILIES[family] (and `changes`), every weight perturbed."""
    stem, fields = FAMILIES[family]
    return hf_parity.random_hf_model(stem, fields | changes, task, seed)


@pytest.mark.parametrize("family, task", CASES)
def test_family_matches_transformers_both_ways(family, task, tmp_path):
    hf_model = random_hf_model(family, task, seed=len(task))
    batch = hf_parity.random_batch(task)
    model, _ = hf_parity.assert_matches_both_ways(hf_model, task, batch, tmp_path, family)
    assert model.config.model_type == family.removesuffix("-3-groups")


@pytest.mark.parametrize(
    "family, changes",
    [
        ("electra", {}),
        ("electra", {"embedding_size": 36}),  # equal widths: no embeddings_project
        ("albert", {}),
        ("albert-3-groups", {}),
    ],
)
def test_every_layer_matches(family, changes, tmp_path):
    hf_model = random_hf_model(family, "base", **changes)
    hf_model.save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    assert ("project" in params["embeddings"]) == (family != "electra" or not changes)
    c = model.config
    states = 1 + c.num_hidden_layers * (c.sharing.inner_group_num if c.sharing else 1)
    label = f"{family} {changes}"
    hf_parity.assert_every_layer_matches(
        model, params, hf_model, hf_parity.random_batch("base"), states, label
    )


@pytest.mark.parametrize(
    "family, scopes",
    [
        ("albert", {"group_0_layer_0", "group_0_layer_1"}),
        ("albert-3-groups", {"group_0_layer_0", "group_1_layer_0", "group_2_layer_0"}),
    ],
)
def test_albert_holds_each_group_once(family, scopes, tmp_path):
    """One copy of each group's layers, however many layers apply it; the HF group tensors map
    one to one onto it and back."""
    hf_model = random_hf_model(family, "masked_lm")
    hf_model.save_pretrained(tmp_path / "hf")
    model, params = jaxformer.from_pretrained(tmp_path / "hf", task="masked_lm")
    assert set(params["albert"]) == {"embeddings"} | scopes
    groups = {
        k for k in hf_model.state_dict() if k.startswith("albert.encoder.albert_layer_groups")
    }
    mine = {k for k in jaxformer.hf.convert.params_to_hf(model, params) if k in groups}
    assert mine == groups and len(groups) == 16 * len(scopes)
    w = hf_model.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn.weight.numpy()
    np.testing.assert_array_equal(np.asarray(params["albert"]["group_0_layer_0"]["mlp"]["w1"]), w.T)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bfloat16_is_finite_and_close_to_float32(family, tmp_path):
    """bfloat16 keeps 8 bits: about 0.4% of each O(1) activation, compounded here over up to six
    layer applications (ALBERT's three layers of a two-layer group); about 0.05 is seen."""
    random_hf_model(family, "masked_lm").save_pretrained(tmp_path)
    hf_parity.assert_bfloat16_close(tmp_path, hf_parity.random_batch("masked_lm"), family)


def test_electra_checkpoint_of_the_discriminator_loads_for_a_task(tmp_path):
    """An ElectraForPreTraining folder (as google/electra-*-discriminator are saved) gives a task
    model its encoder and a fresh head."""
    hf_model = random_hf_model("electra", "pretraining")
    hf_model.save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="classification", num_labels=3)
    batch = hf_parity.random_batch("classification")
    assert hf_parity.ours(model, params, batch)["logits"].shape == (4, 3)
    hidden = hf_model.electra(**hf_parity.torch_inputs(batch)).last_hidden_state.numpy()
    base, base_params = jaxformer.from_pretrained(tmp_path, task="base")
    mine = np.asarray(hf_parity.ours(base, base_params, batch)["sequence_output"])
    mask = batch["attention_mask"].astype(bool)
    assert float(np.abs(mine - hidden)[mask].max()) < hf_parity.TOL
