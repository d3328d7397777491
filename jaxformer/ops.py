"""The Transformer encoder's equations as pure JAX functions (no Flax, no parameters held).

Mirrors "Attention Is All You Need" (Vaswani et al. 2017) and BERT (Devlin et al. 2019).

Einsum legend: b batch, t query position, s key position, h heads, d head dim,
m model width, f feed-forward width.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

Array = jax.Array


def layer_norm(x: Array, scale: Array, bias: Array, eps: float) -> Array:
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis, statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale + bias).astype(x.dtype)


def gelu_exact(x: Array) -> Array:
    """x * Phi(x) = x/2 (1 + erf(x / sqrt 2)), as PyTorch computes it (XLA's erf is a single
    rational function: cheaper than jax.nn.gelu's erfc, forward and backward)."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def gelu_tanh(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=True)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": gelu_exact,  # BERT's GELU: x * Phi(x) with the erf
    "gelu_new": gelu_tanh,  # GPT-2's tanh approximation
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": jax.nn.relu,  # the original Transformer's
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


MATMUL_IMPLEMENTATIONS = ("auto", "xla", "mkl")


def default_matmul_implementation() -> str:
    """ "mkl" on CPU when MKL is installed (`pip install 'jaxformer[mkl]'`) and the kernels build
    (see `jaxformer.cpu_kernels`; faster there, see docs/benchmarks.md), else "xla"."""
    if jax.default_backend() != "cpu":
        return "xla"
    from jaxformer.kernels import cpu as cpu_kernels

    return "mkl" if cpu_kernels.mkl_available() else "xla"


def _matmul_implementation(implementation: str, *arrays: Array) -> str:
    """The implementation that runs: "mkl" only for float32 on CPU with MKL available."""
    if implementation not in MATMUL_IMPLEMENTATIONS:
        raise ValueError(
            f"matmul implementation must be one of {MATMUL_IMPLEMENTATIONS}, got {implementation!r}"
        )
    if implementation == "xla" or any(a.dtype != jnp.float32 for a in arrays):
        return "xla"
    return default_matmul_implementation()  # "mkl" where it can run (CPU, MKL), else "xla"


def dense(x: Array, w: Array, b: Array, contract: int = 1, implementation: str = "xla") -> Array:
    """x . w + b over x's last `contract` axes and w's first: a projection, position-wise.

    x: (..., *in), w: (*in, *out), b: (*out,) -> (..., *out); e.g. x (b, t, m), w_q (m, h, d),
    b_q (h, d) -> q (b, t, h, d); or o (b, t, h, d), w_o (h, d, m), b_o (m,) -> (b, t, m).
    implementation: "xla" (a dot_general), "mkl" (`cpu_kernels.matmul`: MKL's sgemm on the
    (tokens, in) x (in, out) matrices, bias added in the same call; float32 on CPU with MKL, else
    "xla"), "auto" (`default_matmul_implementation()`).
    """
    if _matmul_implementation(implementation, x, w, b) == "mkl":
        from jaxformer.kernels import cpu as cpu_kernels

        lead, inner, outer = x.shape[: x.ndim - contract], w.shape[:contract], w.shape[contract:]
        x2 = x.reshape(math.prod(lead), math.prod(inner))  # (tokens, in)
        w2 = w.reshape(math.prod(inner), math.prod(outer))  # (in, out)
        return cpu_kernels.matmul(x2, w2, b.reshape(-1)).reshape(*lead, *outer)
    # Contracted axes innermost first, as jnp.einsum("bthd,hdm->btm", ...) orders them.
    x_axes, w_axes = range(x.ndim - 1, x.ndim - contract - 1, -1), range(contract - 1, -1, -1)
    return jax.lax.dot_general(x, w, ((tuple(x_axes), tuple(w_axes)), ((), ()))) + b


def feed_forward(
    x: Array,
    w1: Array,
    b1: Array,
    w2: Array,
    b2: Array,
    activation: str = "gelu",
    implementation: str = "xla",
) -> Array:
    """W_2 act(W_1 x + b_1) + b_2, position-wise.

    x: (b, t, m), w1: (m, f), b1: (f,), w2: (f, m), b2: (m,) -> (b, t, m)
    implementation: the GEMMs' ("xla", "mkl" or "auto"; see `dense`).

    The gradient is written out (`_feed_forward_bwd`) instead of left to autodiff; forward-mode
    autodiff (`jax.jvp`) is therefore not defined through it (a `jax.custom_vjp`).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    implementation = _matmul_implementation(implementation, x, w1, b1, w2, b2)
    return _feed_forward(activation, implementation, x, w1, b1, w2, b2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _feed_forward(activation: str, implementation: str, x, w1, b1, w2, b2):
    act = ACTIVATIONS[activation]
    if implementation == "mkl":
        from jaxformer.kernels.cpu import gemm

        x2 = x.reshape(-1, x.shape[-1])  # (n, m), n = b t
        return gemm(act(gemm(x2, w1, b1)), w2, b2).reshape(x.shape)
    return act(x @ w1 + b1) @ w2 + b2


def _feed_forward_fwd(activation, implementation, x, w1, b1, w2, b2):
    """Also keeps act'(z), z = W_1 x + b_1, computed beside act(z) in the same pass over z.

    Autodiff recomputes act'(z) in the backward pass, in a fusion that XLA:CPU writes transposed,
    (f, tokens), for the W_1 gradient: a layout oneDNN multiplies at about half its rate.
    """
    act = ACTIVATIONS[activation]
    if implementation == "mkl":
        from jaxformer.kernels.cpu import gemm

        z = gemm(x.reshape(-1, x.shape[-1]), w1, b1)  # (n, f), n = b t
        hidden, slope = jax.jvp(act, (z,), (jnp.ones_like(z),))  # act, act'
        out = gemm(hidden, w2, b2).reshape(x.shape)
    else:
        z = x @ w1 + b1  # (b, t, f)
        hidden, slope = jax.jvp(act, (z,), (jnp.ones_like(z),))  # act, act'
        out = hidden @ w2 + b2
    return out, (x, hidden, slope, w1, b1, w2, b2)


def _feed_forward_bwd(activation, implementation, residuals, g):
    """The chain rule on (tokens, width) matrices. dz = (g W_2^T) * act'(z) is one GEMM with a
    multiply epilogue (a oneDNN post-op), and every GEMM below takes row-major operands."""
    x, hidden, slope, w1, b1, w2, b2 = residuals
    m, f = w1.shape
    x2, g = x.reshape(-1, m), g.reshape(-1, g.shape[-1])  # (n, m), n = b t
    hidden, slope = hidden.reshape(-1, f), slope.reshape(-1, f)  # (n, f)
    if implementation == "mkl":
        from jaxformer.kernels.cpu import gemm

        dz = gemm(g, w2, trans_b=True) * slope  # (n, f)
        grads = (
            gemm(dz, w1, trans_b=True).reshape(x.shape),  # dx
            gemm(x2, dz, trans_a=True),  # dw1
            dz.sum(0),  # db1
            gemm(hidden, g, trans_a=True),  # dw2
            g.sum(0),  # db2
        )
    else:
        dz = (g @ w2.T) * slope  # (n, f)
        grads = (
            (dz @ w1.T).reshape(x.shape),  # dx
            jnp.einsum("nm,nf->mf", x2, dz),  # dw1
            dz.sum(0),  # db1
            jnp.einsum("nf,nm->fm", hidden, g),  # dw2
            g.sum(0),  # db2
        )
    return tuple(d.astype(p.dtype) for d, p in zip(grads, (x, w1, b1, w2, b2), strict=True))


_feed_forward.defvjp(_feed_forward_fwd, _feed_forward_bwd)


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry_2x32(key0: Array, key1: Array, x0: Array, x1: Array) -> tuple[Array, Array]:
    """Threefry-2x32 (20 rounds) of the counter pairs (x0, x1) under the key (key0, key1), all
    uint32: the words of `jax.extend.random.threefry_2x32`, written out round by round. jax's
    CPU lowering runs the rounds as a 5-iteration while loop, each iteration's state going
    through memory; unrolled, XLA fuses the whole hash into the op that consumes the words."""
    ks = (key0, key1, key0 ^ key1 ^ jnp.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _THREEFRY_ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r)))
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def random_words(rng: Array, shape: tuple[int, ...]) -> Array:
    """Uniform uint32 words: Threefry-2x32 in counter mode, both output words of each evaluation
    used, so half the evaluations of `jax.random.bits`, whose default (partitionable) form runs
    one per word and XORs the pair. The words are those of jax.random.bits with
    jax_threefry_partitionable=False. Keys of other PRNG implementations go to jax.random.bits."""
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        if "threefry" not in str(jax.random.key_impl(rng)):
            return jax.random.bits(rng, shape, jnp.uint32)
        rng = jax.random.key_data(rng)
    elif "threefry" not in jax.config.jax_default_prng_impl:  # a raw key of another kind
        return jax.random.bits(rng, shape, jnp.uint32)
    # Counts 0..n-1 hashed in pairs (i, i + half), as jax does: the first half of the words is
    # each pair's first output, the second half its second; an odd n pairs its last count with 0.
    size = math.prod(shape)
    half = (size + 1) // 2
    first = jax.lax.iota(jnp.uint32, half)
    second = first + jnp.uint32(half)
    if size % 2:
        second = jnp.where(first == half - 1, jnp.uint32(0), second)
    words = threefry_2x32(rng[0], rng[1], first, second)
    return jnp.concatenate(words)[:size].reshape(shape)


def dropout(x: Array, rate: float, rng: Array | None, name: str | None = None) -> Array:
    """Inverted dropout: x * keep / (1 - rate), keep ~ Bernoulli(1 - rate) for each element.

    Each element gets 16 random bits (two per 32-bit word, four per Threefry-2x32 evaluation;
    see `random_words`) rather than the 32 bits and one evaluation that `jax.random.bernoulli`
    spends: random-number generation is a large share of a CPU training step, and the keep
    probability round((1 - rate) * 2^16) / 2^16 is within 1e-5 of 1 - rate.
    """
    if rate == 0.0 or rng is None:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    *lead, n = x.shape
    if n % 2:
        keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    else:
        words = random_words(rng, (*lead, n // 2))  # (..., n/2)
        halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(x.shape)  # (..., n)
        keep = halves.astype(jnp.uint32) < round((1.0 - rate) * 2**16)
    if name is not None:
        keep = checkpoint_name(keep, name)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _attention_weights_einsum(q: Array, k: Array, mask: Array | None, bias: Array | None) -> Array:
    """softmax_s(q_t . k_s / sqrt(d) + bias) with masked keys at exactly zero. -> (b, h, t, s)"""
    scores = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
    scores = scores.astype(jnp.float32)  # softmax in float32 whatever the compute dtype
    if bias is not None:
        scores = scores + bias
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    # A fully masked row would softmax to uniform weights: zero it instead (and never NaN).
    return jnp.where(mask, probs, 0.0)


IMPLEMENTATIONS = ("auto", "einsum", "fused", "scan", "cpu_kernel")
_ATTENTION_DROPOUT_MASK = "attention_dropout_mask"


def _shift_to_4d(x: Array) -> Array:
    """Left-pads the shape of a mask or bias with ones up to (b, h, t, s) broadcasting rank."""
    return x.reshape((1,) * (4 - x.ndim) + x.shape)


def _shifted_softmax(
    scores: Array, mask: Array | None, finish: Callable[[Array], tuple[Array, Array]]
) -> tuple[Array, Array]:
    """finish(p) for p = exp(scores - c) with masked keys at zero, where finish returns
    (anything, l) with l = max(sum_s p, tiny); softmax(scores) = p / l over the last axis.

    Any shift c with max - 88 < c <= max + 30 gives the same float32 softmax (max: the row's max
    over unmasked keys): no exp overflows, and only weights below e^-57 of the largest are lost to
    underflow. The row max is the slowest operation of the loop on XLA:CPU (a max reduction along
    the row), so c = (score of key 0) + 30 is used, masked or not. Exponents are capped at 88, so
    a c too low shows as l >= e^88, and a c too high as l < e^-30 in a row with a key to attend;
    then the block is computed again with c = max. c only shifts: no gradient flows through it.
    Masked scores need not be replaced first: their weights are zeroed after the exp.
    """

    def attempt(shift):
        p = jnp.exp(jnp.minimum(scores - jax.lax.stop_gradient(shift), 88.0))
        if mask is not None:
            p = jnp.where(mask, p, 0.0)  # a fully masked row: all zero, output zero
        return finish(p)

    result, denominator = attempt(scores[..., :1] + 30.0)
    no_underflow = denominator > math.exp(-30.0)
    if mask is not None:  # a row with no key to attend has l = tiny, rightly
        no_underflow |= ~mask.any(-1, keepdims=True)
    in_range = (denominator < 1e38) & no_underflow
    return jax.lax.cond(
        in_range.all(),
        lambda: (result, denominator),
        lambda: attempt(
            (scores if mask is None else jnp.where(mask, scores, -jnp.inf)).max(-1, keepdims=True)
        ),
    )


def _row_sum(p: Array) -> tuple[Array, Array]:
    return p, jnp.maximum(p.sum(-1, keepdims=True), jnp.finfo(jnp.float32).tiny)


def _softmax_numerator(scores: Array, mask: Array | None) -> tuple[Array, Array]:
    """(p, l) with softmax(scores) = p / l over the last axis (see `_shifted_softmax`)."""
    return _shifted_softmax(scores, mask, _row_sum)


def _attention_scan_heads(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None,
    bias: Array | None,
    dropout_rate: float,
    dropout_rng: Array | None,  # None: no dropout
) -> Array:
    """One head at a time (`lax.map` over h), the head's scores recomputed in the backward pass.

    Same equation as the einsum path. Working on one (b, t, s) block per head keeps XLA:CPU
    away from the large (b, h, t, s) transposes and layouts of the batched form. As in flash
    attention, the backward pass keeps no float attention matrix, only q, k, v (and, with
    dropout, the one-byte keep mask). The batch axis stays a parallel axis inside the loop, so
    batch sharding is unaffected. Without dropout, v gets a column of ones, so that the GEMM
    p [v 1] also gives the softmax's denominator sum_s p and no separate pass over p sums it.
    """
    heads = q.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    if dropout_rng is None:  # v_s -> [v_s, 1]: the (d+1)-th output is sum_s p_ts
        v = jnp.concatenate([v, jnp.ones((*v.shape[:-1], 1), v.dtype)], axis=-1)
    xs = {  # head axis first: the loop runs over it
        "q": (q * scale).transpose(2, 0, 1, 3),  # (h, b, t, d)
        "k": k.transpose(2, 0, 1, 3),  # (h, b, s, d)
        "v": v.transpose(2, 0, 1, 3),  # (h, b, s, d), or (h, b, s, d + 1) without dropout
    }
    shared = {}  # masks and biases without a head axis: the same for every head
    for name, x in (("mask", mask), ("bias", bias)):
        if x is None:
            continue
        x = _shift_to_4d(x)  # (b|1, h|1, t|1, s|1)
        if x.shape[1] == 1:
            shared[name] = x[:, 0]  # (b|1, t|1, s|1)
        else:
            xs[name] = jnp.broadcast_to(x, (x.shape[0], heads, *x.shape[2:])).transpose(1, 0, 2, 3)
    if dropout_rng is not None:  # None: no dropout
        xs["rng"] = jax.random.split(dropout_rng, heads)

    def one_head(x: dict) -> Array:
        x = {**shared, **x}
        scores = jnp.einsum("btd,bsd->bts", x["q"], x["k"]).astype(jnp.float32)  # (b, t, s)
        if "bias" in x:
            scores = scores + x["bias"]

        def times_v(p):  # (b, t, s) -> (p v: (b, t, d), l: (b, t, 1))
            out = jnp.einsum(
                "bts,bsd->btd", p.astype(x["v"].dtype), x["v"], preferred_element_type=jnp.float32
            )  # (b, t, d + 1)
            tiny = jnp.finfo(jnp.float32).tiny
            return out[..., :-1], jnp.maximum(out[..., -1:], tiny)

        if "rng" in x:  # the denominator sums p before dropout: a pass of its own
            p, denominator = _softmax_numerator(scores, x.get("mask"))
            p = dropout(p, dropout_rate, x["rng"], name=_ATTENTION_DROPOUT_MASK)
            out = jnp.einsum("bts,bsd->btd", p.astype(x["v"].dtype), x["v"])  # (b, t, d)
        else:
            out, denominator = _shifted_softmax(scores, x.get("mask"), times_v)
        # Times the reciprocal, not divided: the backward pass of a division fuses into a
        # matmul epilogue that XLA's oneDNN path cannot run (see onednn); this one can.
        return (out * (1.0 / denominator)).astype(q.dtype)

    # The backward pass recomputes each head's weights but keeps the dropout mask (one byte per
    # weight) rather than drawing its random bits a second time.
    policy = jax.checkpoint_policies.save_only_these_names(_ATTENTION_DROPOUT_MASK)
    out = jax.lax.map(jax.checkpoint(one_head, policy=policy), xs)  # (h, b, t, d)
    return out.transpose(1, 2, 0, 3)  # (b, t, h, d)


def default_attention_implementation() -> str:
    """ "cpu_kernel" on CPU (fastest there, see docs/benchmarks.md; "scan" where the kernel does
    not apply), "fused" on GPU and TPU."""
    return "cpu_kernel" if jax.default_backend() == "cpu" else "fused"


def dot_product_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    implementation: str = "auto",
) -> Array:
    """Multi-head scaled dot-product attention: o_t = sum_s softmax_s(q_t . k_s / sqrt(d)) v_s.

    q: (b, t, h, d); k, v: (b, s, h, d); mask: bool broadcastable to (b, h, t, s), True = attend;
    bias: float broadcastable to (b, h, t, s), added to the scores. Returns (b, t, h, d).

    Masked keys get exactly zero weight; a query whose keys are all masked outputs zeros.
    Implementations (same equation, different programs):
      "einsum": all heads at once, the (b, h, t, s) weights materialized;
      "fused": `jax.nn.dot_product_attention` (cuDNN on GPU); it has no dropout, so with
               dropout active the einsum path is used;
      "scan": one head at a time with the scores recomputed in the backward pass (fastest
              pure-JAX program on CPU, and the backward pass keeps no attention matrix);
      "cpu_kernel": a compiled CPU kernel (`jaxformer.cpu_kernels`, built on first use) where
              it applies: no dropout, no bias, float32, a mask shared by heads and queries
              ((b|1, 1, 1, s), as `padding_mask` makes); elsewhere, or with no compiler, "scan".
              Its gradient is "scan"'s; forward-mode autodiff (`jax.jvp`) does not pass it;
      "auto": `default_attention_implementation()` for the default backend.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "auto":
        implementation = default_attention_implementation()
    use_dropout = dropout_rate > 0.0 and dropout_rng is not None
    if implementation == "cpu_kernel":
        from jaxformer.kernels import cpu as cpu_kernels

        if (
            not use_dropout
            and cpu_kernels.supports(q, k, v, mask, bias)
            and cpu_kernels.available()
        ):
            return cpu_kernels.attention(q, k, v, mask)
        implementation = "scan"
    if implementation == "scan":
        return _attention_scan_heads(
            q, k, v, mask, bias, dropout_rate, dropout_rng if use_dropout else None
        )
    if implementation == "fused" and not use_dropout:
        out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)  # (b, t, h, d)
        if mask is None:
            return out
        # The fused kernel gives fully masked rows uniform weights; match the einsum path.
        any_key = jnp.broadcast_to(mask, (*mask.shape[:-1], k.shape[1])).any(-1)  # (b, h, t)
        any_key = jnp.broadcast_to(any_key, (q.shape[0], q.shape[2], q.shape[1]))
        return jnp.where(any_key.transpose(0, 2, 1)[..., None], out, 0).astype(out.dtype)
    probs = _attention_weights_einsum(q, k, mask, bias)  # (b, h, t, s)
    if use_dropout:
        probs = dropout(probs, dropout_rate, dropout_rng)
    return jnp.einsum("bhts,bshd->bthd", probs.astype(v.dtype), v)


