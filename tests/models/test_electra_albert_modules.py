"""ELECTRA's and ALBERT's own pieces, by hand: their config.json spellings both ways, the fields
only they have, ALBERT's layer-to-group order and shared parameters, the embeddings' projection,
and the parameter trees their heads build."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import families
from jaxformer.models import init_params
from jaxformer.models.bert import EncoderLayer
from jaxformer.models.config import BertConfig, LayerSharing

SHAPES = dict(
    vocab_size=30,
    hidden_size=12,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=20,
    max_position_embeddings=10,
)
ELECTRA = BertConfig(model_type="electra", embedding_size=8, **SHAPES)
ALBERT = BertConfig(model_type="albert", embedding_size=8, sharing=LayerSharing(2), **SHAPES)


def test_electra_config_spelling_both_ways():
    hf = dict(
        model_type="electra",
        vocab_size=30,
        embedding_size=8,
        hidden_size=12,
        num_hidden_layers=3,
        num_attention_heads=3,
        intermediate_size=20,
        summary_last_dropout=0.2,
        summary_type="first",
        summary_use_proj=True,
        summary_activation="gelu",
    )
    c = BertConfig.from_hf(hf)
    assert (c.embedding_size, c.embedding_width, c.summary_dropout) == (8, 8, 0.2)
    back = c.to_hf("ElectraModel")
    assert {k: back[k] for k in hf} == hf
    assert "position_embedding_type" not in back
    assert (
        BertConfig.from_hf({k: v for k, v in hf.items() if k != "embedding_size"}).embedding_size
        == 128
    )
    with pytest.raises(ValueError, match="summary_type='last' is not supported.*'first'"):
        BertConfig.from_hf(hf | {"summary_type": "last"})
    with pytest.raises(ValueError, match="embedding_size=0 is not valid"):
        BertConfig.from_hf(hf | {"embedding_size": 0})


def test_albert_config_spelling_and_defaults_are_transformers():
    hf = dict(
        model_type="albert",
        vocab_size=30,
        hidden_size=12,
        num_hidden_layers=4,
        num_attention_heads=3,
        intermediate_size=20,
        num_hidden_groups=2,
        inner_group_num=3,
        classifier_dropout_prob=0.3,
    )
    c = BertConfig.from_hf(hf)
    assert (c.sharing, c.classifier_dropout) == (LayerSharing(2, 3), 0.3)
    # AlbertConfig's defaults where config.json is silent.
    assert (c.embedding_size, c.hidden_act) == (128, "gelu_tanh")
    assert c.hidden_dropout_prob == c.attention_probs_dropout_prob == 0.0
    back = c.to_hf("AlbertModel")
    assert {k: back[k] for k in hf} == hf
    assert "classifier_dropout" not in back and "summary_type" not in back
    with pytest.raises(ValueError, match="num_hidden_groups=0 is not valid"):
        BertConfig.from_hf(hf | {"num_hidden_groups": 0})
    with pytest.raises(ValueError, match=r"num_hidden_groups \(5\) must be at most"):
        BertConfig.from_hf(hf | {"num_hidden_groups": 5})


def test_only_their_families_take_the_new_fields():
    with pytest.raises(ValueError, match=r"embedding_size=8: BERT has no embedding_size.*'albert'"):
        BertConfig(embedding_size=8)
    with pytest.raises(ValueError, match=r"sharing=.*: ELECTRA has no LayerSharing.*\['albert'\]"):
        BertConfig(model_type="electra", sharing=LayerSharing(2), **SHAPES)
    assert BertConfig().embedding_width == 768


@pytest.mark.parametrize(
    "layers, groups, inner, want",
    [
        (3, 1, 1, [0, 0, 0]),
        (3, 3, 1, [0, 1, 2]),
        (3, 2, 1, [0, 0, 1]),  # int(i / 1.5), transformers' AlbertTransformer
        (4, 2, 2, [0, 0, 0, 0, 1, 1, 1, 1]),
    ],
)
def test_albert_layers_run_their_groups_in_order(layers, groups, inner, want):
    c = ALBERT.replace(num_hidden_layers=layers, sharing=LayerSharing(groups, inner))
    model = families.model_class("albert", "base")(c)
    scopes = model.layer_scopes()
    assert [int(s.split("_")[1]) for s in scopes] == want
    assert [int(s.split("_")[3]) for s in scopes] == list(range(inner)) * layers
    params = init_params(model, jax.random.key(0))
    assert set(params) == {"embeddings", "pooler"} | set(scopes)


def test_albert_shares_one_copy_of_a_group():
    """Three layers in one group: one layer's parameters, applied three times."""
    c = ALBERT.replace(sharing=LayerSharing(1))
    model = families.model_class("albert", "base")(c)
    params = init_params(model, jax.random.key(0))
    assert set(params) == {"embeddings", "group_0_layer_0", "pooler"}
    ids = jnp.array([[3, 4, 5, 6]])
    x, state = model.apply({"params": params}, ids, mutable=["intermediates"])
    hidden = state["intermediates"]["hidden_states"]
    layer = EncoderLayer(c, mlp_output_dropout=False)
    mask = jnp.ones((1, 1, 1, 4), bool)
    y = hidden[0]
    for i in range(3):
        y = layer.apply({"params": params["group_0_layer_0"]}, y, mask, False)
        np.testing.assert_allclose(np.asarray(hidden[i + 1]), np.asarray(y), rtol=0, atol=1e-6)


