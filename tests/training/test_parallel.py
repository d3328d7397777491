"""Parallelism: the three ways of compiling the steps train alike, and xla_cpu_dots maps onto
runtime.onednn in one place."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.training import loop, parallel


def test_xla_cpu_dots_values():
    x = jnp.arange(12.0).reshape(3, 4)
    for dots in ("onednn", "default", "auto"):
        np.testing.assert_allclose(parallel.jit(lambda a: a @ a.T, dots)(x), x @ x.T)
        assert parallel.Parallelism("single", dots).xla_cpu_dots == dots
    from jaxformer.kernels import autotune

    want = {"onednn": "onednn", "default": "xla"}[autotune.fastest_dots()]
    assert parallel.jit(lambda a: a, "auto").matmul == want  # the library measured faster here
    with pytest.raises(ValueError, match="xla_cpu_dots"):
        parallel.jit(lambda a: a, "xla")
    with pytest.raises(ValueError, match="xla_cpu_dots"):
        parallel.Parallelism("jit", "mkl")
    with pytest.raises(ValueError, match="parallelism"):
        parallel.Parallelism("data")


@pytest.mark.parametrize("task", ["classification", "masked_lm"])
def test_parallel_paths_agree(tmp_path, make_config, read_metrics, task):
    """jit over a 4-device Mesh, pmap over 4 devices and one device: same losses (masked-LM:
    its (b, p) target lists split over the devices like the rest of the batch)."""
    if jax.device_count() < 4:
        pytest.skip("needs 4 devices: XLA_FLAGS=--xla_force_host_platform_device_count=4")
    losses = {}
    labels = {} if task == "classification" else {"label_names": None}
    for kind in ("jit", "pmap", "single"):
        config = make_config(
            num_train_steps=5,
            log_every=1,
            eval_every=100,
            parallelism=kind,
            export_dir=None,
            task=task,
            **labels,
        )
        loop.train_and_evaluate(config, tmp_path / kind)
        losses[kind] = [r["loss"] for r in read_metrics(tmp_path / kind, "train")]
    assert len(losses["jit"]) == 5
    np.testing.assert_allclose(losses["jit"], losses["single"], atol=1e-5)
    np.testing.assert_allclose(losses["pmap"], losses["single"], atol=1e-5)
