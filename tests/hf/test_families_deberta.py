"""The DeBERTa-v2 family (v3 and v2 configs), every task, both ways: a random transformers
DebertaV2 model of odd shapes loaded by `jaxformer.from_pretrained` matches it at real tokens;
`jaxformer.save_pretrained` writes a folder transformers' AutoModelFor<Task> loads with nothing
missing or unexpected, and that matches too. Then every layer's hidden states, bfloat16, and the
configs jaxformer refuses. PyTorch and transformers are the reference, used only here."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import jaxformer
from jaxformer import families
from jaxformer.hf import CheckpointError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
BF16_TOL = 0.15  # bfloat16 keeps 8 bits: about 0.4% of each O(1) activation, over 3 layers
SHAPES = dict(
    vocab_size=97,
    hidden_size=36,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=50,
    max_position_embeddings=40,
    hidden_act="gelu",
)
CONFIGS = {
    # DeBERTa-v3: log buckets, both terms through W_q and W_k, relative positions only.
    "v3": SHAPES
    | dict(
        relative_attention=True,
        position_buckets=8,
        max_relative_positions=16,
        pos_att_type=["p2c", "c2p"],
        share_att_key=True,
        norm_rel_ebd="layer_norm",
        position_biased_input=False,
        type_vocab_size=0,
    ),
    # DeBERTa-v2-style: own W_pk, W_pq, distances clipped at 6 (shorter than the batch), absolute
    # positions and token types in the input, a narrower embedding projected to the width.
    "v2": SHAPES
    | dict(
        relative_attention=True,
        position_buckets=-1,
        max_relative_positions=6,
        pos_att_type="c2p|p2c",
        share_att_key=False,
        position_biased_input=True,
        type_vocab_size=2,
        embedding_size=24,
        pooler_hidden_act="relu",
        hidden_act="gelu_new",
    ),
    # One term only, no relative norm.
    "c2p": SHAPES
    | dict(
        relative_attention=True,
        position_buckets=4,
        max_relative_positions=12,
        pos_att_type=["c2p"],
        share_att_key=False,
        position_biased_input=False,
    ),
}
# task: (transformers class suffix, Auto class, num_labels)
TASKS = {
    "base": ("Model", "AutoModel", 2),
    "classification": ("ForSequenceClassification", "AutoModelForSequenceClassification", 5),
    "token_classification": ("ForTokenClassification", "AutoModelForTokenClassification", 5),
    "question_answering": ("ForQuestionAnswering", "AutoModelForQuestionAnswering", 2),
    "multiple_choice": ("ForMultipleChoice", "AutoModelForMultipleChoice", 2),
    "masked_lm": ("ForMaskedLM", "AutoModelForMaskedLM", 2),
}
LENGTHS = (13, 8, 4, 1)  # a padded batch of uneven lengths
CHOICE_LENGTHS = ((9, 6, 2), (4, 11, 7))  # (b=2, choices=3)


@pytest.fixture(autouse=True, scope="module")
def _torch_inference():
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(previous)


def random_hf_model(name, task, seed=0, **changes):
    """A transformers DebertaV2 model with every weight perturbed, eval mode, eager attention."""
    suffix, _, num_labels = TASKS[task]
    torch.manual_seed(seed)
    config = transformers.DebertaV2Config(**CONFIGS[name] | changes, num_labels=num_labels)
    config._attn_implementation = "eager"
    model = getattr(transformers, "DebertaV2" + suffix)(config).eval()
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
    return model


def random_batch(name, task, seed=0):
    """Right-padded input_ids (padding = 0), attention_mask and, with token types, types."""
    rng = np.random.default_rng(seed)
    lengths = np.array(CHOICE_LENGTHS if task == "multiple_choice" else LENGTHS)
    mask = (np.arange(lengths.max()) < lengths[..., None]).astype(np.int32)
    ids = rng.integers(2, 97, mask.shape)
    batch = {"input_ids": np.where(mask == 1, ids, 0), "attention_mask": mask}
    if CONFIGS[name].get("type_vocab_size"):
        batch["token_type_ids"] = (np.arange(mask.shape[-1]) >= 3).astype(np.int32) * mask
    return batch


def ours(model, params, batch):
    out = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("token_type_ids"),
    )
    if isinstance(out, tuple):
        return {k: v for k, v in out._asdict().items() if v is not None}
    return {"logits": out}


def theirs(hf_model, task, batch):
    out = hf_model(**{k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()})
    if task == "base":
        return {"sequence_output": out.last_hidden_state}
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


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_deberta_matches_transformers_both_ways(name, task, tmp_path):
    hf_model = random_hf_model(name, task, seed=len(task))
    hf_model.save_pretrained(tmp_path / "hf")
    batch = random_batch(name, task)

    model, params = jaxformer.from_pretrained(tmp_path / "hf", task=task)
    assert families.task_of(model) == task and model.config.model_type == "deberta-v2"
    loaded = max_diff(task, ours(model, params, batch), theirs(hf_model, task, batch), batch)

    jaxformer.save_pretrained(model, params, tmp_path / "ours")
    _, auto, _ = TASKS[task]
    back, info = getattr(transformers, auto).from_pretrained(
        tmp_path / "ours", output_loading_info=True, attn_implementation="eager"
    )
    assert type(back) is type(hf_model)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    saved = max_diff(task, ours(model, params, batch), theirs(back.eval(), task, batch), batch)
    print(f"deberta-v2 {name} {task}: HF->ours {loaded:.2e}, ours->HF {saved:.2e}")
    assert loaded < TOL and saved < TOL


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_layer_matches(name, tmp_path):
    hf_model = random_hf_model(name, "base")
    hf_model.save_pretrained(tmp_path)
    batch = random_batch(name, "base")
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    _, state = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("token_type_ids"),
        mutable=["intermediates"],
    )
    mine = state["intermediates"]["hidden_states"]
    reference = hf_model(
        **{k: torch.tensor(v) for k, v in batch.items()}, output_hidden_states=True
    ).hidden_states
    assert len(mine) == len(reference) == 4
    mask = batch["attention_mask"].astype(bool)
    for i, (a, b) in enumerate(zip(mine, reference, strict=True)):
        diff = float(np.abs(np.asarray(a) - b.numpy())[mask].max())
        print(f"deberta-v2 {name} hidden state {i}: {diff:.2e}")
        assert diff < TOL, i


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bfloat16_is_finite_and_close_to_float32(name, tmp_path):
    random_hf_model(name, "masked_lm").save_pretrained(tmp_path)
    batch = random_batch(name, "masked_lm")
    f32, p32 = jaxformer.from_pretrained(tmp_path, task="base")
    bf16, p16 = jaxformer.from_pretrained(tmp_path, task="base", dtype="bfloat16")
    a = ours(f32, p32, batch)["sequence_output"]
    b = ours(bf16, p16, batch)["sequence_output"]
    assert b.dtype == jnp.bfloat16 and np.isfinite(np.asarray(b, np.float32)).all()
    mask = batch["attention_mask"].astype(bool)
    diff = float(np.abs(np.asarray(a) - np.asarray(b, np.float32))[mask].max())
    print(f"deberta-v2 {name} bfloat16 vs float32: {diff:.2e}")
    assert diff < BF16_TOL


def test_longer_than_max_position_embeddings_with_relative_positions_only(tmp_path):
    """Without absolute positions (v3) nothing bounds the length: 50 tokens over 40 positions."""
    hf_model = random_hf_model("v3", "base")
    hf_model.save_pretrained(tmp_path)
    ids = np.random.default_rng(1).integers(2, 97, (1, 50))
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    a = np.asarray(model.apply({"params": params}, ids).sequence_output)
    b = hf_model(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    assert float(np.abs(a - b).max()) < TOL


@pytest.mark.parametrize(
    "change, match",
    [
        ({"conv_kernel_size": 3}, r"conv_kernel_size=3 is not supported.*conv_kernel_size=0"),
        ({"legacy": False}, r"legacy=False is not supported.*legacy=True"),
        ({"pos_att_type": ["p2p"]}, r"pos_att_type=\['p2p'\] is not supported"),
        ({"share_att_key": "yes"}, r"share_att_key='yes' is not valid; it must be true or false"),
    ],
)
def test_configs_jaxformer_does_not_read_are_refused(change, match, tmp_path):
    random_hf_model("v3", "base").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(CheckpointError, match=match):
        jaxformer.from_pretrained(tmp_path, task="base")
