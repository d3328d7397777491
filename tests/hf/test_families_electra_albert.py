"""The ELECTRA and ALBERT families, every task, both ways: a random transformers model of odd
shapes (embeddings narrower than the hidden width; ALBERT in one group of two layers and in three
groups of one) loaded by `jaxformer.from_pretrained` matches it at real tokens;
`jaxformer.save_pretrained` writes a folder transformers' AutoModelFor<Task> loads with nothing
missing or unexpected, and that matches too. Then every layer's hidden states, ALBERT's shared
parameters held once per group, and bfloat16. PyTorch and transformers are the reference, used
only here."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxformer
from jaxformer import families

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
# bfloat16 keeps 8 bits: about 0.4% of each O(1) activation, compounded over up to six layer
# applications (ALBERT's three layers of a two-layer group); about 0.05 is seen.
BF16_TOL = 0.15
# Odd, non-default shapes, so a transposed or mis-split tensor cannot go unnoticed; embeddings
# 20 wide under a hidden width of 36, so the projections and the MLM heads' widths are exercised.
SHAPES = dict(
    vocab_size=97,
    embedding_size=20,
    hidden_size=36,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=50,
    max_position_embeddings=40,
    initializer_range=0.2,  # O(1) pre-activations in the heads, where the GELUs part
)
# The heads' exact GELU (ELECTRA's classification, summary and generator heads) differs from
# hidden_act's tanh GELU, so a head that took hidden_act would not match.
ELECTRA_SHAPES = SHAPES | {"hidden_act": "gelu_new"}
# name: (transformers config class, class name stem, config fields)
FAMILIES = {
    "electra": ("ElectraConfig", "Electra", ELECTRA_SHAPES),
    "albert": ("AlbertConfig", "Albert", SHAPES | {"num_hidden_groups": 1, "inner_group_num": 2}),
    "albert-3-groups": (
        "AlbertConfig",
        "Albert",
        SHAPES | {"num_hidden_groups": 3, "inner_group_num": 1},
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
    "pretraining": ("ForPreTraining", "AutoModelForPreTraining", 2),  # ELECTRA's only
}
CASES = [
    (family, task)
    for family in FAMILIES
    for task in TASKS
    if task != "pretraining" or family == "electra"
]
LENGTHS = (13, 8, 4, 1)  # a padded batch of uneven lengths
CHOICE_LENGTHS = ((9, 6, 2), (4, 11, 7))  # (b=2, choices=3)


@pytest.fixture(autouse=True, scope="module")
def _torch_inference():
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(previous)


def random_hf_model(family, task, seed=0, **changes):
    """A transformers model with every learned weight perturbed, eval mode, eager attention."""
    config_class, stem, fields = FAMILIES[family]
    suffix, _, num_labels = TASKS[task]
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**fields | changes, num_labels=num_labels)
    config._attn_implementation = "eager"
    model = getattr(transformers, stem + suffix)(config).eval()
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
    return model


def random_batch(task, seed=0):
    """Right-padded input_ids (padding = the pad token, 0) and attention_mask."""
    rng = np.random.default_rng(seed)
    lengths = np.array(CHOICE_LENGTHS if task == "multiple_choice" else LENGTHS)
    mask = (np.arange(lengths.max()) < lengths[..., None]).astype(np.int32)
    ids = rng.integers(2, 97, mask.shape)  # never the pad token at a real position
    return {"input_ids": np.where(mask == 1, ids, 0), "attention_mask": mask}


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


@pytest.mark.parametrize("family, task", CASES)
def test_family_matches_transformers_both_ways(family, task, tmp_path):
    hf_model = random_hf_model(family, task, seed=len(task))
    hf_model.save_pretrained(tmp_path / "hf")
    batch = random_batch(task)

    model, params = jaxformer.from_pretrained(tmp_path / "hf", task=task)
    assert families.task_of(model) == task
    assert model.config.model_type == family.removesuffix("-3-groups")
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


@pytest.mark.parametrize(
    "family, changes",
    [
        ("electra", {}),
        ("electra", {"embedding_size": 36}),  # equal widths: no embeddings_project
        ("albert", {}),
        ("albert-3-groups", {}),
    ],
)
def test_every_layer_matches(family, changes, tmp_path):
    hf_model = random_hf_model(family, "base", **changes)
    hf_model.save_pretrained(tmp_path)
    batch = random_batch("base")
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    assert ("project" in params["embeddings"]) == (family != "electra" or not changes)
    _, state = model.apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], mutable=["intermediates"]
    )
    mine = state["intermediates"]["hidden_states"]
    reference = hf_model(
        **{k: torch.tensor(v) for k, v in batch.items()}, output_hidden_states=True
    ).hidden_states
    c = model.config
    assert len(mine) == len(reference) == 1 + c.num_hidden_layers * c.inner_group_num
    mask = batch["attention_mask"].astype(bool)
    for i, (a, b) in enumerate(zip(mine, reference, strict=True)):
        diff = float(np.abs(np.asarray(a) - b.numpy())[mask].max())
        print(f"{family} {changes} hidden state {i}: {diff:.2e}")
        assert diff < TOL, i


@pytest.mark.parametrize(
    "family, scopes",
    [
        ("albert", {"group_0_layer_0", "group_0_layer_1"}),
        ("albert-3-groups", {"group_0_layer_0", "group_1_layer_0", "group_2_layer_0"}),
    ],
)
def test_albert_holds_each_group_once(family, scopes, tmp_path):
    """One copy of each group's layers, however many layers apply it; the HF group tensors map
    one to one onto it and back."""
    hf_model = random_hf_model(family, "masked_lm")
    hf_model.save_pretrained(tmp_path / "hf")
    model, params = jaxformer.from_pretrained(tmp_path / "hf", task="masked_lm")
    assert set(params["albert"]) == {"embeddings"} | scopes
    groups = {
        k for k in hf_model.state_dict() if k.startswith("albert.encoder.albert_layer_groups")
    }
    mine = {k for k in jaxformer.hf.convert.params_to_hf(model, params) if k in groups}
    assert mine == groups and len(groups) == 16 * len(scopes)
    w = hf_model.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn.weight.numpy()
    np.testing.assert_array_equal(np.asarray(params["albert"]["group_0_layer_0"]["mlp"]["w1"]), w.T)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bfloat16_is_finite_and_close_to_float32(family, tmp_path):
    random_hf_model(family, "masked_lm").save_pretrained(tmp_path)
    batch = random_batch("masked_lm")
    f32, p32 = jaxformer.from_pretrained(tmp_path, task="base")
    bf16, p16 = jaxformer.from_pretrained(tmp_path, task="base", dtype="bfloat16")
    a = ours(f32, p32, batch)["sequence_output"]
    b = ours(bf16, p16, batch)["sequence_output"]
    assert b.dtype == jnp.bfloat16 and np.isfinite(np.asarray(b, np.float32)).all()
    mask = batch["attention_mask"].astype(bool)
    diff = float(np.abs(np.asarray(a) - np.asarray(b, np.float32))[mask].max())
    print(f"{family} bfloat16 vs float32: {diff:.2e}")
    assert diff < BF16_TOL


def test_electra_checkpoint_of_the_discriminator_loads_for_a_task(tmp_path):
    """An ElectraForPreTraining folder (as google/electra-*-discriminator are saved) gives a task
    model its encoder and a fresh head."""
    hf_model = random_hf_model("electra", "pretraining")
    hf_model.save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="classification", num_labels=3)
    batch = random_batch("classification")
    assert ours(model, params, batch)["logits"].shape == (4, 3)
    hidden = hf_model.electra(
        **{k: torch.tensor(v) for k, v in batch.items()}
    ).last_hidden_state.numpy()
    base, base_params = jaxformer.from_pretrained(tmp_path, task="base")
    mine = np.asarray(ours(base, base_params, batch)["sequence_output"])
    mask = batch["attention_mask"].astype(bool)
    assert float(np.abs(mine - hidden)[mask].max()) < TOL
