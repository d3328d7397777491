"""jaxformer.kernels.scan, attention one head at a time, against `layers.attention` (the reference
it replaces) and NumPy: values and gradients, masks, biases, left padding, dropout per head."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import key_padding_mask, mask_and_bias, np_attention, np_softmax, qkv

from jaxformer import layers
from jaxformer.kernels import dropout as dropout_lib
from jaxformer.kernels import scan

pytestmark = pytest.mark.usefixtures("strict_promotion")


def value_and_grads(fn, q, k, v, cotangent):
    """(fn(q, k, v), d/d(q, k, v) of sum(fn * cotangent)), jitted."""

    def loss(q, k, v):
        out = fn(q, k, v)
        return (out * cotangent).sum(), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(q, k, v)
    return out, grads


def assert_same(got, want, atol=1e-5):
    (out_a, grads_a), (out_b, grads_b) = got, want
    np.testing.assert_allclose(np.asarray(out_a), np.asarray(out_b), atol=atol)
    for name, ga, gb in zip("qkv", grads_a, grads_b, strict=True):
        assert np.isfinite(np.asarray(ga)).all(), name
        np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), atol=atol, err_msg=name)


@pytest.mark.parametrize("key0_offset", [0.0, -200.0, 300.0])
def test_softmax_numerator_with_any_key0_score(key0_offset, rng):
    """p / l is the softmax whether key 0's score is typical, far below the row max (the shift
    from it would overflow: recomputed with the max) or far above it; values of any size."""
    scores = rng.normal(size=(2, 3, 6)) * 4 + 500.0  # large scores: no overflow either way
    scores[..., 0] += key0_offset
    scores = scores.astype(np.float32)  # the reference softmax in float64 of the same values
    p, l = scan.softmax_numerator(jnp.asarray(scores), None)
    np.testing.assert_allclose(np.asarray(p / l), np_softmax(scores.astype(np.float64)), atol=1e-6)


def test_softmax_numerator_of_a_fully_masked_row_is_zero(rng):
    scores = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
    mask = jnp.asarray([[True, False, True, True], [False] * 4])
    p, l = scan.softmax_numerator(scores, mask)
    got = np.asarray(p / l)
    assert (got[1] == 0).all() and got[0, 1] == 0
    want = np_softmax(np.asarray(scores, np.float64)[0, [0, 2, 3]])
    np.testing.assert_allclose(got[0, [0, 2, 3]], want, atol=1e-6)


@pytest.mark.parametrize(
    "mask_shape, bias_shape",
    [((1, 1, 6, 6), (1, 3, 6, 6)), ((2, 3, 6, 6), (6,)), ((6, 6), None), (None, (2, 1, 1, 6))],
)
def test_matches_reference_with_bias_and_masks(mask_shape, bias_shape, rng):
    """Per-head and shared masks and biases of any broadcastable rank, values and gradients."""
    q, k, v = qkv(rng, t=6, s=6)
    mask, bias = mask_and_bias(rng, mask_shape, bias_shape)
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    got = value_and_grads(lambda q, k, v: scan.attention(q, k, v, mask, bias), q, k, v, cotangent)
    want = value_and_grads(
        lambda q, k, v: layers.attention(q, k, v, mask, bias), q, k, v, cotangent
    )
    assert_same(got, want)
    np.testing.assert_allclose(np.asarray(got[0]), np_attention(q, k, v, mask, bias), atol=1e-5)


@pytest.mark.parametrize("lengths", [[4, 6], [6, 1]])
def test_left_padding_matches_numpy_and_reference(lengths, rng):
    """Key 0 masked (left padding): the shift from key 0's score falls back to the row max."""
    q, k, v = qkv(rng, t=6, s=6)
    mask = key_padding_mask(lengths, 6, left=True)
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    got = value_and_grads(lambda q, k, v: scan.attention(q, k, v, mask), q, k, v, cotangent)
    want = value_and_grads(lambda q, k, v: layers.attention(q, k, v, mask), q, k, v, cotangent)
    assert_same(got, want)
    np.testing.assert_allclose(np.asarray(got[0]), np_attention(q, k, v, mask), atol=1e-5)


