"""The programs an accelerator runs, lowered on this CPU-only machine: inference (`apply`) and
the loop's compiled train step (`Parallelism.compile_train` of `steps.train_step`: AdamW, the
task's loss, gradients) of one small random model per family, exported with `jax.export` for
CUDA and for TPU under `dispatch.target_platform`, with XLA's attention and with the program
"auto" picks there: cuDNN's on CUDA (bfloat16; float32 runs XLA's), Pallas's splash on TPU
(DeBERTa's and MPNet's relative-position biases keep both on XLA's). The exported module must
hold the expected kernel's custom calls and no other (no CPU kernel, no MKL GEMM).

cuDNN: jax reads the installed cuDNN's version while tracing, and a CPU jaxlib has none
("RuntimeError: cuDNN is not detected."): `CUDNN_VERSION` stands in for it, so jax's argument
checks and its lowering to the `__cudnn$fmha*` custom calls run; those targets have no
compatibility guarantee in jax.export, so the export allows them by name. Splash lowers through
Mosaic to `tpu_custom_call` with no TPU, on one device: over a mesh of several (parallelism
"jit") Mosaic refuses to partition it, which the last test pins.
"""

import functools
import re
import types

import jax
import jax.numpy as jnp
import pytest
from jax import export

from jaxformer import dispatch, families
from jaxformer.models.config import BertConfig
from jaxformer.tasks import classification
from jaxformer.training import config as training_config
from jaxformer.training import parallel, steps

BATCH, LENGTH, LAYERS = 4, 128, 2  # splash takes lengths in whole blocks of 128
WIDTH, FFN = 128, 64  # one head of 128: a TPU lane width (splash), within cuDNN's limit
SHAPES = dict(vocab_size=64, max_position_embeddings=LENGTH + 2)  # RoBERTa's start at 2
BERT_SHAPES = dict(
    hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=1, intermediate_size=FFN
)
# model_type: its config.json fields, in the family's own spelling.
FAMILIES = {
    "bert": BERT_SHAPES,
    "roberta": BERT_SHAPES | dict(pad_token_id=1, type_vocab_size=1),
    "xlm-roberta": BERT_SHAPES | dict(pad_token_id=1, type_vocab_size=1),
    "camembert": BERT_SHAPES | dict(pad_token_id=1, type_vocab_size=1),
    "distilbert": dict(dim=WIDTH, n_layers=LAYERS, n_heads=1, hidden_dim=FFN),
    "electra": BERT_SHAPES | dict(embedding_size=32),
    "albert": BERT_SHAPES | dict(embedding_size=32, num_hidden_groups=1, inner_group_num=2),
    # layer 0 global, layer 1 a window of 64 < LENGTH (splash's LocalMask, cuDNN's mask)
    "modernbert": BERT_SHAPES | dict(global_attn_every_n_layers=2, local_attention=64),
    "deberta": BERT_SHAPES
    | dict(relative_attention=True, max_relative_positions=32, pos_att_type="c2p|p2c"),
    "deberta-v2": BERT_SHAPES
    | dict(
        relative_attention=True,
        position_buckets=16,
        max_relative_positions=LENGTH,
        pos_att_type="p2c|c2p",
        share_att_key=True,
        position_biased_input=False,
    ),
    "mpnet": BERT_SHAPES | dict(pad_token_id=1),
}
# Their relative-position bias keeps attention on XLA's program.
BIASED = ("deberta", "deberta-v2", "mpnet")
# (platform, attention, dtype, the kernel expected where attention takes no bias)
CASES = [
    ("cuda", "xla", "bfloat16", None),
    ("cuda", "auto", "bfloat16", "cudnn"),
    ("cuda", "auto", "float32", None),  # cuDNN takes half precision: XLA's
    ("tpu", "xla", "float32", None),
    ("tpu", "auto", "bfloat16", "splash"),
    ("tpu", "auto", "float32", "splash"),
]
CUDNN_CALLS = ("Softmax", "SoftmaxBackward", "ScaleBiasSoftmax", "ScaleBiasSoftmaxBackward")
ALLOW_CUDNN = [export.DisabledSafetyCheck.custom_call(f"__cudnn$fmha{k}") for k in CUDNN_CALLS]
CUDNN_VERSION = 91000  # cuDNN 9.10, what jax's checks would read on a GPU machine


def model(family: str, attention: str, dtype: str):
    c = BertConfig.from_hf({"model_type": family, **SHAPES, **FAMILIES[family]})
    # No attention dropout, so the fused kernels run in training too (they take none).
    c = c.replace(attention=attention, dtype=dtype, attention_probs_dropout_prob=0.0)
    return families.model_class(family, "classification")(c)


def batch() -> dict:
    tokens = jax.ShapeDtypeStruct((BATCH, LENGTH), jnp.int32)
    return {
        "input_ids": tokens,
        "attention_mask": tokens,
        "token_type_ids": tokens,
        "labels": jax.ShapeDtypeStruct((BATCH,), jnp.int32),
        "weights": jax.ShapeDtypeStruct((BATCH,), jnp.float32),
    }


def abstract_state(model):
    """The AdamW state the loop starts from, as shapes."""
    optimizer = training_config.get_config().optimizer

    def state():
        params = model.init(jax.random.key(0), jnp.zeros((1, LENGTH), jnp.int32))["params"]
        return steps.create_state(model, params, optimizer, num_steps=10)

    return jax.eval_shape(state)


