"""The compiled CPU attention kernel (jaxformer.kernels.cpu.attention) against NumPy, and its
gradient against that of `kernels.scan` and `layers.attention`. With a C++ compiler the kernel
must build: no test here can quietly run the pure-JAX program instead (`cpu.attention` raises
without the kernel)."""

import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import np_attention, qkv
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxformer import layers
from jaxformer.kernels import cpu, scan

pytestmark = [
    pytest.mark.skipif(jax.default_backend() != "cpu", reason="the kernel is for XLA:CPU"),
    pytest.mark.skipif(cpu._compiler() is None, reason="no C++ compiler to build the kernel"),
    pytest.mark.skipif(
        os.environ.get("JAXFORMER_CPU_KERNELS") == "0", reason="JAXFORMER_CPU_KERNELS=0"
    ),
    pytest.mark.usefixtures("strict_promotion"),
]


def inputs(rng, b, t, s, h, d, scale=1.0, drop=0.3):
    """q, k, v and a (b, s) key mask with example 0 attending to every key."""
    q, k, v = qkv(rng, b, t, s, h, d)
    key_mask = rng.random((b, s)) > drop
    key_mask[0] = True
    return q * scale, k * scale, v, key_mask


def test_the_kernel_builds_here():
    """With a compiler present the kernel must build and register."""
    assert cpu.attention_available()
    assert list(cpu.kernel_dir().glob("attention-*.so"))


@pytest.mark.parametrize(
    "b, t, s, h, d, scale",
    [
        (2, 5, 5, 3, 4, 1.0),  # head_dim below one vector
        (3, 17, 70, 2, 20, 1.0),  # t != s; s past one 64-key block; d not a multiple of 16
        (2, 64, 64, 4, 64, 1.0),
        (2, 9, 9, 2, cpu.MAX_HEAD_DIM, 1.0),  # the largest head_dim
        (2, 6, 40, 2, 32, 12.0),  # scores in the hundreds: the max must be subtracted
    ],
)
def test_kernel_matches_numpy(b, t, s, h, d, scale, rng):
    q, k, v, key_mask = inputs(rng, b, t, s, h, d, scale)
    key_mask[-1] = False  # and one example attends nowhere: zeros
    mask = layers.padding_mask(jnp.asarray(key_mask))
    assert cpu.attention_supports(q, k, v, mask, None)
    got = np.asarray(jax.jit(cpu.attention)(q, k, v, mask))
    np.testing.assert_allclose(got, np_attention(q, k, v, mask), atol=2e-5 * max(1.0, scale))
    assert (got[-1] == 0).all()


def test_kernel_without_mask_and_with_a_shared_mask(rng):
    q, k, v, key_mask = inputs(rng, 2, 8, 8, 2, 16)
    np.testing.assert_allclose(np.asarray(cpu.attention(q, k, v)), np_attention(q, k, v), atol=1e-5)
    shared = jnp.asarray(key_mask[:1, None, None, :])  # (1, 1, 1, s): every example the same
    np.testing.assert_allclose(
        np.asarray(cpu.attention(q, k, v, shared)), np_attention(q, k, v, shared), atol=1e-5
    )


def test_kernel_gradient_is_the_scan_gradient(rng):
    q, k, v, key_mask = inputs(rng, 2, 7, 7, 3, 8)
    mask = layers.padding_mask(jnp.asarray(key_mask))
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

    def value_and_grads(fn):
        def loss(q, k, v):
            return (fn(q, k, v, mask) * cotangent).sum()

        step = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))
        return step(q, k, v), step.lower(q, k, v).as_text()

    ((value, got), hlo), ((want_value, want), _), ((_, reference), _) = map(
        value_and_grads, (cpu.attention, scan.attention, layers.attention)
    )
    assert cpu.ATTENTION_TARGET in hlo  # the kernel runs the forward pass of the step
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
    for name, g, w, r in zip("qkv", got, want, reference, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-6, err_msg=name)
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, err_msg=name)


