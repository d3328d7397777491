"""jaxformer.runtime.malloc: XLA:CPU's temp buffer stops being page-faulted on every call."""

import subprocess
import sys
import textwrap

import pytest

from jaxformer.runtime import malloc

# A jitted program whose (8192, 8192) float32 temporary (256 MiB) is one block over glibc's
# mmap threshold; prints the minor page faults of its second call.
PROBE = textwrap.dedent(
    """
    import resource, sys
    from jaxformer.runtime import malloc
    applied = malloc.reuse_freed_memory(sys.argv[1])
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: (x @ x.T).sum(0))
    x = jnp.ones((8192, 32), jnp.float32)
    f(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def probe(mode: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(malloc.glibc() is None, reason="needs Linux with glibc")
def test_reused_memory_is_not_faulted_in_again():
    applied, faults = probe("reuse")
    assert applied
    assert faults < 2_000  # 256 MiB is 65,536 pages: the block was reused, not mapped again
    applied, faults = probe("default")
    assert not applied
    assert faults > 30_000  # glibc's default maps it afresh: the probe measures what it should


def test_bad_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="'always': use one of \\('reuse', 'default'\\)"):
        malloc.reuse_freed_memory("always")


def test_default_mode_leaves_malloc_alone(monkeypatch):
    monkeypatch.setattr(malloc, "_applied", False)
    monkeypatch.setattr(malloc, "glibc", lambda: pytest.fail("malloc was touched"))
    assert malloc.reuse_freed_memory("default") is False
