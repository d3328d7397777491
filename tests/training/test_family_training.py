"""The training pipeline takes any family: a random checkpoint of each, written by transformers,
fine-tunes on the tiny archive through `--config.model.checkpoint=<folder>` and its loss falls;
the export is the family's transformers classifier with IMDB's label names."""

import json

import pytest

from jaxformer import families
from jaxformer.training import loop

transformers = pytest.importorskip("transformers")

# Small random models of each family, in transformers' own config fields. The vocabulary is the
# MiniLM tokenizer's (the tiny config's), [PAD] = 0.
SHAPE = dict(vocab_size=30522, pad_token_id=0, num_labels=2)
FAMILY_CONFIGS = {
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "roberta": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=80,  # positions start after the pad id
        type_vocab_size=1,
    ),
    "distilbert": dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64),
    "electra": dict(
        embedding_size=24,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    ),
    "camembert": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=80,
        type_vocab_size=1,
    ),
    "mpnet": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=80,  # positions start after id 1, MPNet's padding_idx
    ),
    "deberta": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        relative_attention=True,
        max_relative_positions=16,
        pos_att_type=["c2p", "p2c"],
        type_vocab_size=0,
    ),
    "deberta-v2": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        relative_attention=True,
        position_buckets=16,
        max_relative_positions=32,
        pos_att_type=["p2c", "c2p"],
        share_att_key=True,
        norm_rel_ebd="layer_norm",
        position_biased_input=False,
        type_vocab_size=0,
    ),
    "modernbert": dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        global_attn_every_n_layers=2,
        local_attention=16,
        max_position_embeddings=128,
        bos_token_id=101,
        eos_token_id=102,
        cls_token_id=101,
        sep_token_id=102,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("model_type", sorted(set(FAMILY_CONFIGS) & set(families.FAMILIES)))
def test_each_family_fine_tunes_from_a_checkpoint_folder(
    model_type, tmp_path, make_config, read_metrics
):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    hf_config = transformers.AutoConfig.for_model(model_type, **SHAPE, **FAMILY_CONFIGS[model_type])
    hf_model = transformers.AutoModelForSequenceClassification.from_config(hf_config)
    hf_model.save_pretrained(tmp_path / "checkpoint")

    config = make_config(num_epochs=10.0, log_every=6, eval_every=1000, export_dir="hf")
    config.model.checkpoint = str(tmp_path / "checkpoint")
    config.model.overrides.hidden_dropout_prob = 0.0
    config.model.overrides.attention_probs_dropout_prob = 0.0
    loop.train_and_evaluate(config, tmp_path / "run")

    losses = [row["loss"] for row in read_metrics(tmp_path / "run", "train")]
    assert losses[-1] < losses[0] - 0.1, losses
    exported = json.loads((tmp_path / "run" / "hf" / "config.json").read_text())
    assert exported["model_type"] == model_type
    assert exported["architectures"] == [type(hf_model).__name__]
    assert exported["id2label"] == {"0": "neg", "1": "pos"}
