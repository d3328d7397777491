"""jaxformer.kernels.dropout: its Threefry words are jax's, and its dropout keeps the rate of
`layers.dropout` (the reference it replaces) with 16 bits per element."""

import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import layers
from jaxformer.kernels import dropout as dropout_lib

pytestmark = pytest.mark.usefixtures("strict_promotion")


def test_threefry_is_jax_threefry(rng):
    key = jnp.asarray(rng.integers(0, 2**32, size=2, dtype=np.uint32))
    x0, x1 = (jnp.asarray(rng.integers(0, 2**32, size=257, dtype=np.uint32)) for _ in range(2))
    expected = np.asarray(jax.extend.random.threefry_2x32(key, jnp.concatenate([x0, x1])))
    got = jax.jit(dropout_lib.threefry_2x32)(key[0], key[1], x0, x1)
    np.testing.assert_array_equal(np.concatenate([np.asarray(w) for w in got]), expected)


@pytest.mark.parametrize("shape", [(7, 10), (7, 9), (1,)])
def test_random_words_are_jax_threefry_bits(shape):
    key = jax.random.key(3)
    with jax.threefry_partitionable(False):  # the counter-mode form random_words computes
        expected = np.asarray(jax.random.bits(key, shape, jnp.uint32))
    np.testing.assert_array_equal(np.asarray(dropout_lib.random_words(key, shape)), expected)
    raw = jax.random.PRNGKey(3)  # legacy uint32 keys give the same words
    np.testing.assert_array_equal(np.asarray(dropout_lib.random_words(raw, shape)), expected)
    other = np.asarray(dropout_lib.random_words(jax.random.key(4), shape))
    assert not np.array_equal(other, expected)


def test_random_words_of_other_prng_keys_come_from_jax():
    key = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(
        np.asarray(dropout_lib.random_words(key, (4, 6))),
        np.asarray(jax.random.bits(key, (4, 6), jnp.uint32)),
    )


def keep_fraction_bound(p: float, n: int) -> float:
    return 5 * math.sqrt(p * (1 - p) / n)  # five standard deviations of a Bernoulli mean


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keeps_one_minus_rate_and_rescales_as_the_reference(rate):
    x = jnp.ones((2048, 384), jnp.float32)
    y = np.asarray(dropout_lib.dropout(x, rate, jax.random.key(0)))
    reference = np.asarray(layers.dropout(x, rate, jax.random.key(0)))
    kept, p = y > 0, 1 - rate
    assert abs(kept.mean() - p) < keep_fraction_bound(p, kept.size), kept.mean()
    assert abs(kept.mean() - (reference > 0).mean()) < 2 * keep_fraction_bound(p, kept.size)
    assert set(np.unique(y)) == set(np.unique(reference)) == {0.0, np.float32(1 / (1 - rate))}
    for half in (kept[:, ::2], kept[:, 1::2]):  # the low and high 16 bits of each word
        assert abs(half.mean() - p) < keep_fraction_bound(p, half.size), half.mean()
    np.testing.assert_array_equal(y, np.asarray(dropout_lib.dropout(x, rate, jax.random.key(0))))
    assert not np.array_equal(y, np.asarray(dropout_lib.dropout(x, rate, jax.random.key(1))))


def test_keep_decision_is_the_16_bit_threshold():
    """Element 2j and 2j + 1 are kept when the low and the high 16 bits of word j are below
    round((1 - rate) 2^16)."""
    rate, key = 0.3, jax.random.key(5)
    words = np.asarray(dropout_lib.random_words(key, (4, 8)))  # (..., n / 2)
    halves = np.stack([words & 0xFFFF, words >> 16], axis=-1).reshape(4, 16)
    expected = halves < round(0.7 * 2**16)
    got = np.asarray(dropout_lib.dropout(jnp.ones((4, 16), jnp.float32), rate, key)) > 0
    np.testing.assert_array_equal(got, expected)


def test_odd_width_and_edge_rates_are_the_reference():
    x = jnp.arange(2 * 383, dtype=jnp.float32).reshape(2, 383) + 1
    for rate in (0.0, 0.4, 1.0):
        np.testing.assert_array_equal(
            np.asarray(dropout_lib.dropout(x, rate, jax.random.key(0))),
            np.asarray(layers.dropout(x, rate, jax.random.key(0))),
        )
    even = x[:, :382]
    np.testing.assert_array_equal(
        np.asarray(dropout_lib.dropout(even, 0.0, jax.random.key(0))), even
    )
    assert not np.asarray(dropout_lib.dropout(even, 1.0, jax.random.key(0))).any()


def test_the_keep_mask_carries_its_checkpoint_name():
    def fn(x):
        return dropout_lib.dropout(x, 0.5, jax.random.key(0), name="the_keep_mask")

    assert "the_keep_mask" in str(jax.make_jaxpr(fn)(jnp.ones((2, 4), jnp.float32)))
