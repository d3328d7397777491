"""The 8-device runs behind test_sharding.py, in a process of their own: jax fixes the number of
fake CPU devices when it starts, and the test session has four.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 PYTHONPATH=. \
        python tests/training/sharding_runs.py {losses,placement} ARCHIVE CACHE WORKDIR

prints one JSON object: "losses" trains configs/tiny.py for 5 steps under every way of
compiling the step (and resumes a checkpoint of step 3 under another mesh); "placement" reports
what each device holds under each sharding and restores checkpoints across meshes.
"""

import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np

from configs import tiny
from jaxformer.training import checkpoints, loop, steps
from jaxformer.training.parallel import Parallelism

# name -> (parallelism, mesh, sharding)
RUNS = {
    "single": ("single", "data=-1", "data"),
    "data": ("jit", "data=-1", "data"),
    "fsdp": ("jit", "data=-1", "fsdp"),
    "tensor": ("jit", "data=4,model=2", "tensor"),
    "fsdp+tensor": ("jit", "data=4,model=2", "fsdp+tensor"),
    "pmap": ("pmap", "data=-1", "data"),
    "shard_map": ("shard_map", "data=-1", "data"),
}


def make_config(archive, cache, run, **changes):
    c = tiny.get_config()
    c.data.archive, c.data.cache_dir = archive, cache
    c.parallelism, c.mesh, c.sharding = RUNS[run]
    c.update(num_train_steps=5, log_every=1, eval_every=100, checkpoint_every=100)
    # One batch shape and XLA's own dots: one quick compile of each step per run.
    c.data.bucketing, c.xla_cpu_dots = False, "default"
    c.update(changes)
    return c


def train_losses(workdir: Path) -> list[float]:
    rows = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in rows if r["split"] == "train"]


def losses(archive, cache, root: Path) -> dict:
    out = {}
    for run in RUNS:
        loop.train_and_evaluate(make_config(archive, cache, run), root / run)
        out[run] = train_losses(root / run)
    # Steps 1-3 under fsdp on data=8, then 4-5 resumed under fsdp+tensor on data=4,model=2.
    workdir = root / "resumed"
    loop.train_and_evaluate(make_config(archive, cache, "fsdp", checkpoint_every=3), workdir)
    shutil.rmtree(workdir / "checkpoints" / "5")
    loop.train_and_evaluate(make_config(archive, cache, "fsdp+tensor"), workdir)
    out["resumed"] = train_losses(workdir)
    return out


def device_fraction(tree) -> float:
    """The largest share of `tree`'s bytes that one device holds."""
    per_device: dict = {}
    total = 0
    for x in jax.tree.leaves(tree):
        total += x.nbytes
        for shard in x.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    return max(per_device.values()) / total


def placement(archive, cache, root: Path) -> dict:
    config = make_config(archive, cache, "single")
    _, model, params = loop.build_model(config, jax.random.PRNGKey(0))
    state = steps.create_state(model, params, config.optimizer, 5)
    out = {}
    placed = {}
    for run in ("data", "fsdp", "tensor", "fsdp+tensor"):
        par = Parallelism("jit", "default", *RUNS[run][1:])
        s = par.put_state(state)
        placed[run] = (par, s)
        weights = {
            name: [
                x.addressable_shards[0].data.size / x.size
                for path, x in jax.tree_util.tree_leaves_with_path(s.params)
                if jax.tree_util.keystr(path, simple=True, separator="/").endswith(name)
            ]
            for name in ("attention/w_q", "mlp/w1")
        }
        out[run] = {
            "params": device_fraction(s.params),
            "opt_state": device_fraction(s.opt_state),
            **weights,
        }
    # A checkpoint saved under one mesh restores under the other with the same values.
    for saved, restored in (("fsdp", "fsdp+tensor"), ("fsdp+tensor", "fsdp")):
        par, s = placed[saved]
        ckpts = checkpoints.Checkpoints(root / f"{saved}-to-{restored}")
        ckpts.save("latest", 1, s, {"step": 1})
        ckpts.wait()
        target, _ = placed[restored]
        back, _ = ckpts.restore("latest", 1, target.abstract_state(state))
        ckpts.close()
        want = jax.tree.leaves(target.state_shardings(state))
        got = jax.tree.leaves(back)
        out[f"{saved}->{restored}"] = {
            "max_abs_diff": max(
                float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))
                for a, b in zip(jax.tree.leaves(state), got, strict=True)
            ),
            "shardings_match": all(
                x.sharding.is_equivalent_to(w, x.ndim) for x, w in zip(got, want, strict=True)
            ),
            "mesh": dict(got[0].sharding.mesh.shape),
        }
    return out


if __name__ == "__main__":
    what, archive, cache, root = sys.argv[1:]
    assert jax.device_count() == 8, jax.devices()
    result = {"losses": losses, "placement": placement}[what](archive, cache, Path(root))
    print(json.dumps(result))
