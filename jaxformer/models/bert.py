"""BERT encoder as Flax Linen modules that own the parameters and call the equations of
`jaxformer.layers`, through `jaxformer.dispatch` where a fast path exists.

Mirrors Devlin et al. 2019 and transformers/models/bert/modeling_bert.py (post-LN layers, learned
absolute positions, tanh pooler), with pre-LN and sinusoidal positions as options.

Parameter tree (BertModel):
  embeddings/{token,position,token_type}/embedding, embeddings/layer_norm/{scale,bias}
  layer_{i}/attention/{w_q,b_q,w_k,b_k,w_v,b_v,w_o,b_o}, layer_{i}/attention_norm/{scale,bias}
  layer_{i}/mlp/{w1,b1,w2,b2}, layer_{i}/mlp_norm/{scale,bias}
  pooler/{kernel,bias}
(No token_type table when type_vocab_size is 0; embeddings/project/{kernel,bias} when the tables
are embedding_size wide, not hidden_size.) The task heads (`jaxformer.models.heads`) nest it under
`bert`. The other families (`roberta.py`, `distilbert.py`, `electra.py`, `albert.py`) are this
encoder with a piece changed: `positions`, `layer_options`, `layer_scopes`, the pooler.
Hidden states of every layer are sown into the "intermediates" collection
(`model.apply(..., mutable=["intermediates"])`).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer import dispatch, layers
from jaxformer.models.config import BertConfig

Array = jax.Array


def _init(config: BertConfig):
    return nn.initializers.normal(stddev=config.initializer_range)


class LayerNorm(nn.Module):
    config: BertConfig
    use_bias: bool = True  # False: scale only (ModernBERT's norm_bias=False)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.config
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), c.params_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), c.params_dtype)
        return layers.layer_norm(x, scale, bias, c.layer_norm_eps)


class Dropout(nn.Module):
    """`dispatch.dropout` with a fresh "dropout" key per call; the identity when not training."""

    rate: float

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        if not train or self.rate == 0.0:
            return x
        return dispatch.dropout(x, self.rate, self.make_rng("dropout"))


class Embeddings(nn.Module):
    """x = LayerNorm(E_tok[ids] + E_type[types] + P[positions]), then dropout; no E_type when
    type_vocab_size is 0; with scale_embedding, E_tok is the stored table times sqrt(e). The
    tables are embedding_width (e) wide; with `project`, a Dense then maps them to hidden_size
    (ELECTRA's embeddings_project, ALBERT's embedding_hidden_mapping_in).
    """

    config: BertConfig
    project: bool = False

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, train: bool) -> Array:
        c = self.config
        e = c.embedding_width

        def table(rows: int, name: str, init=None) -> nn.Embed:  # .embedding: (rows, e)
            init = init or _init(c)
            return nn.Embed(rows, e, embedding_init=init, param_dtype=c.params_dtype, name=name)

        if c.scale_embedding:  # E_tok[ids] sqrt(e), the table stored at N(0, 1/e)
            token = table(c.vocab_size, "token", nn.initializers.normal(stddev=e**-0.5))
            token_table = token.embedding * jnp.asarray(e**0.5, token.embedding.dtype)
        else:
            token_table = table(c.vocab_size, "token").embedding  # (vocab, e)
        type_table = None
        if c.type_vocab_size:
            type_table = table(c.type_vocab_size, "token_type").embedding  # (types, e)
        if c.position_embedding_type == "sinusoidal":
            position_table = layers.sinusoidal_positions(c.max_position_embeddings, e)
        else:
            position_table = table(c.max_position_embeddings, "position").embedding  # (P, e)
        x = layers.embed(
            input_ids, token_type_ids, position_ids, token_table, type_table, position_table
        ).astype(c.compute_dtype)  # (b, t, e)
        x = LayerNorm(c, name="layer_norm")(x)
        x = Dropout(c.hidden_dropout_prob)(x, train)
        if not self.project:
            return x
        return nn.Dense(
            c.hidden_size,
            dtype=c.compute_dtype,
            param_dtype=c.params_dtype,
            kernel_init=_init(c),
            name="project",
        )(x)  # (b, t, m)


class SelfAttention(nn.Module):
    """Q = x W_q, K = x W_k, V = x W_v per head; softmax(Q K^T / sqrt(d) + bias) V; heads joined
    by W_o. bias: float broadcastable to (b, h, t, s), or None."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, train: bool, bias: Array | None = None) -> Array:
        c = self.config
        m, h, d = c.hidden_size, c.num_attention_heads, c.head_dim

        def param(name, shape, init):
            return self.param(name, init, shape, c.params_dtype).astype(c.compute_dtype)

        w_q, w_k, w_v = (param(n, (m, h, d), _init(c)) for n in ("w_q", "w_k", "w_v"))
        b_q, b_k, b_v = (param(n, (h, d), nn.initializers.zeros) for n in ("b_q", "b_k", "b_v"))
        w_o = param("w_o", (h, d, m), _init(c))
        b_o = param("b_o", (m,), nn.initializers.zeros)

        # Three GEMMs, each output already (b, t, h, d): one fused (m, 3 h d) GEMM needs its
        # weights stacked and its output sliced apart on every call, which costs more on CPU.
        q = dispatch.dense(x, w_q, b_q, 1, c.matmul)  # (b, t, h, d): x W_q + b_q
        k = dispatch.dense(x, w_k, b_k, 1, c.matmul)  # (b, s, h, d); s = t
        v = dispatch.dense(x, w_v, b_v, 1, c.matmul)  # (b, s, h, d)
        dropout = train and c.attention_probs_dropout_prob > 0
        o = dispatch.attention(
            q,
            k,
            v,
            mask,
            bias,
            dropout_rate=c.attention_probs_dropout_prob if dropout else 0.0,
            dropout_rng=self.make_rng("dropout") if dropout else None,
            implementation=c.attention,
        )  # (b, t, h, d)
        return dispatch.dense(o, w_o, b_o, 2, c.matmul)  # (b, t, m): heads joined, o W_o + b_o


