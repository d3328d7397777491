"""jaxformer.models.heads: each head's parameter tree and its output recomputed by hand (NumPy)
from the encoder's, the tied masked-LM decoder, dropout only in training, input rank."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import layers
from jaxformer.models import (
    BertConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    SpanLogits,
    init_params,
)

TINY = BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=32,
    max_position_embeddings=32,
    num_labels=3,
    hidden_act="gelu_tanh",
    layer_norm_eps=1e-5,
)


def batch(shape=(2, 6), seed=0):
    """ids and a right-padding mask (the last example of each row two tokens shorter)."""
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(1, TINY.vocab_size, size=shape), jnp.int32)
    t = shape[-1]
    lengths = np.full(shape[:-1], t)
    lengths[..., -1] = t - 2
    return ids, jnp.asarray(np.arange(t) < lengths[..., None], jnp.int32)


def perturbed(model, seed=0):
    """Fresh params with every leaf moved off its initial value (non-zero biases, scales != 1)."""
    params = init_params(model, jax.random.key(seed))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return tree.unflatten(
        [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )


def encoder(params, ids, mask, pooled=True):
    """The encoder's (sequence, pooled) from a head's params["bert"], as NumPy float64."""
    out = BertModel(TINY, add_pooling_layer=pooled).apply({"params": params["bert"]}, ids, mask)
    return tuple(None if a is None else np.asarray(a, np.float64) for a in out)


def linear(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def tree_paths(params):
    return sorted("/".join(k.key for k in path) for path, _ in jax.tree.leaves_with_path(params))


def test_sequence_classification_tree_is_the_encoder_under_bert_and_a_classifier():
    params = init_params(BertForSequenceClassification(TINY), jax.random.key(0))
    encoder_paths = tree_paths(init_params(BertModel(TINY), jax.random.key(0)))
    assert tree_paths(params) == sorted(
        ["classifier/bias", "classifier/kernel"] + [f"bert/{p}" for p in encoder_paths]
    )


@pytest.mark.parametrize(
    "cls, head, pooled",
    [
        (BertForTokenClassification, {"classifier/bias": (3,), "classifier/kernel": (16, 3)}, 0),
        (BertForQuestionAnswering, {"qa_outputs/bias": (2,), "qa_outputs/kernel": (16, 2)}, 0),
        (BertForMultipleChoice, {"classifier/bias": (1,), "classifier/kernel": (16, 1)}, 1),
        (
            BertForMaskedLM,
            {
                "mlm/bias": (50,),
                "mlm/layer_norm/bias": (16,),
                "mlm/layer_norm/scale": (16,),
                "mlm/transform/bias": (16,),
                "mlm/transform/kernel": (16, 16),
            },
            0,
        ),
    ],
)
def test_head_trees(cls, head, pooled):
    params = init_params(cls(TINY), jax.random.key(0))
    assert cls.pooled == bool(pooled) and ("pooler" in params["bert"]) == bool(pooled)
    flat = {"/".join(k.key for k in p): a.shape for p, a in jax.tree.leaves_with_path(params)}
    assert {p: s for p, s in flat.items() if not p.startswith("bert/")} == head


def test_token_classification_by_hand():
    model = BertForTokenClassification(TINY)
    params, (ids, mask) = perturbed(model), batch()
    logits = model.apply({"params": params}, ids, mask)
    x, _ = encoder(params, ids, mask, pooled=False)
    assert logits.shape == (2, 6, 3) and logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, linear(x, params["classifier"]), atol=1e-5)


def test_question_answering_by_hand():
    model = BertForQuestionAnswering(TINY)
    params, (ids, mask) = perturbed(model), batch()
    out = model.apply({"params": params}, ids, mask)
    assert isinstance(out, SpanLogits) and out.start_logits.shape == out.end_logits.shape == (2, 6)
    x, _ = encoder(params, ids, mask, pooled=False)
    expected = linear(x, params["qa_outputs"])  # (b, t, 2)
    np.testing.assert_allclose(out.start_logits, expected[..., 0], atol=1e-5)
    np.testing.assert_allclose(out.end_logits, expected[..., 1], atol=1e-5)


def test_multiple_choice_scores_each_choice_alone():
    model = BertForMultipleChoice(TINY)
    params, (ids, mask) = perturbed(model), batch((2, 3, 6))
    logits = model.apply({"params": params}, ids, mask)
    assert logits.shape == (2, 3)
    for k in range(3):
        _, pooled = encoder(params, ids[:, k], mask[:, k])
        expected = linear(pooled, params["classifier"])[:, 0]
        np.testing.assert_allclose(logits[:, k], expected, atol=1e-5, err_msg=f"choice {k}")


@pytest.mark.parametrize("rank2", ["input_ids", "attention_mask"])
def test_multiple_choice_inputs_must_be_rank_3(rank2):
    model = BertForMultipleChoice(TINY)
    params = init_params(model, jax.random.key(0))
    ids, mask = batch((2, 3, 6))
    inputs = {"input_ids": ids, "attention_mask": mask}
    inputs[rank2] = inputs[rank2][:, 0]
    with pytest.raises(
        ValueError, match=rf"\(batch, choices, length\).*{rank2} has shape \(2, 6\)"
    ):
        model.apply({"params": params}, **inputs)


def test_masked_lm_decoder_is_the_word_embeddings():
    model = BertForMaskedLM(TINY)
    params, (ids, mask) = perturbed(model), batch()
    logits = model.apply({"params": params}, ids, mask)
    assert logits.shape == (2, 6, TINY.vocab_size)

    x, _ = encoder(params, ids, mask, pooled=False)
    head = jax.tree.map(lambda a: np.asarray(a, np.float64), params["mlm"])
    y = np.asarray(layers.gelu_tanh(linear(x, head["transform"])))
    y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5)
    y = y * head["layer_norm"]["scale"] + head["layer_norm"]["bias"]
    table = np.asarray(params["bert"]["embeddings"]["token"]["embedding"], np.float64)
    np.testing.assert_allclose(logits, y @ table.T + head["bias"], atol=1e-4)

    # The decoder reads the embedding table itself: changing one changes the other's logits.
    changed = jax.tree.map(lambda a: a, params)
    changed["bert"]["embeddings"]["token"]["embedding"] = (
        params["bert"]["embeddings"]["token"]["embedding"].at[7].add(1.0)
    )
    moved = np.asarray(model.apply({"params": changed}, ids, mask) != logits)
    assert moved[..., 7].all()


@pytest.mark.parametrize(
    "cls, shape",
    [
        (BertForSequenceClassification, (2, 6)),
        (BertForTokenClassification, (2, 6)),
        (BertForQuestionAnswering, (2, 6)),
        (BertForMultipleChoice, (2, 3, 6)),
        (BertForMaskedLM, (2, 6)),
    ],
)
def test_dropout_only_when_training(cls, shape):
    model = cls(TINY.replace(classifier_dropout=0.5))
    params, (ids, mask) = init_params(model, jax.random.key(0)), batch(shape)

    def run(**kwargs):
        return jax.tree.leaves(model.apply({"params": params}, ids, mask, **kwargs))

    evaluation = run()  # no dropout key needed
    for a, b in zip(evaluation, run(train=False), strict=True):
        np.testing.assert_array_equal(a, b)
    trained = run(train=True, rngs={"dropout": jax.random.key(1)})
    assert all(not np.allclose(a, b) for a, b in zip(evaluation, trained, strict=True))
