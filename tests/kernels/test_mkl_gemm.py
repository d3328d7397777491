"""The MKL GEMM kernel (jaxformer.kernels.cpu.gemm, .matmul, .dense) against NumPy and
`layers.dense` (the reference it replaces), the model's MKL program against its XLA one, and the
kernel's isolation: it links MKL's sequential layer and changes no MKL setting of the process.

Where MKL is installed and a compiler exists the kernel must build: the tests assert it rather
than quietly test XLA's GEMMs."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxformer
from jaxformer import layers
from jaxformer.kernels import cpu
from jaxformer.models import init_params
from jaxformer.training.parallel import Parallelism

pytestmark = [
    pytest.mark.skipif(jax.default_backend() != "cpu", reason="the MKL kernel is for XLA:CPU"),
    pytest.mark.skipif(cpu._compiler() is None, reason="no C++ compiler to build the MKL kernel"),
    pytest.mark.skipif(
        cpu.mkl_dir() is None,
        reason="the mkl wheel is not installed (pip install 'jaxformer[mkl]')",
    ),
    pytest.mark.skipif(
        os.environ.get("JAXFORMER_CPU_KERNELS") == "0", reason="JAXFORMER_CPU_KERNELS=0"
    ),
]
strict = pytest.mark.usefixtures("strict_promotion")


@pytest.fixture
def normal(rng):
    return lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)


def test_the_kernel_builds_and_registers():
    assert cpu.mkl_available()
    assert list(cpu.kernel_dir().glob("gemm-*.so"))


@strict
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
def test_gemm_matches_numpy(m, k, n, trans_a, trans_b, normal):
    a, b, bias = normal(m, k), normal(k, n), normal(n)
    a_in, b_in = (a.T if trans_a else a), (b.T if trans_b else b)
    expected = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    fn = jax.jit(cpu.gemm, static_argnames=("trans_a", "trans_b"))
    got = fn(a_in, b_in, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)
    with_bias = fn(a_in, b_in, bias, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_allclose(np.asarray(with_bias), expected + np.asarray(bias), atol=1e-4)


def test_gemm_rejects_shapes_that_do_not_agree(normal):
    with pytest.raises(ValueError, match="op\\(a\\) is 3x4 but op\\(b\\) is 5x6"):
        cpu.gemm(normal(3, 4), normal(5, 6))
    with pytest.raises(ValueError, match="bias must have shape \\(6,\\)"):
        cpu.gemm(normal(3, 5), normal(5, 6), normal(5))
    with pytest.raises(ValueError, match="takes matrices"):
        cpu.gemm(normal(2, 3, 5), normal(5, 6))


@strict
def test_matmul_gradient_is_the_dense_gradient(normal):
    x, w, b, g = normal(37, 24), normal(24, 18), normal(18), normal(37, 18)

    def grads(fn):
        return jax.grad(lambda x, w, b: jnp.sum(fn(x, w, b) * g), (0, 1, 2))(x, w, b)

    for got, want in zip(grads(cpu.matmul), grads(layers.dense), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)


@strict
@pytest.mark.parametrize("contract", [1, 2])
def test_dense_matches_the_reference(contract, normal):
    """As the attention projections use it: x W_q (contract 1) and o W_o (contract 2: heads and
    head_dim), values and gradients, and the program calls the kernel."""
    if contract == 1:
        x, w, b = normal(2, 9, 16), normal(16, 4, 8), normal(4, 8)
    else:
        x, w, b = normal(2, 9, 4, 8), normal(4, 8, 16), normal(16)
    g = normal(*x.shape[: x.ndim - contract], *w.shape[contract:])

    def value_and_grads(fn):
        def loss(x, w, b):
            return jnp.sum(fn(x, w, b, contract) * g)

        step = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))
        return jax.jit(fn, static_argnums=3)(x, w, b, contract), step(x, w, b), step

    y_mkl, (_, g_mkl), step = value_and_grads(cpu.dense)
    y_ref, (_, g_ref), _ = value_and_grads(layers.dense)
    assert cpu.GEMM_TARGET in step.lower(x, w, b).as_text()
    np.testing.assert_allclose(np.asarray(y_mkl), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
    for got, want in zip(g_mkl, g_ref, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)


def tiny(matmul: str, **kw) -> jaxformer.BertForSequenceClassification:
    config = jaxformer.BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        matmul=matmul,
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
    labels = jnp.array([0, 1, 1])

    def loss_and_grads(model):
        def loss(p):
            logits = model.apply(
                {"params": p}, ids, mask, train=True, rngs={"dropout": jax.random.key(2)}
            )
            logp = jax.nn.log_softmax(logits, axis=-1)  # (b, labels)
            return -jnp.take_along_axis(logp, labels[:, None], axis=-1).mean()

        fn = jax.jit(jax.value_and_grad(loss))
        return fn(params), fn.lower(params).as_text()

    ((l_mkl, g_mkl), hlo_mkl), ((l_xla, g_xla), hlo_xla) = map(
        loss_and_grads, (model_mkl, model_xla)
    )
    assert cpu.GEMM_TARGET in hlo_mkl and cpu.GEMM_TARGET not in hlo_xla
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


def test_bfloat16_model_keeps_xla_gemms():
    model = tiny("mkl", dtype="bfloat16")
    params = init_params(model, jax.random.key(0))
    ids = jnp.zeros((2, 8), jnp.int32)
    hlo = jax.jit(lambda p: model.apply({"params": p}, ids)).lower(params).as_text()
    assert cpu.GEMM_TARGET not in hlo


def test_jit_over_several_devices_uses_xla_gemms():
    """A custom call does not partition: under a multi-device jit Mesh the trainer switches the
    model to XLA's GEMMs (which shard the batch) rather than gather activations everywhere."""
    if len(jax.devices()) < 2:
        pytest.skip(
            "needs several (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count"
        )
    model = tiny("auto")
    assert Parallelism("jit").adapt_model(model).config.matmul == "xla"
    for kind in ("pmap", "single"):
        assert Parallelism(kind).adapt_model(model) is model
    same = dataclasses.replace(model.config, matmul="xla")
    assert Parallelism("jit").adapt_model(tiny("xla")).config == same


