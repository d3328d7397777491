"""The RoBERTa, XLM-R and DistilBERT families, every task, both ways: a random transformers
model of odd shapes loaded by `jaxformer.from_pretrained` matches it at real tokens;
`jaxformer.save_pretrained` writes a folder transformers' AutoModelFor<Task> loads with nothing
missing or unexpected, and that matches too. Then every layer's hidden states, bfloat16, and the
errors for a model_type or task jaxformer does not hold. PyTorch and transformers are the
reference, used only here (through tests/hf_parity.py)."""

import json

import hf_parity
import jax
import numpy as np
import pytest

import jaxformer
from jaxformer import families
from jaxformer.hf import CheckpointError

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
# name: (transformers class name stem, config fields)
FAMILIES = {
    "roberta": ("Roberta", ROBERTA_SHAPES),
    "xlm-roberta": ("XLMRoberta", ROBERTA_SHAPES),
    "distilbert": ("DistilBert", DISTILBERT_SHAPES),
    "distilbert-sinusoidal": ("DistilBert", DISTILBERT_SHAPES | {"sinusoidal_pos_embds": True}),
}


def random_hf_model(family, task, seed=0):
    """A transformers model with every learned weight perturbed (not a fixed sinusoid)."""
    stem, fields = FAMILIES[family]
    keep = "position_embeddings" if fields.get("sinusoidal_pos_embds") else None
    return hf_parity.random_hf_model(stem, fields, task, seed, keep=keep)


def random_batch(family, task):
    """Right-padded with the family's pad token, which no real position holds."""
    pad = FAMILIES[family][1].get("pad_token_id", 0)
    return hf_parity.random_batch(task, pad=pad, low=pad + 2)


@pytest.mark.parametrize("task", hf_parity.TASKS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_matches_transformers_both_ways(family, task, tmp_path):
    hf_model = random_hf_model(family, task, seed=len(task))
    batch = random_batch(family, task)
    model, _ = hf_parity.assert_matches_both_ways(hf_model, task, batch, tmp_path, family)
    assert model.config.model_type == family.removesuffix("-sinusoidal")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_layer_matches(family, tmp_path):
    hf_model = random_hf_model(family, "base")
    hf_model.save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    batch = random_batch(family, "base")
    hf_parity.assert_every_layer_matches(model, params, hf_model, batch, 3, family)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bfloat16_is_finite_and_close_to_float32(family, tmp_path):
    random_hf_model(family, "masked_lm").save_pretrained(tmp_path)
    hf_parity.assert_bfloat16_close(tmp_path, random_batch(family, "masked_lm"), family)


def test_unknown_model_type_names_the_supported_ones(tmp_path):
    random_hf_model("roberta", "base").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"model_type": "gpt2"}))
    with pytest.raises(
        CheckpointError,
        match=r"model_type='gpt2' is not a BERT-family .* \('bert', 'roberta', "
        r"'xlm-roberta', 'distilbert'",
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
