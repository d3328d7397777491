"""jaxformer.load_tokenizer: truncation positions, vocab.txt vs tokenizer.json, lower-casing,
padding, argument checks."""

import json
import re
import shutil

import numpy as np
import pytest

import jaxformer
from jaxformer.data import batching
from jaxformer.hf import CheckpointError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{k}" for k in range(300)]  # "wk" has id 5 + k
TEXTS = [
    "Hello, World! This film's ending was un-believable...",
    "Café crème, naïve résumé: ÀÉÎÕÜ and 中文字符 [SEP] inside",
    "  lots   of\twhitespace\n\nand émojis 🎬🍿 ",
    "",
]


def write_vocab_folder(folder, tokens, **tokenizer_config):
    folder.mkdir(exist_ok=True)
    (folder / "vocab.txt").write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")
    if tokenizer_config:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


@pytest.fixture
def words_dir(tmp_path):
    """A vocab.txt-only folder where the text "w0 w1 ... w299" has content ids 5 ... 304."""
    return write_vocab_folder(tmp_path / "words", SPECIALS + WORDS)


def test_head_truncation_keeps_the_first_tokens(words_dir):
    tok = jaxformer.load_tokenizer(words_dir, max_length=140)
    (ids,) = tok.encode_ids([" ".join(WORDS)])
    assert tok.cls_id == 2 and tok.sep_id == 3 and tok.pad_id == 0
    np.testing.assert_array_equal(ids, [2, *range(5, 5 + 138), 3])  # w0 ... w137
    assert ids.dtype == np.int32


def test_head_tail_truncation_keeps_128_first_and_the_last_tokens(words_dir):
    tok = jaxformer.load_tokenizer(words_dir, max_length=140, truncation="head_tail")
    (ids,) = tok.encode_ids([" ".join(WORDS)])
    # w0 ... w127, then the last 140 - 130 = 10 words, w290 ... w299.
    np.testing.assert_array_equal(ids, [2, *range(5, 5 + 128), *range(5 + 290, 5 + 300), 3])
    (short,) = tok.encode_ids([" ".join(WORDS[:20])])  # fits: nothing dropped
    np.testing.assert_array_equal(short, [2, *range(5, 25), 3])


def test_vocab_txt_only_matches_tokenizer_json(minilm_dir, tmp_path):
    folder = tmp_path / "vocab_only"
    folder.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, folder)
    from_json = jaxformer.load_tokenizer(minilm_dir, max_length=16)
    from_vocab = jaxformer.load_tokenizer(folder, max_length=16)
    for a, b in zip(from_json.encode_ids(TEXTS), from_vocab.encode_ids(TEXTS), strict=True):
        np.testing.assert_array_equal(a, b)
    assert from_vocab.vocab_size == from_json.vocab_size == 30522


def test_lower_casing_follows_the_checkpoint(minilm_dir, tmp_path):
    uncased = jaxformer.load_tokenizer(minilm_dir)
    np.testing.assert_array_equal(
        uncased("HeLLo WORLD")["input_ids"], uncased("hello world")["input_ids"]
    )

    tokens = SPECIALS + ["Hello", "hello"]
    cased = jaxformer.load_tokenizer(
        write_vocab_folder(tmp_path / "c", tokens, do_lower_case=False)
    )
    assert [list(x) for x in cased.encode_ids(["Hello", "hello"])] == [[2, 5, 3], [2, 6, 3]]
    lowered = jaxformer.load_tokenizer(write_vocab_folder(tmp_path / "u", tokens))  # default True
    assert [list(x) for x in lowered.encode_ids(["Hello", "hello"])] == [[2, 6, 3], [2, 6, 3]]


@pytest.mark.parametrize("tokenizer_class", ["BertTokenizer", None])
def test_do_lower_case_with_tokenizer_json_as_transformers(minilm_dir, tmp_path, tokenizer_class):
    """MiniLM's tokenizer.json lower-cases; a BertTokenizer's do_lower_case=False overrides that
    (transformers rebuilds the normalizer), without a tokenizer class tokenizer.json rules."""
    transformers = pytest.importorskip("transformers")
    shutil.copy(minilm_dir / "tokenizer.json", tmp_path)
    config = {"do_lower_case": False, "tokenizer_class": tokenizer_class}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours = [list(x) for x in jaxformer.load_tokenizer(tmp_path).encode_ids(TEXTS)]
    assert ours == transformers.AutoTokenizer.from_pretrained(tmp_path)(TEXTS)["input_ids"]
    hello = 100 if tokenizer_class else 7592  # "Hello": [UNK] in the uncased vocab, or "hello"
    assert ours[0][1] == hello


