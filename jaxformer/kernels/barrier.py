"""A point that XLA:CPU's fusion does not cross, for the gradient of a pre-LN residual stream.

With x_{l+1} = x_l + f_l(LN(x_l)) (pre-LN, ModernBERT's layers), the gradient that reaches layer
l is the one at the top plus an elementwise term per layer above it. XLA:CPU fuses that running
sum into each fusion that reads it instead of writing it out once, so the operands of every
layer's backward GEMMs recompute all the terms above: O(L^2) passes over (tokens, m), most of a
22-layer step. `gradient_barrier` is the identity whose backward pass returns the cotangent
through a `lax.cond`, a computation of its own whose operand XLA writes out, so each layer's sum
is computed once. (`lax.optimization_barrier` does not do: XLA:CPU expands it before fusion.)
docs/benchmarks.md has what it buys. A `jax.custom_vjp`: no forward-mode autodiff through it.
"""

from __future__ import annotations

import jax

Array = jax.Array


@jax.custom_vjp
def gradient_barrier(x: Array) -> Array:
    """x; its cotangent is written out before it reaches what x depends on."""
    return x


def _fwd(x: Array) -> tuple[Array, None]:
    return x, None


def _bwd(_, g: Array) -> tuple[Array]:
    first = g.reshape(-1)[0]
    # A predicate read from the data, so XLA cannot fold the conditional away: true but for a
    # NaN. The other branch adds 0.0, the same g but for the sign of a zero; XLA keeps that add
    # (-0.0 + 0.0 is +0.0), so the branches differ and the conditional is not merged away.
    return (jax.lax.cond(first == first, lambda a: a, lambda a: a + 0.0, g),)


gradient_barrier.defvjp(_fwd, _bwd)
