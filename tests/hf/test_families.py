"""The RoBERTa, XLM-R and DistilBERT families, every task, both ways: a random transformers
model of odd shapes loaded by `jaxformer.from_pretrained` matches it at real tokens;
`jaxformer.save_pretrained` writes a folder transformers' AutoModelFor<Task> loads with nothing
missing or unexpected, and that matches too. Then every layer's hidden states, bfloat16, and the
errors for a model_type or task jaxformer does not hold. PyTorch and transformers are the
reference, used only here."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxformer
from jaxformer import families
from jaxformer.hf import CheckpointError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
BF16_TOL = 0.15  # bfloat16 keeps 8 bits: about 0.4% of each O(1) activation, over 2 layers
# Odd, non-default shapes, so a transposed or mis-split tensor cannot go unnoticed.
ROBERTA_SHAPES = dict(
    vocab_size=97,
    hidden_size=36,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=50,
    type_vocab_size=1,
    max_position_embeddings=40,
    pad_token_id=1,
    hidden_act="gelu_new",  # the LM head's GELU stays exact: RobertaLMHead's own
)
DISTILBERT_SHAPES = dict(
    vocab_size=97, dim=36, n_layers=2, n_heads=3, hidden_dim=50, max_position_embeddings=40
)
# name: (transformers config class, class name stem, config fields)
FAMILIES = {
    "roberta": ("RobertaConfig", "Roberta", ROBERTA_SHAPES),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRoberta", ROBERTA_SHAPES),
    "distilbert": ("DistilBertConfig", "DistilBert", DISTILBERT_SHAPES),
    "distilbert-sinusoidal": (
        "DistilBertConfig",
        "DistilBert",
        DISTILBERT_SHAPES | {"sinusoidal_pos_embds": True},
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


def random_hf_model(family, task, seed=0):
    """A transformers model with every learned weight perturbed, eval mode, eager attention."""
    config_class, stem, fields = FAMILIES[family]
    suffix, _, num_labels = TASKS[task]
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**fields, num_labels=num_labels)
    config._attn_implementation = "eager"
    model = getattr(transformers, stem + suffix)(config).eval()
    for name, p in model.named_parameters():
        if not (fields.get("sinusoidal_pos_embds") and "position_embeddings" in name):
            p.add_(0.05 * torch.randn_like(p))
    return model


def random_batch(family, task, seed=0):
    """Right-padded input_ids (padding = the pad token) and attention_mask."""
    rng = np.random.default_rng(seed)
    lengths = np.array(CHOICE_LENGTHS if task == "multiple_choice" else LENGTHS)
    mask = (np.arange(lengths.max()) < lengths[..., None]).astype(np.int32)
    pad = FAMILIES[family][2].get("pad_token_id", 0)
    ids = rng.integers(pad + 2, 97, mask.shape)  # never the pad token at a real position
    return {"input_ids": np.where(mask == 1, ids, pad), "attention_mask": mask}


def ours(model, params, batch):
    out = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
    if isinstance(out, tuple):
        return {k: v for k, v in out._asdict().items() if v is not None}
    return {"logits": out}


def theirs(hf_model, task, batch):
    out = hf_model(**{k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()})
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


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_matches_transformers_both_ways(family, task, tmp_path):
    hf_model = random_hf_model(family, task, seed=len(task))
    hf_model.save_pretrained(tmp_path / "hf")
    batch = random_batch(family, task)

    model, params = jaxformer.from_pretrained(tmp_path / "hf", task=task)
    assert families.task_of(model) == task
    assert model.config.model_type == family.removesuffix("-sinusoidal")
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
    print(f"{family} {task}: HF->ours {loaded:.2e}, ours->HF {saved:.2e}")
    assert loaded < TOL and saved < TOL


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_layer_matches(family, tmp_path):
    hf_model = random_hf_model(family, "base")
    hf_model.save_pretrained(tmp_path)
    batch = random_batch(family, "base")
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    _, state = model.apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], mutable=["intermediates"]
    )
    mine = state["intermediates"]["hidden_states"]
    reference = hf_model(
        **{k: torch.tensor(v) for k, v in batch.items()}, output_hidden_states=True
    ).hidden_states
    assert len(mine) == len(reference) == 3
    mask = batch["attention_mask"].astype(bool)
    for i, (a, b) in enumerate(zip(mine, reference, strict=True)):
        diff = float(np.abs(np.asarray(a) - b.numpy())[mask].max())
        print(f"{family} hidden state {i}: {diff:.2e}")
        assert diff < TOL, i


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bfloat16_is_finite_and_close_to_float32(family, tmp_path):
    random_hf_model(family, "masked_lm").save_pretrained(tmp_path)
    batch = random_batch(family, "masked_lm")
    f32, p32 = jaxformer.from_pretrained(tmp_path, task="base")
    bf16, p16 = jaxformer.from_pretrained(tmp_path, task="base", dtype="bfloat16")
    a = ours(f32, p32, batch)["sequence_output"]
    b = ours(bf16, p16, batch)["sequence_output"]
    assert b.dtype == jnp.bfloat16 and np.isfinite(np.asarray(b, np.float32)).all()
    mask = batch["attention_mask"].astype(bool)
    diff = float(np.abs(np.asarray(a) - np.asarray(b, np.float32))[mask].max())
    print(f"{family} bfloat16 vs float32: {diff:.2e}")
    assert diff < BF16_TOL


def test_unknown_model_type_names_the_supported_ones(tmp_path):
    random_hf_model("roberta", "base").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"model_type": "electra"}))
    with pytest.raises(
        CheckpointError,
        match=r"model_type='electra' is not a BERT-family .* \('bert', 'roberta', "
        r"'xlm-roberta', 'distilbert', 'deberta-v2'\)",
    ):
        jaxformer.from_pretrained(tmp_path, task="base")


def test_unsupported_task_of_a_family_names_its_tasks(tmp_path, monkeypatch):
    random_hf_model("distilbert", "base").save_pretrained(tmp_path)
    family = families.FAMILIES["distilbert"]
    models = {k: v for k, v in family.models.items() if k != "multiple_choice"}
    monkeypatch.setitem(families.FAMILIES, "distilbert", family._replace(models=models))
    with pytest.raises(ValueError, match=r"'distilbert' has no 'multiple_choice' model.*'base'"):
        jaxformer.from_pretrained(tmp_path, task="multiple_choice")
    with pytest.raises(ValueError, match="task='nsp'; choose one of"):
        jaxformer.from_pretrained(tmp_path, task="nsp")


def test_changed_sinusoidal_table_is_refused(tmp_path):
    """A sinusoidal DistilBERT whose stored table is not the sinusoid cannot load silently."""
    hf_model = random_hf_model("distilbert-sinusoidal", "base")
    hf_model.embeddings.position_embeddings.weight.add_(0.01)
    hf_model.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not the fixed table.*position_embedding_type="):
        jaxformer.from_pretrained(tmp_path, task="base")
    model, params = jaxformer.from_pretrained(
        tmp_path, task="base", position_embedding_type="absolute"
    )
    assert "position" in params["embeddings"]


def test_distilbert_takes_zero_token_types_only(tmp_path):
    random_hf_model("distilbert", "base").save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    batch = random_batch("distilbert", "base")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    plain = model.apply({"params": params}, ids, mask).sequence_output
    zeros = model.apply({"params": params}, ids, mask, np.zeros_like(ids)).sequence_output
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(zeros))
    with pytest.raises(ValueError, match=r"token_type_ids holds 0\.\.1.*type_vocab_size=0"):
        model.apply({"params": params}, ids, mask, (ids > 50).astype(np.int32))
    jax.jit(model.apply)({"params": params}, ids, mask, np.zeros_like(ids))  # traced: unchecked