def inference(model):
    """The deterministic forward pass (prediction's)."""
    params = abstract_state(model).params
    b = batch()

    def apply(params, ids, mask, token_types):
        return model.apply({"params": params}, ids, mask, token_types)

    return jax.jit(apply), (params, b["input_ids"], b["attention_mask"], b["token_type_ids"])


def training(model, kind: str = "single"):
    """The train step as the loop compiles it, with a state placed as `kind` places it."""
    state = abstract_state(model)
    par = parallel.Parallelism(kind=kind)
    if kind != "single":
        par._state_shardings = par.state_shardings(state)  # put_state's, without arrays
    step = functools.partial(steps.train_step, loss_terms=classification.single_label_terms)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
    return par.compile_train(step).jitted, (state, batch(), rng)


def custom_calls(text: str) -> list[str]:
    return re.findall(r"custom_call @([\w$.\-]+)", text)


@pytest.fixture
def cudnn_version(monkeypatch):
    """A cuDNN version for jax's checks where this jaxlib has none (module docstring)."""
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_lowering

    if cudnn_lowering.cuda_versions is None:
        stand_in = types.SimpleNamespace(cudnn_get_version=lambda: CUDNN_VERSION)
        monkeypatch.setattr(cudnn_lowering, "cuda_versions", stand_in)


@pytest.mark.slow
@pytest.mark.parametrize("platform, attention, dtype, kernel", CASES)
@pytest.mark.parametrize("program", ["inference", "training"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_exports_for_the_accelerator(
    family, program, platform, attention, dtype, kernel, cudnn_version
):
    fn, args = (inference if program == "inference" else training)(model(family, attention, dtype))
    with dispatch.target_platform(platform):
        exported = export.export(fn, platforms=[platform], disabled_checks=ALLOW_CUDNN)(*args)
    assert exported.platforms == (platform,) and exported.mlir_module_serialized
    calls = custom_calls(exported.mlir_module())
    kernel = None if family in BIASED else kernel  # a bias: XLA's attention
    if kernel is None:
        assert calls == [], calls
    elif kernel == "splash":
        masks = 2 if family == "modernbert" else 1  # its global and local layers
        assert set(calls) == {"tpu_custom_call"}
        # a kernel per mask (layers of one mask share it); in training the forward that keeps
        # the residuals, a backward for dq and one for dk, dv
        assert len(calls) == (3 if program == "training" else 1) * masks, calls
    else:
        names = {"__cudnn$fmha" + k for k in CUDNN_CALLS}
        assert set(calls) <= names and calls, calls
        backward = {c for c in calls if c.endswith("Backward")}
        assert bool(backward) == (program == "training"), calls


def test_target_platform_chooses_that_platforms_programs():
    q = jnp.zeros((2, LENGTH, 1, 128), jnp.float32)
    mask = jnp.ones((2, 1, 1, LENGTH), bool)
    assert dispatch.backend() == jax.default_backend()
    with dispatch.target_platform("tpu"):
        assert dispatch.backend() == "tpu"
        assert dispatch.attention_program("auto", q, q, q, mask) == "splash"
        assert dispatch.matmul_program("auto", q) == "xla"
        assert dispatch.matmul_program("mkl", q) == "xla"
    with dispatch.target_platform("cuda"):
        assert dispatch.backend() == "gpu"
        half = q.astype(jnp.bfloat16)
        assert dispatch.attention_program("auto", half, half, half, mask) == "cudnn"
        assert dispatch.attention_program("auto", q, q, q, mask) == "xla"
        grad = jax.make_jaxpr(jax.grad(lambda x: dispatch.residual(x).sum()))(q)
        assert "cond" not in str(grad)  # the CPU's gradient barrier is XLA:CPU's only
    assert dispatch.backend() == jax.default_backend()
    with pytest.raises(ValueError, match="platform='metal' is not supported"):
        dispatch.target_platform("metal")


def test_a_function_traced_here_is_traced_again_for_the_target():
    q = jax.ShapeDtypeStruct((2, LENGTH, 1, 128), jnp.float32)
    fn = jax.jit(lambda q: dispatch.attention(q, q, q, implementation="auto"))
    here = custom_calls(fn.trace(q).lower().as_text())
    with dispatch.target_platform("tpu"):
        there = custom_calls(export.export(fn, platforms=["tpu"])(q).mlir_module())
    assert "tpu_custom_call" not in here and there == ["tpu_custom_call"]


def test_cudnn_needs_a_cudnn_version_while_tracing():
    """What the stand-in replaces: without a CUDA jaxlib plugin jax cannot trace cuDNN."""
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_lowering

    if cudnn_lowering.cuda_versions is not None:
        pytest.skip("this jaxlib has the CUDA plugin: cuDNN traces with its own version")
    fn, args = inference(model("bert", "auto", "bfloat16"))
    with dispatch.target_platform("cuda"), pytest.raises(RuntimeError, match="cuDNN is not"):
        export.export(fn, platforms=["cuda"], disabled_checks=ALLOW_CUDNN)(*args)


@pytest.mark.skipif(jax.device_count() < 2, reason="a mesh of several devices")
@pytest.mark.xfail(
    raises=NotImplementedError,
    strict=True,
    reason="Mosaic kernels cannot be automatically partitioned. Please wrap the call in a "
    "shard_map. (splash under parallelism='jit' over several TPU devices)",
)
def test_splash_under_a_mesh_of_several_devices():
    fn, args = training(model("bert", "auto", "float32"), kind="jit")
    with dispatch.target_platform("tpu"):
        fn.trace(*args).lower(lowering_platforms=("tpu",))
