"""Dropout with cheap random bits: the same equation as `layers.dropout`, a quarter of the
random-number work.

Random-number generation is a large share of a CPU training step. `jax.random.bernoulli` spends
one Threefry-2x32 evaluation and 32 bits per element, and jax's CPU lowering runs Threefry's 20
rounds as a 5-iteration while loop whose state goes through memory. Here the rounds are written
out (so XLA fuses the hash into the op that uses its words), both output words of each
evaluation are used, and each element gets 16 bits: four elements per evaluation. The keep
probability is round((1 - rate) 2^16) / 2^16, within 1e-5 of 1 - rate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxformer import layers

Array = jax.Array
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry_2x32(key0: Array, key1: Array, x0: Array, x1: Array) -> tuple[Array, Array]:
    """Threefry-2x32 (20 rounds) of the counter pairs (x0, x1) under the key (key0, key1), all
    uint32: the words of `jax.extend.random.threefry_2x32`, unrolled round by round."""
    ks = (key0, key1, key0 ^ key1 ^ jnp.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r)))
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def random_words(rng: Array, shape: tuple[int, ...]) -> Array:
    """Uniform uint32 words: Threefry-2x32 in counter mode with both output words of each
    evaluation used; the words of jax.random.bits with jax_threefry_partitionable=False. Keys of
    other PRNG implementations go to jax.random.bits."""
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        if "threefry" not in str(jax.random.key_impl(rng)):
            return jax.random.bits(rng, shape, jnp.uint32)
        rng = jax.random.key_data(rng)
    elif "threefry" not in jax.config.jax_default_prng_impl:  # a raw key of another kind
        return jax.random.bits(rng, shape, jnp.uint32)
    # Counts 0..n-1 hashed in pairs (i, i + half), as jax does: the first half of the words is
    # each pair's first output, the second half its second; an odd n pairs its last count with 0.
    size = math.prod(shape)
    half = (size + 1) // 2
    first = jax.lax.iota(jnp.uint32, half)
    second = first + jnp.uint32(half)
    if size % 2:
        second = jnp.where(first == half - 1, jnp.uint32(0), second)
    words = threefry_2x32(rng[0], rng[1], first, second)
    return jnp.concatenate(words)[:size].reshape(shape)


def dropout(x: Array, rate: float, rng: Array, name: str | None = None) -> Array:
    """`layers.dropout` with 16 random bits per element (two per `random_words` word).

    name: a `checkpoint_name` for the keep mask, so a remat policy can save it instead of drawing
    its bits again in the backward pass.
    """
    *lead, n = x.shape
    if rate == 0.0 or rate >= 1.0 or n % 2:
        return layers.dropout(x, rate, rng)
    words = random_words(rng, (*lead, n // 2))  # (..., n/2)
    halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(x.shape)  # (..., n)
    keep = halves.astype(jnp.uint32) < round((1.0 - rate) * 2**16)
    if name is not None:
        keep = checkpoint_name(keep, name)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)
