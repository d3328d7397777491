"""DeBERTa-v2's own pieces, by hand: its config.json spelling both ways, the fields BERT keeps
at their defaults, the parameter trees its configs and heads build."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import gathered_disentangled_bias

from jaxformer import families, layers
from jaxformer.hf.convert import conversion_table
from jaxformer.models import init_params, param_shapes
from jaxformer.models.config import BertConfig

V3 = dict(
    model_type="deberta-v2",
    vocab_size=30,
    hidden_size=12,
    num_hidden_layers=1,
    num_attention_heads=3,
    intermediate_size=20,
    max_position_embeddings=10,
    relative_attention=True,
    position_buckets=4,
    max_relative_positions=8,
    pos_att_type=["p2c", "c2p"],
    share_att_key=True,
    norm_rel_ebd="layer_norm",
    position_biased_input=False,
)


def test_deberta_config_spelling_both_ways():
    hf = V3 | dict(cls_dropout=0.3, pooler_dropout=0.2, pooler_hidden_act="gelu_new")
    c = BertConfig.from_hf(hf)
    r = c.relative
    assert r.pos_att_type == ("p2c", "c2p") and r.share_att_key and not c.position_biased_input
    assert (r.span(c.max_position_embeddings), r.max_position(c.max_position_embeddings)) == (4, 8)
    assert (c.classifier_dropout, c.pooler_dropout, c.pooler_hidden_act) == (0.3, 0.2, "gelu_tanh")
    assert (c.layer_norm_eps, c.type_vocab_size, c.embedding_width) == (1e-7, 0, 12)
    back = c.to_hf("DebertaV2Model")
    assert {k: back[k] for k in hf} == hf | {"pos_att_type": ("p2c", "c2p")}
    assert "embedding_size" not in back and "position_embedding_type" not in back
    assert BertConfig.from_hf(hf | {"pos_att_type": "P2C|c2p"}).relative.pos_att_type == (
        "p2c",
        "c2p",
    )
    assert BertConfig.from_hf(hf | {"pos_att_type": None}).relative.pos_att_type == ()
    wide = BertConfig.from_hf(hf | {"embedding_size": 8, "max_relative_positions": -1})
    assert wide.embedding_width == 8 and wide.to_hf("DebertaV2Model")["embedding_size"] == 8
    assert wide.relative.span(10) == 4 and wide.relative.max_position(10) == 10
    unbucketed = BertConfig.from_hf(hf | {"position_buckets": -1, "max_relative_positions": -1})
    assert unbucketed.relative.span(10) == 10


def test_bert_keeps_its_defaults():
    c = BertConfig()
    assert c.relative is None and c.position_biased_input
    assert c.embedding_width == c.hidden_size
    assert set(c.to_hf("BertModel")).isdisjoint({"relative_attention", "pos_att_type"})


@pytest.mark.parametrize(
    "change, match",
    [
        ({"pos_att_type": ["p2p"]}, "pos_att_type=.*not supported"),
        ({"norm_rel_ebd": "rms"}, "norm_rel_ebd='rms' is not supported"),
        ({"pooler_dropout": 1.5}, r"pooler_dropout=1.5 is not valid; it must be a number"),
        ({"relative_attention": 1}, "relative_attention=1 is not valid; it must be true or false"),
        ({"type_vocab_size": -1}, "type_vocab_size=-1 is not valid; it must be an integer from 0"),
        ({"conv_kernel_size": 3}, "conv_kernel_size=3 is not supported"),
    ],
)
def test_bad_deberta_fields_are_errors(change, match):
    with pytest.raises(ValueError, match=match):
        BertConfig.from_hf(V3 | change)


@pytest.mark.parametrize(
    "change, task, layer, embeddings",
    [
        ({}, "base", {"w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o"}, set()),
        (
            {"share_att_key": False},
            "classification",
            {"w_pk", "b_pk", "w_pq", "b_pq"},
            set(),
        ),
        (
            {"share_att_key": False, "pos_att_type": ["c2p"], "type_vocab_size": 2},
            "masked_lm",
            {"w_pk", "b_pk"},
            {"token_type"},
        ),
        (
            {"position_biased_input": True, "embedding_size": 8},
            "multiple_choice",
            set(),
            {"position", "embed_proj"},
        ),
    ],
)
def test_parameter_trees(change, task, layer, embeddings):
    c = BertConfig.from_hf(V3 | change)
    model = families.model_class("deberta-v2", task)(c)
    params = init_params(model, jax.random.key(0))
    top = {
        "base": {"embeddings", "rel_embeddings", "rel_norm", "layer_0"},
        "classification": {"deberta", "pooler", "classifier"},
        "multiple_choice": {"deberta", "pooler", "classifier"},
        "masked_lm": {"deberta", "mlm"},
    }[task]
    assert set(params) == top
    encoder = params.get("deberta", params)
    assert set(encoder) == {"embeddings", "rel_embeddings", "rel_norm", "layer_0"}
    assert encoder["rel_embeddings"]["embedding"].shape == (8, 12)  # 2 * position_buckets
    attention = set(encoder["layer_0"]["attention"])
    base = {"w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o"}
    assert attention == base | layer
    assert set(encoder["embeddings"]) == {"token", "layer_norm"} | embeddings
    width = c.embedding_width
    assert encoder["embeddings"]["token"]["embedding"].shape == (30, width)
    if task == "masked_lm":
        assert params["mlm"]["transform"]["kernel"].shape == (12, width)
    # The HF table names exactly these parameters.
    table = conversion_table(model)
    assert len(table) == len(jax.tree.leaves(params))


def test_input_longer_than_the_position_table_needs_absolute_positions():
    c = BertConfig.from_hf(V3 | {"position_biased_input": True})
    model = families.model_class("deberta-v2", "base")(c)
    params = init_params(model, jax.random.key(0))
    with pytest.raises(ValueError, match=r"11 tokens.*max_position_embeddings=10"):
        model.apply({"params": params}, np.ones((1, 11), np.int32))
    relative_only = families.model_class("deberta-v2", "base")(BertConfig.from_hf(V3))
    params = init_params(relative_only, jax.random.key(0))
    out = relative_only.apply({"params": params}, np.ones((1, 11), np.int32)).sequence_output
    assert out.shape == (1, 11, 12) and np.isfinite(np.asarray(out)).all()


def _classifier_loss(model):
    """The mean cross-entropy of a sequence classifier, dropout on: a train step's loss."""

    def loss(params, ids, labels, rng):
        logits = model.apply(
            {"params": params}, ids, jnp.ones_like(ids), train=True, rngs={"dropout": rng}
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return loss


def test_train_step_gradient_matches_the_gather_form(monkeypatch):
    """The classifier's gradient with the bias by relative shift equals the one with the bias by
    transformers' gathers (tests/helpers.py), buckets and clipping included."""
    c = BertConfig.from_hf(V3 | {"num_labels": 3})
    model = families.model_class("deberta-v2", "classification")(c)
    params = jax.jit(lambda: init_params(model, jax.random.key(0)))()
    ids = jax.random.randint(jax.random.key(1), (2, 9), 0, c.vocab_size)
    grad = jax.jit(jax.grad(_classifier_loss(model)))
    args = (params, ids, jnp.array([0, 2]), jax.random.key(2))
    got = grad(*args)
    monkeypatch.setattr(layers, "disentangled_attention_bias", gathered_disentangled_bias)
    want = jax.jit(jax.grad(_classifier_loss(model)))(*args)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-6)


