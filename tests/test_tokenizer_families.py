"""`load_tokenizer` on each family's tokenizer.json: byte-level BPE (RoBERTa), SentencePiece
Unigram (XLM-R), WordPiece (DistilBERT), each trained here and saved as a Hugging Face folder;
its ids equal transformers' fast tokenizer loaded from the same folder, and `save` writes a
folder that transformers loads to the same ids."""

import numpy as np
import pytest
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

import jaxformer

transformers = pytest.importorskip("transformers")

CORPUS = [
    "the movie was great fun, and the actors were superb",
    "a dull and boring plot; the worst film of the year",
    "loved every scene of it! Über-charming, naïve and moving",
] * 30
TEXTS = ["the movie was fun", "A boring, DULL plot!", "naïve scenes " * 30, "x"]
ROBERTA_SPECIAL = dict(
    bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>"
) | dict(pad_token="<pad>", mask_token="<mask>")
BERT_SPECIAL = dict(
    unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]"
)


def byte_level_bpe():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=150,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok, ROBERTA_SPECIAL


def unigram():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=120,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>",
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok, ROBERTA_SPECIAL


def wordpiece():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok, BERT_SPECIAL


def post_processor(tok, cls, sep, pair_seps):
    """The family's template, as its checkpoints' tokenizer.json holds it."""
    between = " ".join([sep] * pair_seps)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {between} $B:1 {sep}:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in (cls, sep)],
    )


@pytest.fixture(params=[byte_level_bpe, unigram, wordpiece], ids=lambda f: f.__name__)
def folder(request, tmp_path):
    tok, special = request.param()
    roberta = special is ROBERTA_SPECIAL
    post_processor(tok, special["cls_token"], special["sep_token"], 2 if roberta else 1)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    fast.save_pretrained(tmp_path)
    return tmp_path


def transformers_ids(folder, texts, max_length):
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    return hf(texts, truncation=True, max_length=max_length)["input_ids"]


@pytest.mark.parametrize("max_length", [8, 64])
def test_ids_equal_transformers(folder, max_length):
    ours = jaxformer.load_tokenizer(folder, max_length=max_length).encode_ids(TEXTS)
    want = transformers_ids(folder, TEXTS, max_length)
    assert [list(x) for x in ours] == want


def test_save_round_trip(folder, tmp_path):
    tok = jaxformer.load_tokenizer(folder, max_length=16)
    (tmp_path / "saved").mkdir()
    tok.save(tmp_path / "saved")
    again = jaxformer.load_tokenizer(tmp_path / "saved", max_length=16)
    batch, want = tok(TEXTS), again(TEXTS)
    np.testing.assert_array_equal(batch["input_ids"], want["input_ids"])
    assert [list(x) for x in tok.encode_ids(TEXTS)] == transformers_ids(
        tmp_path / "saved", TEXTS, 16
    )
