"""jaxformer.kernels.barrier: the identity both ways, NaN cotangents included, and in a pre-LN
stack (ModernBERT's) the widest fusion of the compiled gradient does not grow with depth."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import families
from jaxformer.kernels.barrier import gradient_barrier
from jaxformer.models import param_shapes
from jaxformer.models.config import BertConfig

pytestmark = pytest.mark.usefixtures("strict_promotion")


def test_identity_forward_and_backward(rng):
    x = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(gradient_barrier(x)), np.asarray(x))

    def loss(barrier):
        return lambda x: jnp.sum(jnp.sin(barrier(x)) * w)

    got = jax.jit(jax.grad(loss(gradient_barrier)))(x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.grad(loss(lambda x: x))(x)))


def test_a_nan_first_cotangent_passes_unchanged():
    """The other branch of the conditional: the cotangent's first element is NaN."""
    g = jnp.array([[jnp.nan, -2.0], [0.5, jnp.inf]], jnp.float32)
    got = jax.jit(jax.grad(lambda x: jnp.sum(gradient_barrier(x) * g)))(jnp.ones((2, 2)))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(g))


def widest_fusion(layers: int) -> int:
    """The most operands of a fusion in the compiled gradient of a tiny ModernBERT classifier."""
    c = BertConfig.from_hf(
        dict(
            model_type="modernbert",
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=48,
            local_attention=8,
        )
    )
    model = families.model_class("modernbert", "classification")(c)

    def loss(params, ids):
        return model.apply({"params": params}, ids, jnp.ones_like(ids)).sum()

    ids = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    hlo = jax.jit(jax.grad(loss)).lower(param_shapes(model), ids).compile().as_text()
    operands = [
        line.split("fusion(", 1)[1].split("calls=")[0].count("%")
        for line in hlo.splitlines()
        if re.search(r"= \S+ fusion\(", line)
    ]
    return max(operands)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the barrier is XLA:CPU's")
def test_pre_ln_gradient_fusions_do_not_grow_with_depth():
    """Without the barrier XLA:CPU fuses the residual stream's running gradient into each layer
    below: the widest fusion grows with the layers above it (64 operands at 3 layers, 119 at
    6), and the work with their square. With it, each layer's sum is written out once."""
    assert widest_fusion(6) <= widest_fusion(3) + 4
