"""The pure functions of jaxformer.ops against NumPy written straight from the equations."""

import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import ops

RNG = np.random.default_rng(0)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_attention(q, k, v, mask):
    """e_ts = softmax_s(q_t . k_s / sqrt(d)) over unmasked s; o_t = sum_s e_ts v_s, per head."""
    b, t, h, d = q.shape
    out = np.zeros((b, t, h, d))
    for bi in range(b):
        for hi in range(h):
            for ti in range(t):
                keys = np.flatnonzero(mask[bi, ti])
                if len(keys) == 0:
                    continue
                scores = np.array([q[bi, ti, hi] @ k[bi, s, hi] / math.sqrt(d) for s in keys])
                weights = np_softmax(scores)
                out[bi, ti, hi] = sum(w * v[bi, s, hi] for w, s in zip(weights, keys, strict=True))
    return out


def qkv(b=2, t=5, s=5, h=3, d=4):
    return (
        RNG.normal(size=(b, t, h, d)),
        RNG.normal(size=(b, s, h, d)),
        RNG.normal(size=(b, s, h, d)),
    )


IMPLEMENTATIONS = ["einsum", "fused", "scan", "cpu_kernel", "auto"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_attention_matches_numpy_with_padding_mask(implementation):
    q, k, v = qkv()
    lengths = np.array([5, 3])
    key_mask = np.arange(5)[None, :] < lengths[:, None]  # (b, s)
    full = np.broadcast_to(key_mask[:, None, :], (2, 5, 5))  # (b, t, s)
    expected = np_attention(q, k, v, full)
    got = ops.dot_product_attention(
        jnp.asarray(q, jnp.float32),
        jnp.asarray(k, jnp.float32),
        jnp.asarray(v, jnp.float32),
        ops.padding_mask(jnp.asarray(key_mask, jnp.int32)),
        implementation=implementation,
    )
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


@pytest.mark.parametrize("key0_offset", [0.0, -200.0, 300.0])
def test_softmax_numerator_with_any_key0_score(key0_offset):
    """p / l is the softmax whether key 0's score is typical, far below the row max (the shift
    from it would overflow: recomputed with the max) or far above it; values of any size."""
    scores = RNG.normal(size=(2, 3, 6)) * 4 + 500.0  # large scores: no overflow either way
    scores[..., 0] += key0_offset
    scores = scores.astype(np.float32)  # the reference softmax in float64 of the same values
    p, l = ops._softmax_numerator(jnp.asarray(scores), None)
    np.testing.assert_allclose(np.asarray(p / l), np_softmax(scores.astype(np.float64)), atol=1e-6)


@pytest.mark.parametrize("key0_bias", [300.0, -300.0])
@pytest.mark.parametrize("dropout", [False, True])
def test_scan_shift_from_a_masked_key0_far_from_the_scores(key0_bias, dropout):
    """Key 0 masked, its raw score far above (every weight would underflow) or below (overflow)
    the others: the scan path still gives the masked softmax, values and gradients."""
    q, k, v = (jnp.asarray(a, jnp.float32) for a in qkv(t=6, s=6))
    key_mask = np.arange(6)[None, :] >= np.array([1, 3])[:, None]  # (b, s): key 0 masked
    mask = ops.padding_mask(jnp.asarray(key_mask, jnp.int32))
    bias = jnp.zeros((2, 1, 1, 6), jnp.float32).at[..., 0].set(key0_bias)
    cotangent = jnp.asarray(RNG.normal(size=q.shape), jnp.float32)
    # Dropout's keep mask differs between paths; at rate 1e-9 it keeps everything, yet the
    # scan path takes its dropout branch (the denominator summed before dropping).
    kwargs = dict(dropout_rate=1e-9, dropout_rng=jax.random.key(1)) if dropout else {}

    def loss(impl, q, k, v):
        out = ops.dot_product_attention(q, k, v, mask, bias, implementation=impl, **kwargs)
        return (out * cotangent).sum(), out

    expected = np_attention(
        *(np.asarray(a) for a in (q, k, v)), np.broadcast_to(key_mask[:, None, :], (2, 6, 6))
    )
    (_, got), grads = jax.value_and_grad(loss, (1, 2, 3), has_aux=True)("scan", q, k, v)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
    _, reference = jax.value_and_grad(loss, (1, 2, 3), has_aux=True)("einsum", q, k, v)
    for ga, gb in zip(grads, reference, strict=True):
        assert np.isfinite(np.asarray(ga)).all()
        np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), atol=1e-5)


