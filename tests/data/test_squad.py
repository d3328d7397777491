"""jaxformer.data.squad: SQuAD files and their errors, tfds' squad built from local files, windows
labelled with the answer's tokens (MiniLM's WordPiece tokenizer), and logits decoded to text."""

import json
import os
import re
import socket

import numpy as np
import pytest
from test_tokenizer_families import save_folder

import jaxformer
from jaxformer.data import squad
from jaxformer.data.qa_windows import encode_windows
from jaxformer.data.squad import QAExample, SquadError

CONTEXT = "Paris is the capital of France. The Seine flows through it."
V1 = {
    "version": "1.1",
    "data": [
        {
            "title": "Paris",
            "paragraphs": [
                {
                    "context": CONTEXT,
                    "qas": [
                        {
                            "id": "q1",
                            "question": "What is the capital of France?",
                            "answers": [
                                {"text": "Paris", "answer_start": 0},
                                {"text": "Paris", "answer_start": 0},
                            ],
                        },
                        {
                            "id": "q2",
                            "question": "Which river?",
                            "answers": [{"text": "The Seine", "answer_start": 32}],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Rome",
            "paragraphs": [
                {
                    "context": "Rome is in Italy.",
                    "qas": [
                        {
                            "id": "q3",
                            "question": "Where is Rome?",
                            "answers": [{"text": "Italy", "answer_start": 11}],
                        }
                    ],
                }
            ],
        },
    ],
}
V2_QAS = [
    {
        "id": "a",
        "question": "What flows through Paris?",
        "answers": [
            {"text": "The Seine", "answer_start": 32},
            {"text": "Seine", "answer_start": 36},
        ],
        "is_impossible": False,
    },
    {
        "id": "b",
        "question": "What is the capital of Spain?",
        "answers": [],
        "plausible_answers": [{"text": "Paris", "answer_start": 0}],
        "is_impossible": True,
    },
]
V2 = {"version": "v2.0", "data": [{"paragraphs": [{"context": CONTEXT, "qas": V2_QAS}]}]}


def write(path, doc):
    path.write_text(json.dumps(doc, indent=1))
    return path


def test_read_v1(tmp_path):
    examples = squad.read_squad(write(tmp_path / "dev-v1.1.json", V1))
    assert examples == [
        QAExample("q1", "What is the capital of France?", CONTEXT, (("Paris", 0),) * 2, False),
        QAExample("q2", "Which river?", CONTEXT, (("The Seine", 32),), False),
        QAExample("q3", "Where is Rome?", "Rome is in Italy.", (("Italy", 11),), False),
    ]


def test_read_v2(tmp_path):
    a, b = squad.read_squad(write(tmp_path / "dev-v2.0.json", V2))
    assert a == QAExample(
        "a", V2_QAS[0]["question"], CONTEXT, (("The Seine", 32), ("Seine", 36)), False
    )
    assert b == QAExample(
        "b", V2_QAS[1]["question"], CONTEXT, (), True
    )  # plausible answers dropped


def test_answer_not_at_its_offset_names_file_and_id(tmp_path):
    doc = json.loads(json.dumps(V1))
    doc["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 31
    path = write(tmp_path / "train.json", doc)
    with pytest.raises(
        SquadError,
        match=rf"^{re.escape(str(tmp_path))}/train\.json: question 'q2' "
        r"\(data\[0\]\.paragraphs\[0\]\.qas\[1\]\): "
        r"answer 'The Seine' is not at answer_start=31 of the context \(59 characters\), which "
        r"holds ' The Sein' there; fix the answer's answer_start or text$",
    ):
        squad.read_squad(path)


def edit(doc, change):
    doc = json.loads(json.dumps(doc))
    change(doc["data"][0]["paragraphs"][0])
    return doc


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: p.pop("context"), r"data\[0\]\.paragraphs\[0\] has no 'context' field"),
        (
            lambda p: p["qas"][1].pop("question"),
            r"question 'q2' \(data\[0\]\.paragraphs\[0\]\.qas\[1\]\) has no 'question' field",
        ),
        (
            lambda p: p["qas"][1].update(id="q1"),
            r"question 'q1' \(data\[0\]\.paragraphs\[0\]\.qas\[1\]\): the id is not unique, "
            r"data\[0\]\.paragraphs\[0\]\.qas\[0\] has it too",
        ),
        (
            lambda p: p["qas"][0].update(answers=[]),
            r"question 'q1' .*: an answerable question with no answers; give its answers, or for "
            r'SQuAD v2\.0 set "is_impossible": true',
        ),
        (
            lambda p: p["qas"][0]["answers"][0].update(answer_start="0"),
            r"question 'q1' .* answers\[0\]: answer_start is \"0\", not an integer",
        ),
        (
            lambda p: p["qas"][0].update(is_impossible=True),
            r"question 'q1' .*: is_impossible is true but it lists 2 answers",
        ),
    ],
)
def test_bad_fields(tmp_path, change, message):
    path = write(tmp_path / "bad.json", edit(V1, change))
    with pytest.raises(SquadError, match=rf"^{re.escape(str(tmp_path))}/bad\.json: {message}"):
        squad.read_squad(path)


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    with pytest.raises(
        SquadError,
        match=rf"^{re.escape(str(tmp_path))}/broken\.json: not valid JSON at line 2, column 19 "
        r"\(Expecting value\); download the file again or fix it there$",
    ):
        squad.read_squad(path)


def test_tfds_squad_v2(tmp_path):
    """tfds' squad/v2.0 builder, fed the local files instead of its download, then read back by
    load_squad_tfds as read_squad reads the file."""
    tfds = pytest.importorskip("tensorflow_datasets")
    train, dev = (
        write(tmp_path / "train.json", V2),
        write(tmp_path / "dev.json", edit(V2, lambda p: p["qas"].pop())),
    )

    class LocalFiles(tfds.download.DownloadManager):
        def download_and_extract(self, url_or_urls):
            return {"train": os.fspath(train), "dev": os.fspath(dev)}

    data_dir = tmp_path / "tfds"
    builder = tfds.builder("squad/v2.0", data_dir=os.fspath(data_dir), file_format="array_record")
    manager = LocalFiles(download_dir=tmp_path / "downloads")
    builder._make_download_manager = lambda download_dir, download_config: manager
    builder.download_and_prepare(file_format="array_record")
    for split, path in (("train", train), ("validation", dev)):
        got = squad.load_squad_tfds(split, "2.0", data_dir)
        assert sorted(got) == sorted(squad.read_squad(path))


def test_tfds_offline_names_the_file_flags(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)

    def no_network(*args, **kwargs):
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(
        SquadError,
        match=r"could not download SQuAD v1\.1 \(squad/v1\.1\) .* fetch train-v1\.1\.json and "
        r"dev-v1\.1\.json from .* --config\.data\.train_file=PATH "
        r"--config\.data\.validation_file=PATH$",
    ):
        squad.load_squad_tfds("train", "1.1", tmp_path)


# 30 words of one WordPiece token each: context token k is WORDS[k].
WORDS = (
    "apple river house green table music water light paper stone bread cloud horse glass chair "
    "night paint grass metal sugar train field smoke plant coast honey storm tiger skirt lemon"
).split()
LONG = " ".join(WORDS)
QUESTION = "what is it?"  # 4 tokens: a window is [CLS] 4 [SEP] 9 context tokens [SEP]
MAX_LENGTH, STRIDE = 16, 3
ROOM, FIRST = 9, 6  # context tokens per window; the first context token's position
STARTS = (0, 6, 12, 18, 24)  # each window's first context token: every ROOM - STRIDE


def words(a, b):
    """Example answer: WORDS[a..b] with its character offset in LONG."""
    return " ".join(WORDS[a : b + 1]), len(" ".join(WORDS[:a])) + (a > 0)


def expected_labels(a, b):
    """Per window: the positions of context tokens a and b, or (0, 0) unless both are in it."""
    labels = []
    for start in STARTS:
        stop = min(start + ROOM, len(WORDS))
        inside = start <= a and b < stop
        labels.append((FIRST + a - start, FIRST + b - start) if inside else (0, 0))
    return labels


@pytest.fixture(scope="module")
def tok(minilm_dir):
    tok = jaxformer.load_tokenizer(minilm_dir)
    assert tok.tokenizer.encode(LONG, add_special_tokens=False).tokens == WORDS
    return tok


SPANS = {"overlap": (7, 8), "window_end": (8, 8), "straddle": (13, 16), "start": (0, 1)}


@pytest.fixture(scope="module")
def examples():
    spans = [
        QAExample(k, " " + QUESTION, LONG, (words(a, b),), False) for k, (a, b) in SPANS.items()
    ]
    return [*spans, QAExample("none", QUESTION, LONG, (), True)]


@pytest.fixture(scope="module")
def features(tok, examples):
    return squad.make_features(tok, examples, MAX_LENGTH, STRIDE)


def test_features_label_the_answer_tokens(tok, examples, features):
    n = len(STARTS)
    np.testing.assert_array_equal(features.example_index, np.repeat(np.arange(5), n))
    labels = list(
        zip(features.start_positions.tolist(), features.end_positions.tolist(), strict=True)
    )
    for e, (a, b) in enumerate(SPANS.values()):
        assert labels[e * n : (e + 1) * n] == expected_labels(a, b), list(SPANS)[e]
    assert labels[4 * n :] == [(0, 0)] * n  # unanswerable
    for w, (s, e) in enumerate(labels):  # the labelled tokens are the answer's words
        if s:
            example = examples[features.example_index[w]]
            got = tok.tokenizer.decode(features.input_ids[w][s : e + 1].tolist())
            assert got == example.answers[0][0]
            assert features.offsets[w][s, 0] == example.answers[0][1]
    for ids, types, offsets in zip(
        features.input_ids, features.token_type_ids, features.offsets, strict=True
    ):
        assert ids.dtype == types.dtype == offsets.dtype == np.int32
        assert len(ids) <= MAX_LENGTH and ids[FIRST - 1] == tok.sep_id
    for field in (features.example_index, features.start_positions, features.end_positions):
        assert field.dtype == np.int32 and field.shape == (len(features.input_ids),)


def test_features_strip_the_question_and_label_bpe_offsets(tmp_path):
    """run_qa.py strips questions on the left, where a byte-level BPE would spend tokens on the
    spaces; the labels of a RoBERTa-style window cover the answer's characters."""
    tok = jaxformer.load_tokenizer(save_folder(tmp_path, "roberta"))
    context = "the actors were superb, the plot dull"
    spaced = QAExample("s", "   who was superb?", context, (("the actors", 0),), False)
    plain = spaced._replace(question="who was superb?")
    [with_spaces] = encode_windows(tok, [spaced.question], [context], 64, 8)
    [without] = encode_windows(tok, [plain.question], [context], 64, 8)
    assert len(with_spaces.ids) > len(without.ids)
    features = squad.make_features(tok, [spaced], 64, 8)
    assert features.input_ids[0].tolist() == without.ids.tolist()
    s, e = features.start_positions[0], features.end_positions[0]
    assert context[features.offsets[0][s, 0] : features.offsets[0][e, 1]] == "the actors"


def logits(features, pad=4):
    """(n, t + pad) start and end logits, -10 everywhere."""
    width = max(len(ids) for ids in features.input_ids) + pad
    return np.full((len(features.input_ids), width), -10.0), np.full(
        (len(features.input_ids), width), -10.0
    )


def window(example, k):
    return len(STARTS) * example + k


def test_decode_answer_in_the_stride_overlap_and_best_window(features, examples):
    start, end = logits(features)
    # Example 0: "light paper" (words 7-8) in window 1 only, where it sits at positions 7, 8;
    # "house green" (words 2-3) in window 0 scores less.
    start[window(0, 1), FIRST + 7 - 6], end[window(0, 1), FIRST + 8 - 6] = 5.0, 5.0
    start[window(0, 0), FIRST + 2], end[window(0, 0), FIRST + 3] = 3.0, 3.0
    # Example 1: "apple river" in window 0 (8) against "tiger skirt" in window 4 (10).
    start[window(1, 0), FIRST], end[window(1, 0), FIRST + 1] = 4.0, 4.0
    start[window(1, 4), FIRST + 27 - 24], end[window(1, 4), FIRST + 28 - 24] = 5.0, 5.0
    answers = squad.decode_answers(start, end, features, examples)
    assert answers["overlap"].text == answers["overlap"].span == "light paper"
    assert answers["overlap"].score == 10.0 and answers["overlap"].null_score == -20.0
    assert answers["window_end"].text == "tiger skirt"
    assert squad.decode(start, end, features, examples)["overlap"] == "light paper"


def test_decode_span_rules(features, examples):
    start, end = logits(features)
    w = window(0, 2)  # context words 12..20 at positions 6..14
    start[w, 8], end[w, 11], end[w, 9] = 6.0, 6.0, 4.0  # words 14-17, or 14-15
    assert squad.decode(start, end, features, examples, max_answer_length=4)["overlap"] == (
        "chair night paint grass"
    )
    assert (
        squad.decode(start, end, features, examples, max_answer_length=3)["overlap"]
        == "chair night"
    )
    # An end before its start is no span: the best start's best end is later.
    start, end = logits(features)
    start[w, 10], end[w, 8], end[w, 12] = 7.0, 7.0, 2.0
    assert squad.decode(start, end, features, examples)["overlap"] == "paint grass metal"
    # The n_best starts are taken over all the window's tokens, question and [CLS] included,
    # and positions past the window (padding) are not tokens.
    start, end = logits(features)
    start[w, 2], start[w, 7], end[w, 7] = 9.0, 3.0, 3.0
    start[w, -1] = end[w, -1] = 50.0
    assert squad.decode(start, end, features, examples, n_best=1)["overlap"] == ""
    assert squad.decode(start, end, features, examples, n_best=2)["overlap"] == "glass"


def test_decode_v2_null_threshold(features, examples):
    start, end = logits(features)
    w = window(4, 1)  # the unanswerable question: "cloud horse" scores 4
    start[w, FIRST + 5], end[w, FIRST + 6] = 2.0, 2.0
    start[window(4, 0), 0] = end[window(4, 0), 0] = 3.0  # null score 6 ...
    for k in range(1, 5):
        start[window(4, k), 0] = end[window(4, k), 0] = 2.5  # ... 5 in the others: the least
    answer = squad.decode_answers(start, end, features, examples, version_2=True)["none"]
    assert answer == squad.Answer("", "cloud horse", 4.0, 5.0)  # 5 - 4 > 0
    again = squad.decode(start, end, features, examples, version_2=True, null_threshold=1.5)
    assert again["none"] == "cloud horse"
    assert squad.decode(start, end, features, examples)["none"] == "cloud horse"  # v1.1: no null


def test_decode_checks_the_logits(features, examples):
    start, end = logits(features, pad=0)
    with pytest.raises(ValueError, match=r"start_logits has 24 rows for 25 windows"):
        squad.decode(start[1:], end, features, examples)
    with pytest.raises(
        ValueError, match=r"end_logits\[0\] has shape \(3,\) but window 0 has 16 tokens"
    ):
        squad.decode(list(start), [e[:3] for e in end], features, examples)
