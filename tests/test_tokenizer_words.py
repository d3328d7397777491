"""`ner_words.encode_words` (pre-split words, as for NER) against transformers' fast tokenizer
`tok(words, is_split_into_words=True, truncation=True, max_length=L)`: ids and `word_ids()` for
MiniLM's WordPiece and for each family's tokenizer trained here (byte-level BPE through
transformers' RobertaTokenizer with add_prefix_space=True, SentencePiece Unigram, WordPiece)."""

import numpy as np
import pytest
from helpers import FAMILIES, save_folder
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

import jaxformer
from jaxformer.data.ner_words import encode_words

transformers = pytest.importorskip("transformers")

SENTENCES = [
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Peter", "Blackburn"],
    ["Über-charming", "naïve", "", "U.S.", "中文", "x"],  # "" gives no token
    ["the", "movie", "was", "great", "fun", ",", "and", "the", "actors", "were", "superb"] * 4,
    ["a\u200bb", "\x00", "<s>", "[SEP]", "  ", "New York"],  # odd words, a space inside one
    [],
]


def transformers_words(hf, sentences, max_length):
    out = hf(sentences, is_split_into_words=True, truncation=True, max_length=max_length)
    word_ids = [[-1 if w is None else w for w in out.word_ids(i)] for i in range(len(sentences))]
    return out["input_ids"], word_ids


def ours(tok, sentences, max_length):
    ids, word_ids = encode_words(tok, sentences, max_length)
    assert all(x.dtype == np.int32 for x in ids + word_ids)
    return [x.tolist() for x in ids], [x.tolist() for x in word_ids]


# Cut inside a word, cut between words, nothing cut.
@pytest.mark.parametrize("max_length", [7, 12, 512])
def test_minilm_equals_transformers(minilm_dir, max_length):
    tok = jaxformer.load_tokenizer(minilm_dir)
    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    assert ours(tok, SENTENCES, max_length) == transformers_words(hf, SENTENCES, max_length)


# model_type -> transformers' arguments of run_ner.py for the family (add_prefix_space for
# RoBERTa's byte-level BPE, which needs the RobertaTokenizer class to take it).
FAMILY_ARGS = {
    "roberta": dict(tokenizer_class="RobertaTokenizer", add_prefix_space=True),
    "xlm-roberta": {},
    "albert": {},
    "bert": {},
}


@pytest.mark.parametrize("model_type", list(FAMILY_ARGS))
@pytest.mark.parametrize("max_length", [7, 16, 512])
def test_families_equal_transformers(tmp_path, model_type, max_length):
    args = dict(FAMILY_ARGS[model_type])
    folder = save_folder(tmp_path, model_type, tokenizer_class=args.pop("tokenizer_class", None))
    hf = transformers.AutoTokenizer.from_pretrained(folder, **args)
    tok = jaxformer.load_tokenizer(folder)
    assert ours(tok, SENTENCES, max_length) == transformers_words(hf, SENTENCES, max_length)


def test_byte_level_words_follow_a_space(tmp_path):
    """Each word is encoded as after a space, also where the ByteLevel pre-tokenizer sits in a
    Sequence (transformers' generic class leaves that one as it is): the words "New" "York" give
    the ids of the text " New York", and texts stay as they were."""
    train, special, _, _ = FAMILIES["roberta"]
    trained = train(special)
    nested = Tokenizer.from_str(trained.to_str())
    nested.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Punctuation(), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    for backend in (trained, nested):
        tok = jaxformer.Tokenizer(backend, model_type="roberta")
        before = tok.encode_ids(["New York 42"])
        (ids,), (word_ids,) = encode_words(tok, [["New", "York", "42"]])
        (want,) = tok.encode_ids([" New York 42"])
        np.testing.assert_array_equal(ids, want)
        assert ids[1] != tok.encode_ids(["New"])[0][1]  # "ĠN", not "N"
        assert word_ids[0] == word_ids[-1] == -1 and sorted(set(word_ids[1:-1])) == [0, 1, 2]
        np.testing.assert_array_equal(tok.encode_ids(["New York 42"])[0], before[0])


def test_word_ids_by_hand():
    """WordPiece over a hand-made vocabulary: "Johnson" is john ##son, "U.S." the four
    pre-tokens u . s . of one word."""
    vocab = {t: i for i, t in enumerate("[PAD] [UNK] [CLS] [SEP] john ##son visited u . s".split())}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = jaxformer.Tokenizer(backend)
    (ids,), (word_ids,) = encode_words(tok, [["Johnson", "visited", "U.S.", "zzz"]])
    assert ids.tolist() == [2, 4, 5, 6, 7, 8, 9, 8, 1, 3]
    assert word_ids.tolist() == [-1, 0, 0, 1, 2, 2, 2, 2, 3, -1]
    (ids,), (word_ids,) = encode_words(tok, [["Johnson", "visited", "U.S."]], max_length=5)
    assert ids.tolist() == [2, 4, 5, 6, 3] and word_ids.tolist() == [-1, 0, 0, 1, -1]


def test_bad_words(minilm_dir):
    tok = jaxformer.load_tokenizer(minilm_dir)
    with pytest.raises(TypeError, match=r"^words_batch is a str"):
        encode_words(tok, "EU rejects")
    with pytest.raises(TypeError, match=r"^words_batch\[1\] is a str, not a list of words"):
        encode_words(tok, [["EU"], "rejects German"])
    with pytest.raises(TypeError, match=r"^words_batch\[0\]\[1\] is a int, not a str"):
        encode_words(tok, [["EU", 3]])
    with pytest.raises(ValueError, match=r"max_length=2 is too short"):
        encode_words(tok, [["EU"]], max_length=2)