def test_supports():
    q = jnp.zeros((2, 4, 3, 8), jnp.float32)
    mask = jnp.ones((2, 1, 1, 4), bool)
    assert cpu.attention_supports(q, q, q, mask, None)
    assert cpu.attention_supports(q, q, q, None, None)
    assert cpu.attention_supports(q, q, q, mask[:1], None)  # shared by the examples
    assert not cpu.attention_supports(q, q, q, jnp.ones((2, 3, 1, 4), bool), None)  # per head
    assert not cpu.attention_supports(q, q, q, jnp.ones((2, 1, 4, 4), bool), None)  # per query
    assert not cpu.attention_supports(q, q, q, jnp.ones((4, 4), bool), None)
    assert not cpu.attention_supports(q, q, q, mask, jnp.zeros((4,), jnp.float32))
    half = q.astype(jnp.bfloat16)
    assert not cpu.attention_supports(half, half, half, mask, None)
    wide = jnp.zeros((2, 4, 3, cpu.MAX_HEAD_DIM + 1), jnp.float32)
    assert not cpu.attention_supports(wide, wide, wide, mask, None)


def test_kernel_under_vmap_and_batch_sharding(rng):
    q, k, v, key_mask = inputs(rng, 4, 8, 8, 2, 16)
    mask = layers.padding_mask(jnp.asarray(key_mask))
    expected = np_attention(q, k, v, mask)

    per_example = jax.vmap(lambda q, k, v, m: cpu.attention(q[None], k[None], v[None], m[None])[0])
    np.testing.assert_allclose(np.asarray(per_example(q, k, v, mask)), expected, atol=1e-5)

    devices = jax.devices()
    if len(devices) < 4:
        pytest.skip("needs 4 (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count=4")
    sharding = NamedSharding(Mesh(np.array(devices[:4]), ("data",)), PartitionSpec("data"))
    args = [jax.device_put(x, sharding) for x in (q, k, v, mask)]
    fn = jax.jit(cpu.attention, out_shardings=sharding)
    np.testing.assert_allclose(np.asarray(fn(*args)), expected, atol=1e-5)
    hlo = fn.lower(*args).compile().as_text()
    assert cpu.ATTENTION_TARGET in hlo
    assert "all-gather" not in hlo  # each device runs the kernel on its own examples


def test_nan_propagates_as_in_the_reference(rng):
    """A NaN in a query gives NaN in that query's output only: a diverged model must not look
    healthy in evaluation."""
    q, k, v, _ = inputs(rng, 1, 4, 4, 1, 16)
    q = q.at[0, 1, 0, 3].set(jnp.nan)
    got = np.isnan(np.asarray(cpu.attention(q, k, v))).any(-1)
    expected = np.isnan(np.asarray(layers.attention(q, k, v))).any(-1)
    np.testing.assert_array_equal(got, expected)
    assert got[0, 1, 0] and got.sum() == 1


def test_failed_build_leaves_no_library(tmp_path, monkeypatch):
    failing = tmp_path / "failing-c++"
    failing.write_text('#!/bin/sh\n[ "$1" = --version ] && echo fake 1.0 && exit 0\nexit 1\n')
    failing.chmod(failing.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("JAXFORMER_CACHE_DIR", str(tmp_path / "cache"))
    assert cpu.kernel_dir() == tmp_path / "cache" / "kernels"
    with pytest.raises(RuntimeError, match="failed"):
        cpu._build(str(failing), "attention", cpu.CSRC / "attention_cpu.cc")
    assert not list((tmp_path / "cache").glob("**/*.so"))  # nothing half-built left behind
    assert not [p for p in cpu.kernel_dir().iterdir() if p.name.startswith(".build")]


def test_build_is_cached():
    """A second build of the same source, jaxlib, compiler and CPU reuses the library."""
    assert cpu.attention_available()  # built (or found) in kernel_dir()
    compiler, source = cpu._compiler(), cpu.CSRC / "attention_cpu.cc"
    first = cpu._build(compiler, "attention", source)
    assert first.parent == cpu.kernel_dir() and first.name.startswith("attention-")
    mtime = os.stat(first).st_mtime_ns
    assert cpu._build(compiler, "attention", source) == first
    assert os.stat(first).st_mtime_ns == mtime
