"""ModernBERT's equations in jaxformer.layers (rotary positions, GeGLU, mean pooling, the
sliding window) against NumPy written from the equations, and against transformers' own rotary
code where it is importable."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import layers

pytestmark = pytest.mark.usefixtures("strict_promotion")

np_erf = np.vectorize(math.erf)


def np_rotary(x, positions, theta):
    """Pair i with i + d/2 and rotate each pair by the angle p theta^(-2i/d), one at a time."""
    x = np.asarray(x, np.float64)
    b, t, h, d = x.shape
    y = np.empty_like(x)
    for bi in range(b):
        for ti in range(t):
            for i in range(d // 2):
                a = positions[bi, ti] * theta ** (-2 * i / d)
                c, s = math.cos(a), math.sin(a)
                x1, x2 = x[bi, ti, :, i], x[bi, ti, :, i + d // 2]
                y[bi, ti, :, i] = x1 * c - x2 * s
                y[bi, ti, :, i + d // 2] = x2 * c + x1 * s
    return y


@pytest.mark.parametrize("theta", [10_000.0, 160_000.0, 50.0])
def test_rotary_embedding_matches_numpy(theta, rng):
    x = rng.normal(size=(2, 7, 3, 8))
    positions = np.stack([np.arange(7), np.arange(7) + 5])  # (b, t)
    got = layers.rotary_embedding(jnp.asarray(x, jnp.float32), jnp.asarray(positions), theta)
    assert got.shape == x.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np_rotary(x, positions, theta), atol=2e-5)


def test_rotary_embedding_is_relative(rng):
    """q_t . k_s after RoPE depends on t - s only: shifting every position changes nothing."""
    q, k = rng.normal(size=(2, 1, 5, 2, 16))
    positions = np.arange(5)[None]

    def scores(shift):
        p = jnp.asarray(positions + shift)
        rq = layers.rotary_embedding(jnp.asarray(q, jnp.float32), p, 10_000.0)
        rk = layers.rotary_embedding(jnp.asarray(k, jnp.float32), p, 10_000.0)
        return np.asarray(jnp.einsum("bthd,bshd->bhts", rq, rk))

    np.testing.assert_allclose(scores(0), scores(37), atol=1e-4)
    assert not np.allclose(scores(0), np.einsum("bthd,bshd->bhts", q, k), atol=1e-2)


def test_rotary_embedding_keeps_bfloat16(rng):
    x = jnp.asarray(rng.normal(size=(1, 4, 2, 8)), jnp.bfloat16)
    got = layers.rotary_embedding(x, jnp.arange(4)[None], 10_000.0)
    assert got.dtype == jnp.bfloat16
    want = np_rotary(np.asarray(x, np.float32), np.arange(4)[None], 10_000.0)
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=3e-2)


def test_rotary_embedding_matches_transformers_rotate_half(rng):
    torch = pytest.importorskip("torch")
    modeling = pytest.importorskip("transformers.models.modernbert.modeling_modernbert")
    b, t, h, d, theta = 2, 6, 3, 10, 1234.0
    q, k = rng.normal(size=(2, b, t, h, d))
    positions = np.stack([np.arange(t), np.arange(t) * 2])
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float) / d))
    freqs = torch.tensor(positions)[..., None].float() * inv_freq  # (b, t, d/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    tq, tk = (torch.tensor(a, dtype=torch.float32).transpose(1, 2) for a in (q, k))  # (b, h, t, d)
    want_q, want_k = modeling.apply_rotary_pos_emb(tq, tk, emb.cos(), emb.sin(), unsqueeze_dim=1)
    for a, want in ((q, want_q), (k, want_k)):
        got = layers.rotary_embedding(jnp.asarray(a, jnp.float32), jnp.asarray(positions), theta)
        np.testing.assert_allclose(np.asarray(got), want.transpose(1, 2).numpy(), atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_geglu_matches_numpy(bias, rng):
    m, f = 6, 5
    x = rng.normal(size=(2, 3, m))
    w_in, w_out = rng.normal(size=(m, 2 * f)), rng.normal(size=(f, m))
    b_in, b_out = (rng.normal(size=(2 * f,)), rng.normal(size=(m,))) if bias else (0.0, 0.0)
    z = x @ w_in + b_in
    u, g = z[..., :f], z[..., f:]  # the first half is the input, the second the gate
    expected = (0.5 * u * (1 + np_erf(u / math.sqrt(2))) * g) @ w_out + b_out

    x, w_in, w_out = (jnp.asarray(a, jnp.float32) for a in (x, w_in, w_out))
    biases = [jnp.asarray(a, jnp.float32) if bias else None for a in (b_in, b_out)]
    got = layers.geglu(x, w_in, w_out, "gelu", *biases)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_geglu_drops_the_gated_product():
    x, w_in, w_out = jnp.ones((1, 1, 2)), jnp.ones((2, 4)), jnp.ones((2, 2))
    seen = []

    def dropout(z):
        seen.append(z.shape)
        return jnp.zeros_like(z)

    got = layers.geglu(x, w_in, w_out, "relu", dropout=dropout)
    assert seen == [(1, 1, 2)]
    np.testing.assert_array_equal(np.asarray(got), 0.0)


def test_mean_pool_averages_real_tokens_only(rng):
    x = rng.normal(size=(2, 4, 3))
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    got = layers.mean_pool(jnp.asarray(x, jnp.float32), jnp.asarray(mask))
    want = np.stack([x[0, :3].mean(0), x[1, 0]])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)


def test_sliding_window_is_transformers_half_window():
    """local_attention=8: each query sees keys at distance <= 4 (transformers' sliding_window =
    local_attention // 2, inclusive), so 9 keys in the middle of a long sequence."""
    mask = np.asarray(layers.sliding_window_mask(20, 20, 8))
    offset = np.arange(20)[:, None] - np.arange(20)[None, :]
    np.testing.assert_array_equal(mask, np.abs(offset) <= 4)
    assert mask[10].sum() == 9 and mask[0].sum() == 5


def test_layer_norm_without_bias(rng):
    x = rng.normal(size=(2, 5))
    scale = rng.normal(size=5)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * scale
    got = layers.layer_norm(
        jnp.asarray(x, jnp.float32), jnp.asarray(scale, jnp.float32), None, 1e-5
    )
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
