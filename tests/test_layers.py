"""jaxformer.layers, the reference equations, against NumPy written from the same equations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import key_padding_mask, mask_and_bias, np_attention, qkv

from jaxformer import layers
from jaxformer.hf import config as hf_config

pytestmark = pytest.mark.usefixtures("strict_promotion")

np_erf = np.vectorize(math.erf)
NP_ACTIVATIONS = {
    "gelu": lambda z: 0.5 * z * (1 + np_erf(z / math.sqrt(2))),
    "gelu_tanh": lambda z: 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3))),
    "relu": lambda z: np.maximum(z, 0),
    "silu": lambda z: z / (1 + np.exp(-z)),
}
# Hugging Face's hidden_act name -> the NumPy formula it must be.
HF_NAMES = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def f32(*arrays):
    return [jnp.asarray(a, jnp.float32) for a in arrays]


@pytest.mark.parametrize("eps", [1e-12, 1e-6, 1e-1])
def test_layer_norm_matches_numpy(eps, rng):
    x = rng.normal(size=(2, 3, 8)) * 3 + 1
    scale, bias = rng.normal(size=8), rng.normal(size=8)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    expected = expected * scale + bias
    got = layers.layer_norm(*f32(x, scale, bias), eps)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_layer_norm_keeps_bfloat16_with_float32_statistics():
    """A row whose mean dwarfs its spread: bfloat16 statistics would lose the spread entirely."""
    x = jnp.asarray([[128.0, 129.0, 130.0, 131.0]], jnp.bfloat16)  # exact in bfloat16
    scale, bias = jnp.ones(4, jnp.float32), jnp.zeros(4, jnp.float32)
    got = layers.layer_norm(x, scale, bias, 0.0)
    assert got.dtype == jnp.bfloat16
    expected = (np.arange(4) - 1.5) / math.sqrt(1.25)  # mean 129.5, variance 1.25
    np.testing.assert_allclose(np.asarray(got, np.float32)[0], expected, atol=1e-2)


def test_activation_table_names_the_right_formulas():
    z = np.linspace(-6, 6, 97)
    assert set(layers.ACTIVATIONS) == set(NP_ACTIVATIONS)
    assert set(hf_config.HF_ACTIVATIONS) == set(HF_NAMES)
    assert set(hf_config.WRITTEN_ACTIVATIONS) == set(layers.ACTIVATIONS)
    for name, formula in HF_NAMES.items():
        ours = layers.ACTIVATIONS[hf_config.HF_ACTIVATIONS[name]]
        got = np.asarray(ours(jnp.asarray(z, jnp.float32)))
        np.testing.assert_allclose(got, NP_ACTIVATIONS[formula](z), atol=1e-5, err_msg=name)
    for ours, written in hf_config.WRITTEN_ACTIVATIONS.items():
        assert HF_NAMES[written] == ours  # config.json gets a name transformers reads as ours
    # exact and tanh GELU differ by more than the tolerance above: the table cannot mix them up
    assert np.abs(NP_ACTIVATIONS["gelu"](z) - NP_ACTIVATIONS["gelu_tanh"](z)).max() > 1e-4


def test_gelu_by_hand():
    # Phi(1) = 0.841344746..., Phi(-1) = 1 - Phi(1)
    got = np.asarray(layers.gelu(jnp.asarray([0.0, 1.0, -1.0], jnp.float32)))
    np.testing.assert_allclose(got, [0.0, 0.8413447, -0.1586553], atol=1e-6)


@pytest.mark.parametrize("contract", [1, 2])
def test_dense_matches_numpy(contract, rng):
    """x W_q + b_q (x (b, t, m), W (m, h, d)) and o W_o + b_o (o (b, t, h, d), W (h, d, m))."""
    if contract == 1:
        x, w, b = rng.normal(size=(2, 5, 6)), rng.normal(size=(6, 3, 4)), rng.normal(size=(3, 4))
        expected = np.einsum("btm,mhd->bthd", x, w) + b
    else:
        x, w, b = rng.normal(size=(2, 5, 3, 4)), rng.normal(size=(3, 4, 6)), rng.normal(size=6)
        expected = np.einsum("bthd,hdm->btm", x, w) + b
    got = layers.dense(*f32(x, w, b), contract)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "silu"])
def test_feed_forward_matches_numpy(activation, rng):
    x = rng.normal(size=(2, 3, 8))
    w1, b1 = rng.normal(size=(8, 16)), rng.normal(size=16)
    w2, b2 = rng.normal(size=(16, 8)), rng.normal(size=8)
    expected = NP_ACTIVATIONS[activation](x @ w1 + b1) @ w2 + b2
    got = layers.feed_forward(*f32(x, w1, b1, w2, b2), activation)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_keeps_one_minus_rate_and_rescales(rate):
    x = jnp.ones((512, 384), jnp.float32)
    y = np.asarray(layers.dropout(x, rate, jax.random.key(0)))
    kept = y > 0
    p = 1 - rate
    assert abs(kept.mean() - p) < 5 * math.sqrt(p * (1 - p) / kept.size), kept.mean()
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)
    assert set(np.unique(y)) == {0.0, np.float32(1 / (1 - rate))}
    np.testing.assert_array_equal(y, np.asarray(layers.dropout(x, rate, jax.random.key(0))))
    assert not np.array_equal(y, np.asarray(layers.dropout(x, rate, jax.random.key(1))))


def test_dropout_edge_rates():
    x = jnp.arange(6, dtype=jnp.float32).reshape(2, 3)
    np.testing.assert_array_equal(np.asarray(layers.dropout(x, 0.0, jax.random.key(0))), x)
    np.testing.assert_array_equal(np.asarray(layers.dropout(x, 1.0, jax.random.key(0))), 0 * x)


def test_attention_weights_by_hand():
    """One head, d = 4, two keys with scores 0 and 2 (1 . k / sqrt(4)): weights 1/(1+e^2) and
    e^2/(1+e^2); a masked third key gets exactly zero."""
    q = jnp.ones((1, 1, 1, 4), jnp.float32)
    k = jnp.asarray([0.0, 1.0, 5.0], jnp.float32)[None, :, None, None] * jnp.ones(4, jnp.float32)
    mask = jnp.asarray([True, True, False])[None, None, None, :]
    got = np.asarray(layers.attention_weights(q, k, mask))[0, 0, 0]
    e2 = math.exp(2.0)
    np.testing.assert_allclose(got, [1 / (1 + e2), e2 / (1 + e2), 0.0], rtol=1e-6)
    assert got[2] == 0.0


def test_attention_rows_sum_to_one_and_masked_keys_get_exactly_zero(rng):
    q, k, _ = qkv(rng)
    mask = layers.padding_mask(jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    probs = np.asarray(layers.attention_weights(q, k, mask))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    assert (probs[0, :, :, 3:] == 0.0).all()  # exactly zero, not just small


@pytest.mark.parametrize("left", [False, True])
def test_attention_matches_numpy_with_padding_mask(left, rng):
    q, k, v = qkv(rng, t=6, s=6)
    mask = key_padding_mask([6, 3], 6, left=left)
    expected = np_attention(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(layers.attention(q, k, v, mask)), expected, atol=1e-5)


@pytest.mark.parametrize(
    "mask_shape, bias_shape",
    [((1, 1, 6, 6), (1, 3, 6, 6)), ((2, 3, 6, 6), (6,)), ((6, 6), None), (None, (2, 1, 1, 6))],
)
def test_attention_matches_numpy_with_bias_and_masks(mask_shape, bias_shape, rng):
    """Per-head and shared masks and biases of any broadcastable rank."""
    q, k, v = qkv(rng, t=6, s=6)
    mask, bias = mask_and_bias(rng, mask_shape, bias_shape)
    got = layers.attention(
        q,
        k,
        v,
        None if mask is None else jnp.asarray(mask),
        None if bias is None else jnp.asarray(bias, jnp.float32),
    )
    np.testing.assert_allclose(np.asarray(got), np_attention(q, k, v, mask, bias), atol=1e-5)


def test_fully_masked_rows_are_zero_not_nan(rng):
    q, k, v = qkv(rng)
    mask = jnp.zeros((2, 1, 5, 5), bool).at[1].set(True)  # example 0: nothing to attend to
    out = np.asarray(layers.attention(q, k, v, mask))
    assert (out[0] == 0).all()
    np.testing.assert_allclose(out[1], np_attention(q, k, v)[1], atol=1e-5)
    grads = jax.grad(lambda q, k, v: layers.attention(q, k, v, mask).sum(), (0, 1, 2))(q, k, v)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_attention_dropout_is_applied_to_the_weights(rng):
    """The output is linear in the weights: a `dropout` that doubles them doubles the output,
    and one that zeroes key 0's weight equals attention with key 0's value set to zero."""
    q, k, v = qkv(rng)
    plain = np.asarray(layers.attention(q, k, v))
    doubled = layers.attention(q, k, v, dropout=lambda e: 2.0 * e)
    np.testing.assert_allclose(np.asarray(doubled), 2 * plain, rtol=1e-6, atol=1e-6)
    drop_key0 = layers.attention(q, k, v, dropout=lambda e: e.at[..., 0].set(0.0))
    np.testing.assert_allclose(
        np.asarray(drop_key0), np.asarray(layers.attention(q, k, v.at[:, 0].set(0.0))), atol=1e-6
    )


def test_padding_mask():
    got = layers.padding_mask(jnp.array([[1, 1, 0], [1, 0, 0]]))
    assert got.shape == (2, 1, 1, 3) and got.dtype == jnp.bool_
    np.testing.assert_array_equal(
        np.asarray(got)[:, 0, 0], [[True, True, False], [True] + [False] * 2]
    )


@pytest.mark.parametrize("width", [16, 15])
def test_sinusoidal_positions_match_the_paper(width):
    pe = np.asarray(layers.sinusoidal_positions(50, width))
    assert pe.shape == (50, width)
    for p in (0, 1, 7, 49):
        for j in range(width):
            angle = p / 10000 ** (2 * (j // 2) / width)
            want = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert pe[p, j] == pytest.approx(want, abs=1e-5), (p, j)


def test_embed_sums_three_tables(rng):
    tok, typ, pos = f32(*(rng.normal(size=(n, 4)) for n in (10, 2, 6)))
    ids, types, positions = jnp.array([[3, 1]]), jnp.array([[0, 1]]), jnp.array([[0, 5]])
    got = np.asarray(layers.embed(ids, types, positions, tok, typ, pos))
    assert got.shape == (1, 2, 4)
    np.testing.assert_allclose(got[0, 0], np.asarray(tok[3] + typ[0] + pos[0]), atol=1e-6)
    np.testing.assert_allclose(got[0, 1], np.asarray(tok[1] + typ[1] + pos[5]), atol=1e-6)
