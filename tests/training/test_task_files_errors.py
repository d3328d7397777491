"""Bad rows in the user's files: each is one error naming the file, row and column before
anything in the workdir is written, or with data.skip_bad_rows a count of the rows left out;
the token cache is keyed by the file's content and survives what is put in its place."""

import json
import logging

import numpy as np
import pytest

from jaxformer.data.sources import DataError
from jaxformer.testing import fake_text_rows
from jaxformer.training import loop

GOOD = fake_text_rows("single_label_classification", 60, seed=3)


def csv_text(rows: list[tuple]) -> str:
    return "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)


def good_rows(n=40, offset=0) -> list[tuple]:
    return [
        (GOOD["text"][i].replace("\n", " ").replace('"', "").replace(",", ""), GOOD["label"][i])
        for i in range(offset, offset + n)
    ]


@pytest.fixture
def files_config(make_config):
    def make(train, validation=None, **changes):
        files = {"data.train_file": str(train)}
        files["data.validation_file"] = str(validation) if validation else None
        steps = dict(num_train_steps=2, eval_every=2, checkpoint_every=2)
        return make_config(**steps, **files, **changes)

    return make


def fails(config, workdir, *words):
    """Training raises one DataError line holding `words`, and writes nothing in the workdir
    but its lock file."""
    with pytest.raises(DataError) as e:
        loop.train_and_evaluate(config, workdir)
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert {p.name for p in workdir.iterdir()} <= {"train.lock"}
    return message


@pytest.mark.parametrize(
    "row, words",
    [
        (("", "bug"), ["row 3", "'text'", "empty"]),
        (("a crash again", ""), ["row 3", "'label'", "no label"]),
    ],
)
def test_an_empty_text_or_label_names_file_row_and_column(tmp_path, files_config, row, words):
    rows = good_rows()
    rows[2] = row
    train = tmp_path / "train.csv"
    train.write_text(csv_text(rows))
    fails(files_config(train), tmp_path / "run", f"{train} row 3", *words[1:])


def test_a_missing_column_lists_the_columns_there_are(tmp_path, files_config):
    train = tmp_path / "train.csv"
    train.write_text(csv_text(good_rows()))
    config = files_config(train, **{"data.label_column": "category"})
    fails(config, tmp_path / "run", "'category'", "['text', 'label']", "label_column")


def test_a_validation_label_training_never_saw(tmp_path, files_config):
    train, validation = tmp_path / "train.csv", tmp_path / "validation.csv"
    train.write_text(csv_text(good_rows()))
    rows = good_rows(10, offset=40)
    rows[4] = (rows[4][0], "refunds")
    validation.write_text(csv_text(rows))
    fails(files_config(train, validation), tmp_path / "run", f"{validation} row 5", "'refunds'")


def test_a_regression_target_that_is_not_a_number(tmp_path, files_config):
    train = tmp_path / "train.jsonl"
    rows = [{"text": f"text {i}", "label": i / 3} for i in range(30)]
    rows[7]["label"] = "high"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = files_config(train, problem_type="regression")
    fails(config, tmp_path / "run", f"{train} row 8", "'high'", "not a number")


def test_unreadable_files(tmp_path, files_config):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text,label\ncaf\xe9 crash,bug\n".encode("latin-1"))
    fails(files_config(bad), tmp_path / "a", str(bad), "byte 14")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    fails(files_config(empty), tmp_path / "b", str(empty), "no rows")
    (tmp_path / "s-0.csv").write_text(csv_text(good_rows(20)))
    (tmp_path / "s-1.csv").write_text("text,category\nx,bug\n")
    fails(files_config(tmp_path / "s-*.csv"), tmp_path / "c", "s-0.csv", "s-1.csv", "category")


