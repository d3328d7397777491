"""`load_tokenizer` on each family's tokenizer: WordPiece (BERT, DistilBERT), byte-level BPE
(RoBERTa), SentencePiece Unigram (XLM-R, ALBERT, DeBERTa-v2), each trained here and saved as a
Hugging Face folder. Single texts and text pairs (ids and token types) equal transformers' fast
tokenizer loaded from the same folder: from tokenizer.json's own post_processor, and from the
family's defaults (transformers' tokenizer class, our config.json model_type) when the folder
names no template or special tokens. `save` writes a folder that transformers loads to the same
ids."""

import numpy as np
import pytest
from helpers import FAMILIES, save_folder
from tokenizers import Tokenizer

import jaxformer
from jaxformer.hf import CheckpointError

transformers = pytest.importorskip("transformers")

TEXTS = ["the movie was fun", "A boring, DULL plot!", "naïve scenes " * 30, "x", ""]
# Against TEXTS: shorter, longer, both long (a tie), short, empty.
PAIRS = ["a dull plot", "the actors " * 20, "naïve scenes " * 30, "", "loved it"]


@pytest.fixture(params=list(FAMILIES))
def folder(request, tmp_path):
    return save_folder(tmp_path / request.param, request.param)


def transformers_encode(folder, texts, max_length, pairs=None, **kwargs):
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    args = (texts,) if pairs is None else (texts, pairs)
    out = hf(*args, truncation=True, max_length=max_length, return_token_type_ids=True, **kwargs)
    return out["input_ids"], out["token_type_ids"]


def encode(tok, texts, max_length, pairs=None):
    ids, types = tok.encode(texts, max_length, pairs=pairs)
    return [x.tolist() for x in ids], [x.tolist() for x in types]


@pytest.mark.parametrize("max_length", [8, 64])
def test_ids_equal_transformers(folder, max_length):
    ours = jaxformer.load_tokenizer(folder, max_length=max_length).encode_ids(TEXTS)
    want, _ = transformers_encode(folder, TEXTS, max_length)
    assert [list(x) for x in ours] == want


# Odd and even room for the pair's tokens, both texts cut, one cut, none cut.
@pytest.mark.parametrize("max_length", [9, 10, 17, 40, 512])
def test_pairs_equal_transformers(folder, max_length):
    tok = jaxformer.load_tokenizer(folder, max_length=max_length)
    want = transformers_encode(folder, TEXTS, max_length, PAIRS)
    assert encode(tok, TEXTS, max_length, PAIRS) == want
    assert encode(tok, PAIRS, max_length, TEXTS) == transformers_encode(
        folder, PAIRS, max_length, TEXTS
    )


def test_padded_pairs_equal_transformers(folder):
    tok = jaxformer.load_tokenizer(folder, max_length=24)
    batch = tok(TEXTS, pairs=PAIRS, padding="max_length")
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    want = hf(
        TEXTS,
        PAIRS,
        truncation=True,
        max_length=24,
        padding="max_length",
        return_token_type_ids=True,
    )
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(batch[k], want[k], err_msg=k)
        assert batch[k].dtype == np.int32


@pytest.mark.parametrize("model_type", list(FAMILIES))
@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_family_defaults_equal_transformers_class(tmp_path, model_type, named):
    """No post_processor in tokenizer.json (and with `unnamed`, no special tokens in the folder's
    files): config.json's model_type gives the template and special tokens that transformers'
    tokenizer class for the family builds."""
    train, special, cls, _ = FAMILIES[model_type]
    trained = train(special)
    folder = save_folder(
        tmp_path / "ours", model_type, False, named, tokenizer_class=cls, trained=trained
    )
    reference = folder
    if model_type == "albert":  # its class adds no special tokens without tokenizer.json's
        reference = save_folder(
            tmp_path / "reference", model_type, tokenizer_class=cls, trained=trained
        )
    assert type(transformers.AutoTokenizer.from_pretrained(reference)).__name__ == cls
    tok = jaxformer.load_tokenizer(folder, max_length=17)
    assert encode(tok, TEXTS, 17) == transformers_encode(reference, TEXTS, 17)
    assert encode(tok, TEXTS, 17, PAIRS) == transformers_encode(reference, TEXTS, 17, PAIRS)
    assert tok.special_tokens == {k: special[k] for k in tok.special_tokens}


def test_special_tokens_from_tokenizer_json(tmp_path):
    """A folder that names no special tokens and has no config.json: cls and sep come from
    tokenizer.json's post_processor and pad from its padding, if it has them."""
    folder = save_folder(tmp_path, "roberta", named=False)
    (folder / "config.json").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"tokenizer\.json: special token '\[PAD\]' is not in the tokenizer's vocabulary: "
        r"it is the pad_token, BERT's default; .* name its pad_token in tokenizer_config\.json",
    ):
        jaxformer.load_tokenizer(folder)
    padded = Tokenizer.from_file(str(folder / "tokenizer.json"))
    padded.enable_padding(pad_id=1, pad_token="<pad>")
    padded.save(str(folder / "tokenizer.json"))
    tok = jaxformer.load_tokenizer(folder, max_length=17)
    assert (tok.cls_id, tok.sep_id, tok.pad_id) == (0, 2, 1)
    assert tok.special_tokens["cls_token"] == "<s>" and tok.special_tokens["sep_token"] == "</s>"
    assert encode(tok, TEXTS, 17, PAIRS) == transformers_encode(folder, TEXTS, 17, PAIRS)


def test_save_round_trip(folder, tmp_path):
    tok = jaxformer.load_tokenizer(folder, max_length=16)
    (tmp_path / "saved").mkdir()
    tok.save(tmp_path / "saved")
    again = jaxformer.load_tokenizer(tmp_path / "saved", max_length=16)
    batch, want = tok(TEXTS, pairs=PAIRS), again(TEXTS, pairs=PAIRS)
    for k in batch:
        np.testing.assert_array_equal(batch[k], want[k], err_msg=k)
    saved = tmp_path / "saved"
    assert encode(tok, TEXTS, 16) == transformers_encode(saved, TEXTS, 16)
    assert encode(tok, TEXTS, 16, PAIRS) == transformers_encode(saved, TEXTS, 16, PAIRS)
