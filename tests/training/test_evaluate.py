"""Evaluation and prediction from a workdir: clear errors for what is missing or unknown, and
the prediction command line."""

import json

import pytest

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
