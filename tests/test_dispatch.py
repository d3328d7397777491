"""jaxformer.dispatch: which program runs each equation, by backend, dtype and arguments, that
every program gives the reference's values, and that a fallback is logged once."""

import functools
import logging
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import key_padding_mask, np_attention, qkv

from jaxformer import dispatch, layers
from jaxformer.kernels import autotune, cpu
from jaxformer.kernels import dropout as dropout_lib

ON_CPU = jax.default_backend() == "cpu"
KERNELS_OFF = os.environ.get("JAXFORMER_CPU_KERNELS") == "0"
needs_cpu_kernel = pytest.mark.skipif(
    not ON_CPU or cpu._compiler() is None or KERNELS_OFF,
    reason="the CPU attention kernel needs XLA:CPU, a C++ compiler and JAXFORMER_CPU_KERNELS!=0",
)
needs_mkl = pytest.mark.skipif(
    not ON_CPU or cpu._compiler() is None or cpu.mkl_dir() is None or KERNELS_OFF,
    reason="the MKL kernel needs XLA:CPU, a C++ compiler, the mkl wheel, JAXFORMER_CPU_KERNELS!=0",
)


@pytest.fixture
def inputs(rng):
    """q, k, v (2, 6, 2, 8) float32 and a key padding mask (2, 1, 1, 6)."""
    return (*qkv(rng, b=2, t=6, s=6, h=2, d=8), key_padding_mask([6, 4], 6))


@pytest.fixture
def fresh_log():
    """Each fallback message is logged once per process: forget the ones already said."""
    dispatch._say_once.cache_clear()
    yield
    dispatch._say_once.cache_clear()


# ----------------------------------------------------------------------------- attention


@needs_cpu_kernel
def test_auto_on_cpu_is_the_kernel_where_it_applies(inputs):
    q, k, v, mask = inputs
    assert cpu.attention_available()  # a compiler exists: the kernel must build
    program = functools.partial(dispatch.attention_program, "auto")
    assert program(q, k, v, mask) == "cpu"
    assert program(q, k, v) == "cpu"
    assert program(q, k, v, mask[:1]) == "cpu"  # one mask shared by the examples
    assert program(q, k, v, mask, dropout=True) == "scan"  # training with attention dropout
    assert program(q, k, v, jnp.tril(jnp.ones((6, 6), bool))) == "scan"  # a mask per query
    assert program(q, k, v, mask, jnp.zeros((6,), jnp.float32)) == "scan"  # a bias
    half = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    assert program(*half, mask) == "scan"


@pytest.mark.skipif(ON_CPU, reason="auto is 'xla' off CPU")
def test_auto_off_cpu_is_xla(inputs):
    q, k, v, mask = inputs
    assert dispatch.attention_program("auto", q, k, v, mask) == "xla"
    assert dispatch.attention_program("auto", q, k, v, mask, dropout=True) == "reference"


def test_named_programs(inputs):
    q, k, v, mask = inputs
    for name in ("reference", "scan"):
        for dropout in (False, True):
            assert dispatch.attention_program(name, q, k, v, mask, dropout=dropout) == name
    assert dispatch.attention_program("xla", q, k, v, mask) == "xla"
    assert dispatch.attention_program("xla", q, k, v, mask, dropout=True) == "reference"
    with pytest.raises(ValueError, match="attention='flash' is not supported; choose one of"):
        dispatch.attention_program("flash", q, k, v, mask)


@needs_cpu_kernel
def test_the_program_that_runs_is_the_one_named(inputs):
    """The jaxpr holds the kernel's custom call exactly when the chosen program is "cpu"."""
    q, k, v, mask = inputs
    rng = jax.random.key(0)
    cases = [
        dict(implementation="cpu"),
        dict(implementation="auto"),
        dict(implementation="cpu", dropout_rate=0.1, dropout_rng=rng),
        dict(implementation="cpu", bias=jnp.zeros((6,), jnp.float32)),
        dict(implementation="scan"),
        dict(implementation="xla"),
        dict(implementation="reference"),
    ]
    for kwargs in cases:
        program = dispatch.attention_program(
            kwargs["implementation"], q, k, v, mask, kwargs.get("bias"), "dropout_rng" in kwargs
        )
        jaxpr = str(
            jax.make_jaxpr(lambda q, k, v, kw=kwargs: dispatch.attention(q, k, v, mask, **kw))(
                q, k, v
            )
        )
        assert (cpu.ATTENTION_TARGET in jaxpr) == (program == "cpu"), kwargs


