"""The compiled CPU attention kernel (jaxformer.cpu_kernels) against NumPy and pure JAX."""

import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from test_ops import np_attention, qkv

from jaxformer import ops
from jaxformer.kernels import cpu as cpu_kernels

RNG = np.random.default_rng(1)

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or cpu_kernels._compiler() is None,
    reason="the kernel is for XLA:CPU and needs a C++ compiler",
)


def inputs(b, t, s, h, d, scale=1.0, drop=0.3):
    q, k, v = qkv(b, t, s, h, d)
    q, k = q * scale, k * scale
    key_mask = RNG.random((b, s)) > drop
    key_mask[0] = True  # one example attends everywhere
    return q, k, v, key_mask


def test_the_kernel_builds_here():
    """With a compiler present, the kernel must build: otherwise every test below would be
    testing the pure-JAX fallback."""
    assert cpu_kernels.available()
    assert any(cpu_kernels.cache_dir().glob("cpu_kernels-*.so"))


@pytest.mark.parametrize(
    "b, t, s, h, d, scale",
    [
        (2, 5, 5, 3, 4, 1.0),  # head_dim below one vector
        (3, 17, 70, 2, 20, 1.0),  # t != s; s past one 64-key block; d not a multiple of 16
        (2, 64, 64, 4, 64, 1.0),
        (2, 9, 9, 2, 128, 1.0),  # the largest head_dim
        (2, 6, 40, 2, 32, 12.0),  # scores in the hundreds: the max must be subtracted
    ],
)
def test_kernel_matches_numpy(b, t, s, h, d, scale):
    q, k, v, key_mask = inputs(b, t, s, h, d, scale)
    key_mask[-1] = False  # and one attends nowhere: zeros
    expected = np_attention(q, k, v, np.broadcast_to(key_mask[:, None, :], (b, t, s)))
    f32 = [jnp.asarray(x, jnp.float32) for x in (q, k, v)]
    got = jax.jit(cpu_kernels.attention)(*f32, ops.padding_mask(jnp.asarray(key_mask)))
    np.testing.assert_allclose(np.asarray(got), expected, atol=2e-5 * max(1.0, scale))
    assert (np.asarray(got)[-1] == 0).all()


def test_kernel_without_mask_and_with_a_shared_mask():
    q, k, v, key_mask = (jnp.asarray(x) for x in inputs(2, 8, 8, 2, 16))
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    np.testing.assert_allclose(
        np.asarray(cpu_kernels.attention(q, k, v)),
        np.asarray(ops.dot_product_attention(q, k, v, implementation="einsum")),
        atol=1e-5,
    )
    shared = key_mask[:1, None, None, :]  # (1, 1, 1, s): every example the same keys
    np.testing.assert_allclose(
        np.asarray(cpu_kernels.attention(q, k, v, shared)),
        np.asarray(ops.dot_product_attention(q, k, v, shared, implementation="einsum")),
        atol=1e-5,
    )


def test_kernel_gradient_is_the_attention_gradient():
    q, k, v, key_mask = inputs(2, 7, 7, 3, 8)
    q, k, v = (jnp.asarray(x, jnp.float32) for x in (q, k, v))
    mask = ops.padding_mask(jnp.asarray(key_mask))
    cotangent = jnp.asarray(RNG.normal(size=q.shape), jnp.float32)

    def loss(impl):
        return lambda q, k, v: (
            ops.dot_product_attention(q, k, v, mask, implementation=impl) * cotangent
        ).sum()

    got = jax.jit(jax.grad(loss("cpu_kernel"), (0, 1, 2)))(q, k, v)
    expected = jax.grad(loss("einsum"), (0, 1, 2))(q, k, v)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5)


