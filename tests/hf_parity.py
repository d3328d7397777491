"""What the family parity tests (tests/hf/test_families*.py) share: a random transformers model
of a family, padded token batches, both models' outputs, and the checks every family runs
against transformers (load and save both ways, every layer's hidden states, bfloat16).

Not a test module: they import it as `hf_parity` (tests/ is on sys.path, see conftest.py).
PyTorch and transformers are the reference: a test module importing this is skipped without
them. The reference models are frozen and run without autograd.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import jaxformer
from jaxformer import families

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
BF16_TOL = 0.15  # bfloat16 keeps 8 bits: about 0.4% of each O(1) activation, over a few layers
# task: (transformers class suffix, Auto class, num_labels)
HEADS = {
    "base": ("Model", "AutoModel", 2),
    "classification": ("ForSequenceClassification", "AutoModelForSequenceClassification", 5),
    "token_classification": ("ForTokenClassification", "AutoModelForTokenClassification", 5),
    "question_answering": ("ForQuestionAnswering", "AutoModelForQuestionAnswering", 2),
    "multiple_choice": ("ForMultipleChoice", "AutoModelForMultipleChoice", 2),
    "masked_lm": ("ForMaskedLM", "AutoModelForMaskedLM", 2),
    "pretraining": ("ForPreTraining", "AutoModelForPreTraining", 2),  # ELECTRA's only
}
TASKS = tuple(t for t in HEADS if t != "pretraining")  # every family's
LENGTHS = (13, 8, 4, 1)  # a padded batch of uneven lengths
CHOICE_LENGTHS = ((9, 6, 2), (4, 11, 7))  # (b=2, choices=3)


def random_hf_model(stem, fields, task, seed=0, attention="eager", keep=None):
    """transformers' <stem><Task> (e.g. RobertaForMaskedLM) of <stem>Config(**fields), every
    learned weight perturbed by 0.05 N(0, 1) but those whose name holds `keep`, eval mode,
    frozen, `attention` its attention implementation."""
    suffix, _, num_labels = HEADS[task]
    torch.manual_seed(seed)
    config = getattr(transformers, stem + "Config")(**fields, num_labels=num_labels)
    config._attn_implementation = attention
    model = getattr(transformers, stem + suffix)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if keep is None or keep not in name:
                p.add_(0.05 * torch.randn_like(p))
    return model.requires_grad_(False)


def random_batch(
    task, vocab=97, pad=0, low=2, seed=0, lengths=LENGTHS, choice_lengths=CHOICE_LENGTHS
):
    """Right-padded input_ids (padding = `pad`; real tokens drawn from [low, vocab), never the
    pad token) and attention_mask: (b, t), or (b, choices, t) for multiple choice."""
    rng = np.random.default_rng(seed)
    lengths = np.array(choice_lengths if task == "multiple_choice" else lengths)
    mask = (np.arange(lengths.max()) < lengths[..., None]).astype(np.int32)
    ids = rng.integers(low, vocab, mask.shape)
    return {"input_ids": np.where(mask == 1, ids, pad), "attention_mask": mask}


def _inputs(batch):  # input_ids, attention_mask, token_type_ids (None without them)
    return batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")


def ours(model, params, batch):
    """Our model's outputs on `batch` (its token_type_ids where it has them), by name."""
    out = model.apply({"params": params}, *_inputs(batch))
    if isinstance(out, tuple):
        return {k: v for k, v in out._asdict().items() if v is not None}
    return {"logits": out}


def torch_inputs(batch):
    return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def theirs(hf_model, task, batch):
    """The transformers model's outputs on `batch`, named as ours."""
    with torch.no_grad():
        out = hf_model(**torch_inputs(batch))
    if task == "base":
        pooled = getattr(out, "pooler_output", None)
        return {"sequence_output": out.last_hidden_state} | (
            {} if pooled is None else {"pooled_output": pooled}
        )
    if task == "question_answering":
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}
    return {"logits": out.logits}


def max_diff(task, mine, reference, batch):
    """max |ours - theirs| over the outputs, at real tokens for per-token outputs."""
    assert set(mine) == set(reference)
    mask = np.asarray(batch["attention_mask"], bool)
    worst = 0.0
    for name, a in mine.items():
        a, b = np.asarray(a, np.float64), reference[name].double().numpy()
        assert a.shape == b.shape, name
        diff = np.abs(a - b)
        per_token = task != "multiple_choice" and diff.shape[:2] == mask.shape
        worst = max(worst, float((diff[mask] if per_token else diff).max()))
    return worst


def assert_matches_both_ways(hf_model, task, batch, folder: Path, label: str):
    """transformers -> `jaxformer.from_pretrained` matches the reference within TOL, and
    `jaxformer.save_pretrained` -> transformers' Auto class loads the same class with nothing
    missing, unexpected or mismatched, matching too. Returns (our model, the reloaded one)."""
    hf_model.save_pretrained(folder / "hf")
    model, params = jaxformer.from_pretrained(folder / "hf", task=task)
    assert families.task_of(model) == task
    loaded = max_diff(task, ours(model, params, batch), theirs(hf_model, task, batch), batch)

    jaxformer.save_pretrained(model, params, folder / "ours")
    back, info = getattr(transformers, HEADS[task][1]).from_pretrained(
        folder / "ours",
        output_loading_info=True,
        attn_implementation=hf_model.config._attn_implementation,
    )
    assert type(back) is type(hf_model)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    saved = max_diff(task, ours(model, params, batch), theirs(back.eval(), task, batch), batch)
    print(f"{label} {task}: HF->ours {loaded:.2e}, ours->HF {saved:.2e}")
    assert loaded < TOL and saved < TOL
    return model, back


def assert_every_layer_matches(
    model, params, hf_model, batch, states: int, label: str, final_norm=False
):
    """Our `states` hidden states (the embeddings, then each layer's output) match transformers'
    hidden_states at real tokens. With `final_norm`, transformers' last one is after its final
    norm (ModernBERT's last_hidden_state), so it is compared with our sequence_output."""
    out, state = model.apply({"params": params}, *_inputs(batch), mutable=["intermediates"])
    mine = state["intermediates"]["hidden_states"]
    if final_norm:
        mine = (*mine[:-1], out.sequence_output)
    with torch.no_grad():
        reference = hf_model(**torch_inputs(batch), output_hidden_states=True).hidden_states
    assert len(mine) == len(reference) == states
    mask = batch["attention_mask"].astype(bool)
    for i, (a, b) in enumerate(zip(mine, reference, strict=True)):
        diff = float(np.abs(np.asarray(a) - b.numpy())[mask].max())
        print(f"{label} hidden state {i}: {diff:.2e}")
        assert diff < TOL, i


def assert_bfloat16_close(folder: Path, batch, label: str):
    """The encoder of the checkpoint in `folder`, loaded in bfloat16, is finite and within
    BF16_TOL of float32 at real tokens."""
    f32, p32 = jaxformer.from_pretrained(folder, task="base")
    bf16, p16 = jaxformer.from_pretrained(folder, task="base", dtype="bfloat16")
    a = ours(f32, p32, batch)["sequence_output"]
    b = ours(bf16, p16, batch)["sequence_output"]
    assert b.dtype == jnp.bfloat16 and np.isfinite(np.asarray(b, np.float32)).all()
    mask = batch["attention_mask"].astype(bool)
    diff = float(np.abs(np.asarray(a) - np.asarray(b, np.float32))[mask].max())
    print(f"{label} bfloat16 vs float32: {diff:.2e}")
    assert diff < BF16_TOL