class FeedForward(nn.Module):
    """W_2 act(W_1 x + b_1) + b_2."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.config
        m, f = c.hidden_size, c.intermediate_size

        def param(name, shape, init):
            return self.param(name, init, shape, c.params_dtype).astype(c.compute_dtype)

        w1, b1 = param("w1", (m, f), _init(c)), param("b1", (f,), nn.initializers.zeros)
        w2, b2 = param("w2", (f, m), _init(c)), param("b2", (m,), nn.initializers.zeros)
        return dispatch.feed_forward(x, w1, b1, w2, b2, c.hidden_act, c.matmul)


class EncoderLayer(nn.Module):
    """Post-LN (BERT): x = LN(x + Drop(Attn(x))); x = LN(x + Drop(FFN(x))).
    Pre-LN: x = x + Drop(Attn(LN(x))); x = x + Drop(FFN(LN(x))).
    Without `attention_output_dropout` (DistilBERT), Attn(x) is added undropped; without
    `mlp_output_dropout` (ALBERT), FFN(x) is. Attn's scores get `bias` added where given."""

    config: BertConfig
    attention_output_dropout: bool = True
    mlp_output_dropout: bool = True

    @nn.compact
    def __call__(self, x: Array, mask: Array, train: bool, bias: Array | None = None) -> Array:
        c = self.config

        def drop(y):
            return Dropout(c.hidden_dropout_prob)(y, train)

        def drop_attention(y):
            return drop(y) if self.attention_output_dropout else y

        def drop_mlp(y):
            return drop(y) if self.mlp_output_dropout else y

        attention, attention_norm = (
            SelfAttention(c, name="attention"),
            LayerNorm(c, name="attention_norm"),
        )
        mlp, mlp_norm = FeedForward(c, name="mlp"), LayerNorm(c, name="mlp_norm")
        if c.pre_layer_norm:
            x = x + drop_attention(attention(attention_norm(x), mask, train, bias))
            return x + drop_mlp(mlp(mlp_norm(x)))
        x = attention_norm(x + drop_attention(attention(x, mask, train, bias)))
        return mlp_norm(x + drop_mlp(mlp(x)))


def check_inputs(
    c: BertConfig,
    input_ids: Array,
    token_type_ids: Array | None,
    position_ids: Array | None,
    longest: int,
    positions: bool = True,
) -> Array | None:
    """ValueError for an input the model cannot take (too long for its `longest` positions, ids
    outside its tables); the token types as the embeddings take them: None where the model has
    none, zeros where none were given. `positions`: whether the model has a position table."""
    if position_ids is None and input_ids.shape[1] > longest:
        offset = c.max_position_embeddings - longest
        raise ValueError(
            f"input of {input_ids.shape[1]} tokens, but the model has "
            f"max_position_embeddings={c.max_position_embeddings} positions"
            + (f", {offset} of them before the first token" if offset else "")
            + f": truncate the input to {longest} tokens (load_tokenizer's max_length)"
        )
    check_ids("input_ids", input_ids, c.vocab_size, "vocab_size")
    if positions:
        check_ids(
            "position_ids", position_ids, c.max_position_embeddings, "max_position_embeddings"
        )
    if c.type_vocab_size == 0:
        check_ids("token_type_ids", token_type_ids, 1, "type_vocab_size=0, so token types")
        return None  # all zero: the model has no token types to add
    check_ids("token_type_ids", token_type_ids, c.type_vocab_size, "type_vocab_size")
    return jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids


def check_ids(name: str, ids: Array | None, size: int, field: str) -> None:
    """Raises ValueError if concrete `ids` fall outside [0, size): a table lookup out of range
    would give NaN embeddings (`jnp.take`'s fill). Under `jit` the ids are traced and cannot be
    checked here; the callers that jit the model (training, evaluation, prediction) check their
    tokenizer against the model instead."""
    if ids is None or isinstance(ids, jax.core.Tracer):
        return
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        raise ValueError(
            f"{name} holds {int(ids.min())}..{int(ids.max())}, outside the model's {field}="
            f"{size}: was the input made by this model's tokenizer?"
        )