def implementations():
    """Every choice; "cpu" only where the kernel can build (else it would test "scan")."""
    for name in dispatch.ATTENTION:
        marks = [needs_cpu_kernel] if name in ("cpu", "auto") and ON_CPU else []
        yield pytest.param(name, marks=marks)


@pytest.mark.parametrize("implementation", implementations())
def test_every_choice_matches_numpy_with_a_padding_mask(implementation, inputs):
    q, k, v, mask = inputs
    if implementation == "cpu":
        assert dispatch.attention_program("cpu", q, k, v, mask) == "cpu"
    got = dispatch.attention(q, k, v, mask, implementation=implementation)
    np.testing.assert_allclose(np.asarray(got), np_attention(q, k, v, mask), atol=1e-5)


@pytest.mark.parametrize("implementation", implementations())
def test_every_choice_gives_fully_masked_rows_zero(implementation, inputs):
    q, k, v, _ = inputs
    mask = jnp.zeros((2, 1, 1, 6), bool).at[1].set(True)  # example 0: nothing to attend to
    if implementation == "cpu":
        assert dispatch.attention_program("cpu", q, k, v, mask) == "cpu"
    out = np.asarray(dispatch.attention(q, k, v, mask, implementation=implementation))
    assert not np.isnan(out).any() and (out[0] == 0).all()


@pytest.mark.parametrize("implementation", ["reference", "scan", "xla"])
def test_dropout_is_on_with_a_key_and_deterministic_per_key(implementation, inputs):
    q, k, v, mask = inputs

    def run(**kwargs):
        return np.asarray(
            dispatch.attention(q, k, v, mask, implementation=implementation, **kwargs)
        )

    a = run(dropout_rate=0.5, dropout_rng=jax.random.key(3))
    np.testing.assert_array_equal(a, run(dropout_rate=0.5, dropout_rng=jax.random.key(3)))
    assert not np.allclose(a, run(dropout_rate=0.5, dropout_rng=jax.random.key(4)))
    plain = run()
    assert not np.allclose(a, plain)
    np.testing.assert_array_equal(run(dropout_rate=0.5), plain)  # no key: no dropout
    np.testing.assert_array_equal(run(dropout_rate=0.0, dropout_rng=jax.random.key(3)), plain)


def test_reference_dropout_is_layers_attention_with_kernels_dropout(inputs):
    q, k, v, mask = inputs
    rng = jax.random.key(5)
    got = dispatch.attention(
        q, k, v, mask, dropout_rate=0.3, dropout_rng=rng, implementation="reference"
    )
    drop = functools.partial(dropout_lib.dropout, rate=0.3, rng=rng)
    want = layers.attention(q, k, v, mask, dropout=drop)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_dropout_is_the_kernel_dropout():
    x = jnp.ones((8, 16), jnp.float32)
    rng = jax.random.key(0)
    np.testing.assert_array_equal(
        np.asarray(dispatch.dropout(x, 0.3, rng)), np.asarray(dropout_lib.dropout(x, 0.3, rng))
    )


def jaxformer_records(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "jaxformer"]


def test_xla_with_dropout_falls_back_to_the_reference_logged_once(inputs, caplog, fresh_log):
    q, k, v, mask = inputs
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        for _ in range(3):
            assert dispatch.attention_program("xla", q, k, v, mask, dropout=True) == "reference"
    assert jaxformer_records(caplog) == [
        "attention='xla' with dropout runs 'reference' (no fused dropout)"
    ]


@needs_cpu_kernel
def test_cpu_that_cannot_take_the_arguments_runs_scan_logged_once(inputs, caplog, fresh_log):
    q, k, v, mask = inputs
    bias = jnp.zeros((6,), jnp.float32)
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        assert dispatch.attention_program("cpu", q, k, v, mask) == "cpu"
        assert jaxformer_records(caplog) == []  # the kernel applies: nothing to say
        for _ in range(3):
            assert dispatch.attention_program("cpu", q, k, v, mask, bias) == "scan"
            assert dispatch.attention_program("cpu", q, k, v, mask, dropout=True) == "scan"
        # "auto" falls back silently: it promises no kernel
        assert dispatch.attention_program("auto", q, k, v, mask, bias) == "scan"
    records = jaxformer_records(caplog)
    assert len(records) == 1 and "attention='cpu' runs 'scan'" in records[0], records


