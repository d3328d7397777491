"""Sequence classification on the user's own files, in each format and problem type: training
runs and its loss falls, eval writes the problem's metrics, predict writes a file of the rows
and their predictions, and the export loads in transformers' AutoModelForSequenceClassification
with the same outputs, problem_type and id2label."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from helpers import set_fields

from jaxformer.testing import fake_pair_rows, fake_text_rows
from jaxformer.training import evaluate, loop

SINGLE, MULTI, REGRESSION = (
    "single_label_classification",
    "multi_label_classification",
    "regression",
)


def write_rows(path, columns: dict) -> str:
    """Write columns to `path` in the format its extension names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns)
    if path.suffix in (".csv", ".tsv"):
        options = pa_csv.WriteOptions(delimiter="\t" if path.suffix == ".tsv" else ",")
        pa_csv.write_csv(table, path, write_options=options)
    elif path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    return str(path)


def split_rows(columns: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop] for k, v in columns.items()}


def file_config(experiment_configs, cache, **changes):
    c = experiment_configs.tiny.get_config()
    c.data.cache_dir = str(cache)
    c.label_names = None
    c.num_epochs, c.log_every, c.eval_every, c.checkpoint_every = 8.0, 10, 60, 60
    c.optimizer.learning_rate = 5e-3
    c.export_dir = "hf"
    return set_fields(c, changes)


# Each case: (problem type, rows, train file(s) written as, extra config)
CASES = {
    "single-csv-shards": (SINGLE, ".csv", {}),
    "multi-jsonl": (MULTI, ".jsonl", {}),
    "regression-parquet": (REGRESSION, ".parquet", {}),
    "pairs-tsv": ("pairs", ".tsv", {"data.text_column": "premise"}),
}


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, tmp_path_factory, cache, experiment_configs):
    kind, suffix, extra = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    if kind == "pairs":
        rows = fake_pair_rows(400, seed=0)
        extra = extra | {"data.text_pair_column": "hypothesis"}
    else:
        rows = fake_text_rows(kind, 400, seed=0)
    if kind == SINGLE:  # a glob of two shards
        write_rows(root / f"train-0{suffix}", split_rows(rows, 0, 150))
        write_rows(root / f"train-1{suffix}", split_rows(rows, 150, 300))
        train = str(root / f"train-*{suffix}")
    else:
        train = write_rows(root / f"train{suffix}", split_rows(rows, 0, 300))
    test = write_rows(root / f"test{suffix}", split_rows(rows, 300, 400))
    config = file_config(experiment_configs, cache, **extra, **{"data.train_file": train})
    config.data.test_file = test
    workdir = root / "run"
    loop.train_and_evaluate(config, workdir)
    return kind, workdir, test, rows


def test_trains_evaluates_and_exports(trained, read_metrics):
    kind, workdir, test, _ = trained
    train = read_metrics(workdir, "train")
    assert np.mean([r["loss"] for r in train[-3:]]) < 0.5 * train[0]["loss"]
    saved = json.loads((workdir / "config.json").read_text())
    m = evaluate.evaluate_split(workdir, "test")
    assert m["examples"] == 100
    if kind == REGRESSION:
        assert saved["problem_type"] == REGRESSION and saved["label_names"] is None
        assert m["pearson"] > 0.8 and {"mse", "spearman"} <= set(m)
    elif kind == MULTI:
        assert saved["problem_type"] == MULTI
        assert saved["label_names"] == ["billing", "bug", "praise"]
        assert m["micro_f1"] > 0.8 and {"macro_f1", "exact_match"} <= set(m)
    else:
        assert saved["problem_type"] == SINGLE
        assert m["accuracy"] > 0.8 and {"macro_f1", "mcc"} <= set(m)
        names = ["contradiction", "entailment"] if kind == "pairs" else ["billing", "bug", "praise"]
        assert saved["label_names"] == names
        assert {f"{n}_f1" for n in names} <= set(m)
    # best/ holds the validation step of the best value of the problem's main metric.
    selection = {REGRESSION: "pearson", MULTI: "micro_f1"}.get(kind, "accuracy")
    validation = read_metrics(workdir, "validation")
    best = max(validation, key=lambda r: (r[selection], -r["step"]))["step"]
    assert [p.name for p in (workdir / "best").iterdir() if p.name.isdigit()] == [str(best)]


def test_the_export_equals_transformers(trained):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    kind, workdir, test, rows = trained
    exported = json.loads((workdir / "hf" / "config.json").read_text())
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(workdir / "hf").eval()
    expected_type = SINGLE if kind == "pairs" else kind
    assert hf.config.problem_type == expected_type == exported["problem_type"]
    if kind == REGRESSION:
        assert hf.config.num_labels == 1
    else:
        assert (
            list(hf.config.id2label.values())
            == json.loads((workdir / "config.json").read_text())["label_names"]
        )
    config, tokenizer, model, params, _ = evaluate.load_trained(hf_dir=workdir / "hf")
    if kind == "pairs":
        texts, pairs = rows["premise"][300:308], rows["hypothesis"][300:308]
    else:
        texts, pairs = rows["text"][300:308], None
    enc = tokenizer(texts, pairs=pairs)
    ours = np.asarray(model.apply({"params": params}, *enc.values()))
    with torch.no_grad():
        theirs = hf(**{k: torch.as_tensor(v).long() for k, v in enc.items()}).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_predict_writes_the_rows_and_their_predictions(trained, run_script, tmp_path):
    kind, workdir, test, rows = trained
    out = tmp_path / "predictions.jsonl"
    r = run_script(
        "-m",
        "jaxformer.predict",
        f"--workdir={workdir}",
        f"--input_file={test}",
        f"--output_file={out}",
    )
    assert r.returncode == 0, r.stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 100
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left
    first = written[0]
    text_column = "premise" if kind == "pairs" else "text"
    assert first[text_column] == rows[text_column][300]
    if kind == REGRESSION:
        predicted = np.array([row["prediction"] for row in written])
        assert np.corrcoef(predicted, rows["label"][300:400])[0, 1] > 0.8
    elif kind == MULTI:
        right = [set(row["prediction"].split("|")) == set(row["label"]) for row in written]
        assert np.mean(right) > 0.7
        assert set(json.loads(first["probabilities"])) == {"billing", "bug", "praise"}
    else:
        assert np.mean([row["prediction"] == row["label"] for row in written]) > 0.8
        assert 0.0 <= first["probability"] <= 1.0
