"""jaxformer.kernels.splash: the key mask as segment ids, what the kernel takes, and its values
against NumPy and `layers.attention` in Pallas's interpreter (which runs on CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import key_padding_mask, np_attention, qkv

from jaxformer import layers

splash = pytest.importorskip("jaxformer.kernels.splash", reason="needs jax's Pallas TPU ops")

ON_TPU = jax.default_backend() == "tpu"


def test_segment_ids_put_padded_keys_in_a_segment_of_their_own():
    mask = jnp.asarray([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]], bool)[:, None, None, :]
    q_ids, kv_ids = splash.segment_ids(mask, 3, 5)
    np.testing.assert_array_equal(np.asarray(q_ids), np.zeros((3, 5), np.int32))
    want = [[0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]]  # example 2 has no key: all kept
    np.testing.assert_array_equal(np.asarray(kv_ids), np.asarray(want, np.int32))
    assert kv_ids.dtype == jnp.int32 and q_ids.dtype == jnp.int32


def test_segment_ids_of_a_shared_mask_cover_the_batch():
    _, kv_ids = splash.segment_ids(key_padding_mask([2], 3), 2, 3)
    np.testing.assert_array_equal(np.asarray(kv_ids), [[0, 0, 1], [0, 0, 1]])


def test_supports():
    x = jnp.zeros((2, 256, 2, 128), jnp.bfloat16)
    mask = key_padding_mask([256, 100], 256)
    assert splash.supports(x, x, x, mask, None, None)
    assert splash.supports(x, x, x, None, None, 64)
    assert not splash.supports(x, x, x, mask, jnp.zeros((256,), jnp.float32), None)
    assert not splash.supports(x, x, x, jnp.tril(jnp.ones((256, 256), bool)), None, None)
    short = jnp.zeros((2, 200, 2, 128), jnp.bfloat16)  # not whole blocks
    assert not splash.supports(short, short, short, None, None, None)
    narrow = jnp.zeros((2, 256, 2, 64), jnp.bfloat16)
    assert not splash.supports(narrow, narrow, narrow, None, None, None)


@pytest.mark.parametrize(
    "lengths, window", [([128, 70], None), ([128, 70], 32), ([0, 128], None), ([128, 5], 8)]
)
def test_interpreted_kernel_matches_numpy_and_the_reference(lengths, window, rng):
    """[128, 5] with window 8: queries 10.. of example 1 see no key (zeros, as the reference)."""
    q, k, v = qkv(rng, b=2, t=128, s=128, h=2, d=128)
    mask = key_padding_mask(lengths, 128)
    full = mask if window is None else mask & layers.sliding_window_mask(128, 128, window)
    got = jax.jit(lambda q, k, v: splash.attention(q, k, v, mask, window, interpret=True))(q, k, v)
    got = np.asarray(got)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, np_attention(q, k, v, full), atol=1e-4)
    np.testing.assert_allclose(got, np.asarray(layers.attention(q, k, v, full)), atol=1e-4)


def test_interpreted_gradients_match_the_reference(rng):
    q, k, v = qkv(rng, b=2, t=128, s=128, h=1, d=128)
    mask = key_padding_mask([128, 40], 128)
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

    def grads(fn):
        return jax.jit(jax.grad(lambda *a: (fn(*a, mask) * cotangent).sum(), (0, 1, 2)))(q, k, v)

    got = grads(lambda *a: splash.attention(*a, interpret=True))
    for name, g, w in zip("qkv", got, grads(layers.attention), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-4, err_msg=name)


@pytest.mark.skipif(not ON_TPU, reason="the compiled splash kernel needs a TPU")
def test_compiled_kernel_matches_the_reference_in_bfloat16(rng):
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(rng, b=2, t=256, s=256, h=4, d=128))
    mask = key_padding_mask([256, 99], 256)
    got = jax.jit(lambda q, k, v: splash.attention(q, k, v, mask))(q, k, v)
    want = layers.attention(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=2e-2)