def _train_step_temp_bytes(fields: dict, batch: int, length: int) -> int:
    """The compiled temporaries of jit(value_and_grad) of a classifier's loss (CPU, XLA's
    buffer assignment: deterministic for a jax version)."""
    c = BertConfig.from_hf(fields)
    model = families.model_class(c.model_type, "classification")(c)
    ids = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    step = jax.jit(jax.value_and_grad(_classifier_loss(model)))
    compiled = step.lower(param_shapes(model), ids, labels, jax.random.key(0)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_train_step_temporaries_stay_near_bert():
    """A DeBERTa-v3 step holds about one (b, h, t, s) bias per layer beyond BERT's, not the
    (b, h, t, 2P) products with every relative embedding and their scattered gradients: at
    this shape those would make it about 3.7x the same-shape BERT step, the bias about 1.6x."""
    shape = dict(
        vocab_size=1000,
        hidden_size=192,
        num_hidden_layers=2,
        num_attention_heads=6,
        intermediate_size=768,
        max_position_embeddings=512,
        num_labels=2,
    )
    v3 = V3 | shape | dict(position_buckets=256, max_relative_positions=-1)
    deberta = _train_step_temp_bytes(v3, batch=4, length=128)
    bert = _train_step_temp_bytes(dict(model_type="bert") | shape, batch=4, length=128)
    assert deberta < 2.5 * bert, (deberta / 2**20, bert / 2**20)