def test_padding_and_masks(minilm_dir):
    tok = jaxformer.load_tokenizer(minilm_dir, max_length=32)
    lengths = [len(x) for x in tok.encode_ids(TEXTS)]
    batch = tok(TEXTS)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.shape == (4, max(lengths)) and v.dtype == np.int32 for v in batch.values())
    np.testing.assert_array_equal(batch["attention_mask"].sum(1), lengths)
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tok.pad_id).all()
    assert not batch["token_type_ids"].any()
    assert lengths[-1] == 2  # the empty text is [CLS] [SEP]

    fixed = tok(TEXTS, padding="max_length")
    assert fixed["input_ids"].shape == (4, 32)
    np.testing.assert_array_equal(fixed["input_ids"][:, : max(lengths)], batch["input_ids"])
    assert tok(TEXTS, max_length=8)["input_ids"].shape == (4, 8)  # per-call truncation
    assert tok("one text")["input_ids"].shape == (1, 4)


def test_pad_is_the_pipelines_padding(words_dir):
    tok = jaxformer.load_tokenizer(words_dir, max_length=6)
    ids = tok.encode_ids(["w0 w1", "w2", ""])  # [CLS] = 2, [SEP] = 3, "wk" = 5 + k
    longest = tok.pad(ids)
    np.testing.assert_array_equal(longest["input_ids"], [[2, 5, 6, 3], [2, 7, 3, 0], [2, 3, 0, 0]])
    np.testing.assert_array_equal(
        longest["attention_mask"], [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    )
    fixed = tok.pad(ids, padding="max_length")
    assert fixed["input_ids"].shape == (3, 6)
    for padded, length in ((longest, 4), (fixed, 6), (tok.pad(ids, "max_length", 5), 5)):
        expected = batching.pad_ids(ids, length, tok.pad_id)
        assert list(padded) == list(expected)
        for k, v in expected.items():
            np.testing.assert_array_equal(padded[k], v, err_msg=k)
            assert padded[k].dtype == v.dtype
    with pytest.raises(ValueError, match="a sequence of 4 ids does not fit padding to 3"):
        tok.pad(ids, "max_length", 3)


def test_matches_transformers_truncation(minilm_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    long_texts = [" ".join(["a long review of the film"] * 40), "short one"]
    expected = hf(long_texts, padding="max_length", truncation=True, max_length=64)
    ours = jaxformer.load_tokenizer(minilm_dir, max_length=64)(long_texts, padding="max_length")
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(ours[k], expected[k], err_msg=k)


def test_fingerprint(minilm_dir, words_dir):
    a = jaxformer.load_tokenizer(minilm_dir)
    assert a.fingerprint == jaxformer.load_tokenizer(minilm_dir).fingerprint
    others = {
        jaxformer.load_tokenizer(minilm_dir, max_length=256).fingerprint,
        jaxformer.load_tokenizer(minilm_dir, truncation="head_tail").fingerprint,
        jaxformer.load_tokenizer(words_dir).fingerprint,
    }
    assert a.fingerprint not in others and len(others) == 3


def test_save_and_reload(minilm_dir, tmp_path):
    tok = jaxformer.load_tokenizer(minilm_dir, max_length=64)
    tok.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"tokenizer.json", "vocab.txt"}
    again = jaxformer.load_tokenizer(tmp_path, max_length=64)
    assert again.fingerprint == tok.fingerprint
    (tmp_path / "tokenizer.json").unlink()  # vocab.txt + tokenizer_config.json alone suffice
    from_vocab = jaxformer.load_tokenizer(tmp_path, max_length=64)
    for a, b in zip(tok.encode_ids(TEXTS), from_vocab.encode_ids(TEXTS), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments(minilm_dir, words_dir, tmp_path):
    with pytest.raises(
        ValueError, match=r"truncation='tail'; choose one of \('head', 'head_tail'\)"
    ):
        jaxformer.load_tokenizer(minilm_dir, truncation="tail")
    with pytest.raises(ValueError, match="max_length=130 is too short for truncation='head_tail'"):
        jaxformer.load_tokenizer(minilm_dir, max_length=130, truncation="head_tail")
    tok = jaxformer.load_tokenizer(words_dir, max_length=16)
    with pytest.raises(TypeError, match=r"texts\[1\] is a bytes, not a str"):
        tok(["fine", b"bytes"])
    with pytest.raises(ValueError, match="padding='left'; choose one of"):
        tok(["fine"], padding="left")
    with pytest.raises(ValueError, match="max_length=2 is too short"):
        tok(["fine"], max_length=2)
    with pytest.raises(FileNotFoundError, match="has neither tokenizer.json nor vocab.txt"):
        jaxformer.load_tokenizer(tmp_path)
    no_cls = write_vocab_folder(tmp_path / "no_cls", ["[PAD]", "[UNK]", "[SEP]", "w"])
    with pytest.raises(ValueError, match=r"special token '\[CLS\]' is not in the tokenizer"):
        jaxformer.load_tokenizer(no_cls)


# --- Damaged tokenizer files: CheckpointError naming the file ---


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("tokenizer_config.json", "[1, 2]", "holds a JSON list, not an object"),
        ("tokenizer_config.json", '{"do_lower_case": ', "is not valid JSON"),
        ("tokenizer_config.json", b'{"a": "\xff"}', "is not valid JSON"),
        ("tokenizer_config.json", '{"do_lower_case": "yes"}', "do_lower_case='yes' is not valid"),
        ("tokenizer_config.json", '{"do_lower_case": 1}', "do_lower_case=1 is not valid"),
        ("tokenizer_config.json", '{"strip_accents": 0}', "it must be bool or null"),
        ("tokenizer_config.json", '{"cls_token": 2}', "cls_token is 2; a special token must be"),
        ("special_tokens_map.json", '["[CLS]"]', "holds a JSON list, not an object"),
        ("special_tokens_map.json", '{"sep_token": 3}', "sep_token is 3; a special token must"),
        ("special_tokens_map.json", '{"pad_token": {"id": 0}}', "pad_token is None; a special"),
        ("special_tokens_map.json", '{"unk_token": ""}', "unk_token is ''; a special token"),
        ("vocab.txt", b"[PAD]\n\xff\xfe[CLS]\n", "is not UTF-8 text"),
        ("vocab.txt", "[PAD]\n[UNK]\n[SEP]\nw\n", r"special token '\[CLS\]' is not in the"),
    ],
)
def test_damaged_tokenizer_file(words_dir, file, content, message):
    path = words_dir / file
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(CheckpointError, match=rf"words/{re.escape(file)}:? .*{message}"):
        jaxformer.load_tokenizer(words_dir)