def test_skip_bad_rows_leaves_them_out_and_counts_them(tmp_path, files_config, caplog):
    rows = good_rows()
    rows[2], rows[5] = ("", "bug"), ("fine", "")
    train = tmp_path / "train.csv"
    train.write_text(csv_text(rows))
    config = files_config(train, **{"data.skip_bad_rows": True, "data.validation_fraction": 0.0})
    config.data.validation_file = str(train)
    with caplog.at_level(logging.WARNING):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert f"skipped 2 bad rows of {train}" in caplog.text
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["examples"] for r in rows if r["split"] == "validation"] == [38]


def test_the_token_cache_is_keyed_by_the_file_content(tmp_path, files_config, caplog):
    from jaxformer import tasks
    from jaxformer.hf.tokenizer_files import load_tokenizer

    train = tmp_path / "train.csv"
    train.write_text(csv_text(good_rows()))
    config = files_config(train, **{"data.cache_dir": str(tmp_path / "cache")})
    tok = load_tokenizer(config.tokenizer, max_length=64)

    def tokenized():
        return tasks.make(config, tok).splits(("train",))["train"]

    first = tokenized()
    entries = sorted((tmp_path / "cache" / "tokens").iterdir())
    assert len(entries) == 1
    again = tokenized()  # unchanged: read back
    np.testing.assert_array_equal(again.ids, first.ids)
    assert sorted((tmp_path / "cache" / "tokens").iterdir()) == entries
    rows = good_rows()
    rows[0] = ("an edited first row", rows[0][1])
    train.write_text(csv_text(rows))  # edited: tokenized again, another entry
    edited = tokenized()
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 2
    assert not np.array_equal(edited.ids, first.ids)
    # A folder where the entry should be: a warning naming it, and the split from memory.
    [entry] = [p for p in (tmp_path / "cache" / "tokens").iterdir() if p not in entries]
    entry.unlink()
    entry.mkdir()
    with caplog.at_level(logging.WARNING):
        rebuilt = tokenized()
    np.testing.assert_array_equal(rebuilt.ids, edited.ids)
    assert f"could not write the token cache {entry}" in caplog.text
    # A truncated entry is rebuilt.
    [old] = entries
    old.write_bytes(old.read_bytes()[:50])
    train.write_text(csv_text(good_rows()))
    np.testing.assert_array_equal(tokenized().ids, first.ids)
    assert old.stat().st_size > 50


def test_one_error_line_from_the_command_line(tmp_path, train_args, run_script, one_error_line):
    rows = good_rows()
    rows[6] = ("", "bug")
    train = tmp_path / "train.csv"
    train.write_text(csv_text(rows))
    workdir = tmp_path / "run"
    r = run_script(*train_args(workdir, **{"data.train_file": train}))
    assert r.returncode == 1
    one_error_line(r.stderr, f"{train} row 7", "'text'", "skip_bad_rows")
    assert {p.name for p in workdir.iterdir()} <= {"train.lock"}


def test_a_run_on_files_killed_resumes_with_one_metrics_row_per_step(
    tmp_path, train_args, start_script
):
    import signal
    import time

    rows = fake_text_rows("multi_label_classification", 120, seed=4)
    train = tmp_path / "train.jsonl"
    train.write_text(
        "".join(
            json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(*rows.values(), strict=True)
        )
    )
    workdir = tmp_path / "run"
    args = train_args(
        workdir,
        num_train_steps=16,
        log_every=1,
        eval_every=4,
        checkpoint_every=4,
        **{"data.train_file": train},
    )
    proc = start_script(*args, logs=tmp_path / "first")
    deadline = time.monotonic() + 240
    while not (
        (workdir / "checkpoints").is_dir()
        and any(p.name.isdigit() for p in (workdir / "checkpoints").iterdir())
    ):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr_text()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = start_script(*args, logs=tmp_path / "second")
    assert rerun.wait(timeout=300) == 0, rerun.stderr_text()
    assert "resuming from step" in rerun.stderr_text()
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    steps = [r["step"] for r in map(json.loads, lines) if r["split"] == "train"]
    assert steps == list(range(1, 17))
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["problem_type"] == "multi_label_classification"