def test_auto_uses_the_kernel_only_where_it_applies():
    q, k, v, key_mask = inputs(2, 6, 6, 2, 8)
    q, k, v = (jnp.asarray(x, jnp.float32) for x in (q, k, v))
    mask = ops.padding_mask(jnp.asarray(key_mask))

    def program(**kwargs):
        return str(
            jax.make_jaxpr(lambda q, k, v: ops.dot_product_attention(q, k, v, **kwargs))(q, k, v)
        )

    assert cpu_kernels.TARGET in program(mask=mask)
    assert cpu_kernels.TARGET in program()
    dropout = dict(mask=mask, dropout_rate=0.1, dropout_rng=jax.random.key(0))
    assert cpu_kernels.TARGET not in program(**dropout)  # training with attention dropout
    assert cpu_kernels.TARGET not in program(mask=jnp.tril(jnp.ones((6, 6), bool)))  # per query
    assert cpu_kernels.TARGET not in program(mask=mask, bias=jnp.zeros((6,)))
    assert cpu_kernels.TARGET not in program(mask=mask, implementation="scan")
    half = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    assert cpu_kernels.TARGET not in str(
        jax.make_jaxpr(lambda q, k, v: ops.dot_product_attention(q, k, v, mask))(*half)
    )


def test_supports():
    q = jnp.zeros((2, 4, 3, 8))
    mask = jnp.ones((2, 1, 1, 4), bool)
    assert cpu_kernels.supports(q, q, q, mask, None)
    assert cpu_kernels.supports(q, q, q, None, None)
    assert not cpu_kernels.supports(q, q, q, jnp.ones((2, 3, 1, 4), bool), None)  # per head
    assert not cpu_kernels.supports(q, q, q, mask, jnp.zeros((4,)))
    wide = jnp.zeros((2, 4, 3, 129))
    assert not cpu_kernels.supports(wide, wide, wide, mask, None)


def test_kernel_under_vmap_and_batch_sharding():
    q, k, v, key_mask = inputs(4, 8, 8, 2, 16)
    q, k, v = (jnp.asarray(x, jnp.float32) for x in (q, k, v))
    mask = ops.padding_mask(jnp.asarray(key_mask))
    expected = ops.dot_product_attention(q, k, v, mask, implementation="einsum")

    per_example = jax.vmap(
        lambda q, k, v, m: cpu_kernels.attention(q[None], k[None], v[None], m[None])[0]
    )
    np.testing.assert_allclose(
        np.asarray(per_example(q, k, v, mask)), np.asarray(expected), atol=1e-5
    )

    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip(
            "needs several (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count"
        )
    sharding = NamedSharding(Mesh(np.array(devices[:4]), ("data",)), PartitionSpec("data"))
    args = [jax.device_put(x, sharding) for x in (q, k, v, mask)]
    fn = jax.jit(cpu_kernels.attention, out_shardings=sharding)
    out = fn(*args)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-5)
    hlo = fn.lower(*args).compile().as_text()
    assert "all-gather" not in hlo  # each device runs the kernel on its own examples


def test_failed_build_leaves_no_library(tmp_path, monkeypatch):
    failing = tmp_path / "failing-c++"
    failing.write_text('#!/bin/sh\n[ "$1" = --version ] && echo fake 1.0 && exit 0\nexit 1\n')
    failing.chmod(failing.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("JAXFORMER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="failed"):
        cpu_kernels._build(str(failing))
    assert not list((tmp_path / "cache").glob("**/*.so"))  # nothing half-built left behind
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".build")]


def test_build_is_cached():
    """A second build of the same source, jaxlib, compiler and CPU reuses the library."""
    assert cpu_kernels.available()  # built (or found) in cache_dir()
    compiler = cpu_kernels._compiler()
    first = cpu_kernels._build(compiler)
    mtime = os.stat(first).st_mtime_ns
    assert cpu_kernels._build(compiler) == first and os.stat(first).st_mtime_ns == mtime


def test_nan_propagates_as_in_pure_jax():
    """A NaN in a query gives NaN in that query's output only, as the einsum path does: a
    diverged model must not look healthy in evaluation."""
    q, k, v, _ = inputs(1, 4, 4, 1, 16)
    q[0, 1, 0, 3] = np.nan
    q, k, v = (jnp.asarray(x, jnp.float32) for x in (q, k, v))
    got = np.isnan(np.asarray(cpu_kernels.attention(q, k, v))).any(-1)
    expected = np.isnan(np.asarray(ops.dot_product_attention(q, k, v, implementation="einsum")))
    np.testing.assert_array_equal(got, expected.any(-1))
    assert got[0, 1, 0] and got.sum() == 1
