"""jaxformer.kernels.feed_forward, the feed-forward block with a hand-written gradient, against
autodiff of `layers.feed_forward` (the reference it replaces), with XLA's and MKL's GEMMs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import layers
from jaxformer.kernels import cpu
from jaxformer.kernels import feed_forward as feed_forward_lib

pytestmark = pytest.mark.usefixtures("strict_promotion")


def gemm_param(gemm: str):
    """ "mkl" skips with the reason where the kernel cannot exist; where it can, it must build
    (asserted in the test), so no MKL test quietly runs XLA's GEMMs."""
    if gemm != "mkl":
        return pytest.param(gemm)
    missing = None
    if jax.default_backend() != "cpu":
        missing = "the MKL GEMM kernel is for XLA:CPU"
    elif cpu._compiler() is None:
        missing = "no C++ compiler to build the MKL GEMM kernel"
    elif cpu.mkl_dir() is None:
        missing = "the mkl wheel is not installed (pip install 'jaxformer[mkl]')"
    return pytest.param(gemm, marks=pytest.mark.skipif(missing is not None, reason=str(missing)))


GEMMS = [gemm_param(g) for g in feed_forward_lib.GEMMS]


def arrays(rng, *shapes):
    return [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("activation", sorted(layers.ACTIVATIONS))
@pytest.mark.parametrize("lead", [(6,), (2, 3)])
def test_values_and_gradients_match_autodiff_of_the_reference(activation, gemm, lead, rng):
    """Every parameter's gradient against jax.grad of `layers.feed_forward`, jitted."""
    if gemm == "mkl":
        assert cpu.mkl_available(), "MKL is installed and a compiler exists: the kernel must build"
    # MKL sums in another order than XLA: float32 rounding of gradients of size ~10.
    atol = 1e-4 if gemm == "mkl" else 1e-5
    args = arrays(rng, (*lead, 8), (8, 16), (16,), (16, 8), (8,))
    probe = jnp.asarray(rng.normal(size=(*lead, 8)), jnp.float32)

    def ours(*a):
        return feed_forward_lib.feed_forward(*a, activation, gemm=gemm)

    def reference(*a):
        return layers.feed_forward(*a, activation)

    def grads(ffn):
        return jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(ffn(*a)) * probe), argnums=range(5)))

    np.testing.assert_allclose(
        np.asarray(jax.jit(ours)(*args)), np.asarray(reference(*args)), rtol=1e-5, atol=atol
    )
    for name, g, w in zip(
        ["x", "w1", "b1", "w2", "b2"], grads(ours)(*args), grads(reference)(*args), strict=True
    ):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=atol, err_msg=name)


@pytest.mark.parametrize("gemm", GEMMS)
def test_the_mkl_program_calls_the_kernel_and_the_xla_one_does_not(gemm, rng):
    if gemm == "mkl":
        assert cpu.mkl_available()
    args = arrays(rng, (2, 3, 8), (8, 16), (16,), (16, 8), (8,))

    def loss(*a):
        return feed_forward_lib.feed_forward(*a, gemm=gemm).sum()

    hlo = jax.jit(jax.grad(loss, range(5))).lower(*args).as_text()
    assert (cpu.GEMM_TARGET in hlo) == (gemm == "mkl")


def test_gradients_keep_each_input_dtype(rng):
    x = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.bfloat16)
    params = [jnp.asarray(w, jnp.bfloat16) for w in arrays(rng, (8, 16), (16,), (16, 8), (8,))]
    grads = jax.grad(
        lambda *a: feed_forward_lib.feed_forward(*a).astype(jnp.float32).sum(), range(5)
    )(x, *params)
    assert [g.dtype for g in grads] == [jnp.bfloat16] * 5
    assert [g.shape for g in grads] == [a.shape for a in (x, *params)]


def test_unknown_activation_or_gemm_is_a_clear_error():
    x, w, b = jnp.zeros((2, 4)), jnp.zeros((4, 4)), jnp.zeros(4)
    with pytest.raises(ValueError, match="activation must be one of .*'swishy'"):
        feed_forward_lib.feed_forward(x, w, b, w, b, "swishy")
    with pytest.raises(ValueError, match="gemm must be one of .*'blas'"):
        feed_forward_lib.feed_forward(x, w, b, w, b, "gelu", gemm="blas")
