"""Per-component parity with transformers' PyTorch BERT (transformers/models/bert/modeling_bert.py).

BertEmbeddings, BertAttention, BertIntermediate + BertOutput and BertLayer, each randomly
initialised at odd shapes, against our Linen modules with the weights copied through the
conversion table (`jaxformer.hf.convert.conversion_table` and its transforms). Expected values
come from torch only; `pytest -s` prints each max abs difference.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxformer import dispatch, layers
from jaxformer.hf import convert
from jaxformer.hf.config import HF_ACTIVATIONS
from jaxformer.kernels import cpu
from jaxformer.models import bert
from jaxformer.models.config import BertConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
masking_utils = pytest.importorskip("transformers.masking_utils")
modeling_bert = pytest.importorskip("transformers.models.bert.modeling_bert")

TOL = 1e-5
GRAD_TOL = 1e-4
# Odd, non-default shapes: head_dim 12, no width shared by two axes, 3 token types.
SHAPES = dict(
    vocab_size=97,
    hidden_size=36,
    num_hidden_layers=1,
    num_attention_heads=3,
    intermediate_size=50,
    type_vocab_size=3,
    max_position_embeddings=40,
    layer_norm_eps=1e-12,
)
LENGTHS = (11, 7, 3)  # real tokens per sequence; the batch is padded to the longest
LAYER_PREFIX = ("encoder.layer.0.", "layer_0/")  # (HF, ours) for the one layer of SHAPES
IMPLS = [
    pytest.param(attention, matmul, id=f"{attention}-{matmul}")
    for attention in ("reference", "xla", "scan", "cpu")
    for matmul in ("xla", "mkl")
]


@pytest.fixture(autouse=True)
def _torch_seed():
    torch.manual_seed(0)


def hf_config(hidden_act: str = "gelu"):
    # Eager attention: the plain softmax(q k^T / sqrt(d) + mask) v, the reference equation.
    return transformers.BertConfig(**SHAPES, hidden_act=hidden_act, attn_implementation="eager")


def our_config(hf, attention: str = "reference", matmul: str = "xla") -> BertConfig:
    config = BertConfig.from_hf(hf.to_dict(), attention=attention, matmul=matmul)
    assert (config.hidden_size, config.head_dim, config.layer_norm_eps) == (36, 12, 1e-12)
    return config


def skip_unavailable(attention: str, matmul: str) -> None:
    """Skips, with the reason, where a kernel cannot exist; where it can, it must have built, so
    no test quietly compares a fallback instead of the kernel."""
    kernels_off = os.environ.get("JAXFORMER_CPU_KERNELS") == "0"
    if attention == "cpu" or matmul == "mkl":
        if jax.default_backend() != "cpu" or cpu._compiler() is None or kernels_off:
            pytest.skip("the CPU kernels need XLA:CPU, a C++ compiler, JAXFORMER_CPU_KERNELS!=0")
    if attention == "cpu":
        assert cpu.attention_available(), "a compiler exists: the attention kernel must build"
    if matmul == "mkl":
        if cpu.mkl_dir() is None:
            pytest.skip("the mkl wheel is not installed (pip install 'jaxformer[mkl]')")
        assert cpu.mkl_available(), "MKL is installed: the GEMM kernel must build"


def randomized(module):
    """`module` in eval mode with every parameter perturbed: non-zero biases, layer norm scales
    away from 1, so a parameter copied to the wrong place cannot go unnoticed."""
    module.eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def converted(config: BertConfig, hf_parts: dict, ours: nn.Module, our_prefix: str, *args):
    """Our params for `ours`, each HF parameter converted by the table entry that names it.

    hf_parts: {prefix of the part in a BertModel state dict: torch module}. Every parameter of the
    parts must have an entry, every entry under those prefixes a parameter, and the converted
    tensors must be exactly our module's parameters, shape for shape.
    """
    table = convert.conversion_table(bert.BertModel(config, add_pooling_layer=False))
    tensors = {
        prefix + name: p.detach().numpy()
        for prefix, module in hf_parts.items()
        for name, p in module.named_parameters()
    }
    assert set(tensors) == {n for n in table if n.startswith(tuple(hf_parts))}
    flat = {}
    for name, w in tensors.items():
        path, transform = table[name]
        assert path.startswith(our_prefix), (name, path)
        flat[path.removeprefix(our_prefix)] = jnp.asarray(transform.to_jax(w, config))
    shapes = jax.eval_shape(lambda: ours.init(jax.random.key(0), *args)["params"])
    shapes = traverse_util.flatten_dict(shapes, sep="/")
    assert set(flat) == set(shapes)
    for path, want in shapes.items():
        assert flat[path].shape == want.shape, path
    return {"params": traverse_util.unflatten_dict(flat, sep="/")}


def padded_batch(width: int | None = None, scale: float = 1.0):
    """(x (b, t, m) float32 or None, attention_mask (b, t) int64: 1 = real token)."""
    t = max(LENGTHS)
    attention_mask = (np.arange(t)[None, :] < np.array(LENGTHS)[:, None]).astype(np.int64)
    assert 0 < attention_mask.sum() < attention_mask.size  # some tokens are padding
    if width is None:
        return None, attention_mask
    x = scale * torch.randn(len(LENGTHS), t, width)
    return x, attention_mask


def hf_mask(hf, x, attention_mask):
    """The mask BertModel gives its layers: transformers 5 builds it with
    `create_bidirectional_mask`, for eager attention an additive float mask (0 attend, the dtype's
    min for a padded key) that broadcasts against the (b, h, t, s) scores."""
    mask = masking_utils.create_bidirectional_mask(
        config=hf, inputs_embeds=x, attention_mask=torch.from_numpy(attention_mask)
    )
    b, t = attention_mask.shape
    assert mask.dtype == torch.float32 and mask.shape[0] == b and mask.shape[-1] == t
    keys = torch.from_numpy(attention_mask).bool()[:, None, None, :].expand_as(mask)
    assert (mask[keys] == 0).all() and (mask[~keys] == torch.finfo(torch.float32).min).all()
    return mask


def assert_close(what: str, ours, expected, attention_mask, tol: float = TOL) -> float:
    """max |ours - expected| over real tokens <= tol, on an expected value that is not trivial."""
    ours, expected = np.asarray(ours), np.asarray(expected)
    assert ours.shape == expected.shape
    real = attention_mask.astype(bool)
    a, e = ours[real], expected[real]
    assert np.isfinite(e).all() and e.std() > 0.1, "the reference is degenerate"
    diff = float(np.abs(a - e).max())
    print(f"\n{what}: max |ours - torch| = {diff:.2e} over {real.sum()} real tokens")
    assert diff <= tol
    return diff


def assert_mask_matters(masked, unmasked, attention_mask):
    """The padding changes torch's output at the real tokens of padded sequences."""
    padded = attention_mask.astype(bool) & (attention_mask.sum(1, keepdims=True) < max(LENGTHS))
    assert np.abs(np.asarray(masked)[padded] - np.asarray(unmasked)[padded]).max() > 1e-2


