"""jaxformer.data.sources: files, DataFrames, Hugging Face datasets and tfds splits read into
Tables, and each kind of bad input reported as one DataError line naming where it is."""

import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxformer.data import sources, tfds_source
from jaxformer.data.sources import DataError, Table


def raises(match: str):
    return pytest.raises(DataError, match=match)


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    return message


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_csv_quoted_fields_bom_and_text_values(tmp_path):
    path = write(
        tmp_path / "train.csv",
        b'\xef\xbb\xbftext,label\n"a, b\nc",1\nplain,0.5\n,\n"",NA\n',
    )
    table = sources.read_files(path)
    assert table.column_names == ["text", "label"]
    assert table.columns == {
        "text": ["a, b\nc", "plain", "", ""],
        "label": ["1", "0.5", "", "NA"],
    }
    assert table.origins == [(str(path), i) for i in (1, 2, 3, 4)]
    assert table.name == str(path)
    assert len(table) == 4
    assert table.where(1) == f"{path} row 2"


def test_tsv(tmp_path):
    path = write(tmp_path / "dev.tsv", 'sentence\tlabel\nit\'s "great", really\t1\nbad\t0\n')
    table = sources.read_files(str(path))
    assert table.columns == {"sentence": ['it\'s "great", really', "bad"], "label": ["1", "0"]}


def test_json_lines_keep_native_types(tmp_path):
    path = write(
        tmp_path / "train.jsonl",
        '{"tokens": ["a", "b"], "label": 3, "score": 0.5}\n'
        '{"tokens": [], "label": 0, "score": 1.5}\n',
    )
    table = sources.read_files(path)
    assert table.columns == {"tokens": [["a", "b"], []], "label": [3, 0], "score": [0.5, 1.5]}
    assert table.origins == [(str(path), 1), (str(path), 2)]


def test_json_extension_is_json_lines(tmp_path):
    table = sources.read_files(write(tmp_path / "a.json", '{"x": "é"}\n{"x": null}\n'))
    assert table.columns == {"x": ["é", None]}
    with raises("JSON Lines") as e:
        sources.read_files(write(tmp_path / "b.json", '[{"x": 1}, {"x": 2}]'))
    assert str(tmp_path / "b.json") in one_line(e)


def test_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(
        pa.table({"text": ["x", "y"], "label": [1, 0], "ids": [[1, 2], [3]], "p": [0.25, 1.0]}),
        path,
    )
    table = sources.read_files(path)
    assert table.columns == {
        "text": ["x", "y"],
        "label": [1, 0],
        "ids": [[1, 2], [3]],
        "p": [0.25, 1.0],
    }
    assert table.origins == [(str(path), 1), (str(path), 2)]


def test_glob_of_shards_concatenated_in_sorted_order(tmp_path):
    write(tmp_path / "part-1.csv", "text,label\nc,1\n")
    write(tmp_path / "part-0.csv", "text,label\na,0\nb,1\n")
    write(tmp_path / "other.txt", "not a shard\n")
    table = sources.read_files(tmp_path / "part-*.csv")
    first, second = str(tmp_path / "part-0.csv"), str(tmp_path / "part-1.csv")
    assert table.columns == {"text": ["a", "b", "c"], "label": ["0", "1", "1"]}
    assert table.origins == [(first, 1), (first, 2), (second, 1)]
    assert table.where(2) == f"{second} row 1"


def test_shards_with_different_columns(tmp_path):
    write(tmp_path / "a.csv", "text,label\nx,1\n")
    write(tmp_path / "b.csv", "text,y\nx,1\n")
    with raises("different|columns") as e:
        sources.read_files(f"{tmp_path}/*.csv")
    message = one_line(e)
    assert str(tmp_path / "a.csv") in message and str(tmp_path / "b.csv") in message
    assert "['text', 'label']" in message and "['text', 'y']" in message


def test_txt_one_document_per_line(tmp_path):
    path = write(tmp_path / "corpus.txt", "first line\r\n\n   \nsecond, line\nthird")
    table = sources.read_files(path, text_file_column="document")
    assert table.columns == {"document": ["first line", "second, line", "third"]}
    assert table.origins == [(str(path), 1), (str(path), 4), (str(path), 5)]
    assert table.where(1) == f"{path} row 4"


def test_home_directory_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path / "a.txt", "x\n")
    assert sources.read_files("~/a.txt").columns == {"text": ["x"]}


