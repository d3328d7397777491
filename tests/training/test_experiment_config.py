"""The experiment defaults and reading a saved config back onto them."""

import json

import pytest

from jaxformer import tasks
from jaxformer.training import config as base
from jaxformer.training import loop


def test_from_dict_writes_saved_values_over_the_defaults():
    c = base.from_dict(
        {"batch_size": 8, "data": {"buckets": [16, 32], "test_limit": 5}, "export_dir": None},
        source="saved.json",
    )
    assert c.batch_size == 8 and c.data.buckets == (16, 32) and c.data.test_limit == 5
    assert c.export_dir is None
    assert c.data.max_length == base.get_config().data.max_length  # untouched: the default
    assert c.xla_cpu_dots == "auto"


def test_from_dict_replaces_open_sections_whole():
    c = base.from_dict({"model": {"arch": {"hidden_size": 32, "hidden_dropout_prob": 0.0}}}, "x")
    assert c.model.arch.to_dict() == {"hidden_size": 32, "hidden_dropout_prob": 0.0}
    assert c.model.overrides.to_dict() == base.get_config().model.overrides.to_dict()


@pytest.mark.parametrize(
    "values, name",
    [
        ({"learning_rate": 1e-3}, "'learning_rate'"),
        ({"optimizer": {"learnin_rate": 1e-3}}, "'optimizer.learnin_rate'"),
        ({"optimizer": 3}, "'optimizer' .* must be a section"),
    ],
)
def test_from_dict_unknown_or_misplaced_field_names_it_and_the_file(values, name):
    with pytest.raises(ValueError, match=name) as error:
        base.from_dict(values, source="/runs/a/config.json")
    assert "in /runs/a/config.json" in str(error.value)


def test_every_experiment_file_round_trips_through_a_saved_config(tmp_path, experiment_configs):
    for name in vars(experiment_configs):  # every file of configs/
        config = getattr(experiment_configs, name).get_config()
        assert tasks.task_class(config.task).head, name
        workdir = tmp_path / name
        workdir.mkdir()
        loop.save_config(config, workdir)
        text = (workdir / "config.json").read_text()
        back = base.from_dict(json.loads(text), source=name)
        assert back.to_json_best_effort(indent=2, sort_keys=True) == text, name


def test_a_config_saved_with_task_settings_in_data_loads_them_into_their_sections():
    saved = {"task": "question_answering", "data": {"doc_stride": 16, "max_length": 64}}
    saved["mlm"] = {"mask_prob": 0.2}
    config = base.from_dict(saved | {"data": saved["data"] | {"tag_scheme": "IOBES"}}, "old")
    assert (config.qa.doc_stride, config.data.max_length) == (16, 64)
    assert (config.ner.tag_scheme, config.mlm.mask_prob) == ("IOBES", 0.2)
    assert "doc_stride" not in config.data