def attention_weights(q: Array, k: Array, mask: Array | None = None, bias: Array | None = None):
    """The (b, h, t, s) attention matrix e_ts, for inspection and tests."""
    return _attention_weights_einsum(q, k, mask, bias)


def padding_mask(attention_mask: Array) -> Array:
    """(b, s) 1/0 token mask -> (b, 1, 1, s) boolean key mask for `dot_product_attention`."""
    return attention_mask.astype(bool)[:, None, None, :]


def sinusoidal_positions(length: int, width: int, dtype=jnp.float32) -> Array:
    """PE(p, 2i) = sin(p / 10000^(2i/m)), PE(p, 2i+1) = cos(...). -> (length, width)"""
    position = jnp.arange(length, dtype=jnp.float32)[:, None]  # (t, 1)
    inv_freq = jnp.exp(-math.log(10000.0) * jnp.arange(0, width, 2, dtype=jnp.float32) / width)
    angles = position * inv_freq  # (t, ceil(m/2))
    pe = jnp.zeros((length, width), jnp.float32)
    pe = pe.at[:, 0::2].set(jnp.sin(angles))
    pe = pe.at[:, 1::2].set(jnp.cos(angles[:, : width // 2]))
    return pe.astype(dtype)


def embed(
    input_ids: Array,
    token_type_ids: Array,
    position_ids: Array,
    token_table: Array,
    type_table: Array,
    position_table: Array,
) -> Array:
    """x = E_tok[ids] + E_type[types] + P[positions]. ids: (b, t) -> (b, t, m)"""
    return (
        jnp.take(token_table, input_ids, axis=0)
        + jnp.take(type_table, token_type_ids, axis=0)
        + jnp.take(position_table, position_ids, axis=0)
    )


def cross_entropy(logits: Array, labels: Array, weights: Array | None = None) -> Array:
    """Mean softmax cross-entropy over examples with weight 1 (padding examples weigh 0)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    if weights is None:
        return nll.mean()
    return (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)