class AttentionBlock(nn.Module):
    """attention_norm(x + SelfAttention(x, mask)): BertAttention's sublayer, from our modules."""

    config: BertConfig

    @nn.compact
    def __call__(self, x, mask):
        y = bert.SelfAttention(self.config, name="attention")(x, mask, train=False)
        return bert.LayerNorm(self.config, name="attention_norm")(x + y)


class FeedForwardBlock(nn.Module):
    """mlp_norm(x + FeedForward(x)): BertIntermediate then BertOutput, from our modules."""

    config: BertConfig

    @nn.compact
    def __call__(self, x):
        y = bert.FeedForward(self.config, name="mlp")(x)
        return bert.LayerNorm(self.config, name="mlp_norm")(x + y)


def test_embeddings():
    hf = hf_config()
    config = our_config(hf)
    torch_module = randomized(modeling_bert.BertEmbeddings(hf))
    with torch.no_grad():  # small entries: the sum's variance (~3e-6) is where eps matters
        for table in ("word", "position", "token_type"):
            getattr(torch_module, f"{table}_embeddings").weight.mul_(1e-3)
    _, attention_mask = padded_batch()
    b, t = attention_mask.shape
    rng = np.random.default_rng(0)
    input_ids = np.where(attention_mask, rng.integers(1, SHAPES["vocab_size"], (b, t)), 0)
    token_type_ids = rng.integers(0, SHAPES["type_vocab_size"], (b, t))
    position_ids = np.array([0, 5, 29])[:, None] + np.arange(t)  # (b, t), up to 39
    assert set(np.unique(token_type_ids)) == {0, 1, 2}
    assert position_ids.max() == SHAPES["max_position_embeddings"] - 1

    ids = [torch.from_numpy(a) for a in (input_ids, token_type_ids, position_ids)]
    with torch.no_grad():
        expected = torch_module(ids[0], token_type_ids=ids[1], position_ids=ids[2]).numpy()
        torch_module.LayerNorm.eps = 1e-6  # Flax's default: must give a visibly different answer
        wrong_eps = torch_module(ids[0], token_type_ids=ids[1], position_ids=ids[2]).numpy()
    real = attention_mask.astype(bool)
    assert np.abs(wrong_eps - expected)[real].max() > 1e-2

    ours = bert.Embeddings(config)
    args = (jnp.asarray(input_ids), jnp.asarray(token_type_ids), jnp.asarray(position_ids), False)
    variables = converted(config, {"embeddings.": torch_module}, ours, "embeddings/", *args)
    out = jax.jit(ours.apply, static_argnums=4)(variables, *args)
    assert_close("embeddings", out, expected, attention_mask)


