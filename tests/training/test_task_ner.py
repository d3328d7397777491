"""Named-entity recognition through the one training loop, on CoNLL files the test writes: the
loss falls, validation and eval report entity-level F1, the export carries the tag names,
predict prints entities with their character spans, and a malformed file is one clear error."""

import json

import pytest

from jaxformer.testing import write_fake_conll
from jaxformer.training import evaluate, loop


@pytest.fixture(scope="module")
def conll_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("conll")
    return {
        f"data.{split}_file": str(write_fake_conll(root / f"{split}.txt", n, seed))
        for split, n, seed in (("train", 160, 0), ("validation", 40, 1), ("test", 40, 2))
    }


@pytest.fixture(scope="module")
def ner_workdir(tmp_path_factory, conll_files, cache, experiment_configs):
    config = experiment_configs.tiny.get_config()
    config.data.cache_dir = str(cache)
    config.task, config.label_names = "token_classification", None
    config.num_epochs, config.log_every, config.eval_every = 5.0, 5, 20
    config.export_dir = "hf"
    for key, value in conll_files.items():
        config.data[key.split(".")[1]] = value
    workdir = tmp_path_factory.mktemp("ner") / "run"
    loop.train_and_evaluate(config, workdir)
    return workdir


def test_token_classification_learns_entities(ner_workdir, read_metrics):
    train = read_metrics(ner_workdir, "train")
    assert train[-1]["loss"] < train[0]["loss"] / 2
    validation = read_metrics(ner_workdir, "validation")
    assert validation[-1]["f1"] > validation[0]["f1"]
    m = evaluate.evaluate_split(ner_workdir, "test")
    assert m["f1"] > 0.8 and m["token_accuracy"] > 0.9
    assert {"precision", "recall", "PER_f1", "LOC_f1", "ORG_f1"} <= set(m)
    assert json.loads((ner_workdir / "eval_test.json").read_text())["f1"] == m["f1"]
    exported = json.loads((ner_workdir / "hf" / "config.json").read_text())
    assert exported["architectures"] == ["BertForTokenClassification"]
    assert set(exported["label2id"]) == {"O", "B-PER", "I-PER", "B-LOC", "B-ORG"}


def test_predict_prints_entities_with_their_spans(ner_workdir, run_script):
    text = "John Smith visited Paris on Monday."
    r = run_script("-m", "jaxformer.predict", "--workdir", str(ner_workdir), text, input=b"")
    assert r.returncode == 0, r.stderr.decode()
    assert (
        "PER[0:10]='John Smith'" in r.stdout.decode() and "LOC[19:24]='Paris'" in r.stdout.decode()
    )
    _, tokenizer, model, params, _ = evaluate.load_trained(ner_workdir)
    [entities] = evaluate.predict_entities([text], tokenizer, model, params)
    assert [(e.type, e.text) for e in entities] == [("PER", "John Smith"), ("LOC", "Paris")]


def test_a_malformed_conll_line_is_one_error_naming_file_and_line(
    tmp_path, conll_files, train_args, run_script, one_error_line
):
    bad = tmp_path / "bad.txt"
    lines = open(conll_files["data.train_file"]).read().splitlines()
    lines[9] = "Rome NN I-NP X-LOC"  # not an IOB tag
    bad.write_text("\n".join(lines) + "\n")
    workdir = tmp_path / "run"
    files = conll_files | {"data.train_file": bad}
    tags = "('O','B-PER','I-PER','B-LOC','B-ORG')"
    r = run_script(*train_args(workdir, task="token_classification", label_names=tags, **files))
    assert r.returncode == 1
    one_error_line(r.stderr, f"{bad}:10", "X-LOC")
    assert not (workdir / "checkpoints").exists()


def test_bad_input_on_a_trained_workdir_overwrites_nothing(
    ner_workdir, tmp_path, conll_files, run_script, one_error_line
):
    def files():  # train.lock is taken and let go by every run
        return {p: p.stat().st_mtime_ns for p in ner_workdir.rglob("*") if p.name != "train.lock"}

    before = files()
    bad = tmp_path / "bad.txt"
    bad.write_text("John NN I-NP B-PER\nSmith\n")  # the second line has no tag column
    r = run_script(
        "train.py",
        "--config",
        "configs/conll_ner_cpu.py",
        "--workdir",
        str(ner_workdir),
        f"--config.data.train_file={bad}",
        f"--config.data.validation_file={conll_files['data.validation_file']}",
    )
    assert r.returncode == 1
    one_error_line(r.stderr, f"{bad}:2")
    assert files() == before