@pytest.mark.parametrize("name", ["bad.csv", "bad.txt", "bad.jsonl"])
def test_not_utf8_reports_byte_offset(tmp_path, name):
    # the 0xff is at byte 16 of the file: a 3-byte BOM, then 13 bytes of text
    data = b"\xef\xbb\xbftext,label\nab\xff,1\n"
    assert data.index(b"\xff") == 16
    path = write(tmp_path / name, data if name != "bad.jsonl" else b'{"t": "ab\xff"}\n')
    with raises("not UTF-8") as e:
        sources.read_files(path)
    message = one_line(e)
    assert message.startswith(f"{path}: not UTF-8 text at byte ")
    assert f"byte {16 if name != 'bad.jsonl' else 9} " in message
    assert "save it as UTF-8" in message


@pytest.mark.parametrize(
    "name, data",
    [
        ("empty.csv", b""),
        ("header_only.csv", b"text,label\n"),
        ("bom_header_only.tsv", b"\xef\xbb\xbftext\tlabel\r\n"),
        ("blank.txt", b"\n  \n\n"),
        ("empty.jsonl", b""),
        ("empty.parquet", b""),
    ],
)
def test_no_rows(tmp_path, name, data):
    path = write(tmp_path / name, data)
    with raises("has no rows") as e:
        sources.read_files(path)
    assert one_line(e) == f"{path} has no rows"


def test_parquet_with_no_rows(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    with raises("has no rows"):
        sources.read_files(path)


def test_csv_row_with_wrong_number_of_fields(tmp_path):
    path = write(tmp_path / "bad.csv", 'text,label\nok,1\n"multi\nline",2,extra\n')
    with raises("Expected 2 columns, got 3") as e:
        sources.read_files(path)
    assert one_line(e).startswith(f"{path}: ")


def test_invalid_json(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"a": 1}\n\n{bad\n')
    with raises("not a JSON object") as e:
        sources.read_files(path)
    assert one_line(e).startswith(f"{path} row 3: ")
    with raises("a JSON list, not an object"):
        sources.read_files(write(tmp_path / "list.jsonl", "[1, 2]\n"))


def test_json_lines_keep_each_value_as_it_is(tmp_path):
    path = write(tmp_path / "mixed.jsonl", '{"y": 1}\n{"y": 2.5}\n{"y": "high", "z": true}\n')
    table = sources.read_files(path)
    assert table.columns == {"y": [1, 2.5, "high"], "z": [None, None, True]}
    assert table.where(2) == f"{path} row 3"


def test_duplicate_header_names(tmp_path):
    with raises("'a' appears more than once") as e:
        sources.read_files(write(tmp_path / "dup.csv", "a,a\n1,2\n"))
    one_line(e)


def test_unsupported_extension(tmp_path):
    path = write(tmp_path / "train.xlsx", b"whatever")
    with raises("unsupported file type '.xlsx'") as e:
        sources.read_files(path)
    message = one_line(e)
    for extension in sources.SUPPORTED_EXTENSIONS:
        assert extension in message
    with raises("unsupported file type '.gz'"):
        sources.read_files(write(tmp_path / "train.csv.gz", b"x"))


def test_missing_file(tmp_path):
    path = tmp_path / "missing.csv"
    with raises("No such file or directory") as e:
        sources.read_files(path)
    assert one_line(e).startswith(f"{path} cannot be opened")


def test_glob_without_match(tmp_path):
    with raises("no file matches") as e:
        sources.read_files(tmp_path / "*.csv")
    assert str(tmp_path / "*.csv") in one_line(e)


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with raises("Is a directory") as e:
        sources.read_files(tmp_path / "dir.csv")
    assert one_line(e).startswith(f"{tmp_path / 'dir.csv'} cannot be opened")


def test_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path / "secret.csv", "a\n1\n")

    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(sources, "open", denied, raising=False)  # root could read it anyway
    with raises("Permission denied") as e:
        sources.read_files(path)
    assert one_line(e).startswith(f"{path} cannot be opened (Permission denied)")


def test_missing_column_names_config_field():
    table = sources.from_columns({"text": ["a"], "y": [1]}, name="train.csv")
    assert table.column("y", purpose="label_column") == [1]
    with raises("no column 'label'") as e:
        table.column("label", purpose="label_column")
    assert one_line(e) == (
        "train.csv: no column 'label' (the label_column); its columns are ['text', 'y']; "
        "set --config.data.label_column=<one of them>"
    )


def test_select_keeps_origins(tmp_path):
    write(tmp_path / "a.csv", "t\nx\ny\n")
    write(tmp_path / "b.csv", "t\nz\n")
    table = sources.read_files(tmp_path / "?.csv")
    picked = table.select([2, 0])
    assert picked.columns == {"t": ["z", "x"]}
    assert picked.origins == [(str(tmp_path / "b.csv"), 1), (str(tmp_path / "a.csv"), 1)]
    assert picked.where(0) == f"{tmp_path / 'b.csv'} row 1"
    assert len(table.select([])) == 0


def test_from_columns_plain_python():
    table = sources.from_columns(
        {"x": np.array([1, 2]), "y": (np.float32(0.5), np.int64(3)), "z": [np.array([1, 2]), []]}
    )
    assert table.columns == {"x": [1, 2], "y": [0.5, 3], "z": [[1, 2], []]}
    assert type(table.columns["x"][0]) is int and type(table.columns["y"][0]) is float
    assert table.origins == [("columns", 1), ("columns", 2)]
    assert sources.from_columns({"a": pa.array(["u", None])}, name="arrow").columns == {
        "a": ["u", None]
    }


def test_from_columns_unequal_lengths():
    with raises("different lengths") as e:
        sources.from_columns({"text": ["a", "b", "c"], "label": [1, 0]}, name="mine")
    assert one_line(e).startswith("mine: columns have different lengths {'text': 3, 'label': 2}")
    with raises("not a sequence"):
        sources.from_columns({"text": "abc"})


def test_table_checks_its_lengths():
    with raises("different lengths"):
        Table("t", {"a": [1, 2]}, [("t", 1)])


def test_from_pandas():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {"text": ["a", None, "c"], "label": [1, 0, 1], "score": [0.5, np.nan, 2.0]},
        index=[10, 11, 12],
    )
    table = sources.from_pandas(frame)
    assert table.columns == {
        "text": ["a", None, "c"],
        "label": [1, 0, 1],
        "score": [0.5, None, 2.0],
    }
    assert type(table.columns["label"][0]) is int
    assert table.origins == [("DataFrame", 1), ("DataFrame", 2), ("DataFrame", 3)]
    assert sources.from_pandas(pd.DataFrame([[1, 2]])).column_names == ["0", "1"]
    with raises("not a pandas DataFrame"):
        sources.from_pandas({"a": [1]})
    with raises(r"columns \['a'\] appear more than once"):
        sources.from_pandas(pd.DataFrame([[1, 2]], columns=["a", "a"]))