# After the kernel is loaded and has run: the MKL variables of the environment and the MKL
# libraries mapped into the process.
PROCESS_STATE = textwrap.dedent(
    """
    import json, os
    import jax.numpy as jnp, numpy as np
    from jaxformer.kernels import cpu
    before = {k: v for k, v in os.environ.items() if k.startswith(("MKL", "KMP", "OMP"))}
    assert cpu.mkl_available()
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(cpu.gemm(jnp.asarray(a), jnp.asarray(a.T)), a @ a.T)
    after = {k: v for k, v in os.environ.items() if k.startswith(("MKL", "KMP", "OMP"))}
    maps = open("/proc/self/maps").read().split()
    libraries = sorted({p for p in maps if p.startswith("/") and ".so" in p})
    print(json.dumps({"before": before, "after": after, "libraries": libraries}))
    """
)
THREADED_MKL = ("libmkl_rt", "libmkl_gnu_thread", "libmkl_intel_thread", "libmkl_tbb_thread")


@pytest.fixture(scope="module")
def process_state() -> dict:
    """PROCESS_STATE run under MKL_THREADING_LAYER=GNU (what a process with PyTorch may carry)."""
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs Linux's /proc/self/maps")
    env = {**os.environ, "MKL_THREADING_LAYER": "GNU", "MKL_INTERFACE_LAYER": "LP64"}
    out = subprocess.run(
        [sys.executable, "-c", PROCESS_STATE], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_loading_the_kernel_changes_no_mkl_setting_of_the_process(process_state):
    """The kernel reads and sets no MKL variable, and loads MKL's sequential layer: no threaded
    one, and not libmkl_rt (whose threading layer is one per process)."""
    assert process_state["after"] == process_state["before"]
    assert process_state["before"]["MKL_THREADING_LAYER"] == "GNU"
    names = [Path(p).name for p in process_state["libraries"]]
    assert any(n.startswith("libmkl_sequential.so") for n in names), names
    assert not [n for n in names if n.startswith(THREADED_MKL)]
    assert not [n for n in names if n.startswith("libiomp5")]  # Intel's OpenMP runtime


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")
def test_the_loaded_library_links_the_sequential_layer(process_state):
    """DT_NEEDED of the gemm build the process loaded: MKL's LP64 interface, sequential layer
    and core, no threaded layer and not libmkl_rt."""
    builds = [p for p in process_state["libraries"] if Path(p).name.startswith("gemm-")]
    assert len(builds) == 1 and Path(builds[0]).parent == cpu.kernel_dir(), builds
    dynamic = subprocess.run(
        ["readelf", "-d", builds[0]], capture_output=True, text=True, check=True
    ).stdout
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    for library in ("libmkl_intel_lp64.so", "libmkl_sequential.so", "libmkl_core.so"):
        assert any(n.startswith(library) for n in needed), needed
    assert not [n for n in needed if n.startswith(THREADED_MKL)], needed