def test_damaged_tokenizer_json(minilm_dir, tmp_path):
    shutil.copytree(minilm_dir, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "tokenizer.json"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"ckpt/tokenizer\.json could not be read"):
        jaxformer.load_tokenizer(tmp_path / "ckpt")


# --- Text pairs and family defaults (transformers parity: test_tokenizer_families.py) ---


def test_pairs_get_the_bert_template_and_token_types(words_dir):
    tok = jaxformer.load_tokenizer(words_dir, max_length=16)  # [CLS] = 2, [SEP] = 3, "wk" = 5 + k
    ids, types = tok.encode(["w0 w1", "w3"], pairs=["w2", ""])
    assert [x.tolist() for x in ids] == [[2, 5, 6, 3, 7, 3], [2, 8, 3, 3]]
    assert [x.tolist() for x in types] == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1]]
    assert all(x.dtype == np.int32 for x in ids + types)
    batch = tok(["w0 w1", "w3"], pairs=["w2", ""])
    np.testing.assert_array_equal(batch["input_ids"], [[2, 5, 6, 3, 7, 3], [2, 8, 3, 3, 0, 0]])
    np.testing.assert_array_equal(batch["token_type_ids"], [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1] * 6, [1, 1, 1, 1, 0, 0]])
    assert [x.tolist() for x in tok.encode_ids("w0", pairs="w1")] == [[2, 5, 3, 6, 3]]
    assert not tok(["w0 w1"])["token_type_ids"].any()


