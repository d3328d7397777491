"""ModernBERT, every task, both ways: a random transformers ModernBert model of odd shapes (two
kinds of layer, a window shorter than the batch's longest sequence, some biases on) loaded by
`jaxformer.from_pretrained` matches it at real tokens, with "cls" and "mean" pooling;
`jaxformer.save_pretrained` writes a folder transformers' AutoModelFor<Task> loads with nothing
missing or unexpected, and that matches too. Then every layer's hidden states, bfloat16, and
the config.json keys of older transformers. PyTorch and transformers are the reference, used only
here (sdpa attention: transformers' padded path, the window a mask)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import jaxformer
from jaxformer import families

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
BF16_TOL = 0.15  # bfloat16 keeps 8 bits: about 0.4% of each O(1) activation, over 4 layers
VOCAB = 101
# Odd shapes; layers 0 and 3 global, 1 and 2 local with a window of 8 < the longest 20 tokens.
SHAPES = dict(
    vocab_size=VOCAB,
    hidden_size=48,
    num_hidden_layers=4,
    num_attention_heads=3,
    intermediate_size=40,
    global_attn_every_n_layers=3,
    local_attention=8,
    global_rope_theta=1000.0,  # not the default, so swapping the two thetas shows
    local_rope_theta=50.0,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    cls_token_id=1,
    sep_token_id=2,
    norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    classifier_activation="silu",  # another than hidden_activation, so a swap shows
)
# Which biases a model has: none (ModernBERT's default) and, with the other pooling, some.
VARIANTS = {
    "cls": dict(classifier_pooling="cls"),
    "mean": dict(
        classifier_pooling="mean", attention_bias=True, norm_bias=True, classifier_bias=True
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
LENGTHS = (20, 13, 7, 1)  # a padded batch of uneven lengths
CHOICE_LENGTHS = ((17, 6, 2), (9, 20, 11))  # (b=2, choices=3)


@pytest.fixture(autouse=True, scope="module")
def _torch_inference():
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(previous)


def random_hf_model(task, variant="cls", seed=0, **fields):
    """A transformers ModernBert model with every weight perturbed, eval mode, sdpa attention."""
    suffix, _, num_labels = TASKS[task]
    torch.manual_seed(seed)
    config = transformers.ModernBertConfig(
        **SHAPES | VARIANTS[variant] | fields, num_labels=num_labels
    )
    config._attn_implementation = "sdpa"
    model = getattr(transformers, "ModernBert" + suffix)(config).eval()
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
    return model


def random_batch(task, seed=0):
    """Right-padded input_ids (padding = the pad token 0) and attention_mask."""
    rng = np.random.default_rng(seed)
    lengths = np.array(CHOICE_LENGTHS if task == "multiple_choice" else LENGTHS)
    mask = (np.arange(lengths.max()) < lengths[..., None]).astype(np.int32)
    ids = rng.integers(3, VOCAB, mask.shape)
    return {"input_ids": np.where(mask == 1, ids, 0), "attention_mask": mask}


def ours(model, params, batch):
    out = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
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


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("task", list(TASKS))
def test_modernbert_matches_transformers_both_ways(task, variant, tmp_path):
    hf_model = random_hf_model(task, variant, seed=len(task))
    hf_model.save_pretrained(tmp_path / "hf")
    batch = random_batch(task)

    model, params = jaxformer.from_pretrained(tmp_path / "hf", task=task)
    assert families.task_of(model) == task and model.config.model_type == "modernbert"
    assert model.config.classifier_pooling == variant
    loaded = max_diff(task, ours(model, params, batch), theirs(hf_model, task, batch), batch)

    jaxformer.save_pretrained(model, params, tmp_path / "ours")
    _, auto, _ = TASKS[task]
    back, info = getattr(transformers, auto).from_pretrained(
        tmp_path / "ours", output_loading_info=True, attn_implementation="sdpa"
    )
    assert type(back) is type(hf_model)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    assert back.config.layer_types == hf_model.config.layer_types
    assert back.config.rope_parameters == hf_model.config.rope_parameters
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"):
        assert getattr(back.config, name) == getattr(hf_model.config, name) == SHAPES[name], name
    saved = max_diff(task, ours(model, params, batch), theirs(back.eval(), task, batch), batch)
    print(f"modernbert {task} ({variant}): HF->ours {loaded:.2e}, ours->HF {saved:.2e}")
    assert loaded < TOL and saved < TOL


def test_every_layer_matches(tmp_path):
    """transformers' hidden_states are the embeddings, then each layer's output, the last one
    after final_norm (its last_hidden_state); ours are the layers' outputs before it."""
    hf_model = random_hf_model("base", "mean")
    hf_model.save_pretrained(tmp_path)
    batch = random_batch("base")
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    out, state = model.apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], mutable=["intermediates"]
    )
    mine = state["intermediates"]["hidden_states"]
    reference = hf_model(
        **{k: torch.tensor(v) for k, v in batch.items()}, output_hidden_states=True
    ).hidden_states
    assert len(mine) == len(reference) == 5
    mask = batch["attention_mask"].astype(bool)
    for i, (a, b) in enumerate(zip((*mine[:-1], out.sequence_output), reference, strict=True)):
        diff = float(np.abs(np.asarray(a) - b.numpy())[mask].max())
        print(f"modernbert hidden state {i}: {diff:.2e}")
        assert diff < TOL, i


def test_bfloat16_is_finite_and_close_to_float32(tmp_path):
    random_hf_model("masked_lm", "mean").save_pretrained(tmp_path)
    batch = random_batch("masked_lm")
    f32, p32 = jaxformer.from_pretrained(tmp_path, task="base")
    bf16, p16 = jaxformer.from_pretrained(tmp_path, task="base", dtype="bfloat16")
    a = ours(f32, p32, batch)["sequence_output"]
    b = ours(bf16, p16, batch)["sequence_output"]
    assert b.dtype == jnp.bfloat16 and np.isfinite(np.asarray(b, np.float32)).all()
    mask = batch["attention_mask"].astype(bool)
    diff = float(np.abs(np.asarray(a) - np.asarray(b, np.float32))[mask].max())
    print(f"modernbert bfloat16 vs float32: {diff:.2e}")
    assert diff < BF16_TOL


def test_older_config_keys_are_read(tmp_path):
    """Hub configs from before transformers 5 spell the layer pattern and the thetas as
    global_attn_every_n_layers and {global,local}_rope_theta, without layer_types and
    rope_parameters."""
    hf_model = random_hf_model("base", global_attn_every_n_layers=2)
    hf_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["layer_types"], config["rope_parameters"]
    config |= {"global_rope_theta": 1000.0, "local_rope_theta": 50.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    c = model.config
    assert c.layer_types == tuple(hf_model.config.layer_types)
    assert (c.global_rope_theta, c.local_rope_theta) == (1000.0, 50.0)
    batch = random_batch("base")
    diff = max_diff("base", ours(model, params, batch), theirs(hf_model, "base", batch), batch)
    assert diff < TOL


@pytest.mark.parametrize(
    "change, match",
    [
        ({"layer_types": ["sliding_attention"] * 4}, "layer_types=.* is not supported"),
        (
            {"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0}}},
            r"rope_parameters\['full_attention'\]=.* is not supported",
        ),
        ({"classifier_pooling": "max"}, "classifier_pooling='max' is not valid"),
        ({"norm_bias": 1}, "norm_bias=1 is not valid; it must be true or false"),
    ],
)
def test_unsupported_config_is_refused(tmp_path, change, match):
    random_hf_model("base").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(ValueError, match=match):
        jaxformer.from_pretrained(tmp_path, task="base")
