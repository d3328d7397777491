"""`qa_windows.encode_windows` against transformers' fast tokenizer with truncation="only_second",
stride and return_overflowing_tokens (run_qa.py's call), for the MiniLM WordPiece tokenizer and a
byte-level BPE one trained here (RoBERTa's <s> A </s></s> B </s>): the same windows, token types,
context offsets and window-to-question map."""

import numpy as np
import pytest
from test_tokenizer_families import save_folder

import jaxformer
from jaxformer.data.qa_windows import encode_windows

transformers = pytest.importorskip("transformers")

LONG = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates from "
    "Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear fealty to King "
    "Charles III of West Francia."
)
QUESTIONS = ["Who gave their name to Normandy?", "  In what country is Normandy?", "Who?", "x"]
CONTEXTS = [LONG, LONG, "Rollo led them.", ""]


@pytest.fixture(params=["wordpiece", "byte_level_bpe"])
def folder(request, minilm_dir, tmp_path):
    return minilm_dir if request.param == "wordpiece" else save_folder(tmp_path, "roberta")


def transformers_windows(folder, questions, contexts, max_length, stride):
    """run_qa.py's tokenization, with the offsets of all but context tokens set to (-1, -1)."""
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    out = hf(
        questions,
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    windows = []
    for i, ids in enumerate(out["input_ids"]):
        offsets = [
            o if s == 1 else (-1, -1)
            for o, s in zip(out["offset_mapping"][i], out.sequence_ids(i), strict=True)
        ]
        question = out["overflow_to_sample_mapping"][i]
        windows.append((ids, out["token_type_ids"][i], offsets, question))
    return windows


def as_lists(windows):
    return [
        (
            w.ids.tolist(),
            w.type_ids.tolist(),
            [tuple(o) for o in w.offsets.tolist()],
            w.question_index,
        )
        for w in windows
    ]


# (room, stride): the tokens the longest question leaves for the context, and the overlap; the
# long context needs at least three windows but with room=None (max_length=512).
@pytest.mark.parametrize("room,stride", [(8, 0), (8, 3), (21, 8), (21, 20), (None, 128)])
def test_windows_equal_transformers(folder, room, stride):
    tok = jaxformer.load_tokenizer(folder)
    longest = max(
        len(e.ids) for e in tok.tokenizer.encode_batch(QUESTIONS, add_special_tokens=False)
    )
    max_length = 512 if room is None else longest + tok.template.n_special(pair=True) + room
    windows = encode_windows(tok, QUESTIONS, CONTEXTS, max_length, stride)
    assert as_lists(windows) == transformers_windows(
        folder, QUESTIONS, CONTEXTS, max_length, stride
    )
    for w in windows:
        assert w.ids.dtype == w.type_ids.dtype == w.offsets.dtype == np.int32
        assert len(w.ids) <= max_length and w.offsets.shape == (len(w.ids), 2)
    if room is not None:
        assert [w.question_index for w in windows].count(0) >= 3


def test_stride_is_overlap(minilm_dir):
    """Consecutive windows of one context share doc_stride tokens."""
    tok = jaxformer.load_tokenizer(minilm_dir)
    windows = [
        w for w in encode_windows(tok, QUESTIONS[:1], [LONG], 30, 5) if w.question_index == 0
    ]
    contexts = [w.ids[w.offsets[:, 0] >= 0].tolist() for w in windows]
    assert len(contexts) >= 3
    for a, b in zip(contexts, contexts[1:], strict=False):
        assert a[-5:] == b[:5]
    assert sum(len(c) for c in contexts) - 5 * (len(contexts) - 1) == len(
        tok.tokenizer.encode(LONG, add_special_tokens=False).ids
    )


def test_max_query_length_keeps_the_question_head(minilm_dir):
    """A question cut to its first k tokens gives the windows of the question's first k words."""
    tok = jaxformer.load_tokenizer(minilm_dir)
    question = "Who were the people that gave their name to the region of Normandy in France?"
    head = " ".join(question.split()[:4])  # four words, four WordPiece tokens
    assert len(tok.tokenizer.encode(head, add_special_tokens=False).ids) == 4
    got = encode_windows(tok, [question], [LONG], 24, 4, max_query_length=4)
    assert as_lists(got) == transformers_windows(minilm_dir, [head], [LONG], 24, 4)


def test_question_too_long_names_it(minilm_dir):
    tok = jaxformer.load_tokenizer(minilm_dir)
    question = "who " * 20
    with pytest.raises(
        ValueError,
        match=r"^q7: the question and special tokens leave 7 tokens .*"
        r"more than doc_stride=8 .* max_query_length$",
    ):
        encode_windows(tok, [question], [LONG], 30, 8, names=["q7"])
    assert len(encode_windows(tok, [question], ["short"], 30, 8)) == 1  # a context that fits