@pytest.mark.parametrize("implementation", ["scan", "einsum"])
def test_attention_with_left_padding_matches_numpy(implementation):
    """Key 0 masked (left padding): the scan path's shift falls back to the row max."""
    q, k, v = qkv(t=6, s=6)
    key_mask = np.arange(6)[None, :] >= np.array([2, 0])[:, None]  # (b, s): padding first
    expected = np_attention(q, k, v, np.broadcast_to(key_mask[:, None, :], (2, 6, 6)))
    mask = ops.padding_mask(jnp.asarray(key_mask, jnp.int32))
    q, k, v = (jnp.asarray(a, jnp.float32) for a in (q, k, v))
    got = ops.dot_product_attention(q, k, v, mask, implementation=implementation)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
    cotangent = jnp.asarray(RNG.normal(size=q.shape), jnp.float32)
    grads = [
        jax.grad(
            lambda q, k, v, impl=impl: (
                ops.dot_product_attention(q, k, v, mask, implementation=impl) * cotangent
            ).sum(),
            (0, 1, 2),
        )(q, k, v)
        for impl in (implementation, "einsum")
    ]
    for ga, gb in zip(*grads, strict=True):
        np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), atol=1e-5)


def test_attention_rows_sum_to_one_and_masked_keys_get_exactly_zero():
    q, k, _ = qkv()
    mask = ops.padding_mask(jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    probs = np.asarray(
        ops.attention_weights(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), mask)
    )
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    assert (probs[0, :, :, 3:] == 0.0).all()  # exactly zero, not just small


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fully_masked_rows_are_zero_not_nan(implementation):
    q, k, v = (jnp.asarray(a, jnp.float32) for a in qkv())
    mask = jnp.zeros((2, 1, 5, 5), bool).at[1].set(True)  # batch 0: nothing to attend to
    out = ops.dot_product_attention(q, k, v, mask, implementation=implementation)
    assert not jnp.isnan(out).any()
    assert (out[0] == 0).all()


@pytest.mark.parametrize("implementation", ["fused", "scan", "cpu_kernel"])
@pytest.mark.parametrize(
    "mask_shape, bias_shape",
    [((1, 1, 6, 6), (1, 3, 6, 6)), ((2, 3, 6, 6), (6,)), ((6, 6), None), (None, (2, 1, 1, 6))],
)
def test_implementations_agree_with_bias_and_masks(implementation, mask_shape, bias_shape):
    """Per-head and shared masks and biases of any broadcastable rank, values and gradients."""
    q, k, v = (jnp.asarray(a, jnp.float32) for a in qkv(t=6, s=6))
    mask = None
    if mask_shape is not None:
        mask = jnp.broadcast_to(jnp.tril(jnp.ones((6, 6), bool)), mask_shape)
        if mask_shape[0] == 2:  # per example and head: hide one more key here and there
            mask = mask & jnp.asarray(RNG.random(mask_shape) > 0.2).at[..., 0].set(True)
    bias = None if bias_shape is None else jnp.asarray(RNG.normal(size=bias_shape), jnp.float32)
    cotangent = jnp.asarray(RNG.normal(size=q.shape), jnp.float32)

    def loss(impl, q, k, v):
        out = ops.dot_product_attention(q, k, v, mask, bias, implementation=impl)
        return (out * cotangent).sum(), out

    (_, a), grads_a = jax.value_and_grad(loss, (1, 2, 3), has_aux=True)("einsum", q, k, v)
    (_, b), grads_b = jax.value_and_grad(loss, (1, 2, 3), has_aux=True)(implementation, q, k, v)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), atol=1e-5)


