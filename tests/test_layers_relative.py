"""DeBERTa's relative-position equations in jaxformer.layers against NumPy written from the
equations, loop by loop, and the log buckets against transformers' own function."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import gathered_disentangled_bias, key_padding_mask, np_attention

from jaxformer import dispatch, layers
from jaxformer.kernels import relative as relative_kernel

pytestmark = pytest.mark.usefixtures("strict_promotion")


def np_buckets(t, s, buckets, max_position):
    """delta(i - j): i - j within buckets // 2, else sign * (mid + ceil((mid - 1) log(|r| / mid)
    / log((P - 1) / mid))), by hand for each (i, j)."""
    out = np.zeros((t, s), np.int64)
    mid = buckets // 2
    for i in range(t):
        for j in range(s):
            r = i - j
            if buckets <= 0 or max_position <= 0 or abs(r) <= mid:
                out[i, j] = r
                continue
            steps = math.log(abs(r) / mid) / math.log((max_position - 1) / mid) * (mid - 1)
            out[i, j] = int(math.copysign(mid + math.ceil(steps), r))
    return out


def np_disentangled_bias(q, k, pos_q, pos_k, relative):
    """bias_ts = q_t . Kr[clip(delta_ts + P)] + k_s . Qr[clip(-delta_st + P)], per example and
    head, in float64."""
    b, t, h, _ = q.shape
    s = k.shape[1]
    span = (pos_k if pos_k is not None else pos_q).shape[0] // 2
    out = np.zeros((b, h, t, s))
    for bi in range(b):
        for hi in range(h):
            for ti in range(t):
                for si in range(s):
                    if pos_k is not None:
                        c = min(max(relative[ti, si] + span, 0), 2 * span - 1)
                        out[bi, hi, ti, si] += q[bi, ti, hi] @ pos_k[c, hi]
                    if pos_q is not None:
                        c = min(max(-relative[si, ti] + span, 0), 2 * span - 1)
                        out[bi, hi, ti, si] += k[bi, si, hi] @ pos_q[c, hi]
    return out


@pytest.mark.parametrize(
    "t, s, buckets, max_position",
    [(13, 13, 8, 16), (30, 30, 4, 12), (9, 9, -1, 16), (40, 40, 256, 512), (7, 5, 6, 20)],
)
def test_relative_position_buckets_match_the_equation(t, s, buckets, max_position):
    got = np.asarray(layers.relative_position_buckets(t, s, buckets, max_position))
    assert got.dtype == np.int32 and got.shape == (t, s)
    np.testing.assert_array_equal(got, np_buckets(t, s, buckets, max_position))


def test_relative_position_buckets_are_exact_near_and_coarse_far():
    got = np.asarray(layers.relative_position_buckets(1, 600, 256, 512))[0]  # 0 - j
    np.testing.assert_array_equal(got[:129], -np.arange(129))  # |r| <= 128: exact
    assert (np.diff(got[128:]) <= 0).all() and -got.min() < 256 + 128  # monotone, bounded


@pytest.mark.parametrize("buckets, max_position, t", [(256, 512, 700), (8, 16, 60), (4, 12, 33)])
def test_relative_position_buckets_match_transformers(buckets, max_position, t):
    torch = pytest.importorskip("torch")
    deberta = pytest.importorskip("transformers.models.deberta_v2.modeling_deberta_v2")
    x = torch.zeros(1, t, 1)
    want = deberta.build_relative_position(x, x, buckets, max_position)[0].numpy()
    got = np.asarray(layers.relative_position_buckets(t, t, buckets, max_position))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("terms", ["c2p", "p2c", "both"])
def test_disentangled_attention_bias_matches_the_equation(terms, rng):
    b, t, h, d, span = 2, 7, 3, 4, 4
    q, k = (rng.normal(size=(b, t, h, d)).astype(np.float32) for _ in range(2))
    pos_q, pos_k = (rng.normal(size=(2 * span, h, d)).astype(np.float32) for _ in range(2))
    pos_q = None if terms == "c2p" else pos_q
    pos_k = None if terms == "p2c" else pos_k
    relative = np.asarray(layers.relative_position_buckets(t, t, 2 * span - 2, 10))
    got = layers.disentangled_attention_bias(
        jnp.asarray(q),
        jnp.asarray(k),
        None if pos_q is None else jnp.asarray(pos_q),
        None if pos_k is None else jnp.asarray(pos_k),
        jnp.asarray(relative),
    )
    assert got.dtype == jnp.float32 and got.shape == (b, h, t, t)
    want = np_disentangled_bias(q, k, pos_q, pos_k, relative)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scores", [layers.relative_scores, relative_kernel.relative_scores])
@pytest.mark.parametrize("n, m", [(1, 1), (1, 6), (6, 1), (4, 7), (7, 4), (9, 9)])
def test_relative_scores_match_the_equation(n, m, scores, rng):
    """x_i . table[index_ij] by hand, for an index constant along the diagonals: clipped and
    bucketed offsets, queries and keys of different lengths."""
    b, h, d, rows = 2, 3, 4, 8
    x = rng.normal(size=(b, n, h, d)).astype(np.float32)
    table = rng.normal(size=(rows, h, d)).astype(np.float32)
    offset = np.arange(n)[:, None] - np.arange(m)[None, :]  # (n, m): i - j
    index = np.clip(np.sign(offset) * (np.abs(offset) // 2) + rows // 2, 0, rows - 1)
    got = scores(jnp.asarray(x), jnp.asarray(table), jnp.asarray(index))
    want = np.zeros((b, h, n, m))
    for i in range(n):
        for j in range(m):
            want[:, :, i, j] = np.einsum("bhd,hd->bh", x[:, i], table[index[i, j]])
    assert got.shape == (b, h, n, m)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t, buckets, max_position", [(9, 6, 10), (40, 16, 64)])
def test_disentangled_attention_bias_gradient_matches_the_gather_form(
    t, buckets, max_position, rng
):
    """The gradients of the relative shift are those of transformers' gathers (products with
    every table row, then a take_along_axis per score), for q, k and both tables."""
    b, h, d = 2, 3, 4
    q, k = (jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32) for _ in range(2))
    pos_q, pos_k = (
        jnp.asarray(rng.normal(size=(2 * buckets, h, d)), jnp.float32) for _ in range(2)
    )
    relative = layers.relative_position_buckets(t, t, buckets, max_position)
    weights = jnp.asarray(rng.normal(size=(b, h, t, t)), jnp.float32)

    def loss(bias_fn):
        return lambda *args: jnp.sum(jnp.tanh(bias_fn(*args, relative)) * weights)

    shifted = functools.partial(
        layers.disentangled_attention_bias, scores=relative_kernel.relative_scores
    )
    got = jax.grad(loss(shifted), argnums=(0, 1, 2, 3))
    want = jax.grad(loss(gathered_disentangled_bias), argnums=(0, 1, 2, 3))
    for g, w in zip(got(q, k, pos_q, pos_k), want(q, k, pos_q, pos_k), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", ["reference", "scan", "cpu", "xla"])
def test_deberta_scores_through_every_program(implementation, rng):
    """softmax((q.k + bias) / sqrt(d * 3)) V, as the model passes it: q / sqrt(3), bias scaled."""
    b, t, h, d, span = 2, 6, 3, 4, 3
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32) for _ in range(3))
    pos = jnp.asarray(rng.normal(size=(2 * span, h, d)), jnp.float32)
    relative = layers.relative_position_buckets(t, t, -1, -1)
    bias = layers.disentangled_attention_bias(q, k, pos, pos, relative) / math.sqrt(d * 3)
    mask = key_padding_mask([6, 3], t)
    got = dispatch.attention(q / math.sqrt(3), k, v, mask, bias, implementation=implementation)
    want = np_attention(np.asarray(q) / math.sqrt(3), k, v, mask, np.asarray(bias))
    real = np.asarray(mask)[:, 0, 0, :]  # (b, t)
    np.testing.assert_allclose(np.asarray(got)[real], want[real], rtol=1e-5, atol=1e-5)