def test_the_embeddings_projection():
    """ELECTRA projects only narrower embeddings; ALBERT always; BERT never."""

    def embeddings(config):
        model = families.model_class(config.model_type, "base")(config)
        return init_params(model, jax.random.key(0))["embeddings"]

    assert embeddings(ELECTRA)["token"]["embedding"].shape == (30, 8)
    assert embeddings(ELECTRA)["project"]["kernel"].shape == (8, 12)
    assert "project" not in embeddings(ELECTRA.replace(embedding_size=12))
    assert "project" not in embeddings(ELECTRA.replace(embedding_size=None))
    assert embeddings(ALBERT.replace(embedding_size=12))["project"]["kernel"].shape == (12, 12)
    assert "project" not in embeddings(BertConfig(**SHAPES))


def test_albert_layer_adds_its_feed_forward_output_undropped():
    c = ALBERT.replace(hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.0)
    layer = EncoderLayer(c, attention_output_dropout=False, mlp_output_dropout=False)
    x = jax.random.normal(jax.random.key(1), (2, 4, 12))
    mask = jnp.ones((2, 1, 1, 4), bool)
    params = layer.init(jax.random.key(0), x, mask, False)
    train = layer.apply(params, x, mask, True, rngs={"dropout": jax.random.key(2)})
    np.testing.assert_array_equal(
        np.asarray(train), np.asarray(layer.apply(params, x, mask, False))
    )


@pytest.mark.parametrize(
    "config, task, top",
    [
        (ELECTRA, "base", {"embeddings", "layer_0", "layer_1", "layer_2"}),
        (ELECTRA, "classification", {"electra", "classifier"}),
        (ELECTRA, "multiple_choice", {"electra", "summary", "classifier"}),
        (ELECTRA, "masked_lm", {"electra", "mlm"}),
        (ELECTRA, "pretraining", {"electra", "discriminator", "discriminator_prediction"}),
        (ALBERT, "classification", {"albert", "classifier"}),
        (ALBERT, "question_answering", {"albert", "qa_outputs"}),
        (ALBERT, "masked_lm", {"albert", "mlm"}),
    ],
)
def test_parameter_trees(config, task, top):
    model = families.model_class(config.model_type, task)(config)
    params = init_params(model, jax.random.key(0))
    assert set(params) == top
    encoder = params.get(config.model_type, params)
    pooled = config is ALBERT and task == "classification"
    assert ("pooler" in encoder) == pooled
    if task == "masked_lm":  # the transform maps to the embeddings' width, tied to them
        assert params["mlm"]["transform"]["kernel"].shape == (12, 8)
    if config is ELECTRA and task == "classification":
        assert set(params["classifier"]) == {"dense", "out_proj"}


def test_pretraining_is_electras_task_only():
    model = families.model_class("electra", "pretraining")(ELECTRA)
    params = init_params(model, jax.random.key(0))
    logits = model.apply({"params": params}, jnp.array([[3, 4, 5], [6, 7, 0]]))
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"'albert' has no 'pretraining' model"):
        families.model_class("albert", "pretraining")