def test_scan_attention_dropout_matches_per_head_reference():
    """Dropout inside the head loop: the head's key is split(rng, h)[head], the weights are
    dropped after the softmax, and the gradient uses the same (saved) mask as the forward."""
    q, k, v = (jnp.asarray(a, jnp.float32) for a in qkv(b=2, t=8, s=8, h=3, d=4))
    key_mask = jnp.arange(8)[None, :] < jnp.array([8, 5])[:, None]  # (b, s)
    rate, rng = 0.3, jax.random.key(7)

    def reference(q, k, v):
        heads = []
        for head, head_rng in enumerate(jax.random.split(rng, 3)):
            scores = jnp.einsum("btd,bsd->bts", q[:, :, head], k[:, :, head]) / 2.0  # sqrt(4)
            scores = jnp.where(key_mask[:, None, :], scores, -jnp.inf)
            weights = ops.dropout(jax.nn.softmax(scores, axis=-1), rate, head_rng)
            heads.append(jnp.einsum("bts,bsd->btd", weights, v[:, :, head]))
        return jnp.stack(heads, axis=2)  # (b, t, h, d)

    def scan(q, k, v):
        return ops.dot_product_attention(
            q,
            k,
            v,
            ops.padding_mask(key_mask),
            dropout_rate=rate,
            dropout_rng=rng,
            implementation="scan",
        )

    np.testing.assert_allclose(np.asarray(scan(q, k, v)), np.asarray(reference(q, k, v)), atol=1e-5)
    assert not np.allclose(
        np.asarray(scan(q, k, v)), np.asarray(ops.dot_product_attention(q, k, v))
    )
    cotangent = jnp.asarray(RNG.normal(size=q.shape), jnp.float32)
    grads = [
        jax.grad(lambda *a, f=f: (f(*a) * cotangent).sum(), (0, 1, 2))(q, k, v)
        for f in (scan, reference)
    ]
    for ga, gb in zip(*grads, strict=True):
        np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), atol=1e-5)


def test_auto_is_the_cpu_kernel_on_cpu():
    assert jax.default_backend() != "cpu" or ops.default_attention_implementation() == "cpu_kernel"


@pytest.mark.parametrize("implementation", ["einsum", "scan"])
def test_attention_dropout_rescales_and_is_deterministic_per_key(implementation):
    q, k, v = (jnp.asarray(a, jnp.float32) for a in qkv())
    kwargs = dict(dropout_rate=0.5, dropout_rng=jax.random.key(3), implementation=implementation)
    a = ops.dot_product_attention(q, k, v, **kwargs)
    b = ops.dot_product_attention(q, k, v, **kwargs)
    c = ops.dot_product_attention(q, k, v, implementation=implementation)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    with pytest.raises(ValueError, match="implementation"):
        ops.dot_product_attention(q, k, v, implementation="flash")


@pytest.mark.parametrize("shape", [(7, 10), (7, 9), (1,)])
def test_random_words_are_jax_threefry_bits(shape):
    key = jax.random.key(3)
    with jax.threefry_partitionable(False):  # the counter-mode form random_words computes
        expected = np.asarray(jax.random.bits(key, shape, jnp.uint32))
    np.testing.assert_array_equal(np.asarray(ops.random_words(key, shape)), expected)
    raw = jax.random.PRNGKey(3)  # legacy uint32 keys give the same words
    np.testing.assert_array_equal(np.asarray(ops.random_words(raw, shape)), expected)
    assert not np.array_equal(np.asarray(ops.random_words(jax.random.key(4), shape)), expected)


def test_threefry_is_jax_threefry():
    key = jnp.asarray(RNG.integers(0, 2**32, size=2, dtype=np.uint32))
    x0, x1 = (jnp.asarray(RNG.integers(0, 2**32, size=257, dtype=np.uint32)) for _ in range(2))
    expected = np.asarray(jax.extend.random.threefry_2x32(key, jnp.concatenate([x0, x1])))
    got = jax.jit(ops.threefry_2x32)(key[0], key[1], x0, x1)
    np.testing.assert_array_equal(np.concatenate([np.asarray(w) for w in got]), expected)


def test_random_words_of_other_prng_keys_come_from_jax():
    key = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(
        np.asarray(ops.random_words(key, (4, 6))),
        np.asarray(jax.random.bits(key, (4, 6), jnp.uint32)),
    )


