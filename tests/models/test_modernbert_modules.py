"""ModernBERT's own pieces, by hand: its config.json spelling both ways, the layer pattern, the
parameter trees its bias flags and heads build, and what BERT's config keeps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import families
from jaxformer.models import init_params
from jaxformer.models.config import BertConfig, Biases, Rotary

SHAPES = dict(
    vocab_size=30,
    hidden_size=12,
    num_hidden_layers=4,
    num_attention_heads=3,
    intermediate_size=10,
    global_attn_every_n_layers=3,
    local_attention=4,
)
MODERNBERT = BertConfig.from_hf({"model_type": "modernbert", "pad_token_id": 0, **SHAPES})


def test_config_defaults_are_transformers():
    c = MODERNBERT
    assert c.pre_layer_norm and c.position_embedding_type == "rotary" and c.type_vocab_size == 0
    assert (c.layer_norm_eps, c.hidden_dropout_prob, c.classifier_dropout) == (1e-5, 0.0, 0.0)
    assert c.rotary == Rotary(160_000.0, 10_000.0)
    assert c.biases == Biases(attention=False, mlp=False, norm=False, classifier=False)
    assert c.biases.decoder and c.classifier_pooling == "cls"
    ids = (c.bos_token_id, c.eos_token_id, c.cls_token_id, c.sep_token_id)
    assert ids == (50281, 50282, 50281, 50282)
    assert c.layer_types == (
        "full_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention",
    )


def test_config_spelling_both_ways():
    hf = dict(
        model_type="modernbert",
        **SHAPES,
        hidden_activation="gelu_new",
        embedding_dropout=0.1,
        attention_dropout=0.2,
        mlp_dropout=0.3,
        classifier_dropout=0.4,
        norm_eps=1e-6,
        max_position_embeddings=64,
        pad_token_id=3,
        bos_token_id=4,
        eos_token_id=5,
        cls_token_id=6,
        sep_token_id=None,
        mlp_bias=True,
        norm_bias=True,
        decoder_bias=False,
        classifier_pooling="mean",
        classifier_activation="silu",
        layer_types=["full_attention", "sliding_attention"] * 2,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 100.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 20.0},
        },
    )
    c = BertConfig.from_hf(hf)
    assert (c.hidden_act, c.hidden_dropout_prob, c.attention_probs_dropout_prob) == (
        "gelu_tanh",
        0.1,
        0.2,
    )
    assert (c.mlp_dropout, c.classifier_dropout, c.layer_norm_eps) == (0.3, 0.4, 1e-6)
    assert c.local.global_every == 2  # layer_types wins over the key's 3
    assert c.rotary == Rotary(100.0, 20.0)
    assert c.biases == Biases(attention=False, mlp=True, norm=True, classifier=False, decoder=False)
    assert (c.bos_token_id, c.eos_token_id, c.cls_token_id, c.sep_token_id) == (4, 5, 6, None)
    back = c.to_hf("ModernBertModel")
    plain = [k for k in hf if k != "global_attn_every_n_layers"]
    assert {k: back[k] for k in plain} == {k: hf[k] for k in plain}
    assert back["global_attn_every_n_layers"] == 2
    assert "hidden_size" in back and "type_vocab_size" not in back and "norm_eps" in back
    assert BertConfig.from_hf(back) == c
    with pytest.raises(ValueError, match="lacks required field.*a ModernBERT config.json needs"):
        BertConfig.from_hf({"model_type": "modernbert", "vocab_size": 3})
    with pytest.raises(ValueError, match="local_attention=0 is not valid"):
        BertConfig.from_hf(hf | {"local_attention": 0})
    with pytest.raises(ValueError, match="global_rope_theta=-1.0 is not valid"):
        BertConfig.from_hf(hf | {"rope_parameters": None, "global_rope_theta": -1.0})
    with pytest.raises(ValueError, match="classifier_activation='tanh' is not valid"):
        BertConfig.from_hf(hf | {"classifier_activation": "tanh"})
    with pytest.raises(ValueError, match=r"cls_token_id=-1 is not valid; .*integer or null"):
        BertConfig.from_hf(hf | {"cls_token_id": -1})
    with pytest.raises(ValueError, match="is pre-LN with rotary positions.*no transformers"):
        c.replace(pre_layer_norm=False).to_hf("ModernBertModel")


def test_bert_keeps_its_layers_and_config_json():
    c = BertConfig()
    assert c.layer_types == ("full_attention",) * 12
    assert c.biases == Biases() and c.local is None and not c.pre_layer_norm
    hf = c.to_hf("BertModel")
    assert not {"norm_eps", "layer_types", "rope_parameters", "local_attention"} & set(hf)
    assert not {"bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"} & set(hf)
    with pytest.raises(ValueError, match="cls_token_id=1: BERT has no cls_token_id"):
        BertConfig(cls_token_id=1)
    with pytest.raises(ValueError, match="classifier_pooling='max' is not supported"):
        BertConfig(classifier_pooling="max")


@pytest.mark.parametrize("flags", [{}, dict(attention=True, mlp=True, norm=True)])
def test_parameter_tree_follows_the_bias_flags(flags):
    c = MODERNBERT.replace(biases=dataclasses.replace(MODERNBERT.biases, **flags))
    params = init_params(families.model_class("modernbert", "base")(c), jax.random.key(0))
    assert set(params) == {"embeddings", "final_norm"} | {f"layer_{i}" for i in range(4)}
    assert set(params["layer_0"]) == {"attention", "mlp", "mlp_norm"}  # no attention_norm
    assert set(params["layer_1"]) == {"attention", "attention_norm", "mlp", "mlp_norm"}
    bias = bool(flags)
    assert set(params["layer_1"]["attention"]) == {"w_qkv", "w_o"} | (
        {"b_qkv", "b_o"} if bias else set()
    )
    assert set(params["layer_1"]["mlp"]) == {"w_in", "w_out"} | (
        {"b_in", "b_out"} if bias else set()
    )
    assert ("bias" in params["final_norm"]) == bias
    assert params["layer_1"]["attention"]["w_qkv"].shape == (12, 3, 3, 4)
    assert params["layer_1"]["mlp"]["w_in"].shape == (12, 20)


@pytest.mark.parametrize(
    "task, top",
    [
        ("classification", {"model", "head", "classifier"}),
        ("token_classification", {"model", "head", "classifier"}),
        ("question_answering", {"model", "head", "classifier"}),
        ("multiple_choice", {"model", "head", "classifier"}),
        ("masked_lm", {"model", "head", "decoder"}),
    ],
)
def test_head_parameter_trees(task, top):
    model = families.model_class("modernbert", task)(MODERNBERT)
    params = init_params(model, jax.random.key(0))
    assert set(params) == top
    assert set(params["head"]["dense"]) == {"kernel"}  # classifier_bias=False
    assert set(params["head"]["norm"]) == {"scale"}  # norm_bias=False
    if "classifier" in params:
        assert set(params["classifier"]) == {"kernel", "bias"}  # always a bias
    no_decoder_bias = MODERNBERT.replace(
        biases=dataclasses.replace(MODERNBERT.biases, decoder=False)
    )
    if task == "masked_lm":
        assert set(params["decoder"]) == {"bias"}
        assert "decoder" not in init_params(model.clone(config=no_decoder_bias), jax.random.key(0))


def test_multiple_choice_cls_is_the_first_real_token():
    """Left padding moves [CLS]: a choice padded on the left scores as its unpadded self."""
    model = families.model_class("modernbert", "multiple_choice")(MODERNBERT)
    params = init_params(model, jax.random.key(0))
    left = jnp.array([[[0, 0, 5, 6], [9, 10, 11, 12]]])  # (b=1, choices=2, t=4)
    mask = jnp.array([[[0, 0, 1, 1], [1, 1, 1, 1]]])
    short = jnp.array([[[5, 6, 0, 0], [9, 10, 11, 12]]])
    right_mask = jnp.array([[[1, 1, 0, 0], [1, 1, 1, 1]]])
    # Positions count from the first real token in both, so only the padding side differs.
    positions = jnp.array([[[0, 0, 0, 1], [0, 1, 2, 3]]])
    a = model.apply({"params": params}, left, mask, None, positions)
    b = model.apply({"params": params}, short, right_mask)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_remat_gives_the_same_output():
    model = families.model_class("modernbert", "base")(MODERNBERT)
    params = init_params(model, jax.random.key(0))
    ids = jnp.arange(3, 12)[None]
    plain = model.apply({"params": params}, ids).sequence_output
    again = model.clone(config=MODERNBERT.replace(remat=True)).apply({"params": params}, ids)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(again.sequence_output), atol=1e-6)