# ----------------------------------------------------------------------------- GEMMs


@needs_mkl
def test_auto_matmul_is_the_faster_gemm_for_float32_on_cpu():
    assert cpu.mkl_available()  # MKL installed and a compiler: the kernel must build
    f32, half = jnp.zeros((4, 4), jnp.float32), jnp.zeros((4, 4), jnp.bfloat16)
    assert dispatch.matmul_program("auto", f32, f32) == autotune.fastest_gemm()
    assert dispatch.matmul_program("mkl", f32, f32) == "mkl"
    assert dispatch.matmul_program("auto", half, half) == "xla"
    assert dispatch.matmul_program("auto", half, f32) == "xla"  # every operand float32, or XLA


def test_named_matmul_programs():
    x = jnp.zeros((4, 4), jnp.float32)
    assert dispatch.matmul_program("reference", x, x) == "reference"
    assert dispatch.matmul_program("xla", x, x) == "xla"
    with pytest.raises(ValueError, match="matmul='blas' is not supported; choose one of"):
        dispatch.matmul_program("blas", x, x)


def test_mkl_for_bfloat16_runs_xla_logged_once(caplog, fresh_log):
    half = jnp.zeros((4, 4), jnp.bfloat16)
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        for _ in range(3):
            assert dispatch.matmul_program("mkl", half, half) == "xla"
    records = jaxformer_records(caplog)
    assert len(records) == 1 and records[0].startswith("matmul='mkl' runs 'xla'"), records


def matmul_choices():
    for name in dispatch.MATMUL:
        marks = [needs_mkl] if name in ("mkl", "auto") and ON_CPU else []
        yield pytest.param(name, marks=marks)


@pytest.mark.parametrize("implementation", matmul_choices())
def test_dense_and_feed_forward_match_the_reference(implementation, rng):
    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    x, w, b = normal(2, 5, 3, 4), normal(3, 4, 6), normal(6)
    w1, b1, w2, b2 = normal(6, 10), normal(10), normal(10, 6), normal(6)
    program = dispatch.matmul_program(implementation, x, w, b)
    if implementation == "mkl":
        assert program == "mkl"
    if implementation == "auto":  # the faster on this machine
        assert program == autotune.fastest_gemm()

    def dense(x):
        return dispatch.dense(x, w, b, 2, implementation)

    def ffn(y):
        return dispatch.feed_forward(y, w1, b1, w2, b2, "gelu", implementation)

    np.testing.assert_allclose(
        np.asarray(dense(x)), np.asarray(layers.dense(x, w, b, 2)), rtol=1e-5, atol=1e-5
    )
    y = layers.dense(x, w, b, 2)
    np.testing.assert_allclose(
        np.asarray(ffn(y)),
        np.asarray(layers.feed_forward(y, w1, b1, w2, b2, "gelu")),
        rtol=1e-5,
        atol=1e-4,
    )
    jaxpr = str(jax.make_jaxpr(lambda x: ffn(dense(x)))(x))
    assert (cpu.GEMM_TARGET in jaxpr) == (program == "mkl")


# ----------------------------------------------------------------------------- the switch

KERNELS_OFF_CHECK = textwrap.dedent(
    """
    import logging
    import jax, jax.numpy as jnp
    import jaxformer
    from jaxformer import dispatch
    from jaxformer.kernels import cpu
    from jaxformer.models import init_params
    logging.basicConfig(level=logging.INFO)
    q = jnp.zeros((2, 4, 2, 8), jnp.float32)
    mask = jnp.ones((2, 1, 1, 4), bool)
    assert cpu.attention_supports(q, q, q, mask, None)
    assert not cpu.attention_available() and not cpu.mkl_available()
    assert dispatch.attention_program("auto", q, q, q, mask) == "scan"
    assert dispatch.attention_program("cpu", q, q, q, mask) == "scan"
    assert dispatch.matmul_program("auto", q, q) == "xla"
    assert dispatch.matmul_program("mkl", q, q) == "xla"
    config = jaxformer.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32)
    model = jaxformer.BertForSequenceClassification(config)
    ids = jnp.ones((2, 6), jnp.int32)
    params = init_params(model, jax.random.key(0))
    forward = jax.jit(lambda p: model.apply({"params": p}, ids, ids))
    hlo = forward.lower(params).as_text()
    assert cpu.ATTENTION_TARGET not in hlo and cpu.GEMM_TARGET not in hlo
    logits = forward(params)
    assert logits.shape == (2, 2) and bool(jnp.isfinite(logits).all())
    print("done")
    """
)


