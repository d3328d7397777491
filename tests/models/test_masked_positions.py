"""Masked-LM modules decode only the positions asked for: with `masked_positions` (b, p) their
logits are the full (b, t, vocab) logits at those positions, for every family's module."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import families
from jaxformer.models import init_params
from jaxformer.models.config import BertConfig

SHAPES = dict(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=24,
    max_position_embeddings=24,
    pad_token_id=0,
)
EXTRA = {  # what a family's config.json needs beyond the shapes
    "albert": dict(embedding_size=8),
    "electra": dict(embedding_size=8),
    "deberta-v2": dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=4),
    "deberta": dict(relative_attention=True, pos_att_type=["p2c", "c2p"]),
    "roberta": dict(pad_token_id=1, max_position_embeddings=26),
    "camembert": dict(pad_token_id=1, max_position_embeddings=26),
    "mpnet": dict(pad_token_id=1, max_position_embeddings=26),
}
MLM_TYPES = [t for t in sorted(families.FAMILIES) if "masked_lm" in families.family(t).models]


DISTILBERT_NAMES = dict(  # DistilBERT's config.json spelling
    hidden_size="dim", num_hidden_layers="n_layers", num_attention_heads="n_heads"
)


def model_and_params(model_type):
    hf = {"model_type": model_type, **SHAPES, **EXTRA.get(model_type, {})}
    if model_type == "distilbert":
        hf = {DISTILBERT_NAMES.get(k, k): v for k, v in hf.items()}
        hf["hidden_dim"] = hf.pop("intermediate_size")
    config = BertConfig.from_hf(hf)
    model = families.model_class(model_type, "masked_lm")(config)
    params = init_params(model, jax.random.key(0))
    leaves, tree = jax.tree.flatten(params)  # off the initial values: non-zero biases
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = tree.unflatten(
        [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )
    return model, params


def inputs(b=3, t=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, SHAPES["vocab_size"], (b, t)).astype(np.int32)
    mask = (np.arange(t) < np.array([t, t - 3, t - 5])[:b, None]).astype(np.int32)
    return jnp.asarray(ids * mask), jnp.asarray(mask)


def test_every_family_with_a_masked_lm_is_covered():
    assert {"bert", "modernbert", "roberta", "deberta-v2", "albert"} <= set(MLM_TYPES)


@pytest.mark.parametrize("model_type", MLM_TYPES)
def test_gathered_logits_are_the_dense_logits_at_the_positions(model_type):
    model, params = model_and_params(model_type)
    ids, mask = inputs()
    dense = model.apply({"params": params}, ids, mask)
    assert dense.shape == (3, 12, SHAPES["vocab_size"])
    # Unordered, repeated, and padding slots (index 0) as the masked-LM batches have them.
    positions = jnp.asarray([[3, 0, 11, 5], [1, 2, 0, 0], [6, 6, 4, 0]], jnp.int32)
    sparse = model.apply({"params": params}, ids, mask, masked_positions=positions)
    assert sparse.shape == (3, 4, SHAPES["vocab_size"]) and sparse.dtype == jnp.float32
    expected = np.take_along_axis(np.asarray(dense), np.asarray(positions)[..., None], axis=1)
    np.testing.assert_allclose(sparse, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", ["bert", "modernbert"])
def test_gathered_logits_in_training_and_their_gradients(model_type):
    model, params = model_and_params(model_type)
    ids, mask = inputs()
    positions = jnp.asarray([[3, 7], [0, 2], [6, 0]], jnp.int32)
    labels = jnp.asarray([[4, 9], [11, -100], [7, -100]], jnp.int32)
    rng = {"dropout": jax.random.key(2)}

    def loss(p, sparse):
        kw = {"masked_positions": positions} if sparse else {}
        logits = model.apply({"params": p}, ids, mask, train=True, rngs=rng, **kw)
        if not sparse:
            logits = jnp.take_along_axis(logits, positions[..., None], axis=1)
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
        return jnp.sum(nll * (labels != -100))

    (ls, gs), (ld, gd) = (jax.value_and_grad(loss)(params, s) for s in (True, False))
    np.testing.assert_allclose(ls, ld, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(gs), jax.tree.leaves(gd), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_masked_positions_must_be_a_batch_of_integer_rows():
    model, params = model_and_params("bert")
    ids, mask = inputs()
    for bad, what in [
        (jnp.zeros((3,), jnp.int32), r"shape \(3,\)"),
        (jnp.zeros((2, 4), jnp.int32), r"shape \(2, 4\).*batch 3"),
        (jnp.zeros((3, 4), jnp.float32), "integer"),
    ]:
        with pytest.raises(ValueError, match=what):
            model.apply({"params": params}, ids, mask, masked_positions=bad)
