"""jaxformer.runtime.onednn: oneDNN GEMMs only where oneDNN can run the program, else XLA's default.

A oneDNN fusion that splits into several oneDNN partitions aborts the whole process at its first
run, so the programs that must fall back run in a subprocess: a broken check fails one test
instead of killing the test process."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxformer
from jaxformer.runtime import onednn

pytestmark = [
    pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU options"),
    # oneDNN executables cannot be serialized: they stay out of the persistent cache.
    pytest.mark.filterwarnings("ignore:Error writing persistent compilation cache"),
]
X = jnp.asarray(np.random.default_rng(0).normal(size=(64, 32)), jnp.float32)
W = jnp.asarray(np.random.default_rng(1).normal(size=(32, 48)), jnp.float32)
Y = jnp.asarray(np.random.default_rng(2).normal(size=(64, 48)), jnp.float32)


def onednn_hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile(compiler_options=onednn.ONEDNN_OPTIONS).as_text()


@pytest.fixture(scope="module", autouse=True)
def needs_onednn():
    if not onednn.onednn_fusions(onednn_hlo(lambda x, w: x @ w, X, W)):
        pytest.skip("this jaxlib's XLA:CPU has no oneDNN fusions")


SAFE = {  # one matmul of parameters, then elementwise post-ops
    "matmul": (lambda x, w: x @ w, (X, W)),
    "post-ops": (lambda x, w, y: jax.nn.gelu((x @ w) * y + 1.0), (X, W, Y)),
    "transposed": (lambda x, y: x.T @ y, (X, Y)),
    "batched": (lambda q: jnp.einsum("btd,bsd->bts", q, q), (X.reshape(4, 16, 32),)),
}
UNSAFE = {  # each aborted the process with "partition compile failed" (jax 0.10.2)
    "prologue": (lambda x, y: x.T @ (2.0 * y), (X, Y)),
    "two dots": (jax.grad(lambda w, x: jnp.sum((x @ w) ** 2)), (W, X)),
    "computed post-op operand": (lambda x, w, y: (x @ w) * (y * y), (X, W, Y)),
}


@pytest.mark.parametrize("name", SAFE)
def test_safe_fusions_pass_the_check(name):
    fn, args = SAFE[name]
    hlo = onednn_hlo(fn, *args)
    assert onednn.onednn_fusions(hlo), "oneDNN took no dot"
    assert onednn.onednn_fusion_problems(hlo) == []


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_fusions_are_named(name):
    fn, args = UNSAFE[name]
    problems = onednn.onednn_fusion_problems(onednn_hlo(fn, *args))
    assert problems and all(p.startswith("fused_computation") for p in problems), problems


def test_jit_matches_default_and_uses_onednn_where_safe():
    fn, args = SAFE["post-ops"]
    f = onednn.jit(fn, matmul="onednn")
    np.testing.assert_allclose(f(*args), jax.jit(fn)(*args), rtol=1e-5, atol=1e-5)
    assert list(f.uses_onednn.values()) == [True]
    f(*args)  # the same shapes: no second compile
    assert len(f.compiled) == 1
    f(X[:32], W, Y[:32])
    assert len(f.compiled) == 2


def test_unknown_library_is_a_clear_error():
    with pytest.raises(ValueError, match="matmul='mkl' is not supported; choose one of"):
        onednn.jit(lambda x: x, matmul="mkl")


def test_model_inference_runs_on_onednn_with_the_same_logits():
    config = jaxformer.BertConfig(
        vocab_size=120,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
        matmul="xla",  # XLA's GEMMs, so oneDNN's under onednn.jit
    )
    model = jaxformer.BertForSequenceClassification(config)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 120, (4, 32)), jnp.int32)
    mask = jnp.ones_like(ids).at[1, 20:].set(0)
    params = model.init(jax.random.key(0), ids, mask)["params"]

    def forward(p, i, m):
        return model.apply({"params": p}, i, m)

    f = onednn.jit(forward, matmul="onednn")
    np.testing.assert_allclose(f(params, ids, mask), jax.jit(forward)(params, ids, mask), atol=2e-5)
    assert list(f.uses_onednn.values()) == [True]


FALLBACK = """
import logging
import jax, jax.numpy as jnp, numpy as np
import jaxformer
logging.basicConfig()
from jaxformer.runtime import onednn
x, y = jnp.ones((64, 32)), jnp.ones((64, 48))
f = onednn.jit(lambda x, y: x.T @ (2.0 * y), matmul="onednn")
np.testing.assert_allclose(f(x, y), 2.0 * np.asarray(x).T @ np.asarray(y))
assert list(f.uses_onednn.values()) == [False]
config = jaxformer.BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=128,
                              matmul="xla")  # every GEMM in XLA, so in oneDNN
model = jaxformer.BertForSequenceClassification(config)
ids = jnp.ones((4, 16), jnp.int32)
params = model.init(jax.random.key(0), ids, ids)["params"]
def loss(p, rng):
    logits = model.apply({"params": p}, ids, ids, train=True, rngs={"dropout": rng})
    return -jax.nn.log_softmax(logits, axis=-1)[:, 0].mean()  # every label 0
grad = onednn.jit(jax.grad(loss), matmul="onednn")
g = grad(params, jax.random.key(1))
ref = jax.jit(jax.grad(loss))(params, jax.random.key(1))
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g, ref)
# The encoder's backward pass, attention dropout included, is one oneDNN can run
# (kernels/scan.py keeps it that way): if this flips to False, training silently lost oneDNN.
assert list(grad.uses_onednn.values()) == [True], "the training step fell back"
print("done")
"""


def test_fallback_instead_of_abort_and_the_encoder_backward_on_onednn():
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FALLBACK)], capture_output=True, text=True
    )
    assert out.returncode == 0 and "done" in out.stdout, out.stderr[-2000:]
    assert "oneDNN cannot run" in out.stderr  # the fallback of the first program is logged
