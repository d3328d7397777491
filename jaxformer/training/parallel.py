"""Where the state lives and how the steps compile: jit over a Mesh, shard_map, pmap, or one
device.

Mirrors the Flax examples' train.py, which compile the pure steps where they are called: jit
with NamedSharding over a device Mesh as in lm1b (the batch split over `data`; the state
replicated, or split as training/sharding.py's rules say, with XLA's SPMD partitioner inserting
the collectives), `jax.shard_map` with a per-device body and a psum over `data` (pmap's program
on a Mesh), or pmap as in the older examples. XLA:CPU's dot library for the jitted programs comes
from the experiment's `xla_cpu_dots` (see training/config.py).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxformer.lora import LoraModel
from jaxformer.models import BertForSequenceClassification
from jaxformer.runtime import onednn
from jaxformer.training import sharding as sharding_lib

log = logging.getLogger("jaxformer")

# The experiment's xla_cpu_dots -> onednn.jit's `matmul`; the one place the two names meet.
_ONEDNN_MATMUL = {"onednn": "onednn", "default": "xla"}
XLA_CPU_DOTS = ("auto", *_ONEDNN_MATMUL)


def _onednn_matmul(xla_cpu_dots: str) -> str:
    if xla_cpu_dots not in XLA_CPU_DOTS:
        raise ValueError(f"xla_cpu_dots must be one of {XLA_CPU_DOTS}, got {xla_cpu_dots!r}")
    if xla_cpu_dots == "auto":
        if jax.default_backend() != "cpu":
            return "xla"  # the option is XLA:CPU's
        from jaxformer.kernels import autotune

        xla_cpu_dots = autotune.fastest_dots()  # measured once per machine
    return _ONEDNN_MATMUL[xla_cpu_dots]


def jit(fn: Callable, xla_cpu_dots: str = "default", **jit_kwargs: Any) -> onednn.jit:
    """`jax.jit(fn, **jit_kwargs)` whose XLA:CPU dots run in the library `xla_cpu_dots` names:
    "onednn" where the program allows it, or "default" (XLA's own choice)."""
    return onednn.jit(fn, matmul=_onednn_matmul(xla_cpu_dots), **jit_kwargs)


KINDS = ("jit", "shard_map", "pmap", "single")


@dataclasses.dataclass
class Parallelism:
    """Where the state lives and how steps compile: "jit" (a Mesh of `mesh` axes, the batch
    split over `data`, the state placed by `sharding`: "data", "fsdp", "tensor" or
    "fsdp+tensor"; multi-host ready), "shard_map" (the same Mesh, data axis only: replicated
    state, a per-device body with a psum of gradient sums over `data`), "pmap" (replicated
    state, psum over local devices) or "single" (one device)."""

    kind: str = "jit"
    xla_cpu_dots: str = "default"  # jit, shard_map and single: jax.pmap takes no compiler options
    mesh_axes: str = "data=-1"  # jit and shard_map: "data=4,model=2"; -1: the remaining devices
    sharding: str = "data"  # jit only; see training/sharding.py

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"parallelism must be one of {KINDS}, got {self.kind!r}")
        _onednn_matmul(self.xla_cpu_dots)  # a bad value fails here, not at the first step
        self.devices = jax.local_devices() if self.kind == "pmap" else jax.devices()
        if self.kind == "single":
            self.devices = self.devices[:1]
        axes = sharding_lib.parse_mesh(self.mesh_axes, len(jax.devices()))
        sharding_lib.check_mode(self.sharding, axes)
        if self.kind != "jit" and (self.sharding != "data" or axes.get("model", 1) > 1):
            raise ValueError(
                f"parallelism={self.kind!r} replicates the state over a data axis: it takes "
                f"sharding='data' and a mesh without a model axis, got sharding="
                f"{self.sharding!r}, mesh={self.mesh_axes!r}; use parallelism='jit'"
            )
        self._state_shardings = None
        if self.kind in ("jit", "shard_map"):
            self.mesh = sharding_lib.make_mesh(axes, self.devices)
            self.replicated = NamedSharding(self.mesh, P())
            self.sharded = NamedSharding(self.mesh, P("data"))  # replicated over `model`
        if self.kind == "pmap":  # a leading axis of one slice per local device
            self.stacked = NamedSharding(Mesh(np.asarray(self.devices), ("batch",)), P("batch"))

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Parallelism:
        return cls(config.parallelism, config.xla_cpu_dots, config.mesh, config.sharding)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def check_batch_size(self, global_batch: int, what: str = "batch_size") -> None:
        if self.kind in ("jit", "shard_map"):
            per = self.mesh.shape["data"]
        else:
            per = jax.process_count() * (jax.local_device_count() if self.kind == "pmap" else 1)
        if global_batch % per:
            raise ValueError(
                f"{what}={global_batch} must be divisible by {per} (devices the batch is split "
                f"over by parallelism={self.kind!r}); change --config.{what} or the device count"
            )

    def state_shardings(self, state):
        """A NamedSharding per leaf of `state` (arrays or ShapeDtypeStructs): the rules of
        training/sharding.py for jit, replicated for shard_map; dimensions that fall back to
        replication are logged once, at the first call."""
        if self.kind == "shard_map":
            return jax.tree.map(lambda _: self.replicated, state)
        fallbacks: list[str] = []
        shardings = sharding_lib.tree_shardings(state, self.mesh, self.sharding, fallbacks)
        if fallbacks and self._state_shardings is None:
            log.info(
                "sharding=%r on mesh %s keeps %d arrays' dimensions replicated (they do not "
                "divide): %s",
                self.sharding,
                dict(self.mesh.shape),
                len(fallbacks),
                "; ".join(dict.fromkeys(fallbacks)),
            )
        return shardings

    def abstract_state(self, state):
        """ShapeDtypeStructs of `state`'s leaves, with the shardings `put_state` gives them on
        this Mesh (jit, shard_map): an Orbax checkpoint saved under any mesh restores straight
        into them. pmap and single: on the default device, placed by `put_state` afterwards."""
        shardings = (
            self.state_shardings(state)
            if self.kind in ("jit", "shard_map")
            else jax.tree.map(lambda _: None, state)
        )
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype, sharding=s),
            state,
            shardings,
        )

    def put_state(self, state):
        """The state on the devices; for jit and shard_map this also fixes the state's
        shardings for `compile_train` and `compile_eval`."""
        if self.kind in ("jit", "shard_map"):
            self._state_shardings = self.state_shardings(state)
            return jax.device_put(state, self._state_shardings)
        if self.kind == "pmap":
            n = self.num_devices
            return jax.device_put(
                jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), state),
                self.stacked,
            )
        return jax.device_put(state, self.devices[0])

    def placed(self):
        if self._state_shardings is None:
            raise RuntimeError("Parallelism.put_state places the state before steps compile")
        return self._state_shardings

    def put_batch(self, batch: dict):
        """This process's slice of the global batch -> device arrays."""
        if self.kind in ("jit", "shard_map"):
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
        """The model with XLA's GEMMs when jit spans several devices, whatever the `sharding`:
        the MKL GEMM kernel (matmul "auto" or "mkl" on CPU) is a custom call that XLA's
        partitioner would gather onto every device, batch and split weights alike. shard_map,
        pmap and single compile one device's program."""
        if (
            self.kind != "jit"
            or self.num_devices == 1
            or model.config.matmul in ("xla", "reference")
        ):
            return model
        log.info(
            "matmul=%r -> 'xla': the MKL GEMM kernel does not partition across the %d "
            "devices of a jit Mesh (sharding=%r; parallelism='shard_map', 'pmap' or 'single' "
            "keep it)",
            model.config.matmul,
            self.num_devices,
            self.sharding,
        )
        if isinstance(model, LoraModel):
            return model.clone(model=model.model.clone(config=model.config.replace(matmul="xla")))
        return model.clone(config=model.config.replace(matmul="xla"))

    def compile_train(self, step: Callable) -> Callable:
        """`step(state, batch, rng)` compiled with the state donated (after `put_state`)."""
        if self.kind == "jit":
            state = self.placed()
            return jit(
                step,
                self.xla_cpu_dots,
                in_shardings=(state, self.sharded, self.replicated),
                out_shardings=(state, self.replicated),
                donate_argnums=0,
            )
        if self.kind == "shard_map":
            # check_vma=False: pmap's semantics, gradients per device until train_step's psum
            # (with the check, autodiff would already sum the replicated parameters' gradients).
            body = jax.shard_map(
                functools.partial(step, axis_name="data"),
                mesh=self.mesh,
                in_specs=(P(), P("data"), P()),
                out_specs=(P(), P()),
                check_vma=False,
            )
            return jit(
                body,
                self.xla_cpu_dots,
                in_shardings=(self.placed(), self.sharded, self.replicated),
                out_shardings=(self.placed(), self.replicated),
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
        """`step(state, batch)` compiled (after `put_state`); its per-example outputs stay split
        like the batch."""
        if self.kind in ("jit", "shard_map"):
            if self.kind == "shard_map":
                step = jax.shard_map(
                    step, mesh=self.mesh, in_specs=(P(), P("data")), out_specs=P("data")
                )
            return jit(
                step,
                self.xla_cpu_dots,
                in_shardings=(self.placed(), self.sharded),
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