def test_from_hf_dataset():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
            "ids": datasets.Sequence(datasets.Value("int32")),
        }
    )
    dataset = datasets.Dataset.from_dict(
        {"text": ["x", "y"], "label": [1, 0], "ids": [[1, 2], []]}, features=features
    )
    table = sources.from_hf_dataset(dataset, name="sst2 train")
    assert table.columns == {"text": ["x", "y"], "label": [1, 0], "ids": [[1, 2], []]}
    assert table.label_names == {"label": ["neg", "pos"]}
    assert table.origins == [("sst2 train", 1), ("sst2 train", 2)]
    with raises("pick one split") as e:
        sources.from_hf_dataset(datasets.DatasetDict({"train": dataset, "test": dataset}))
    assert "['train', 'test']" in one_line(e)


def test_from_tfds_unknown_dataset(tmp_path):
    with raises("tfds could not build no_such_dataset_xyz") as e:
        tfds_source.from_tfds("no_such_dataset_xyz", "train", data_dir=str(tmp_path))
    assert "--config.data.train_file" in one_line(e)


def test_from_tfds_offline_fails_at_once(tmp_path, monkeypatch):
    def no_network(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    for var in tfds_source._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with raises("tfds could not build glue/sst2 .ConnectionError: .* does not resolve") as e:
        tfds_source.from_tfds("glue/sst2", "train", data_dir=str(tmp_path))
    one_line(e)


def test_from_tfds_prepared_split(builder):
    """The fake IMDB build of conftest, read back as a Table with its label names."""
    data_dir = Path(builder.data_dir).parents[2]  # <root>/imdb_reviews/plain_text/<version>
    table = tfds_source.from_tfds("imdb_reviews/plain_text", "train", data_dir=str(data_dir))
    assert (
        len(tfds_source.from_tfds("imdb_reviews/plain_text", "test[:3]", data_dir=str(data_dir)))
        == 3
    )
    reference = builder.as_data_source()["train"]
    assert len(table) == len(reference)
    assert table.column_names == ["label", "text"]
    assert table.columns["label"] == [int(r["label"]) for r in reference]
    assert table.columns["text"] == [r["text"].decode("utf-8", "replace") for r in reference]
    assert all(type(t) is str for t in table.columns["text"]) and "\ufffd" in "".join(
        table.columns["text"]
    )
    assert table.label_names == {"label": ["neg", "pos"]}
    assert table.where(0) == "tfds imdb_reviews/plain_text train row 1"
    with raises("Unknown split 'nope'") as e:
        tfds_source.from_tfds("imdb_reviews/plain_text", "nope", data_dir=str(data_dir))
    assert "['test', 'train']" in one_line(e)


def test_literal_path_with_glob_characters(tmp_path):
    path = write(tmp_path / "data[1].csv", "a\nx\n")
    assert sources.read_files(path).columns == {"a": ["x"]}
