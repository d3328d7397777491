"""Extractive question answering through the one training loop, on a SQuAD v2.0 file the test
writes (contexts that take several windows, unanswerable questions): the loss falls, eval
reports exact match and F1, predict prints an answer, and an answer at the wrong offset is one
clear error naming the file and the question."""

import json

import pytest

from jaxformer.testing import write_fake_squad
from jaxformer.training import evaluate, loop


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad")
    return {
        "data.train_file": str(write_fake_squad(root / "train.json", 40, seed=0)),
        "data.validation_file": str(write_fake_squad(root / "dev.json", 8, seed=1)),
    }


@pytest.fixture(scope="module")
def qa_workdir(tmp_path_factory, squad_files, cache, experiment_configs):
    config = experiment_configs.tiny.get_config()
    config.data.cache_dir = str(cache)
    config.task, config.label_names = "question_answering", None
    config.qa.doc_stride, config.qa.version_2 = 16, True
    config.num_epochs, config.log_every, config.eval_every = 4.0, 5, 20
    config.export_dir = "hf"
    for key, value in squad_files.items():
        config.data[key.split(".")[1]] = value
    workdir = tmp_path_factory.mktemp("qa") / "run"
    loop.train_and_evaluate(config, workdir)
    return workdir


def test_question_answering_learns_and_scores_as_squad(qa_workdir, read_metrics):
    train = read_metrics(qa_workdir, "train")
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    m = evaluate.evaluate_split(qa_workdir, "validation")
    assert m["total"] == 32 and m["examples"] > 32  # windows: some contexts take several
    assert 0 <= m["exact_match"] <= m["f1"] <= 100
    assert {"HasAns_exact", "NoAns_exact"} <= set(m)
    exported = json.loads((qa_workdir / "hf" / "config.json").read_text())
    assert exported["architectures"] == ["BertForQuestionAnswering"]
    with pytest.raises(ValueError, match="has the splits .*'validation'.*not 'test'"):
        evaluate.evaluate_split(qa_workdir, "test")


def test_predict_prints_an_answer(qa_workdir, run_script):
    context = "Toyota was founded by Anna White in 1937 . its office is in Rome ."
    r = run_script(
        "-m",
        "jaxformer.predict",
        "--workdir",
        str(qa_workdir),
        "--question",
        "who founded Toyota ?",
        "--context",
        context,
        input=b"",
    )
    assert r.returncode == 0, r.stderr.decode()
    [line] = r.stdout.decode().splitlines()
    answer = line.split("\t")[0]
    assert answer == "(no answer)" or answer in context


def test_an_answer_at_the_wrong_offset_is_one_error(
    tmp_path, squad_files, train_args, run_script, one_error_line
):
    data = json.loads(open(squad_files["data.train_file"]).read())
    qa = data["data"][0]["paragraphs"][1]["qas"][0]
    qa["answers"][0]["answer_start"] += 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    workdir = tmp_path / "run"
    files = squad_files | {"data.train_file": bad}
    r = run_script(*train_args(workdir, task="question_answering", **files))
    assert r.returncode == 1
    one_error_line(r.stderr, str(bad), qa["id"])
    assert not (workdir / "checkpoints").exists()


def test_a_stopped_run_resumes_with_one_metrics_row_per_step(
    tmp_path, squad_files, train_args, run_script, read_metrics
):
    workdir = tmp_path / "run"
    args = dict(task="question_answering", **squad_files, **{"qa.doc_stride": 16})
    for steps in (4, 8):  # the second run resumes at step 4
        r = run_script(*train_args(workdir, num_train_steps=steps, checkpoint_every=4, **args))
        assert r.returncode == 0, r.stderr
    assert "resuming from step 4" in r.stderr
    assert [row["step"] for row in read_metrics(workdir, "train")] == list(range(2, 9, 2))