def words(first, n):
    return " ".join(WORDS[first : first + n])


@pytest.mark.parametrize(
    "n_a, n_b, kept",
    [
        (6, 2, (5, 2)),  # room for 10 - 3 = 7: only the longer text is cut
        (2, 6, (2, 5)),
        (5, 5, (3, 4)),  # both cut to half; on a tie the second keeps the odd token
        (9, 4, (4, 3)),  # both cut: the longer keeps the odd token
    ],
)
def test_pairs_truncate_longest_first(words_dir, n_a, n_b, kept):
    tok = jaxformer.load_tokenizer(words_dir, max_length=10)
    (ids,) = tok.encode_ids([words(0, n_a)], pairs=[words(100, n_b)])
    a, b = kept
    assert ids.tolist() == [2, *range(5, 5 + a), 3, *range(105, 105 + b), 3]


def test_head_tail_pairs_keep_each_texts_head_and_tail(words_dir):
    tok = jaxformer.load_tokenizer(words_dir, max_length=150, truncation="head_tail")
    # Room for 147: the first text keeps 137 (w0 ... w127, w291 ... w299), the second all 10.
    (ids,) = tok.encode_ids([words(0, 300)], pairs=[words(0, 10)])
    want = [2, *range(5, 133), *range(296, 305), 3, *range(5, 15), 3]
    assert ids.tolist() == want
    # Both long, room for 297: 148 and 149 tokens, each its first 128 and its last ones.
    tok = jaxformer.load_tokenizer(words_dir, max_length=300, truncation="head_tail")
    (ids,) = tok.encode_ids([words(0, 300)], pairs=[words(0, 300)])
    a = [*range(5, 133), *range(305 - 20, 305)]
    b = [*range(5, 133), *range(305 - 21, 305)]
    assert ids.tolist() == [2, *a, 3, *b, 3]
    (head,) = jaxformer.load_tokenizer(words_dir, max_length=300).encode_ids(
        [words(0, 300)], pairs=[words(0, 300)]
    )
    assert head.tolist() == [2, *range(5, 5 + 148), 3, *range(5, 5 + 149), 3]


def test_pair_arguments(words_dir):
    tok = jaxformer.load_tokenizer(words_dir, max_length=16)
    with pytest.raises(ValueError, match="2 texts but 1 pairs; give one pair each"):
        tok(["w0", "w1"], pairs=["w2"])
    with pytest.raises(TypeError, match=r"pairs\[1\] is a int, not a str"):
        tok(["w0", "w1"], pairs=["w2", 3])
    with pytest.raises(ValueError, match="max_length=4 is too short for text pairs: the template"):
        tok(["w0"], max_length=4, pairs=["w1"])


def test_special_tokens_default_to_the_family_of_config_json(tmp_path):
    roberta = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "w"]
    folder = write_vocab_folder(tmp_path / "roberta", roberta)
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    tok = jaxformer.load_tokenizer(folder)
    assert (tok.cls_id, tok.sep_id, tok.pad_id) == (0, 2, 1)
    (ids,), (types,) = tok.encode(["w"], pairs=["w"])
    assert ids.tolist() == [0, 5, 2, 2, 5, 2] and not types.any()  # <s> A </s></s> B </s>

    albert = write_vocab_folder(tmp_path / "albert", ["<pad>", "<unk>", "[CLS]", "[SEP]", "w"])
    (albert / "config.json").write_text(json.dumps({"model_type": "albert"}))
    tok = jaxformer.load_tokenizer(albert)
    assert (tok.cls_id, tok.sep_id, tok.pad_id) == (2, 3, 0)
    assert tok.encode_ids(["w"], pairs=["w"])[0].tolist() == [2, 4, 3, 4, 3]

    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(
        CheckpointError,
        match=r"roberta/vocab\.txt: special token '\[CLS\]' is not in the tokenizer's vocabulary: "
        r"it is the cls_token, the default for config\.json's model_type 'bert'",
    ):
        jaxformer.load_tokenizer(folder)
