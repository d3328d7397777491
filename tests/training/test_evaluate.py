"""Evaluation and prediction from a workdir: clear errors for what is missing or unknown, and
the prediction command line."""

import dataclasses
import json

import pytest

from jaxformer.models.config import BertConfig
from jaxformer.training import config as base_config
from jaxformer.training import evaluate

MODEL_CONFIG = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


def test_eval_of_a_workdir_without_checkpoint_is_a_clear_error(tmp_path, make_config, run_script):
    r = run_script("eval.py", "--workdir", str(tmp_path))
    assert r.returncode != 0
    assert "not a training workdir" in r.stderr
    (tmp_path / "config.json").write_text(make_config().to_json())
    (tmp_path / "model_config.json").write_text(json.dumps(MODEL_CONFIG))
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        evaluate.load_trained(tmp_path)


def test_workdir_config_is_read_over_the_defaults(tmp_path, make_config):
    saved = make_config(batch_size=4).to_dict()
    del saved["optimizer"]  # a field the file lacks takes today's default
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = evaluate.load_workdir_config(tmp_path)
    assert config.batch_size == 4
    assert config.optimizer.to_dict() == base_config.get_config().optimizer.to_dict()


def test_unknown_field_in_a_workdir_config_names_it_and_the_file(tmp_path, make_config):
    saved = make_config().to_dict()
    saved["data"]["max_lenght"] = 64
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"'data.max_lenght' in .*config\.json"):
        evaluate.load_workdir_config(tmp_path)


def test_predict_cli(trained_workdir, run_script):
    r = run_script(
        "-m",
        "jaxformer.predict",
        "--workdir",
        str(trained_workdir),
        "--checkpoint",
        "latest",
        "a wonderful superb film",
        "awful boring",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all(x.split("\t")[0] in ("pos", "neg") for x in lines)


# A run's model_config.json as runs wrote it when BertConfig was flat (one field per mechanism)
# and spelled activations as Hugging Face does: each reads as the config of the same checkpoint.
FLAT_MODEL_CONFIGS = {
    "deberta-v2": (
        dict(
            relative_attention=True,
            max_relative_positions=32,
            position_buckets=16,
            pos_att_type=["p2c", "c2p"],
            share_att_key=True,
            norm_rel_ebd="layer_norm",
            hidden_act="gelu_new",
            global_attn_every_n_layers=1,
            num_hidden_groups=1,
            inner_group_num=1,
        ),
        dict(
            relative_attention=True,
            max_relative_positions=32,
            position_buckets=16,
            pos_att_type=["p2c", "c2p"],
            share_att_key=True,
            norm_rel_ebd="layer_norm",
            hidden_act="gelu_new",
        ),
    ),
    "modernbert": (
        dict(
            position_embedding_type="rotary",
            global_rope_theta=100.0,
            local_rope_theta=20.0,
            local_attention=8,
            global_attn_every_n_layers=2,
            attention_bias=False,
            mlp_bias=True,
            norm_bias=False,
            classifier_bias=False,
            decoder_bias=True,
            relative_attention=False,
            pre_layer_norm=True,
            type_vocab_size=0,
        ),
        dict(
            global_rope_theta=100.0,
            local_rope_theta=20.0,
            local_attention=8,
            global_attn_every_n_layers=2,
            mlp_bias=True,
        ),
    ),
    "albert": (
        dict(num_hidden_groups=2, inner_group_num=1, embedding_size=8, hidden_act="gelu_new"),
        dict(num_hidden_groups=2, inner_group_num=1, embedding_size=8),
    ),
}


@pytest.mark.parametrize("model_type", list(FLAT_MODEL_CONFIGS))
def test_a_flat_model_config_json_reads_as_its_config(model_type, tmp_path):
    flat, hf = FLAT_MODEL_CONFIGS[model_type]
    shapes = dict(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
    )
    (tmp_path / "model_config.json").write_text(
        json.dumps(dict(model_type=model_type, **shapes, **flat))
    )
    got = evaluate.read_model_config(tmp_path / "model_config.json")
    want = BertConfig.from_hf(dict(model_type=model_type, **shapes, **hf))
    want = want.replace(
        **{
            k: getattr(got, k)
            for k in (
                "layer_norm_eps",
                "hidden_dropout_prob",
                "attention_probs_dropout_prob",
                "classifier_dropout",
                "pad_token_id",
                "bos_token_id",
                "eos_token_id",
                "cls_token_id",
                "sep_token_id",
                "max_position_embeddings",
                "type_vocab_size",
                "embedding_size",
            )
        }
    )
    assert got == want
    (tmp_path / "model_config.json").write_text(json.dumps(dataclasses.asdict(want)))
    assert evaluate.read_model_config(tmp_path / "model_config.json") == want
