"""CamemBERT, every task, both ways: a random transformers Camembert<Task> of odd shapes loaded by
`jaxformer.from_pretrained` matches it at real tokens, and `jaxformer.save_pretrained` writes a
folder transformers' AutoModelFor<Task> loads as Camembert<Task> with nothing missing or
unexpected, which matches too; then every layer's hidden states and the embedding model. Its
modules are RoBERTa's: only its model_type, class names and tokenizer are its own."""

import json

import hf_parity
import pytest

import jaxformer

transformers = pytest.importorskip("transformers")

# Odd shapes, unlike RoBERTa's test's, so a transposed or mis-split tensor cannot go unnoticed.
SHAPES = dict(
    vocab_size=101,
    hidden_size=28,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=44,
    type_vocab_size=1,
    max_position_embeddings=36,
    pad_token_id=1,
)


def random_batch(task):
    return hf_parity.random_batch(task, pad=1, low=3)


@pytest.mark.parametrize("task", hf_parity.TASKS)
def test_camembert_matches_transformers_both_ways(task, tmp_path):
    hf_model = hf_parity.random_hf_model("Camembert", SHAPES, task, seed=len(task))
    model, _ = hf_parity.assert_matches_both_ways(
        hf_model, task, random_batch(task), tmp_path, "camembert"
    )
    assert model.config.model_type == "camembert"
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["model_type"] == "camembert"
    assert saved["architectures"][0].startswith("Camembert")


def test_every_layer_matches(tmp_path):
    hf_model = hf_parity.random_hf_model("Camembert", SHAPES, "base")
    hf_model.save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    batch = random_batch("base")
    hf_parity.assert_every_layer_matches(model, params, hf_model, batch, 4, "camembert")