@pytest.mark.parametrize("attention, matmul", IMPLS)
def test_attention_block(attention, matmul):
    skip_unavailable(attention, matmul)
    hf = hf_config()
    config = our_config(hf, attention, matmul)
    torch_module = randomized(modeling_bert.BertAttention(hf))
    x, attention_mask = padded_batch(SHAPES["hidden_size"])
    with torch.no_grad():
        expected = torch_module(x, hf_mask(hf, x, attention_mask))[0].numpy()
        unmasked = torch_module(x, None)[0].numpy()
    assert_mask_matters(expected, unmasked, attention_mask)

    ours = AttentionBlock(config)
    mask = layers.padding_mask(jnp.asarray(attention_mask))  # (b, 1, 1, s)
    q = jnp.zeros((*attention_mask.shape, config.num_attention_heads, config.head_dim))
    assert dispatch.attention_program(attention, q, q, q, mask) == attention  # no fallback
    assert dispatch.matmul_program(matmul, q) == matmul
    prefix = LAYER_PREFIX[0] + "attention."
    variables = converted(config, {prefix: torch_module}, ours, LAYER_PREFIX[1], x.numpy(), mask)
    out = jax.jit(ours.apply)(variables, jnp.asarray(x.numpy()), mask)
    assert_close(f"attention block [{attention}, {matmul}]", out, expected, attention_mask)


# Each activation with the one it is most easily confused with.
ACTIVATION_PAIRS = {"gelu": "gelu_new", "gelu_new": "gelu", "relu": "gelu"}