@pytest.mark.parametrize("rate", [0.1, 0.5])
@pytest.mark.parametrize("width", [384, 383])  # 16-bit draws, or bernoulli for an odd width
def test_dropout_keeps_one_minus_rate_and_rescales(rate, width):
    x = jnp.ones((2048, width), jnp.float32)
    y = np.asarray(ops.dropout(x, rate, jax.random.key(0)))
    kept = y > 0
    n, p = kept.size, 1 - rate
    assert abs(kept.mean() - p) < 5 * math.sqrt(p * (1 - p) / n), kept.mean()
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)
    for half in (kept[:, ::2], kept[:, 1::2]):  # the low and high 16 bits of each word
        assert abs(half.mean() - p) < 5 * math.sqrt(p * (1 - p) / half.size), half.mean()
    np.testing.assert_array_equal(y, np.asarray(ops.dropout(x, rate, jax.random.key(0))))
    assert not np.array_equal(y, np.asarray(ops.dropout(x, rate, jax.random.key(1))))
    np.testing.assert_array_equal(np.asarray(ops.dropout(x, 0.0, jax.random.key(0))), x)
    np.testing.assert_array_equal(np.asarray(ops.dropout(x, 1.0, jax.random.key(0))), 0 * x)


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_new"])
def test_feed_forward_matches_numpy(activation):
    x = RNG.normal(size=(2, 3, 8))
    w1, b1 = RNG.normal(size=(8, 16)), RNG.normal(size=16)
    w2, b2 = RNG.normal(size=(16, 8)), RNG.normal(size=8)
    erf = np.vectorize(math.erf)
    act = {
        "relu": lambda z: np.maximum(z, 0),
        "gelu": lambda z: 0.5 * z * (1 + erf(z / math.sqrt(2))),
        "gelu_new": lambda z: (
            0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
        ),
    }[activation]
    expected = act(x @ w1 + b1) @ w2 + b2
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    got = ops.feed_forward(f32(x), f32(w1), f32(b1), f32(w2), f32(b2), activation)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", sorted(ops.ACTIVATIONS))
@pytest.mark.parametrize("lead", [(6,), (2, 3)])
def test_feed_forward_gradient_matches_autodiff(activation, lead):
    """The hand-written VJP against jax.grad of the plain equation, every parameter, jitted."""
    shapes = [(*lead, 8), (8, 16), (16,), (16, 8), (8,)]
    args = [jnp.asarray(RNG.normal(size=s), jnp.float32) for s in shapes]
    probe = jnp.asarray(RNG.normal(size=(*lead, 8)), jnp.float32)

    def plain(x, w1, b1, w2, b2):
        return ops.ACTIVATIONS[activation](x @ w1 + b1) @ w2 + b2

    def loss(ffn):
        return jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(ffn(*a)) * probe), argnums=range(5)))

    got = loss(lambda *a: ops.feed_forward(*a, activation))(*args)
    want = loss(plain)(*args)
    for name, g, w in zip(["x", "w1", "b1", "w2", "b2"], got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5, err_msg=name)


def test_feed_forward_gradients_keep_each_input_dtype():
    x = jnp.asarray(RNG.normal(size=(2, 3, 8)), jnp.bfloat16)
    params = [jnp.asarray(RNG.normal(size=s), jnp.float32) for s in [(8, 16), (16,), (16, 8), (8,)]]
    grads = jax.grad(lambda *a: ops.feed_forward(*a).astype(jnp.float32).sum(), range(5))(
        x, *params
    )
    assert [g.dtype for g in grads] == [jnp.bfloat16] + [jnp.float32] * 4


def test_feed_forward_unknown_activation_is_a_clear_error():
    x, w = jnp.zeros((2, 4)), jnp.zeros((4, 4))
    with pytest.raises(ValueError, match="activation must be one of .*'swishy'"):
        ops.feed_forward(x, w, jnp.zeros(4), w, jnp.zeros(4), "swishy")


@pytest.mark.parametrize("eps", [1e-12, 1e-6, 1e-1])
def test_layer_norm_matches_numpy(eps):
    x = RNG.normal(size=(2, 3, 8)) * 3 + 1
    scale, bias = RNG.normal(size=8), RNG.normal(size=8)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    expected = expected * scale + bias
    got = ops.layer_norm(
        jnp.asarray(x, jnp.float32),
        jnp.asarray(scale, jnp.float32),
        jnp.asarray(bias, jnp.float32),
        eps,
    )
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_sinusoidal_positions_match_the_paper():
    pe = np.asarray(ops.sinusoidal_positions(50, 16))
    for p in (0, 1, 7, 49):
        for i in range(8):
            angle = p / 10000 ** (2 * i / 16)
            assert pe[p, 2 * i] == pytest.approx(math.sin(angle), abs=1e-5)
            assert pe[p, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-5)


def test_embed_sums_three_tables():
    tok, typ, pos = (jnp.asarray(RNG.normal(size=(n, 4)), jnp.float32) for n in (10, 2, 6))
    ids, types, positions = jnp.array([[3, 1]]), jnp.array([[0, 1]]), jnp.array([[0, 1]])
    got = np.asarray(ops.embed(ids, types, positions, tok, typ, pos))
    np.testing.assert_allclose(got[0, 1], np.asarray(tok[1] + typ[1] + pos[1]), atol=1e-6)


def test_cross_entropy_ignores_weight_zero_examples():
    logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [100.0, -100.0]])
    labels = jnp.array([0, 1, 1])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    got = ops.cross_entropy(logits, labels, jnp.array([1.0, 1.0, 0.0]))
    assert float(got) == pytest.approx(expected, rel=1e-6)
