"""jaxformer.kernels.cudnn: the key mask as sequence lengths, what cuDNN takes, and the arguments
it is called with, run through jax's XLA implementation of the same call (the same semantics
where no GPU is present); cuDNN's own numbers on a GPU only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import key_padding_mask, np_attention, qkv

from jaxformer import layers
from jaxformer.kernels import cudnn

ON_GPU = jax.default_backend() == "gpu"


def lengths_of(mask):
    lengths, right_padded = cudnn.padding_lengths(mask)
    return np.asarray(lengths).tolist(), bool(right_padded)


def test_padding_lengths_of_right_padded_masks():
    assert lengths_of(key_padding_mask([5, 3, 0], 5)) == ([5, 3, 0], True)
    assert lengths_of(key_padding_mask([4], 6)) == ([4], True)  # one mask for every example


def test_left_padding_or_a_hole_is_not_right_padded():
    assert lengths_of(key_padding_mask([5, 3], 5, left=True)) == ([5, 3], False)
    hole = jnp.asarray([[1, 1, 0, 1, 0]], bool)[:, None, None, :]  # (1, 1, 1, 5)
    assert lengths_of(hole) == ([3], False)
    one_bad = jnp.concatenate([key_padding_mask([2], 5), hole])  # a bad example spoils all
    assert lengths_of(one_bad) == ([2, 3], False)


def test_supports():
    def arrays(dtype=jnp.bfloat16, t=8, d=64):
        return [jnp.zeros((2, t, 2, d), dtype)] * 3

    mask = key_padding_mask([8, 5], 8)
    assert cudnn.supports(*arrays(), mask, None, None)
    assert cudnn.supports(*arrays(jnp.float16), None, None, 4)
    assert not cudnn.supports(*arrays(jnp.float32), mask, None, None)
    assert not cudnn.supports(*arrays(d=12), mask, None, None)  # not a multiple of 8
    assert not cudnn.supports(*arrays(d=256), mask, None, None)  # 256 on Hopper only
    assert cudnn.supports(*arrays(d=256), mask, None, None, head_dim_limit=256)
    assert not cudnn.supports(*arrays(), mask, jnp.zeros((8,), jnp.bfloat16), None)
    assert not cudnn.supports(*arrays(t=7), key_padding_mask([7, 5], 7), None, None)
    assert cudnn.supports(*arrays(t=7), None, None, None)  # odd lengths without a mask


def cases():
    causal = jnp.tril(jnp.ones((6, 6), bool))
    yield "right padded", key_padding_mask([6, 4], 6), None
    yield "left padded", key_padding_mask([6, 4], 6, left=True), None
    yield "one shared mask", key_padding_mask([3], 6), None
    yield "no key in example 0", key_padding_mask([0, 4], 6), None
    yield "per query", causal, None
    yield "window", None, 2
    yield "window and padding", key_padding_mask([6, 2], 6), 2
    yield "window and left padding", key_padding_mask([6, 2], 6, left=True), 2


@pytest.mark.parametrize("name, mask, window", cases(), ids=[c[0] for c in cases()])
def test_its_call_gives_the_equation_through_xla(name, mask, window, rng):
    """The arguments cudnn.attention builds (lengths or mask, broadcast to (t, s), rows with no
    key zeroed), run by XLA's implementation of jax.nn.dot_product_attention."""
    q, k, v = qkv(rng, b=2, t=6, s=6, h=2, d=8)
    full = mask
    if window is not None:
        local = layers.sliding_window_mask(6, 6, window)
        full = local if mask is None else mask & local
    run = jax.jit(lambda q, k, v: cudnn.attention(q, k, v, mask, window, implementation="xla"))
    got = np.asarray(run(q, k, v))
    np.testing.assert_allclose(got, np_attention(q, k, v, full), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("left", [False, True], ids=["lengths branch", "mask branch"])
def test_gradients_match_the_reference(left, rng):
    q, k, v = qkv(rng, b=2, t=6, s=6, h=2, d=8)
    mask = key_padding_mask([6, 3], 6, left=left)
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

    def grads(fn):
        return jax.grad(lambda *a: (fn(*a, mask) * cotangent).sum(), (0, 1, 2))(q, k, v)

    got = grads(lambda *a: cudnn.attention(*a, implementation="xla"))
    for name, g, w in zip("qkv", got, grads(layers.attention), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5, err_msg=name)


@pytest.mark.skipif(not ON_GPU, reason="cuDNN's numbers need a GPU with cuDNN")
@pytest.mark.parametrize("window", [None, 16])
def test_cudnn_matches_the_reference_in_bfloat16(window, rng):
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(rng, b=2, t=128, s=128, h=4, d=64))
    for mask in (key_padding_mask([128, 77], 128), key_padding_mask([128, 77], 128, left=True)):
        assert cudnn.supports(q, k, v, mask, None, window, cudnn.max_head_dim())
        full = mask if window is None else mask & layers.sliding_window_mask(128, 128, window)
        got = jax.jit(lambda q, k, v, m=mask: cudnn.attention(q, k, v, m, window))(q, k, v)
        want = layers.attention(q, k, v, full)
        np.testing.assert_allclose(
            np.asarray(got, np.float32), np.asarray(want, np.float32), atol=2e-2
        )