@pytest.mark.parametrize("key0_bias", [300.0, -300.0])
@pytest.mark.parametrize("dropout", [False, True])
def test_masked_key0_far_from_the_scores(key0_bias, dropout, rng):
    """Key 0 masked, its raw score far above (every weight would underflow) or below (overflow)
    the others: still the masked softmax, values and gradients, with or without dropout."""
    q, k, v = qkv(rng, t=6, s=6)
    mask = key_padding_mask([5, 3], 6, left=True)  # key 0 masked in both examples
    bias = jnp.zeros((2, 1, 1, 6), jnp.float32).at[..., 0].set(key0_bias)
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    # At rate 1e-9 dropout keeps every weight, yet the dropout branch runs (the denominator
    # summed in a pass of its own), so it must give the reference too.
    rate, drop_rng = (1e-9, jax.random.key(1)) if dropout else (0.0, None)
    got = value_and_grads(
        lambda q, k, v: scan.attention(q, k, v, mask, bias, rate, drop_rng), q, k, v, cotangent
    )
    want = value_and_grads(
        lambda q, k, v: layers.attention(q, k, v, mask, bias), q, k, v, cotangent
    )
    assert_same(got, want)
    np.testing.assert_allclose(np.asarray(got[0]), np_attention(q, k, v, mask), atol=1e-5)


def test_fully_masked_rows_are_zero_not_nan(rng):
    q, k, v = qkv(rng)
    mask = jnp.zeros((2, 1, 5, 5), bool).at[1].set(True)  # example 0: nothing to attend to
    cotangent = jnp.ones(q.shape, jnp.float32)
    got = value_and_grads(lambda q, k, v: scan.attention(q, k, v, mask), q, k, v, cotangent)
    want = value_and_grads(lambda q, k, v: layers.attention(q, k, v, mask), q, k, v, cotangent)
    assert (np.asarray(got[0])[0] == 0).all()
    assert_same(got, want)


def per_head_reference(q, k, v, mask, rate, rng):
    """`layers.attention` head by head, head i's weights dropped by `kernels.dropout` with key
    split(rng, h)[i]: the dropout that scan.attention documents."""
    heads = [
        layers.attention(
            q[:, :, i : i + 1],
            k[:, :, i : i + 1],
            v[:, :, i : i + 1],
            mask,
            dropout=functools.partial(dropout_lib.dropout, rate=rate, rng=head_rng),
        )
        for i, head_rng in enumerate(jax.random.split(rng, q.shape[2]))
    ]
    return jnp.concatenate(heads, axis=2)  # (b, t, h, d)


def test_dropout_matches_the_per_head_reference(rng):
    """The weights dropped after the softmax, each head with its own key, and the gradient
    through the same (saved) keep mask as the forward pass."""
    q, k, v = qkv(rng, b=2, t=8, s=8, h=3, d=4)
    mask = key_padding_mask([8, 5], 8)
    rate, drop_rng = 0.3, jax.random.key(7)
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    got = value_and_grads(
        lambda q, k, v: scan.attention(q, k, v, mask, None, rate, drop_rng), q, k, v, cotangent
    )
    want = value_and_grads(
        lambda q, k, v: per_head_reference(q, k, v, mask, rate, drop_rng), q, k, v, cotangent
    )
    assert_same(got, want)
    without = np.asarray(scan.attention(q, k, v, mask))
    assert np.abs(np.asarray(got[0]) - without).max() > 1e-2  # dropout did drop something


def test_dropout_is_deterministic_per_key(rng):
    q, k, v = qkv(rng)
    a, b, c = (scan.attention(q, k, v, None, None, 0.5, jax.random.key(n)) for n in (3, 3, 4))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_the_backward_pass_keeps_the_keep_mask_not_the_weights(rng):
    """The remat policy saves only DROPOUT_MASK: the residuals of the VJP hold a boolean mask of
    the (h, b, t, s) weights' shape and no float array of that shape."""
    q, k, v = qkv(rng, b=2, t=8, s=8, h=3, d=4)
    drop_rng = jax.random.key(0)
    _, vjp = jax.vjp(lambda q, k, v: scan.attention(q, k, v, None, None, 0.3, drop_rng), q, k, v)
    shapes = {(leaf.shape, str(leaf.dtype)) for leaf in jax.tree.leaves(vjp)}
    assert ((3, 2, 8, 8), "bool") in shapes
    assert not any(shape == (3, 2, 8, 8) and dtype != "bool" for shape, dtype in shapes)
