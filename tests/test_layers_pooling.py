"""The pooling equations of `jaxformer.layers` (mean, mean over sqrt length, first real token,
max over real tokens, L2 normalisation) against NumPy loops over the real tokens, with padding
that holds large values so that reading it would show."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import layers

pytestmark = pytest.mark.usefixtures("strict_promotion")


def padded(rng, lengths=(5, 1, 3), t=6, m=4, left=False):
    """x (b, t, m) float32 whose padding is 1e6, and the (b, t) int32 mask."""
    x = rng.normal(size=(len(lengths), t, m)).astype(np.float32)
    position = np.arange(t)[None, :]
    n = np.asarray(lengths)[:, None]
    mask = (position >= t - n) if left else (position < n)
    x[~mask] = 1e6
    return x, mask.astype(np.int32)


def real_rows(x, mask):
    return [x[i][mask[i] == 1].astype(np.float64) for i in range(len(x))]


@pytest.mark.parametrize("left", [False, True], ids=["right_padded", "left_padded"])
def test_pools_over_the_real_tokens(rng, left):
    x, mask = padded(rng, left=left)
    rows = real_rows(x, mask)
    cases = {
        layers.mean_pool: [r.sum(0) / len(r) for r in rows],
        layers.mean_sqrt_len_pool: [r.sum(0) / np.sqrt(len(r)) for r in rows],
        layers.cls_pool: [r[0] for r in rows],
        layers.max_pool: [r.max(0) for r in rows],
    }
    for pool, want in cases.items():
        got = np.asarray(pool(jnp.asarray(x), jnp.asarray(mask)))
        assert got.shape == (3, 4) and got.dtype == np.float32, pool.__name__
        np.testing.assert_allclose(got, np.stack(want), rtol=1e-6, atol=1e-6, err_msg=pool.__name__)


def test_max_pool_of_negative_values():
    x = -np.arange(1, 7, dtype=np.float32).reshape(1, 3, 2)  # [[-1, -2], [-3, -4], [-5, -6]]
    mask = np.array([[0, 1, 1]], np.int32)
    np.testing.assert_array_equal(layers.max_pool(jnp.asarray(x), jnp.asarray(mask)), [[-3, -4]])


def test_l2_normalize(rng):
    x = rng.normal(size=(3, 5)).astype(np.float32)
    x[1] = 0.0  # the zero vector stays zero (eps), not NaN
    want = [v / max(np.sqrt((v.astype(np.float64) ** 2).sum()), 1e-12) for v in x]
    got = np.asarray(layers.l2_normalize(jnp.asarray(x)))
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(got[[0, 2]], axis=1), 1.0, rtol=1e-6)
