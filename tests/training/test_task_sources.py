"""Every task on every source: rows given in Python (a pandas DataFrame, a `datasets.Dataset`
or DatasetDict, a dict of lists), a tfds dataset by name, IMDB written out as CSV (the same
batches as IMDB's own route), NER and QA as JSON Lines in Hugging Face datasets' shapes, and a
masked-LM corpus of text lines."""

import json

import numpy as np
import pytest

from jaxformer import tasks
from jaxformer.data import conll, imdb, squad
from jaxformer.testing import (
    fake_text_rows,
    write_fake_conll,
    write_fake_imdb_archive,
    write_fake_squad,
)
from jaxformer.training import evaluate, loop


@pytest.fixture
def tiny(make_config):
    def make(**changes):
        steps = dict(num_train_steps=4, eval_every=4, checkpoint_every=4, log_every=2)
        return make_config(**(steps | changes))

    return make


def test_rows_from_python_train_and_evaluate(tmp_path, tiny, read_metrics):
    pd = pytest.importorskip("pandas")
    rows = fake_text_rows("single_label_classification", 80, seed=5)
    frame = pd.DataFrame({"ticket": rows["text"], "category": rows["label"]})
    config = tiny(**{"data.text_column": "ticket", "data.label_column": "category"})
    workdir = tmp_path / "run"
    loop.train_and_evaluate(config, workdir, data={"train": frame[:60]})
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["data"]["in_memory"] and saved["label_names"] == ["billing", "bug", "praise"]
    m = evaluate.evaluate_split(workdir, "test", data={"test": frame[60:]})
    assert m["examples"] == 20 and "macro_f1" in m
    # A dict of lists and a datasets.Dataset give the same rows, and so the same batches.
    columns = {"ticket": rows["text"][60:], "category": rows["label"][60:]}
    again = evaluate.evaluate_split(workdir, "test", data={"test": columns})
    assert again["accuracy"] == m["accuracy"] and again["loss"] == m["loss"]
    datasets = pytest.importorskip("datasets")
    dataset = datasets.DatasetDict({"test": datasets.Dataset.from_dict(columns)})
    assert evaluate.evaluate_split(workdir, "test", data=dataset)["loss"] == m["loss"]
    with pytest.raises(ValueError, match="trained on rows given in Python"):
        evaluate.evaluate_split(workdir, "test")