@pytest.mark.parametrize("matmul", ["xla", "mkl"])
@pytest.mark.parametrize("hidden_act", list(ACTIVATION_PAIRS))
def test_feed_forward_block(hidden_act, matmul):
    skip_unavailable("reference", matmul)
    hf = hf_config(hidden_act)
    intermediate = randomized(modeling_bert.BertIntermediate(hf))
    output = randomized(modeling_bert.BertOutput(hf))
    # Inputs of std 4, so the pre-activations reach where exact and tanh GELU differ.
    x, attention_mask = padded_batch(SHAPES["hidden_size"], scale=4.0)
    with torch.no_grad():
        expected = output(intermediate(x), x).numpy()

    def ours_with(activation):
        config = our_config(hf_config(activation), matmul=matmul)
        assert config.hidden_act == HF_ACTIVATIONS[activation]
        ours = FeedForwardBlock(config)
        parts = {
            f"{LAYER_PREFIX[0]}intermediate.": intermediate,
            f"{LAYER_PREFIX[0]}output.": output,
        }
        variables = converted(config, parts, ours, LAYER_PREFIX[1], x.numpy())
        return jax.jit(ours.apply)(variables, jnp.asarray(x.numpy()))

    assert_close(
        f"feed-forward block [{hidden_act}, {matmul}]",
        ours_with(hidden_act),
        expected,
        attention_mask,
    )
    confused = np.abs(np.asarray(ours_with(ACTIVATION_PAIRS[hidden_act])) - expected)
    assert confused[attention_mask.astype(bool)].max() > 10 * TOL  # the test tells them apart


def layer_pair(attention: str, matmul: str):
    """(HF config, torch BertLayer, our EncoderLayer, its variables converted from the torch one,
    x (b, t, m) torch, attention_mask (b, t))."""
    skip_unavailable(attention, matmul)
    hf = hf_config()
    config = our_config(hf, attention, matmul)
    torch_module = randomized(modeling_bert.BertLayer(hf))
    x, attention_mask = padded_batch(SHAPES["hidden_size"])
    ours = bert.EncoderLayer(config)
    mask = layers.padding_mask(jnp.asarray(attention_mask))
    q = jnp.zeros((*attention_mask.shape, config.num_attention_heads, config.head_dim))
    assert dispatch.attention_program(attention, q, q, q, mask) == attention  # no fallback
    variables = converted(
        config, {LAYER_PREFIX[0]: torch_module}, ours, LAYER_PREFIX[1], x.numpy(), mask, False
    )
    return hf, torch_module, ours, variables, x, attention_mask


@pytest.mark.parametrize("attention, matmul", IMPLS)
def test_layer(attention, matmul):
    hf, torch_module, ours, variables, x, attention_mask = layer_pair(attention, matmul)
    with torch.no_grad():
        expected = torch_module(x, hf_mask(hf, x, attention_mask)).numpy()
        unmasked = torch_module(x, None).numpy()
    assert_mask_matters(expected, unmasked, attention_mask)
    mask = layers.padding_mask(jnp.asarray(attention_mask))
    out = jax.jit(ours.apply, static_argnums=3)(variables, jnp.asarray(x.numpy()), mask, False)
    assert_close(f"layer [{attention}, {matmul}]", out, expected, attention_mask)


@pytest.mark.parametrize("attention, matmul", IMPLS)
def test_layer_gradient(attention, matmul):
    """d/dx of sum over real tokens of (layer output * fixed random weights)."""
    hf, torch_module, ours, variables, x, attention_mask = layer_pair(attention, matmul)
    weights = torch.randn(*x.shape) * torch.from_numpy(attention_mask)[..., None]
    x = x.clone().requires_grad_(True)
    (torch_module(x, hf_mask(hf, x, attention_mask)) * weights).sum().backward()
    expected = x.grad.numpy()
    pad = ~attention_mask.astype(bool)
    assert np.abs(expected[pad]).max() < 1e-7  # no gradient reaches padding through the mask

    mask = layers.padding_mask(jnp.asarray(attention_mask))
    w = jnp.asarray(weights.numpy())

    def scalar(x):
        return (ours.apply(variables, x, mask, False) * w).sum()

    grad = jax.jit(jax.grad(scalar))(jnp.asarray(x.detach().numpy()))
    assert_close(
        f"layer gradient [{attention}, {matmul}]",
        grad,
        expected,
        attention_mask,
        GRAD_TOL,
    )
    assert np.abs(np.asarray(grad)[pad]).max() < 1e-7
