"""jaxformer.kernels.fused, attention through jax.nn.dot_product_attention, against
`layers.attention` (the reference it replaces) and NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import key_padding_mask, mask_and_bias, np_attention, qkv

from jaxformer import layers
from jaxformer.kernels import fused

pytestmark = pytest.mark.usefixtures("strict_promotion")


@pytest.mark.parametrize(
    "mask_shape, bias_shape",
    [
        ((1, 1, 6, 6), (1, 3, 6, 6)),
        ((2, 3, 6, 6), (1, 1, 1, 6)),
        ((1, 1, 6, 6), None),
        (None, (2, 1, 1, 6)),
        (None, None),
    ],
)
def test_matches_reference_with_bias_and_masks(mask_shape, bias_shape, rng):
    """Values and gradients, shared and per-head masks and biases."""
    q, k, v = qkv(rng, t=6, s=6)
    mask, bias = mask_and_bias(rng, mask_shape, bias_shape)
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

    def run(fn):
        def loss(q, k, v):
            return (fn(q, k, v, mask, bias) * cotangent).sum()

        out = jax.jit(lambda q, k, v: fn(q, k, v, mask, bias))(q, k, v)
        return out, jax.jit(jax.grad(loss, (0, 1, 2)))(q, k, v)

    (out, grads), (want, want_grads) = run(fused.attention), run(layers.attention)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), np_attention(q, k, v, mask, bias), atol=1e-5)
    for name, g, w in zip("qkv", grads, want_grads, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5, err_msg=name)


def test_padding_mask_matches_numpy(rng):
    q, k, v = qkv(rng)
    mask = key_padding_mask([5, 3], 5)
    got = fused.attention(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(got), np_attention(q, k, v, mask), atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 1, 5, 5), (2, 1, 1, 5)])
def test_fully_masked_rows_are_zero_as_in_the_reference(shape, rng):
    """jax.nn.dot_product_attention alone gives such a query the mean of the values."""
    q, k, v = qkv(rng)
    mask = jnp.zeros(shape, bool).at[1].set(True)  # example 0: nothing to attend to
    out = np.asarray(fused.attention(q, k, v, mask))
    assert not np.isnan(out).any()
    assert (out[0] == 0).all()
    np.testing.assert_allclose(out, np.asarray(layers.attention(q, k, v, mask)), atol=1e-5)
