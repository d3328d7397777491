"""The families' own pieces, by hand: RoBERTa's position ids and length limit, DistilBERT's
config.json spelling both ways, the parameter trees each family's heads build."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import families, layers
from jaxformer.models import init_params
from jaxformer.models.config import BertConfig

SHAPES = dict(
    vocab_size=30,
    hidden_size=12,
    num_hidden_layers=1,
    num_attention_heads=3,
    intermediate_size=20,
    max_position_embeddings=10,
)
ROBERTA = BertConfig(model_type="roberta", type_vocab_size=1, pad_token_id=1, **SHAPES)
DISTILBERT = BertConfig(model_type="distilbert", type_vocab_size=0, **SHAPES)


def test_padded_positions_count_real_tokens_after_the_pad_id():
    ids = jnp.array([[0, 7, 5, 2, 1, 1], [0, 2, 1, 1, 1, 1]])  # pad = 1, right-padded
    want = [[2, 3, 4, 5, 1, 1], [2, 3, 1, 1, 1, 1]]
    np.testing.assert_array_equal(np.asarray(layers.padded_positions(ids, 1)), want)


def test_roberta_takes_positions_minus_the_offset():
    model = families.model_class("roberta", "base")(ROBERTA)
    params = init_params(model, jax.random.key(0))
    ok = jnp.full((1, 8), 5)  # 8 tokens: positions 2..9 of 10
    assert np.isfinite(np.asarray(model.apply({"params": params}, ok).sequence_output)).all()
    with pytest.raises(ValueError, match=r"9 tokens.*=10 positions, 2 of them .*to 8 tokens"):
        model.apply({"params": params}, jnp.full((1, 9), 5))


def test_distilbert_config_spelling_both_ways():
    hf = dict(
        model_type="distilbert",
        vocab_size=30,
        dim=12,
        n_layers=1,
        n_heads=3,
        hidden_dim=20,
        activation="gelu_new",
        dropout=0.15,
        attention_dropout=0.05,
        seq_classif_dropout=0.3,
        qa_dropout=0.25,
        sinusoidal_pos_embds=True,
    )
    c = BertConfig.from_hf(hf)
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (12, 1, 20)
    assert (c.hidden_act, c.hidden_dropout_prob, c.attention_probs_dropout_prob) == (
        "gelu_tanh",
        0.15,
        0.05,
    )
    assert (c.classifier_dropout, c.qa_dropout, c.type_vocab_size) == (0.3, 0.25, 0)
    assert c.position_embedding_type == "sinusoidal" and c.layer_norm_eps == 1e-12
    back = c.to_hf("DistilBertModel")
    assert {k: back[k] for k in hf} == hf
    assert "hidden_size" not in back and "type_vocab_size" not in back
    with pytest.raises(ValueError, match="lacks required field.*a DistilBERT config.json needs"):
        BertConfig.from_hf({"model_type": "distilbert", "vocab_size": 3})
    with pytest.raises(ValueError, match=r"n_heads \(5\)"):
        BertConfig.from_hf(hf | {"n_heads": 5})
    with pytest.raises(ValueError, match="layer_norm_eps=1e-05 has no transformers equivalent"):
        c.replace(layer_norm_eps=1e-5).to_hf("DistilBertModel")


def test_roberta_config_defaults_are_transformers():
    hf = dict(ROBERTA.to_hf("RobertaModel"))
    del hf["pad_token_id"]
    assert BertConfig.from_hf(hf).pad_token_id == 1


def test_unknown_model_type_is_an_error():
    with pytest.raises(ValueError, match=r"model_type='gpt2' is not a BERT-family.*'distilbert'"):
        BertConfig(model_type="gpt2")
    with pytest.raises(ValueError, match="model_type='gpt2' is not a family jaxformer holds"):
        families.model_class("gpt2", "base")


@pytest.mark.parametrize(
    "config, task, top",
    [
        (ROBERTA, "classification", {"roberta", "classifier"}),
        (ROBERTA, "multiple_choice", {"roberta", "classifier"}),
        (ROBERTA, "masked_lm", {"roberta", "mlm"}),
        (DISTILBERT, "classification", {"distilbert", "pre_classifier", "classifier"}),
        (DISTILBERT, "question_answering", {"distilbert", "qa_outputs"}),
        (DISTILBERT, "base", {"embeddings", "layer_0"}),
    ],
)
def test_parameter_trees(config, task, top):
    model = families.model_class(config.model_type, task)(config)
    params = init_params(model, jax.random.key(0))
    assert set(params) == top
    encoder = params.get(config.model_type, params)
    assert ("pooler" in encoder) == (config is ROBERTA and task == "multiple_choice")
    assert ("token_type" in encoder["embeddings"]) == (config is ROBERTA)
    if config is ROBERTA and task == "classification":
        assert set(params["classifier"]) == {"dense", "out_proj"}
