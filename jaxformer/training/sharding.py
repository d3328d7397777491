"""Where each array of the training state lives on a device Mesh: one table from parameter paths
to logical axes, and per `sharding` mode the map from logical axes to the mesh's axes.

Mirrors MaxText's logical axis rules (a table of names, resolved against the mesh at the end),
Megatron-LM's tensor parallelism (Shoeybi et al. 2019: attention heads and the feed-forward width
split over a `model` axis, so each layer's GEMMs need one all-reduce) and ZeRO-3 / FSDP
(Rajbhandari et al. 2020: parameters and optimizer moments split over the `data` axis, gathered
by XLA's SPMD partitioner where a layer uses them).

Modes: "data" (state replicated), "fsdp" (every array split over `data` along its largest dimension
that divides), "tensor" (the RULES' logical axes over `model`), "fsdp+tensor" (both: `fsdp` takes
the largest dimension that `tensor` left free). A dimension that does not divide its mesh axis
stays replicated. The optimizer's moments (optax's mu and nu) end in their parameter's path, so
the same rule places them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "model")  # batch and FSDP; tensor parallelism
MODES = ("data", "fsdp", "tensor", "fsdp+tensor")

# Parameter path (`re.search` on "bert/layer_0/attention/w_q", first match wins) -> the logical
# axis of each dimension; paths with no rule have no logical axes (fsdp may still split them).
RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"embeddings/token/embedding$", ("vocab", None)),  # (vocab, m)
    (r"attention/w_[qkv]$", (None, "heads", None)),  # (m, h, d)
    (r"attention/b_[qkv]$", ("heads", None)),  # (h, d)
    (r"attention/w_o$", ("heads", None, None)),  # (h, d, m)
    (r"mlp/w1$", (None, "mlp")),  # (m, f)
    (r"mlp/b1$", ("mlp",)),  # (f,)
    (r"mlp/w2$", ("mlp", None)),  # (f, m)
)

# Logical axis -> mesh axis under tensor parallelism.
TENSOR_AXES = {"vocab": "model", "heads": "model", "mlp": "model"}


def parse_mesh(text: str, num_devices: int) -> dict[str, int]:
    """ "data=4,model=2" -> {"data": 4, "model": 2} (ordered, outermost first); one size may be
    -1: the devices the others leave. The sizes must multiply to `num_devices`."""
    axes: dict[str, int] = {}
    for item in text.split(","):
        name, sep, size = item.strip().partition("=")
        if not sep or name not in MESH_AXES or name in axes:
            raise ValueError(
                f"mesh={text!r}: each item must be NAME=SIZE with NAME one of {MESH_AXES}, "
                "each at most once (e.g. 'data=4,model=2')"
            )
        try:
            axes[name] = int(size)
        except ValueError:
            raise ValueError(f"mesh={text!r}: size {size!r} of {name!r} is no integer") from None
    if "data" not in axes:
        raise ValueError(f"mesh={text!r} has no 'data' axis (the batch is split over it)")
    known = math.prod(s for s in axes.values() if s != -1)
    free = [name for name, s in axes.items() if s == -1]
    if len(free) > 1 or any(s == 0 or s < -1 for s in axes.values()):
        raise ValueError(f"mesh={text!r}: sizes must be positive, with at most one -1")
    if free:
        if num_devices % known:
            raise ValueError(f"mesh={text!r}: {num_devices} devices do not divide by {known}")
        axes[free[0]] = num_devices // known
    if math.prod(axes.values()) != num_devices:
        raise ValueError(
            f"mesh={text!r} has {math.prod(axes.values())} devices but there are {num_devices}"
        )
    return axes


def make_mesh(axes: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A Mesh of `devices` (all of them by default) shaped by `axes`; the devices of one
    process are neighbours along the last axes, so `model` stays within a host."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices).reshape(tuple(axes.values())), tuple(axes))


def check_mode(mode: str, axes: dict[str, int]) -> None:
    if mode not in MODES:
        raise ValueError(f"sharding must be one of {MODES}, got {mode!r}")
    if "tensor" in mode and "model" not in axes:
        raise ValueError(f"sharding={mode!r} needs a 'model' axis in the mesh: data=4,model=2")


def logical_axes(path: str, ndim: int) -> tuple[str | None, ...]:
    """The logical axis of each of the `ndim` dimensions of the array at `path`."""
    for pattern, names in RULES:
        if re.search(pattern, path):
            if len(names) != ndim:
                raise ValueError(f"rule {pattern!r} names {len(names)} axes; {path} has {ndim}")
            return names
    return (None,) * ndim


def partition_spec(
    path: str,
    shape: tuple[int, ...],
    axes: dict[str, int],
    mode: str,
    fallbacks: list[str] | None = None,
) -> P:
    """The PartitionSpec of the array of `shape` at `path` on a mesh of `axes` under `mode`.
    Each dimension the rules put on a mesh axis that it does not divide stays replicated and is
    described in `fallbacks`."""
    spec: list[str | None] = [None] * len(shape)
    if "tensor" in mode and axes.get("model", 1) > 1:
        for i, name in enumerate(logical_axes(path, len(shape))):
            target = TENSOR_AXES.get(name)
            if target is None:
                continue
            if shape[i] % axes[target]:
                if fallbacks is not None:
                    fallbacks.append(
                        f"{path} dim {i} ({name}, {shape[i]}) over {target}={axes[target]}"
                    )
                continue
            spec[i] = target
    if "fsdp" in mode and axes["data"] > 1 and len(shape):
        free = [i for i in range(len(shape)) if spec[i] is None and shape[i] % axes["data"] == 0]
        if free:
            spec[max(free, key=lambda i: shape[i])] = "data"  # the first of the largest
        elif fallbacks is not None and math.prod(shape) >= axes["data"]:
            fallbacks.append(f"{path} {tuple(shape)}: no dimension divides data={axes['data']}")
    return P(*spec)


def path_name(path) -> str:
    """A tree path as "params/bert/layer_0/attention/w_q"."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def tree_specs(tree, axes: dict[str, int], mode: str, fallbacks: list[str] | None = None):
    """A PartitionSpec for every leaf of `tree` (arrays, ShapeDtypeStructs or scalars)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: partition_spec(path_name(path), np.shape(x), axes, mode, fallbacks), tree
    )


def tree_shardings(tree, mesh: Mesh, mode: str, fallbacks: list[str] | None = None):
    """A NamedSharding on `mesh` for every leaf of `tree`."""
    axes = dict(mesh.shape)
    return jax.tree.map(
        lambda spec: NamedSharding(mesh, spec),
        tree_specs(tree, axes, mode, fallbacks),
        is_leaf=lambda x: isinstance(x, P),
    )
