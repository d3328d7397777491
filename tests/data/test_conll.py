"""jaxformer.data.conll: reading CoNLL files (and their errors, naming file and line), the label
order, labels aligned to sub-tokens on hand-worked words and as run_ner.py aligns them on
transformers' word ids, predictions back to words, tfds' conll2003 without network."""

import logging
import socket

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

import jaxformer
from jaxformer.data import conll
from jaxformer.data.conll import ConllError, Sentence

IGNORE = conll.IGNORE_LABEL

CONLL = """\
-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC


Peter\tNNP\tB-NP\tB-PER\r
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O"""


def write(tmp_path, text, name="data.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_read_conll(tmp_path):
    """Blank lines (one or more) and -DOCSTART- lines end sentences; tabs, CRLF and a last
    sentence without a blank line after it are read."""
    path = write(tmp_path, CONLL)
    assert conll.read_conll(path) == [
        Sentence(("EU", "rejects", "German"), ("B-ORG", "O", "B-MISC"), 3, str(path)),
        Sentence(("Peter", "Blackburn"), ("B-PER", "I-PER"), 8, str(path)),
        Sentence(("BRUSSELS", "1996-08-22"), ("B-LOC", "O"), 11, str(path)),
    ]


def test_columns(tmp_path):
    path = write(tmp_path, "1 EU B-ORG x\n2 rejects O x\n\n1 Peter S-PER x\n")
    sentences = conll.read_conll(path, token_column=1, tag_column=2)
    assert [(s.words, s.tags, s.line) for s in sentences] == [
        (("EU", "rejects"), ("B-ORG", "O"), 1),
        (("Peter",), ("S-PER",), 4),
    ]
    two = conll.read_conll(write(tmp_path, "EU I-ORG\n", "two.txt"))
    assert two[0].words == ("EU",) and two[0].tags == ("I-ORG",)
    with pytest.raises(ValueError, match=r"token_column and tag_column are both 1"):
        conll.read_conll(path, token_column=1, tag_column=1)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("EU NNP B-ORG\nrejects\n", 2, r"1 field\(s\) in 'rejects', which has no distinct "),
        ("EU NNP B-ORG\n\nPeter NNP PER\n", 3, r"tag 'PER' is not IOB-like \(O, B-X, I-X, E-X"),
        ("EU B-ORG NNP\n", 1, r"tag 'NNP' is not IOB-like .* is tag_column=-1 the entity column"),
        (b"EU O\n\xff\xfe O\n", 2, r"not UTF-8 \(invalid start byte at byte 0 of the line\)"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ConllError, match=rf"^{path}:{line}: {message}"):
        conll.read_conll(path)


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_no_sentences(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConllError, match=rf"^{path}: no sentences \(the file is empty"):
        conll.read_conll(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConllError, match=r"missing\.txt: No such file or directory; pass"):
        conll.read_conll(tmp_path / "missing.txt")


def test_label_names_order():
    tags = ["O", "I-PER", "B-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    sentences = [Sentence(tuple(tags), tuple(tags), 1), Sentence(("x",), ("O",), 3)]
    assert conll.label_names(sentences) == (
        "O",
        "B-LOC",
        "I-LOC",
        "B-MISC",
        "I-MISC",
        "B-ORG",
        "I-ORG",
        "B-PER",
        "I-PER",
    )
    assert sorted(conll.CONLL2003_LABELS) == sorted(conll.label_names(sentences))
    iobes = ("S-PER", "E-LOC", "I-LOC", "B-LOC", "O", "E-PER", "B-PER", "S-LOC")
    assert conll.label_names([Sentence(iobes, iobes, 1)]) == (
        "O",
        *("B-LOC", "I-LOC", "E-LOC", "S-LOC"),
        *("B-PER", "E-PER", "S-PER"),
    )
    assert conll.label_names([Sentence(("a",), ("I-X",), 1)]) == ("I-X",)  # only tags seen
    with pytest.raises(ConllError, match=r"^f\.txt:6: tag 'PER' is not IOB-like"):
        conll.label_names([Sentence(("a", "b"), ("O", "PER"), 5, "f.txt")])


@pytest.fixture
def hand_tokenizer():
    """WordPiece over a hand-made vocabulary (BERT's template): "Johnson" is john ##son, "U.S."
    the four pre-tokens u . s . of one word."""
    tokens = "[PAD] [UNK] [CLS] [SEP] john ##son visited u . s today"
    backend = Tokenizer(
        models.WordPiece({t: i for i, t in enumerate(tokens.split())}, unk_token="[UNK]")
    )
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return jaxformer.Tokenizer(backend, max_length=32)


LABELS = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")  # ids 0 ... 4
SENTENCE = Sentence(("Johnson", "visited", "U.S.", "today"), ("B-PER", "O", "B-LOC", "O"), 7)
#           [CLS] john ##son visited  u   .   s   .  today [SEP]
TOKEN_IDS = [2, 4, 5, 6, 7, 8, 9, 8, 10, 3]
WORD_IDS = [-1, 0, 0, 1, 2, 2, 2, 2, 3, -1]


def test_first_sub_token_labels(hand_tokenizer):
    out = conll.encode_sentences(hand_tokenizer, [SENTENCE], LABELS)
    assert out.input_ids[0].tolist() == TOKEN_IDS
    assert out.word_ids[0].tolist() == WORD_IDS
    assert out.labels[0].tolist() == [IGNORE, 3, IGNORE, 0, 1, IGNORE, IGNORE, IGNORE, 0, IGNORE]
    assert all(x.dtype == np.int32 for x in out.input_ids + out.labels + out.word_ids)


def test_all_sub_token_labels(hand_tokenizer):
    """Continuations get the word's label, a B-X's as I-X: B-PER's ##son is I-PER (4), B-LOC's
    . s . are I-LOC (2); without I-PER among the labels ##son keeps B-PER."""
    out = conll.encode_sentences(hand_tokenizer, [SENTENCE], LABELS, label_all_subtokens=True)
    assert out.labels[0].tolist() == [IGNORE, 3, 4, 0, 1, 2, 2, 2, 0, IGNORE]
    no_i_per = ("O", "B-LOC", "I-LOC", "B-PER")
    out = conll.encode_sentences(hand_tokenizer, [SENTENCE], no_i_per, label_all_subtokens=True)
    assert out.labels[0].tolist() == [IGNORE, 3, 3, 0, 1, 2, 2, 2, 0, IGNORE]


def test_truncation_cuts_words_and_logs_once(hand_tokenizer, caplog):
    short = Sentence(("today",), ("O",), 1)
    with caplog.at_level(logging.WARNING, logger="jaxformer.data.conll"):
        out = conll.encode_sentences(hand_tokenizer, [SENTENCE, short, SENTENCE], LABELS, 6)
    assert out.input_ids[0].tolist() == [2, 4, 5, 6, 7, 3]  # "U.S." keeps its u, "today" is cut
    assert out.word_ids[0].tolist() == [-1, 0, 0, 1, 2, -1]
    assert out.labels[0].tolist() == [IGNORE, 3, IGNORE, 0, 1, IGNORE]
    assert out.labels[1].tolist() == [IGNORE, 0, IGNORE]
    assert [r.getMessage() for r in caplog.records] == [
        "2 of 3 sentences are longer than max_length=6 tokens: their last words are cut and get "
        "no label (raise max_length to keep them)"
    ]
    caplog.clear()
    conll.encode_sentences(hand_tokenizer, [SENTENCE], LABELS, 10)  # fits exactly
    assert not caplog.records


def test_unknown_tag_names_its_line(hand_tokenizer):
    sentence = SENTENCE._replace(path="train.txt")
    with pytest.raises(ConllError, match=r"^train\.txt:9: tag 'B-LOC' is not in label_names"):
        conll.encode_sentences(hand_tokenizer, [sentence], ("O", "B-PER", "I-PER"))
    with pytest.raises(ValueError, match=r"label_names lists 'O' twice \(at 0 and 2\)"):
        conll.encode_sentences(hand_tokenizer, [sentence], ("O", "B-PER", "O"))
    with pytest.raises(ConllError, match=r"^train\.txt:7: a sentence of 4 words has 3 tags"):
        conll.encode_sentences(hand_tokenizer, [sentence._replace(tags=("O",) * 3)], LABELS)


def run_ner_labels(word_ids, tags, label_list, label_all_tokens):
    """transformers' run_ner.py `tokenize_and_align_labels` for one sentence, as written there."""
    label_to_id = {label: i for i, label in enumerate(label_list)}
    b_to_i_label = []
    for idx, label in enumerate(label_list):
        if label.startswith("B-") and label.replace("B-", "I-") in label_list:
            b_to_i_label.append(label_list.index(label.replace("B-", "I-")))
        else:
            b_to_i_label.append(idx)
    previous_word_idx = None
    label_ids = []
    for word_idx in word_ids:
        if word_idx is None:
            label_ids.append(-100)
        elif word_idx != previous_word_idx:
            label_ids.append(label_to_id[tags[word_idx]])
        elif label_all_tokens:
            label_ids.append(b_to_i_label[label_to_id[tags[word_idx]]])
        else:
            label_ids.append(-100)
        previous_word_idx = word_idx
    return label_ids


@pytest.mark.parametrize("label_all", [False, True])
def test_labels_equal_run_ner_on_transformers_word_ids(tmp_path, minilm_dir, label_all):
    transformers = pytest.importorskip("transformers")
    sentences = conll.read_conll(write(tmp_path, CONLL))
    sentences.append(
        Sentence(("Ünïcode-Wörter", "Smithson", "Jr."), ("B-PER", "I-PER", "I-PER"), 1)
    )
    names = conll.label_names(sentences)
    tok = jaxformer.load_tokenizer(minilm_dir)
    out = conll.encode_sentences(tok, sentences, names, 8, label_all_subtokens=label_all)
    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    want = hf(
        [list(s.words) for s in sentences], is_split_into_words=True, truncation=True, max_length=8
    )
    for i, s in enumerate(sentences):
        expected = run_ner_labels(want.word_ids(i), s.tags, names, label_all)
        assert out.labels[i].tolist() == expected
        assert out.input_ids[i].tolist() == want["input_ids"][i]


def test_word_predictions():
    predictions = np.array([9, 3, 4, 0, 1, 2, 2, 2, 0, 9, 7, 7])  # padded past the 10 tokens
    assert conll.word_predictions(predictions, np.array(WORD_IDS), 4, fill_id=0) == [3, 0, 1, 0]
    # Truncated after "U.S."'s first sub-token: "today" gets the fill id.
    assert conll.word_predictions([9, 3, 4, 0, 1, 9], [-1, 0, 0, 1, 2, -1], 4, 5) == [3, 0, 1, 5]
    # Word 1 gave no token (an empty word).
    assert conll.word_predictions([9, 3, 1, 9], [-1, 0, 2, -1], 3, 0) == [3, 0, 1]
    with pytest.raises(ValueError, match=r"3 token predictions for 4 tokens"):
        conll.word_predictions([1, 2, 3], [-1, 0, 1, -1], 2, 0)
    with pytest.raises(ValueError, match=r"word_ids reach word 2 but the sentence has 2 words"):
        conll.word_predictions([1, 2, 3, 4], [-1, 0, 2, -1], 2, 0)


@pytest.fixture
def offline(monkeypatch):
    """No proxy and no name resolution: the host tfds would download from does not resolve."""
    for var in conll.PROXY_VARS:
        monkeypatch.delenv(var, raising=False)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)


def test_tfds_offline_points_at_local_files(tmp_path, offline):
    with pytest.raises(
        ConllError,
        match=r"^tfds conll2003 cannot be downloaded: data\.deepai\.org does not resolve .*; to "
        r"train on local CoNLL files instead, pass --config\.data\.train_file=PATH",
    ):
        conll.load_conll2003_tfds("train", tmp_path)
    with pytest.raises(ValueError, match=r"split='valid'; choose one of"):
        conll.load_conll2003_tfds("valid", tmp_path)


def test_tfds_download_error_points_at_local_files(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])

    def refused(self, url):
        raise ConnectionError(f"connection to {url} refused")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", refused)
    with pytest.raises(ConllError, match=r"^tfds conll2003 could not be downloaded \(Connection"):
        conll.load_conll2003_tfds("test", tmp_path)


def test_tfds_sentences_from_a_local_copy(tmp_path, monkeypatch):
    """tfds' conll2003 builder fed local files instead of its download: the split names map to
    its train/dev/test and the tags come out as names."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from etils import epath

    source = tmp_path / "source"
    source.mkdir()
    for name, word in (("train", "EU"), ("valid", "Peter"), ("test", "BRUSSELS")):
        write(
            source,
            f"-DOCSTART- -X- -X- O\n\n{word} NNP B-NP B-ORG\nsays VBZ B-VP O\n",
            f"{name}.txt",
        )
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])
    monkeypatch.setattr(
        tfds.download.DownloadManager, "download_and_extract", lambda self, url: epath.Path(source)
    )
    sentences = conll.load_conll2003_tfds("validation", tmp_path / "tfds")
    assert sentences == [
        Sentence(("Peter", "says"), ("B-ORG", "O"), 1, "tfds conll2003 validation")
    ]
    assert conll.load_conll2003_tfds("test", tmp_path / "tfds")[0].words == ("BRUSSELS", "says")
