"""jaxformer models in Flax NNX code, through `flax.nnx.bridge.ToNNX`.

The Linen modules are the models; NNX holds them as they are. `to_nnx(model, params)` is
`nnx.bridge.ToNNX(model)` holding `params` (a converted checkpoint's, `jaxformer.from_pretrained`)
as its `nnx.Param`s, without running the model's initialisation: call it as the Linen model is
applied (`module(input_ids, attention_mask)`, `train=True` for dropout, drawn from its `rngs`'
"dropout" stream), train it with `nnx.Optimizer(module, tx, wrt=nnx.Param)` under `nnx.jit`, and
`params_of(module)` gives the Linen params back, for `jaxformer.save_pretrained`.

A LoRA model (`jaxformer.lora.LoraModel`) converts the same way; its parameters are under
"base" and "lora", so `nnx.Optimizer(module, tx, wrt=nnx.All(nnx.Param, nnx.PathContains("lora")))`
trains the adapters alone (without the task head, which `jaxformer.lora.trainable` adds).
"""

from __future__ import annotations

import flax.linen as nn
from flax import nnx
from flax.nnx import bridge
from flax.nnx.bridge import variables

__all__ = ["to_nnx", "params_of"]


def to_nnx(model: nn.Module, params: dict, rngs: nnx.Rngs | None = None) -> bridge.ToNNX:
    """`model` (a jaxformer Linen module) as an NNX module holding `params`. `rngs`: its
    streams, "dropout" for train=True (default nnx.Rngs(0), whose default stream serves)."""
    module = bridge.ToNNX(model, rngs=nnx.Rngs(0) if rngs is None else rngs)
    for name, value in variables.linen_vars_to_nnx_attrs({"params": params}).items():
        setattr(module, name, nnx.data(value))
    return module


def params_of(module: bridge.ToNNX) -> dict:
    """The Linen params (`{"params": ...}`'s inside) that `module` holds now."""
    return nnx.state(module, nnx.Param).to_pure_dict()
