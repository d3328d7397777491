"""Where the state lives and how the steps compile: jit over a Mesh, pmap, or one device.

Mirrors the Flax examples' train.py, which compile the pure steps where they are called: jit
with NamedSharding over a device Mesh (the batch split, the parameters replicated) as in lm1b,
or pmap with a psum over devices as in the older examples. XLA:CPU's dot library for the jitted
programs comes from the experiment's `xla_cpu_dots` (see training/config.py).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxformer.models import BertForSequenceClassification
from jaxformer.runtime import onednn

log = logging.getLogger("jaxformer")

# The experiment's xla_cpu_dots -> onednn.jit's `matmul`; the one place the two names meet.
_ONEDNN_MATMUL = {"onednn": "onednn", "default": "xla"}


def _onednn_matmul(xla_cpu_dots: str) -> str:
    if xla_cpu_dots not in _ONEDNN_MATMUL:
        raise ValueError(
            f"xla_cpu_dots must be one of {tuple(_ONEDNN_MATMUL)}, got {xla_cpu_dots!r}"
        )
    return _ONEDNN_MATMUL[xla_cpu_dots]


def jit(fn: Callable, xla_cpu_dots: str = "default", **jit_kwargs: Any) -> onednn.jit:
    """`jax.jit(fn, **jit_kwargs)` whose XLA:CPU dots run in the library `xla_cpu_dots` names:
    "onednn" where the program allows it, or "default" (XLA's own choice)."""
    return onednn.jit(fn, matmul=_onednn_matmul(xla_cpu_dots), **jit_kwargs)


@dataclasses.dataclass
class Parallelism:
    """Where the state lives and how steps compile: "jit" (Mesh + NamedSharding, batch split over
    all devices, params replicated; multi-host ready), "pmap" (replicated state, psum of
    gradient sums over local devices) or "single" (one device)."""

    kind: str = "jit"
    xla_cpu_dots: str = "default"  # jit and single only: jax.pmap takes no compiler options

    def __post_init__(self):
        if self.kind not in ("jit", "pmap", "single"):
            raise ValueError(f"parallelism must be 'jit', 'pmap' or 'single', got {self.kind!r}")
        _onednn_matmul(self.xla_cpu_dots)  # a bad value fails here, not at the first step
        if self.kind == "jit":
            self.mesh = Mesh(np.asarray(jax.devices()), ("data",))
            self.replicated = NamedSharding(self.mesh, P())
            self.sharded = NamedSharding(self.mesh, P("data"))
        self.devices = jax.local_devices() if self.kind == "pmap" else jax.devices()
        if self.kind == "single":
            self.devices = self.devices[:1]
        if self.kind == "pmap":  # a leading axis of one slice per local device
            self.stacked = NamedSharding(Mesh(np.asarray(self.devices), ("batch",)), P("batch"))

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Parallelism:
        return cls(config.parallelism, config.xla_cpu_dots)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def check_batch_size(self, global_batch: int, what: str = "batch_size") -> None:
        per = jax.process_count() * (jax.local_device_count() if self.kind != "single" else 1)
        if global_batch % per:
            raise ValueError(
                f"{what}={global_batch} must be divisible by {per} (devices used by "
                f"parallelism={self.kind!r}); change --config.{what} or the device count"
            )

    def put_state(self, state):
        if self.kind == "jit":
            return jax.device_put(state, self.replicated)
        if self.kind == "pmap":
            n = self.num_devices
            return jax.device_put(
                jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), state),
                self.stacked,
            )
        return jax.device_put(state, self.devices[0])

    def put_batch(self, batch: dict):
        """This process's slice of the global batch -> device arrays."""
        if self.kind == "jit":
            return jax.tree.map(
                lambda x: jax.make_array_from_process_local_data(self.sharded, x), batch
            )
        if self.kind == "pmap":
            n = self.num_devices
            return jax.device_put(
                jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), batch), self.stacked
            )
        return jax.device_put(batch, self.devices[0])

    def adapt_model(self, model: BertForSequenceClassification) -> BertForSequenceClassification:
        """The model with XLA's GEMMs when jit splits the batch over several devices: the MKL
        GEMM kernel (matmul "auto" or "mkl" on CPU) is a custom call that XLA's partitioner
        would gather onto every device. pmap and single compile one device's program."""
        if (
            self.kind != "jit"
            or self.num_devices == 1
            or model.config.matmul in ("xla", "reference")
        ):
            return model
        log.info(
            "matmul=%r -> 'xla': the MKL GEMM kernel does not partition across the %d "
            "devices of a jit Mesh (parallelism='pmap' or 'single' keep it)",
            model.config.matmul,
            self.num_devices,
        )
        return model.clone(config=model.config.replace(matmul="xla"))

    def compile_train(self, step: Callable) -> Callable:
        """`step(state, batch, rng)` compiled with the state donated."""
        if self.kind == "jit":
            return jit(
                step,
                self.xla_cpu_dots,
                in_shardings=(self.replicated, self.sharded, self.replicated),
                out_shardings=(self.replicated, self.replicated),
                donate_argnums=0,
            )
        if self.kind == "pmap":
            return jax.pmap(
                functools.partial(step, axis_name="batch"),
                axis_name="batch",
                in_axes=(0, 0, None),
                donate_argnums=0,
            )
        return jit(step, self.xla_cpu_dots, donate_argnums=0)

    def compile_eval(self, step: Callable) -> Callable:
        """`step(state, batch)` compiled; its per-example outputs stay split like the batch."""
        if self.kind == "jit":
            return jit(
                step,
                self.xla_cpu_dots,
                in_shardings=(self.replicated, self.sharded),
                out_shardings=self.sharded,
            )
        if self.kind == "pmap":
            return jax.pmap(step, axis_name="batch")
        return jit(step, self.xla_cpu_dots)

    def to_host(self, tree):
        """Device results -> numpy; pmap's leading device axis is removed (metrics are psum'ed,
        so every replica holds the same value; per-example outputs are concatenated)."""
        if self.kind == "pmap":
            return jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), tree)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(tree, tiled=True)
        return jax.tree.map(np.asarray, tree)

    def host_state(self, state):
        """The state as one copy (for checkpoints and export)."""
        if self.kind == "pmap":
            return jax.tree.map(lambda x: x[0], state)
        return state