class BertOutput(NamedTuple):
    sequence_output: Array  # (b, t, m): the last layer's hidden states
    pooled_output: Array | None  # (b, m): tanh(W [CLS] + b), None without a pooler


class BertModel(nn.Module):
    """The encoder: embeddings, layers, pooler. A family that differs in a piece subclasses it and
    overrides that piece: `positions` (default position ids), `max_length`, `layer_options`,
    `layer_scopes` (which parameters each layer uses), `projects_embeddings`, `attention_bias`."""

    config: BertConfig
    add_pooling_layer: bool = True
    # EncoderLayer's attributes beyond the config.
    layer_options: ClassVar[dict[str, Any]] = {}

    def positions(self, input_ids: Array) -> Array:
        """Position ids when none are given: 0, 1, ... (b, t) -> (b, t)"""
        return jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)

    @property
    def max_length(self) -> int:
        """The longest input the default positions fit in the position table."""
        return self.config.max_position_embeddings

    def layer_scopes(self) -> list[str]:
        """Each layer's parameter scope, in the order the layers run; layers that share a scope
        share its parameters (one module called again). BERT's: layer_0 ... layer_{L-1}."""
        return [f"layer_{i}" for i in range(self.config.num_hidden_layers)]

    def attention_bias(self, length: int) -> Array | None:
        """The additive bias of every layer's attention scores, computed once for a `length`
        token input and shared by the layers: float broadcastable to (b, h, t, s). BERT's: none.
        Called inside `__call__`, so it may hold parameters of its own."""
        return None

    def projects_embeddings(self) -> bool:
        """Whether a Dense maps the embeddings to hidden_size: where their widths differ."""
        return self.config.embedding_width != self.config.hidden_size

    @nn.compact
    def __call__(
        self,
        input_ids: Array,  # (b, t) int
        attention_mask: Array | None = None,  # (b, t) 1 = real token, 0 = padding
        token_type_ids: Array | None = None,  # (b, t) int
        position_ids: Array | None = None,  # (b, t) int
        *,
        train: bool = False,
    ) -> BertOutput:
        c = self.config
        token_type_ids = check_inputs(c, input_ids, token_type_ids, position_ids, self.max_length)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if position_ids is None:
            position_ids = self.positions(input_ids)
        embeddings = Embeddings(c, self.projects_embeddings(), name="embeddings")
        x = embeddings(input_ids, token_type_ids, position_ids, train)  # (b, t, m)
        self.sow("intermediates", "hidden_states", x)
        mask = layers.padding_mask(attention_mask)  # (b, 1, 1, s)
        bias = self.attention_bias(input_ids.shape[1])
        layer_cls = nn.remat(EncoderLayer, static_argnums=(3,)) if c.remat else EncoderLayer
        layers_by_scope = {}
        for scope in self.layer_scopes():
            if scope not in layers_by_scope:
                layers_by_scope[scope] = layer_cls(c, **self.layer_options, name=scope)
            x = layers_by_scope[scope](x, mask, train, bias)
            self.sow("intermediates", "hidden_states", x)
        if c.pre_layer_norm:
            x = LayerNorm(c, name="final_norm")(x)
        if not self.add_pooling_layer:
            return BertOutput(x, None)
        pooled = nn.tanh(
            nn.Dense(
                c.hidden_size,
                dtype=c.compute_dtype,
                param_dtype=c.params_dtype,
                kernel_init=_init(c),
                name="pooler",
            )(x[:, 0])
        )  # (b, m)
        return BertOutput(x, pooled)


def init_params(model: nn.Module, rng: Array, length: int = 8) -> dict:
    """Fresh parameters for `model` (a dict pytree), from a dummy batch of one (of one choice,
    for a model whose `input_rank` is 3)."""
    ids = jnp.zeros((1,) * (getattr(model, "input_rank", 2) - 1) + (length,), jnp.int32)
    return model.init({"params": rng}, ids, jnp.ones_like(ids))["params"]


def param_shapes(model: nn.Module, length: int = 8) -> dict:
    """Parameter shapes and dtypes without allocating (jax.ShapeDtypeStruct leaves)."""
    return jax.eval_shape(lambda: init_params(model, jax.random.key(0), length))


def max_input_length(model: nn.Module) -> int:
    """The longest input `model` (an encoder or a task head on one) takes with its default
    position ids."""
    if isinstance(inner := getattr(model, "model", None), nn.Module):  # a wrapper (LoraModel)
        return max_input_length(inner)
    encoder = model if isinstance(model, BertModel) else model.encoder(model.config)
    if isinstance(getattr(type(encoder), "max_length", None), property):
        return encoder.max_length
    return model.config.max_position_embeddings  # rotary positions: no table to run past
