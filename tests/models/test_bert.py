"""jaxformer.models (bert.py, heads.py, config.py): shapes, padding invariance under every
attention program, options (pre-LN, sinusoidal, remat, dtypes), config validation."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import BertConfig, BertForSequenceClassification, BertModel, dispatch
from jaxformer.kernels import cpu
from jaxformer.models import init_params, param_shapes

TINY = BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=32,
    max_position_embeddings=32,
    num_labels=3,
)


def batch(b=2, t=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(1, 50, size=(b, t)), jnp.int32)
    mask = jnp.asarray(np.arange(t)[None] < np.array([t, t - 2])[:, None], jnp.int32)
    return ids, mask


def test_shapes_and_hidden_states_are_sown():
    model = BertModel(TINY)
    params = init_params(model, jax.random.key(0))
    ids, mask = batch()
    out, state = model.apply({"params": params}, ids, mask, mutable=["intermediates"])
    assert out.sequence_output.shape == (2, 6, 16)
    assert out.pooled_output.shape == (2, 16)
    hidden = state["intermediates"]["hidden_states"]
    assert len(hidden) == TINY.num_hidden_layers + 1  # embeddings, then each layer
    np.testing.assert_array_equal(np.asarray(hidden[-1]), np.asarray(out.sequence_output))


CPU_KERNEL = pytest.param(
    "cpu",
    marks=pytest.mark.skipif(
        jax.default_backend() != "cpu"
        or cpu._compiler() is None
        or os.environ.get("JAXFORMER_CPU_KERNELS") == "0",
        reason="the CPU attention kernel needs XLA:CPU, a C++ compiler, JAXFORMER_CPU_KERNELS!=0",
    ),
)


@pytest.mark.parametrize("impl", ["reference", "xla", "scan", CPU_KERNEL])
@pytest.mark.parametrize("pre_ln", [False, True])
def test_padding_invariance(impl, pre_ln):
    """Appending padding tokens changes no output at real positions."""
    if impl == "cpu":  # the kernel, not its "scan" fallback, must run
        q = jnp.zeros((2, 12, TINY.num_attention_heads, TINY.head_dim), jnp.float32)
        assert dispatch.attention_program("cpu", q, q, q, jnp.ones((2, 1, 1, 12), bool)) == "cpu"
    config = TINY.replace(attention=impl, pre_layer_norm=pre_ln)
    model = BertForSequenceClassification(config)
    params = init_params(model, jax.random.key(1))
    ids, _ = batch(t=5)
    short = model.apply({"params": params}, ids, jnp.ones_like(ids))
    padded_ids = jnp.concatenate([ids, jnp.zeros((2, 7), jnp.int32)], axis=1)
    padded_mask = jnp.concatenate([jnp.ones_like(ids), jnp.zeros((2, 7), jnp.int32)], axis=1)
    long = model.apply({"params": params}, padded_ids, padded_mask)
    np.testing.assert_allclose(np.asarray(short), np.asarray(long), atol=1e-5)


def test_param_tree_matches_docstring_and_eval_shape():
    shapes = param_shapes(BertForSequenceClassification(TINY))
    attn = shapes["bert"]["layer_1"]["attention"]
    assert attn["w_q"].shape == (16, 4, 4) and attn["w_o"].shape == (4, 4, 16)
    assert shapes["bert"]["layer_0"]["mlp"]["w1"].shape == (16, 32)
    assert shapes["classifier"]["kernel"].shape == (16, 3)
    sinusoidal = param_shapes(BertModel(TINY.replace(position_embedding_type="sinusoidal")))
    assert "position" not in sinusoidal["embeddings"]


def test_scale_embedding_multiplies_the_stored_token_table_by_sqrt_width():
    scaled = BertModel(TINY.replace(position_embedding_type="sinusoidal", scale_embedding=True))
    params = init_params(scaled, jax.random.key(0))
    table = np.asarray(params["embeddings"]["token"]["embedding"])
    assert table.std() == pytest.approx(TINY.hidden_size**-0.5, rel=0.15)  # N(0, 1/e)
    plain = BertModel(TINY.replace(position_embedding_type="sinusoidal"))
    unscaled = jax.tree.map(lambda x: x, params)
    unscaled["embeddings"]["token"]["embedding"] = table * TINY.hidden_size**0.5
    ids, mask = batch()
    a = scaled.apply({"params": params}, ids, mask).sequence_output
    b = plain.apply({"params": unscaled}, ids, mask).sequence_output
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="scale_embedding=True has no transformers equivalent"):
        TINY.replace(scale_embedding=True).to_hf("BertModel")
    with pytest.raises(ValueError, match="ModernBERT's embeddings have no scale"):
        BertConfig(
            model_type="modernbert",
            pre_layer_norm=True,
            position_embedding_type="rotary",
            type_vocab_size=0,
            scale_embedding=True,
        )


def test_dropout_only_when_training():
    model = BertForSequenceClassification(TINY)
    params = init_params(model, jax.random.key(0))
    ids, mask = batch()
    a = model.apply({"params": params}, ids, mask)
    b = model.apply({"params": params}, ids, mask)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = model.apply({"params": params}, ids, mask, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_remat_gives_same_gradients():
    ids, mask = batch()
    plain = BertForSequenceClassification(TINY)
    params = init_params(plain, jax.random.key(0))

    def grads(model):
        def loss(p):
            return model.apply({"params": p}, ids, mask).sum()

        return jax.grad(loss)(params)

    g1, g2 = grads(plain), grads(BertForSequenceClassification(TINY.replace(remat=True)))
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = BertForSequenceClassification(TINY.replace(dtype="bfloat16"))
    params = init_params(model, jax.random.key(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    ids, mask = batch()
    logits = model.apply({"params": params}, ids, mask)
    ref = BertForSequenceClassification(TINY).apply({"params": params}, ids, mask)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref), atol=5e-2)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig(hidden_act="mish")
    with pytest.raises(ValueError, match="lacks required field"):
        BertConfig.from_hf({"vocab_size": 10})
    with pytest.raises(ValueError, match="not a BERT"):
        BertConfig.from_hf({"model_type": "gpt2"})
    with pytest.raises(ValueError, match="attention='einsum' is not supported; choose one of"):
        BertConfig(attention="einsum")
    with pytest.raises(ValueError, match="matmul='onednn' is not supported; choose one of"):
        BertConfig(matmul="onednn")
    with pytest.raises(ValueError, match="no transformers equivalent"):
        TINY.replace(pre_layer_norm=True).to_hf("BertModel")


def test_hf_dtype_field_is_not_the_compute_dtype():
    """transformers 5 writes "dtype": "float32" (or null) into config.json: storage, not compute."""
    hf = dict(
        vocab_size=10,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        dtype=None,
        torch_dtype="float16",
        attention="x",
    )
    config = BertConfig.from_hf(hf, dtype="bfloat16")
    assert config.dtype == "bfloat16" and config.attention == "auto"
    assert BertConfig.from_hf(hf).dtype == "float32"
    assert "attention" not in config.to_hf("BertModel")


@pytest.mark.parametrize(
    "attention, matmul, targets",
    [("reference", "reference", set()), ("cpu", "mkl", {"attention", "gemm"})],
)
def test_the_config_choices_reach_the_layers(attention, matmul, targets):
    """BertConfig.attention and .matmul pick the programs that run inside the model."""
    if targets:
        if jax.default_backend() != "cpu" or cpu._compiler() is None:
            pytest.skip("the CPU kernels need XLA:CPU and a C++ compiler")
        if cpu.mkl_dir() is None:
            pytest.skip("the mkl wheel is not installed (pip install 'jaxformer[mkl]')")
        if os.environ.get("JAXFORMER_CPU_KERNELS") == "0":
            pytest.skip("JAXFORMER_CPU_KERNELS=0")
        assert cpu.attention_available() and cpu.mkl_available()
    model = BertForSequenceClassification(TINY.replace(attention=attention, matmul=matmul))
    params = init_params(model, jax.random.key(0))
    ids, mask = batch()
    hlo = jax.jit(lambda p: model.apply({"params": p}, ids, mask)).lower(params).as_text()
    found = {
        name
        for name, target in (("attention", cpu.ATTENTION_TARGET), ("gemm", cpu.GEMM_TARGET))
        if target in hlo
    }
    assert found == targets
    reference = BertForSequenceClassification(
        TINY.replace(attention="reference", matmul="reference")
    )
    np.testing.assert_allclose(
        np.asarray(model.apply({"params": params}, ids, mask)),
        np.asarray(reference.apply({"params": params}, ids, mask)),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "what, make, message",
    [
        ("too long", lambda ids: np.ones((1, 33), np.int32), "33 tokens.*=32 positions"),
        ("id past vocab", lambda ids: ids.at[0, 1].set(50), r"input_ids holds 1\.\.50.*=50"),
        ("negative id", lambda ids: ids.at[1, 0].set(-1), r"input_ids holds -1\.\."),
    ],
)
def test_inputs_outside_the_tables_are_an_error_not_nan(what, make, message):
    """Outside jit, ids past a table or a sequence past the positions raise, instead of the NaN
    embeddings that `jnp.take` would fill in."""
    model = BertForSequenceClassification(TINY)
    params = init_params(model, jax.random.key(0))
    ids, _ = batch()
    with pytest.raises(ValueError, match=message):
        model.apply({"params": params}, make(ids))
    types = jnp.full_like(ids, 2)  # type_vocab_size is 2
    with pytest.raises(ValueError, match="token_type_ids holds 2..2, outside.*type_vocab_size=2"):
        model.apply({"params": params}, ids, None, types)
    logits = jax.jit(model.apply)({"params": params}, ids)  # traced: not checked, still finite
    assert np.isfinite(np.asarray(logits)).all()
