"""The MKL GEMM kernel (jaxformer.cpu_kernels.gemm) and the "mkl" matmul implementation of
ops.dense, ops.feed_forward and the model, against NumPy and XLA's own GEMMs."""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxformer
from jaxformer import ops
from jaxformer.kernels import cpu as cpu_kernels
from jaxformer.models.bert import init_params
from jaxformer.training import loop as train_lib

RNG = np.random.default_rng(2)

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu"
    or cpu_kernels._compiler() is None
    or cpu_kernels.mkl_runtime() is None,
    reason="the MKL kernel is for XLA:CPU and needs a C++ compiler and `pip install mkl`",
)


def normal(*shape):
    return jnp.asarray(RNG.standard_normal(shape), jnp.float32)


def test_mkl_is_used_when_installed():
    """With MKL installed and a compiler present, the kernel must register, and "auto" must pick
    it: otherwise every test below would be testing XLA's path."""
    assert cpu_kernels.mkl_available()
    assert ops.default_matmul_implementation() == "mkl"


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize(
    "m, k, n",
    [
        (1, 1, 1),
        (3, 5, 7),
        (130, 70, 65),  # rows split across threads (m > n), uneven blocks
        (65, 33, 200),  # columns split across threads (n > m)
        (257, 96, 257),
    ],
)
def test_gemm_matches_numpy(m, k, n, trans_a, trans_b):
    a, b, bias = normal(m, k), normal(k, n), normal(n)
    a_in, b_in = (a.T if trans_a else a), (b.T if trans_b else b)
    expected = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    fn = jax.jit(cpu_kernels.gemm, static_argnames=("trans_a", "trans_b"))
    got = fn(a_in, b_in, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)
    with_bias = fn(a_in, b_in, bias, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_allclose(np.asarray(with_bias), expected + np.asarray(bias), atol=1e-4)


def test_gemm_rejects_shapes_that_do_not_agree():
    with pytest.raises(ValueError, match="op\\(a\\) is 3x4 but op\\(b\\) is 5x6"):
        cpu_kernels.gemm(normal(3, 4), normal(5, 6))
    with pytest.raises(ValueError, match="bias must have shape \\(6,\\)"):
        cpu_kernels.gemm(normal(3, 5), normal(5, 6), normal(5))
    with pytest.raises(ValueError, match="takes matrices"):
        cpu_kernels.gemm(normal(2, 3, 5), normal(5, 6))


def test_matmul_gradient_is_the_dense_gradient():
    x, w, b, g = normal(37, 24), normal(24, 18), normal(18), normal(37, 18)

    def loss(fn):
        return jax.grad(lambda x, w, b: jnp.sum(fn(x, w, b) * g), (0, 1, 2))(x, w, b)

    for got, want in zip(loss(cpu_kernels.matmul), loss(lambda x, w, b: x @ w + b), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("contract", [1, 2])
def test_dense_mkl_matches_xla(contract):
    """ops.dense as the attention projections use it: x W_q (contract 1) and o W_o (contract
    2: heads and head_dim), values and gradients."""
    if contract == 1:
        x, w, b = normal(2, 9, 16), normal(16, 4, 8), normal(4, 8)
    else:
        x, w, b = normal(2, 9, 4, 8), normal(4, 8, 16), normal(16)
    g = normal(*x.shape[: x.ndim - contract], *w.shape[contract:])

    def value_and_grads(impl):
        def f(x, w, b):
            return jnp.sum(ops.dense(x, w, b, contract, implementation=impl) * g)

        out = jax.jit(lambda x, w, b: ops.dense(x, w, b, contract, implementation=impl))
        return out(x, w, b), jax.jit(jax.grad(f, (0, 1, 2)))(x, w, b)

    (y_mkl, g_mkl), (y_xla, g_xla) = value_and_grads("mkl"), value_and_grads("xla")
    np.testing.assert_allclose(np.asarray(y_mkl), np.asarray(y_xla), rtol=1e-5, atol=1e-5)
    for got, want in zip(g_mkl, g_xla, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)


def test_feed_forward_mkl_matches_xla():
    x, w1, b1, w2, b2 = normal(2, 7, 16), normal(16, 40), normal(40), normal(40, 16), normal(16)
    g = normal(2, 7, 16)

    def run(impl):
        def f(*args):
            return jnp.sum(ops.feed_forward(*args, implementation=impl) * g)

        y = jax.jit(lambda *a: ops.feed_forward(*a, implementation=impl))(x, w1, b1, w2, b2)
        return y, jax.jit(jax.grad(f, (0, 1, 2, 3, 4)))(x, w1, b1, w2, b2)

    (y_mkl, g_mkl), (y_xla, g_xla) = run("mkl"), run("xla")
    np.testing.assert_allclose(np.asarray(y_mkl), np.asarray(y_xla), rtol=1e-5, atol=1e-5)
    for got, want in zip(g_mkl, g_xla, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)


def tiny(matmul_impl: str, **kw) -> jaxformer.BertForSequenceClassification:
    config = jaxformer.BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        matmul_impl=matmul_impl,
        **kw,
    )
    return jaxformer.BertForSequenceClassification(config)


def test_model_training_gradients_match_xla():
    """A training step's loss and gradients (dropout on, same key) with MKL's GEMMs and with
    XLA's, and the MKL program really calls the kernel."""
    model_xla, model_mkl = tiny("xla"), tiny("mkl")
    params = init_params(model_xla, jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (3, 11), 0, 100)
    mask = jnp.ones_like(ids).at[1, 7:].set(0)

    def loss_and_grads(model):
        def loss(p):
            logits = model.apply(
                {"params": p}, ids, mask, train=True, rngs={"dropout": jax.random.key(2)}
            )
            return ops.cross_entropy(logits, jnp.array([0, 1, 1]))

        fn = jax.jit(jax.value_and_grad(loss))
        return fn(params), fn.lower(params).as_text()

    ((l_mkl, g_mkl), hlo_mkl), ((l_xla, g_xla), hlo_xla) = map(
        loss_and_grads, (model_mkl, model_xla)
    )
    assert cpu_kernels.GEMM_TARGET in hlo_mkl and cpu_kernels.GEMM_TARGET not in hlo_xla
    np.testing.assert_allclose(float(l_mkl), float(l_xla), rtol=1e-5)
    for (path, got), want in zip(
        jax.tree_util.tree_leaves_with_path(g_mkl), jax.tree.leaves(g_xla), strict=True
    ):
        # b_k's gradient is zero in exact arithmetic (softmax ignores a shift per query): both
        # sides hold rounding noise there, hence the absolute floor.
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(want), atol=1e-4 * scale + 1e-9, err_msg=str(path)
        )


