"""training/sharding.py's rule table, and every way of placing the state on 8 devices training
like one device.

The rule tests run here on the session's 4 devices. The 8-device checks run in a subprocess
(sharding_runs.py: jax fixes its device count when it starts). configs/tiny.py trains without
dropout, so all runs draw the same (no) masks; with dropout, jit's masks would not depend on the
sharding (a function of the key and each element's global position), while shard_map and pmap
fold the device index into the key, as pmap always has.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jaxformer.training import parallel, sharding

MESH = {"data": 4, "model": 2}


def spec(path, shape, mode, axes=MESH, fallbacks=None):
    return sharding.partition_spec(path, shape, axes, mode, fallbacks)


def test_parse_mesh():
    assert sharding.parse_mesh("data=-1", 8) == {"data": 8}
    assert list(sharding.parse_mesh("data=-1,model=2", 8).items()) == [("data", 4), ("model", 2)]
    assert sharding.parse_mesh(" data=2 , model=4", 8) == {"data": 2, "model": 4}
    for bad, words in (
        ("data=3", "has 3 devices"),
        ("model=8", "no 'data' axis"),
        ("data=-1,model=-1", "at most one -1"),
        ("data=-1,model=3", "do not divide"),
        ("data=4,pipe=2", "NAME=SIZE"),
        ("data=x", "no integer"),
    ):
        with pytest.raises(ValueError, match=words):
            sharding.parse_mesh(bad, 8)


def test_rules_per_mode():
    w_q, w1 = "bert/layer_0/attention/w_q", "bert/layer_1/mlp/w1"
    assert spec(w_q, (32, 4, 8), "data") == P(None, None, None)
    assert spec(w_q, (32, 4, 8), "tensor") == P(None, "model", None)
    assert spec(w_q, (32, 4, 8), "fsdp") == P("data", None, None)  # the largest that divides
    assert spec(w_q, (32, 4, 8), "fsdp+tensor") == P("data", "model", None)
    assert spec("bert/layer_0/attention/b_k", (4, 8), "tensor") == P("model", None)
    assert spec("bert/layer_0/attention/w_o", (4, 8, 32), "fsdp+tensor") == P("model", None, "data")
    assert spec(w1, (32, 64), "tensor") == P(None, "model")
    assert spec(w1, (32, 64), "fsdp+tensor") == P("data", "model")
    assert spec("bert/layer_1/mlp/b1", (64,), "tensor") == P("model")
    assert spec("bert/layer_1/mlp/w2", (64, 32), "fsdp+tensor") == P("model", "data")
    table = "bert/embeddings/token/embedding"
    assert spec(table, (30522, 32), "tensor") == P("model", None)
    assert spec(table, (30522, 32), "fsdp", {"data": 8}) == P(None, "data")  # 30522 % 8 != 0
    assert spec("bert/embeddings/position/embedding", (128, 32), "tensor") == P(None, None)
    assert spec("bert/pooler/kernel", (32, 32), "tensor") == P(None, None)
    assert spec("bert/layer_0/mlp_norm/scale", (32,), "fsdp") == P("data")
    assert spec("step", (), "fsdp+tensor") == P()


def test_dimensions_that_do_not_divide_stay_replicated():
    fallbacks = []
    axes = {"data": 2, "model": 4}
    got = spec("bert/layer_0/attention/w_q", (32, 6, 8), "fsdp+tensor", axes, fallbacks)
    assert got == P("data", None, None)  # 6 heads over model=4: replicated, fsdp still splits m
    assert spec("classifier/bias", (3,), "fsdp", axes, fallbacks) == P(None)
    assert len(fallbacks) == 2
    assert "dim 1 (heads, 6) over model=4" in fallbacks[0]
    assert "no dimension divides data=2" in fallbacks[1]


def test_optimizer_moments_follow_their_parameters():
    params = {"bert": {"layer_0": {"mlp": {"w1": np.zeros((8, 16)), "b1": np.zeros(16)}}}}
    opt_state = optax.adamw(1e-3).init(params)
    specs = sharding.tree_specs({"params": params, "opt_state": opt_state}, MESH, "fsdp+tensor")
    mu, nu = specs["opt_state"][0].mu, specs["opt_state"][0].nu
    assert (
        mu
        == nu
        == specs["params"]
        == {"bert": {"layer_0": {"mlp": {"w1": P("data", "model"), "b1": P("model")}}}}
    )
    assert specs["opt_state"][0].count == P()


def test_parallelism_settings():
    if jax.device_count() != 4:
        pytest.skip("needs the session's 4 devices")
    par = parallel.Parallelism("jit", mesh_axes="data=-1,model=2", sharding="fsdp+tensor")
    assert dict(par.mesh.shape) == MESH | {"data": 2}
    par.check_batch_size(6)  # split over data=2 only
    with pytest.raises(ValueError, match="divisible by 2"):
        par.check_batch_size(5)
    with pytest.raises(ValueError, match="'model' axis"):
        parallel.Parallelism("jit", sharding="tensor")
    with pytest.raises(ValueError, match="sharding must be one of"):
        parallel.Parallelism("jit", sharding="zero3")
    for kind in ("shard_map", "pmap", "single"):
        with pytest.raises(ValueError, match="sharding='data'"):
            parallel.Parallelism(kind, sharding="fsdp")
    with pytest.raises(RuntimeError, match="put_state"):
        parallel.Parallelism("jit").compile_train(lambda state, batch, rng: (state, {}))


def test_abstract_state_carries_the_target_shardings():
    if jax.device_count() != 4:
        pytest.skip("needs the session's 4 devices")
    par = parallel.Parallelism("jit", mesh_axes="data=2,model=2", sharding="tensor")
    state = {"bert": {"layer_0": {"mlp": {"w1": np.ones((8, 16), np.float32)}}}, "step": 0}
    abstract = par.abstract_state(state)
    w1 = abstract["bert"]["layer_0"]["mlp"]["w1"]
    assert (w1.shape, w1.dtype, w1.sharding.spec) == ((8, 16), np.float32, P(None, "model"))
    placed = par.put_state(state)["bert"]["layer_0"]["mlp"]["w1"]
    assert placed.sharding == w1.sharding
    assert placed.addressable_shards[0].data.shape == (8, 8)


def run_on_8_devices(what, archive, cache, workdir, repo):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(repo),
        "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    script = repo / "tests" / "training" / "sharding_runs.py"
    proc = subprocess.run(
        [sys.executable, str(script), what, str(archive), str(cache), str(workdir)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_placement_on_8_devices(tmp_path, archive, cache, repo):
    """fsdp: each device holds 1/8 of the parameters and of the optimizer state (the few arrays
    that no dimension of divides by 8 are whole on each); tensor: half of every w_q and w1; a
    checkpoint saved under one mesh restores under the other, value for value."""
    got = run_on_8_devices("placement", archive, cache, tmp_path, repo)
    assert got["data"]["params"] == got["data"]["opt_state"] == 1.0
    for mode in ("fsdp", "fsdp+tensor"):
        for part in ("params", "opt_state"):
            assert 1 / 8 <= got[mode][part] < 1 / 8 * 1.01, (mode, part, got[mode][part])
        assert got[mode]["attention/w_q"] == got[mode]["mlp/w1"] == [1 / 8, 1 / 8]
    assert got["tensor"]["attention/w_q"] == got["tensor"]["mlp/w1"] == [0.5, 0.5]
    assert 0.5 <= got["tensor"]["params"] < 0.51  # LayerNorms, pooler, positions replicated
    for saved, restored, mesh in (
        ("fsdp", "fsdp+tensor", MESH),
        ("fsdp+tensor", "fsdp", {"data": 8}),
    ):
        check = got[f"{saved}->{restored}"]
        assert check == {"max_abs_diff": 0.0, "shardings_match": True, "mesh": mesh}


@pytest.mark.slow
def test_losses_on_8_devices(tmp_path, archive, cache, repo):
    """Five steps under each sharding (data=8; tensor and fsdp+tensor on data=4,model=2),
    shard_map and pmap give the single-device losses; so does a run of three steps under fsdp on
    data=8 resumed for two under fsdp+tensor on data=4,model=2."""
    got = run_on_8_devices("losses", archive, cache, tmp_path, repo)
    single = got.pop("single")
    assert len(single) == 5
    for run, losses in got.items():
        np.testing.assert_allclose(losses, single, atol=1e-5, rtol=0, err_msg=run)