def test_imdb_written_as_csv_gives_the_same_batches_and_metrics(
    tmp_path, cache, make_config, read_metrics
):
    # Real IMDB has no empty review, which a file's row may not be.
    archive = write_fake_imdb_archive(tmp_path / "imdb.tar.gz", 24, seed=1, edge_cases=False)
    builder = imdb.imdb_builder(cache / "tfds", archive)
    for split in ("train", "test"):
        texts, labels = imdb.read_split(builder, split)
        names = np.array(["neg", "pos"])[labels]
        with open(tmp_path / f"{split}.csv", "w", encoding="utf-8") as f:
            f.write("text,label\n")
            for text, label in zip(texts, names, strict=True):
                f.write('"' + text.replace('"', '""') + f'",{label}\n')
    tfds_route = make_config(archive, num_train_steps=6, eval_every=3, label_names=None)
    csv_route = make_config(archive, num_train_steps=6, eval_every=3, label_names=None)
    csv_route.data.train_file = str(tmp_path / "train.csv")
    csv_route.data.test_file = str(tmp_path / "test.csv")
    tok = loop.build_tokenizer(tfds_route)
    ours, theirs = (tasks.make(c, tok) for c in (tfds_route, csv_route))
    assert ours.label_names() == theirs.label_names() == ("neg", "pos")
    for split in ("train", "validation", "test"):
        a, b = ours.splits((split,))[split], theirs.splits((split,))[split]
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        np.testing.assert_array_equal(a.labels, b.labels)
    for config, workdir in ((tfds_route, tmp_path / "tfds"), (csv_route, tmp_path / "csv")):
        loop.train_and_evaluate(config, workdir)

    def losses(workdir):  # what was learnt, step by step (not how fast)
        return [(r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(workdir, "train")]

    assert losses(tmp_path / "tfds") == losses(tmp_path / "csv")
    a, b = (evaluate.evaluate_split(tmp_path / w, "test") for w in ("tfds", "csv"))
    assert (a["accuracy"], a["loss"]) == (b["accuracy"], b["loss"])


def test_a_tfds_dataset_by_name(tmp_path, archive, cache, tiny):
    imdb.imdb_builder(cache / "tfds", archive)  # a prepared imdb_reviews build
    data_dir = next((cache / "tfds").glob("local-*"))
    config = tiny(**{"data.tfds_name": "imdb_reviews/plain_text", "data.data_dir": str(data_dir)})
    task = tasks.make(config, loop.build_tokenizer(config))
    assert task.label_names() == ("neg", "pos")  # its ClassLabel's names
    splits = task.splits(("train", "validation"))  # validation carved from train
    assert len(splits["train"]) + len(splits["validation"]) == 48
    loop.train_and_evaluate(config, tmp_path / "run")
    assert evaluate.evaluate_split(tmp_path / "run", "test")["examples"] == 48


def test_ner_and_qa_from_json_lines(tmp_path, tiny):
    sentences = conll.read_conll(write_fake_conll(tmp_path / "ner.txt", 30))
    names = conll.label_names(sentences)
    with open(tmp_path / "ner.jsonl", "w") as f:
        for i, s in enumerate(sentences):  # tags as ids into label_names, or as strings
            tags = [names.index(t) for t in s.tags] if i % 2 else list(s.tags)
            f.write(json.dumps({"tokens": list(s.words), "ner_tags": tags}) + "\n")
    config = tiny(task="token_classification", label_names=names)
    config.data.train_file = config.data.validation_file = str(tmp_path / "ner.jsonl")
    task = tasks.make(config, loop.build_tokenizer(config))
    read = task.sentences("train")
    assert [(s.words, s.tags) for s in read] == [(s.words, s.tags) for s in sentences]
    loop.train_and_evaluate(config, tmp_path / "ner")
    assert "f1" in evaluate.evaluate_split(tmp_path / "ner", "validation")

    questions = squad.read_squad(write_fake_squad(tmp_path / "squad.json", 6))
    with open(tmp_path / "squad.jsonl", "w") as f:
        for q in questions:
            answers = {"text": [t for t, _ in q.answers], "answer_start": [a for _, a in q.answers]}
            row = {"id": q.id, "question": q.question, "context": q.context, "answers": answers}
            f.write(json.dumps(row) + "\n")
    config = tiny(task="question_answering", **{"qa.version_2": True, "qa.doc_stride": 16})
    config.data.train_file = config.data.validation_file = str(tmp_path / "squad.jsonl")
    task = tasks.make(config, loop.build_tokenizer(config))
    assert task.examples("train") == questions
    loop.train_and_evaluate(config, tmp_path / "qa")
    assert "f1" in evaluate.evaluate_split(tmp_path / "qa", "validation")


def test_masked_lm_on_a_text_corpus(tmp_path, tiny, read_metrics):
    rows = fake_text_rows("single_label_classification", 120, seed=1)
    lines = [t.replace("\n", " ") for t in rows["text"]]
    (tmp_path / "corpus.txt").write_text("\n".join(lines[:60]) + "\n\n" + "\n".join(lines[60:]))
    config = tiny(task="masked_lm", num_train_steps=8)
    config.data.train_file = str(tmp_path / "corpus.txt")
    task = tasks.make(config, loop.build_tokenizer(config))
    splits = task.splits(("train", "validation"))
    assert len(splits["train"]) + len(splits["validation"]) == 120  # the blank line skipped
    loop.train_and_evaluate(config, tmp_path / "mlm")
    validation = read_metrics(tmp_path / "mlm", "validation")
    assert validation and validation[-1]["masked_tokens"] > 0