def test_jaxformer_cpu_kernels_0_turns_both_kernels_off_and_the_model_still_runs(tmp_path):
    """In a fresh process (the kernels are loaded once per process), with an empty cache: the
    switch must also keep the kernels from being built."""
    env = {**os.environ, "JAXFORMER_CPU_KERNELS": "0", "JAXFORMER_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", KERNELS_OFF_CHECK], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0 and out.stdout.split() == ["done"], out.stderr[-3000:]
    assert not list(tmp_path.glob("**/*.so"))  # nothing was built
    assert "attention='cpu' runs 'scan' (the kernel off)" in out.stderr
    assert "matmul='mkl' runs 'xla'" in out.stderr


# ----------------------------------------------------------------------------- GPU and TPU


@pytest.fixture
def backend(monkeypatch):
    """Sets what jax.default_backend() answers, for the dispatcher's choice only (no numerics)."""

    def set_backend(name):
        monkeypatch.setattr(jax, "default_backend", lambda: name)

    return set_backend


def half(*arrays):
    return [x.astype(jnp.bfloat16) for x in arrays]


def test_auto_on_gpu_is_cudnn_where_it_applies_else_xla(inputs, backend, caplog, fresh_log):
    q, k, v, mask = inputs  # (2, 6, 2, 8): head_dim 8, even lengths
    backend("gpu")
    program = functools.partial(dispatch.attention_program, "auto")
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        assert program(*half(q, k, v), mask) == "cudnn"
        assert program(*half(q, k, v)) == "cudnn"
        assert program(*half(q, k, v), mask, window=4) == "cudnn"
        assert program(*half(q, k, v), jnp.tril(jnp.ones((6, 6), bool))) == "cudnn"
        assert program(q, k, v, mask) == "xla"  # float32
        assert program(*half(q, k, v), mask, jnp.zeros((6,), jnp.float32)) == "xla"  # a bias
        odd = half(*qkv(np.random.default_rng(0), t=5, s=5, h=2, d=8))
        assert program(*odd, key_padding_mask([5, 3], 5)) == "xla"
        assert program(*odd) == "cudnn"
        assert program(*half(q, k, v), mask, dropout=True) == "reference"
    records = jaxformer_records(caplog)
    assert records[0] == "attention='auto' runs 'cudnn'"
    assert "attention='auto' runs 'xla' (cudnn needs bf16/fp16" in records[1]
    assert records[-1] == "attention='auto' with dropout runs 'reference' (no fused dropout)"
    assert len(records) == 3, records  # each said once


def test_cudnn_and_splash_elsewhere_run_xla_logged_once(inputs, caplog, fresh_log):
    q, k, v, mask = inputs
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        for _ in range(2):
            assert dispatch.attention_program("cudnn", *half(q, k, v), mask) == (
                "cudnn" if jax.default_backend() == "gpu" else "xla"
            )
            assert dispatch.attention_program("splash", q, k, v, mask) == "xla"
    if ON_CPU:
        assert jaxformer_records(caplog) == [
            "attention='cudnn' runs 'xla' (cudnn needs a GPU)",
            "attention='splash' runs 'xla' (splash needs a TPU)",
        ]


def test_auto_on_tpu_is_splash_where_it_applies_else_xla(backend, rng):
    backend("tpu")
    q, k, v = qkv(rng, b=2, t=128, s=128, h=2, d=128)
    mask = key_padding_mask([128, 50], 128)
    program = functools.partial(dispatch.attention_program, "auto")
    assert program(q, k, v, mask) == "splash"
    assert program(*half(q, k, v), mask, window=32) == "splash"
    assert program(q, k, v, mask, dropout=True) == "reference"
    assert program(q, k, v, jnp.tril(jnp.ones((128, 128), bool))) == "xla"  # a mask per query
    short = qkv(rng, b=2, t=6, s=6, h=2, d=128)
    assert program(*short) == "xla"