def test_mkl_applies_to_float32_only():
    """bfloat16 (or any non-float32) GEMMs stay in XLA, whatever matmul_impl says."""
    model = tiny("mkl", dtype="bfloat16")
    params = init_params(model, jax.random.key(0))
    ids = jnp.zeros((2, 8), jnp.int32)
    hlo = jax.jit(lambda p: model.apply({"params": p}, ids)).lower(params).as_text()
    assert cpu_kernels.GEMM_TARGET not in hlo


def test_jit_over_several_devices_uses_xla_gemms():
    """A custom call does not partition: under a multi-device jit Mesh the trainer switches the
    model to XLA's GEMMs (which shard the batch) rather than gather activations everywhere."""
    if len(jax.devices()) < 2:
        pytest.skip(
            "needs several (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count"
        )
    model = tiny("auto")
    assert train_lib.Parallelism("jit").adapt_model(model).config.matmul_impl == "xla"
    for kind in ("pmap", "single"):
        assert train_lib.Parallelism(kind).adapt_model(model) is model
    same = dataclasses.replace(model.config, matmul_impl="xla")
    assert train_lib.Parallelism("jit").adapt_model(tiny("xla")).config == same


CHECK = """
import jax.numpy as jnp, numpy as np
from jaxformer import ops
from jaxformer.kernels import cpu as cpu_kernels
print(ops.default_matmul_implementation())
if cpu_kernels.mkl_available():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(cpu_kernels.gemm(jnp.asarray(a), jnp.asarray(a.T)), a @ a.T)
"""


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"MKL_THREADING_LAYER": "GNU"}, "mkl"),  # jaxformer sets the sequential layer anyway
        ({"JAXFORMER_MKL": "0"}, "xla"),
        ({"JAXFORMER_MKL_RT": "/nonexistent/libmkl_rt.so.3"}, "xla"),  # logged, not raised
    ],
)
def test_environment_switches(env, expected):
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [expected]
    if "JAXFORMER_MKL_RT" in env:
        assert "MKL GEMMs are off" in out.stderr and "/nonexistent" in out.stderr
