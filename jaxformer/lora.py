"""Low-rank adapters (LoRA, Hu et al. 2021) as Hugging Face PEFT defines them.

A targeted nn.Linear weight W (out, in) becomes W + (alpha / r) B A, with A (r, in) drawn as
PEFT draws it (kaiming_uniform_(a=sqrt(5)): uniform in +-1/sqrt(in)) and B (out, r) zero, so a
fresh adapter changes nothing. Targets are named as PEFT's `target_modules` names them:
transformers' module names, matched by suffix ("query" matches
"bert.encoder.layer.0.attention.self.query"), or one string as a regular expression that must
match the whole name. Which of our parameters a module is, and in which layout, is the family's
tensor table (`Names`, through `jaxformer.hf.convert.conversion_table`): no table of its own.

`LoraModel(model, lora)` wraps a task model: its parameters are {"base": the model's, "lora":
{our param path, nested: {"a": A, "b": B}}}, A and B in torch's layout as PEFT saves them. Its
call folds the adapters into the targeted weights and runs the wrapped model, so every family
and every attention program runs unchanged. Because the adapters are folded into the weights,
dropout on the adapters' input (PEFT's lora_dropout) cannot be applied: a LoraConfig with a
dropout loads and evaluates, but training with it is refused.

The frozen parameters are the base model's but its task head (PEFT's `modules_to_save`):
`trainable(model, params)` says which leaves train. `merge` gives the plain model with the
adapters folded in. PEFT's adapter folders are read and written by `jaxformer.hf.adapters`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxformer import families
from jaxformer.hf.names import IDENTITY, Transform
from jaxformer.models import init_params


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """PEFT's LoraConfig fields: rank `r`, `lora_alpha`, `lora_dropout`, `target_modules`
    (None: the family's default, PEFT's for its model_type), `use_rslora` (scale alpha /
    sqrt(r) in place of alpha / r)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] | str | None = None
    use_rslora: bool = False

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoraConfig rank={self.rank!r}: the rank is an integer >= 1 (e.g. 8)")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"LoraConfig alpha={self.alpha!r}: alpha is a number > 0 (e.g. 16)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoraConfig dropout={self.dropout!r}: a probability in [0, 1)")
        targets = self.targets
        if isinstance(targets, (list, tuple)):
            targets = tuple(targets)
            if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
                raise ValueError(
                    f"LoraConfig targets={self.targets!r}: module names such as ('query', "
                    "'value'), or None for the family's default"
                )
            object.__setattr__(self, "targets", tuple(t.strip() for t in targets))
        elif targets is not None and not isinstance(targets, str):
            raise ValueError(f"LoraConfig targets={targets!r}: a tuple of module names or None")

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)


def linear_weights(
    model: nn.Module, head: bool = False
) -> dict[str, tuple[str, Transform, tuple[int, int]]]:
    """{transformers module name: (our param path, transform, HF weight shape (out, in))} of
    every nn.Linear of `model`'s encoder that LoRA can adapt, or with `head` of its task head
    (which trains in full)."""
    from jaxformer.hf.convert import _hf_shape, conversion_table, param_shapes

    shapes = traverse_util.flatten_dict(param_shapes(model), sep="/")
    heads = set(head_table(model))
    out = {}
    for name, (path, transform) in conversion_table(model).items():
        if not name.endswith(".weight") or transform is IDENTITY or (name in heads) != head:
            continue
        hf = _hf_shape(transform, model.config, shapes[path].shape)
        if len(hf) == 2:
            out[name.removesuffix(".weight")] = (path, transform, hf)
    return out


def head_table(model: nn.Module) -> dict[str, tuple[str, Transform]]:
    """The task head that trains with the adapters (PEFT's modules_to_save), by HF name:
    a task's own output head (classification, token classification, QA, multiple choice);
    none for the base, embedding and masked-LM models."""
    from jaxformer.hf.convert import _tensor_task

    names = families.family(model.config.model_type).names
    task = _tensor_task(model)
    return dict(names.heads[task]) if task in names.outputs else {}


def modules_to_save(model: nn.Module) -> list[str]:
    """The head's top-level transformers modules, as PEFT's modules_to_save names them."""
    return sorted({name.split(".")[0] for name in head_table(model)})


def default_targets(model: nn.Module) -> tuple[str, ...]:
    return families.family(model.config.model_type).lora_targets


def _matches(module: str, targets: tuple[str, ...] | str) -> bool:
    """PEFT's rule: a string is a regular expression on the whole name, else a name matches a
    target it equals or ends with after a dot."""
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith(f".{t}") for t in targets)