def test_fused_programs_with_dropout_run_the_reference(inputs, backend):
    q, k, v, mask = inputs
    for name, where in (("cudnn", "gpu"), ("splash", "tpu"), ("xla", "cpu")):
        backend(where)
        assert dispatch.attention_program(name, *half(q, k, v), mask, dropout=True) == "reference"


SPLASH_STAYS_OUT = textwrap.dedent(
    """
    import sys
    import jax.numpy as jnp
    from jaxformer import dispatch
    q = jnp.zeros((2, 128, 2, 128), jnp.bfloat16)
    mask = jnp.ones((2, 1, 1, 128), bool)
    for name in ("auto", "splash", "cudnn", "xla"):
        dispatch.attention(q, q, q, mask, implementation=name)
    assert "jaxformer.kernels.splash" not in sys.modules
    assert not any(m.startswith("jax.experimental.pallas") for m in sys.modules)
    print("done")
    """
)


@pytest.mark.skipif(jax.default_backend() == "tpu", reason="on TPU splash is imported")
def test_splash_is_not_imported_off_tpu():
    env = {**os.environ, "JAXFORMER_CPU_KERNELS": "0"}
    out = subprocess.run(
        [sys.executable, "-c", SPLASH_STAYS_OUT], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0 and out.stdout.split() == ["done"], out.stderr[-3000:]


# ----------------------------------------------------------------------------- windows


def test_sliding_window_mask_is_its_equation():
    for t, s, window in ((7, 7, 4), (5, 9, 3), (6, 6, 1), (4, 4, 100), (6, 6, 0)):
        want = np.zeros((t, s), bool)
        for i in range(t):
            for j in range(s):
                want[i, j] = abs(i - j) <= window // 2
        np.testing.assert_array_equal(np.asarray(layers.sliding_window_mask(t, s, window)), want)


def window_choices():
    for name in ("reference", "xla", "scan", "cpu"):
        yield pytest.param(name, marks=[needs_cpu_kernel] if name == "cpu" else [])


@pytest.mark.parametrize("implementation", window_choices())
@pytest.mark.parametrize("window", [2, 4])
def test_a_window_gives_the_reference_with_its_mask(implementation, window, inputs):
    """Key 5 of example 1 is padding; with window 2, query 5 of example 1 sees keys 4 and 5:
    one padded, so only key 4."""
    q, k, v, mask = inputs
    full = mask & layers.sliding_window_mask(6, 6, window)
    want = np_attention(q, k, v, full)
    got = dispatch.attention(q, k, v, mask, window=window, implementation=implementation)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    got = dispatch.attention(q, k, v, window=window, implementation=implementation)
    np.testing.assert_allclose(
        np.asarray(got), np_attention(q, k, v, layers.sliding_window_mask(6, 6, window)), atol=1e-5
    )


def test_a_window_with_dropout_is_the_reference_with_its_mask(inputs):
    q, k, v, mask = inputs
    rng = jax.random.key(1)
    got = dispatch.attention(
        q, k, v, mask, dropout_rate=0.2, dropout_rng=rng, window=2, implementation="xla"
    )
    drop = functools.partial(dropout_lib.dropout, rate=0.2, rng=rng)
    want = layers.attention(q, k, v, mask & layers.sliding_window_mask(6, 6, 2), dropout=drop)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@needs_cpu_kernel
def test_cpu_with_a_window_runs_scan_logged_once(inputs, caplog, fresh_log):
    q, k, v, mask = inputs
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        for _ in range(2):
            assert dispatch.attention_program("cpu", q, k, v, mask, window=2) == "scan"
    records = jaxformer_records(caplog)
    assert len(records) == 1 and "no window" in records[0], records


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs a GPU")
def test_cudnn_with_a_window_matches_the_reference(rng):
    q, k, v = half(*qkv(rng, b=2, t=128, s=128, h=2, d=64))
    mask = key_padding_mask([128, 60], 128)
    assert dispatch.attention_program("cudnn", q, k, v, mask, window=32) == "cudnn"
    got = dispatch.attention(q, k, v, mask, window=32, implementation="cudnn")
    want = layers.attention(q, k, v, mask & layers.sliding_window_mask(128, 128, 32))
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=2e-2)