def targets(model: nn.Module, lora: LoraConfig) -> dict[str, tuple[str, Transform, tuple]]:
    """{transformers module name: (our param path, transform, HF shape)} that `lora` adapts in
    `model`; ValueError for a target that names no nn.Linear of the model's encoder."""
    wanted = default_targets(model) if lora.targets is None else lora.targets
    linears = linear_weights(model)
    found = {m: v for m, v in linears.items() if _matches(m, wanted)}
    if isinstance(wanted, str):
        unmatched = [] if found else [wanted]
    else:
        unmatched = [t for t in wanted if not any(_matches(m, (t,)) for m in linears)]
    if unmatched:
        names = sorted({re.sub(r"^(.*\.)?\d+\.", "", m) for m in linears})
        raise ValueError(
            f"LoRA targets {unmatched} name no nn.Linear of a {model.config.model_type} "
            f"encoder; its modules are {names} (a target matches a module name it ends with)"
        )
    return found


def init_adapters(model: nn.Module, lora: LoraConfig, rng: jax.Array) -> dict:
    """Fresh adapters as PEFT initialises them: A uniform in +-1/sqrt(in), B zero."""
    flat = {}
    for i, (path, _, (out, inp)) in enumerate(targets(model, lora).values()):
        bound = 1.0 / math.sqrt(inp)
        key = jax.random.fold_in(rng, i)
        flat[f"{path}/a"] = jax.random.uniform(key, (lora.rank, inp), jnp.float32, -bound, bound)
        flat[f"{path}/b"] = jnp.zeros((out, lora.rank), jnp.float32)
    return traverse_util.unflatten_dict(flat, sep="/")


def fold(model: nn.Module, lora: LoraConfig, base: dict, adapters: dict) -> dict:
    """`base` with every targeted weight W replaced by W + scale * B A (in our layout)."""
    flat = traverse_util.flatten_dict(base, sep="/")
    pairs = traverse_util.flatten_dict(adapters, sep="/")
    for path, transform, _ in targets(model, lora).values():
        a, b = pairs[f"{path}/a"], pairs[f"{path}/b"]
        delta = jnp.matmul(b, a, precision=jax.lax.Precision.HIGHEST) * lora.scale
        w = flat[path]
        flat[path] = (w + transform.to_jax(delta, model.config)).astype(w.dtype)
    return traverse_util.unflatten_dict(flat, sep="/")


class LoraModel(nn.Module):
    """`model` with low-rank adapters: parameters {"base": model's, "lora": adapters}; the
    same call as `model`. `base_model` is the base checkpoint's folder or hub id, written to
    PEFT's adapter_config.json."""

    model: nn.Module
    lora: LoraConfig
    base_model: str | None = None

    @property
    def config(self):
        return self.model.config

    @property
    def input_rank(self) -> int:
        return getattr(self.model, "input_rank", 2)

    @nn.compact
    def __call__(self, *args, train: bool = False, **kwargs) -> Any:
        base = self.param("base", lambda rng: init_params(self.model, rng))
        adapters = self.param("lora", lambda rng: init_adapters(self.model, self.lora, rng))
        if train and self.lora.dropout:
            raise ValueError(
                f"lora dropout={self.lora.dropout}: the adapters are folded into the weights, "
                "so dropout on their input is not applied; train with dropout=0 (the model's "
                "own dropout still applies)"
            )
        rngs = {"dropout": self.make_rng("dropout")} if train else {}
        params = fold(self.model, self.lora, base, adapters)
        return self.model.apply({"params": params}, *args, train=train, rngs=rngs, **kwargs)


def add_adapters(
    model: nn.Module, params: dict, lora: LoraConfig, rng: jax.Array, base_model: str | None = None
) -> tuple[LoraModel, dict]:
    """(LoraModel, its parameters): `model` and `params` with fresh adapters from `rng`."""
    if isinstance(model, LoraModel):
        raise ValueError("the model already has LoRA adapters; merge them first (lora.merge)")
    return LoraModel(model, lora, base_model), {
        "base": params,
        "lora": init_adapters(model, lora, rng),
    }


def merge(model: LoraModel, params: dict) -> tuple[nn.Module, dict]:
    """(the plain model, its parameters with the adapters folded in): what save_pretrained
    writes as an ordinary checkpoint."""
    if not isinstance(model, LoraModel):
        raise ValueError(f"{type(model).__name__} has no LoRA adapters to merge")
    return model.model, fold(model.model, model.lora, params["base"], params["lora"])


def trainable(model: LoraModel, params: dict) -> dict:
    """A tree like `params`, True at the leaves that train: the adapters and the task head."""
    heads = {path.split("/")[0] for path, _ in head_table(model.model).values()}
    flat = traverse_util.flatten_dict(params)
    mask = {k: k[0] == "lora" or (k[0] == "base" and k[1] in heads) for k in flat}
    return traverse_util.unflatten_dict(mask)
