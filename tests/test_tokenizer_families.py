"""`load_tokenizer` on each family's tokenizer: WordPiece (BERT, DistilBERT), byte-level BPE
(RoBERTa), SentencePiece Unigram (XLM-R, ALBERT, DeBERTa-v2), each trained here and saved as a
Hugging Face folder. Single texts and text pairs (ids and token types) equal transformers' fast
tokenizer loaded from the same folder: from tokenizer.json's own post_processor, and from the
family's defaults (transformers' tokenizer class, our config.json model_type) when the folder
names no template or special tokens. `save` writes a folder that transformers loads to the same
ids."""

import json

import numpy as np
import pytest
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

import jaxformer
from jaxformer.hf import CheckpointError

transformers = pytest.importorskip("transformers")

CORPUS = [
    "the movie was great fun, and the actors were superb",
    "a dull and boring plot; the worst film of the year",
    "loved every scene of it! Über-charming, naïve and moving",
] * 30
TEXTS = ["the movie was fun", "A boring, DULL plot!", "naïve scenes " * 30, "x", ""]
# Against TEXTS: shorter, longer, both long (a tie), short, empty.
PAIRS = ["a dull plot", "the actors " * 20, "naïve scenes " * 30, "", "loved it"]
ROBERTA_SPECIAL = dict(
    bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>"
) | dict(pad_token="<pad>", mask_token="<mask>")
BERT_SPECIAL = dict(
    unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]"
)
ALBERT_SPECIAL = BERT_SPECIAL | dict(pad_token="<pad>", unk_token="<unk>")


def byte_level_bpe(special):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=150,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def unigram(special, normalizer=None, pre_tokenizer=None):
    """XLM-R's layout by default; ALBERT's and DeBERTa-v2's with their transformers class's
    normalizer and pre-tokenizer."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizer or normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizer or pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    order = ("cls_token", "pad_token", "sep_token", "unk_token", "mask_token")
    if special["cls_token"] == "[CLS]":  # transformers' classes expect unk at id 1
        order = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
    trainer = trainers.UnigramTrainer(
        vocab_size=120,
        special_tokens=[special[k] for k in order],
        unk_token=special["unk_token"],
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def albert_unigram(special):
    return unigram(
        special,
        normalizers.Sequence(
            [
                normalizers.Replace("``", '"'),
                normalizers.Replace("''", '"'),
                normalizers.NFKD(),
                normalizers.StripAccents(),
                normalizers.Lowercase(),
            ]
        ),
        pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]),
    )


def deberta_unigram(special):
    return unigram(
        special,
        normalizers.Sequence(
            [
                normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "),
                normalizers.NFC(),
                normalizers.Strip(left=False, right=True),
            ]
        ),
    )


def wordpiece(special):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def bert_template(tok, special):
    cls, sep = special["cls_token"], special["sep_token"]
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in (cls, sep)],
    )


def bert_processing(tok, special):
    cls, sep = special["cls_token"], special["sep_token"]
    return processors.BertProcessing((sep, tok.token_to_id(sep)), (cls, tok.token_to_id(cls)))


def roberta_processing(tok, special):
    cls, sep = special["cls_token"], special["sep_token"]
    return processors.RobertaProcessing((sep, tok.token_to_id(sep)), (cls, tok.token_to_id(cls)))


def xlm_roberta_template(tok, special):
    cls, sep = special["cls_token"], special["sep_token"]
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {sep} $B {sep}",
        special_tokens=[(t, tok.token_to_id(t)) for t in (cls, sep)],
    )


# model_type -> (trained model, special tokens, transformers' class, the post_processor its
# checkpoints' tokenizer.json holds).
FAMILIES = {
    "bert": (wordpiece, BERT_SPECIAL, "BertTokenizer", bert_template),
    "distilbert": (wordpiece, BERT_SPECIAL, "BertTokenizer", bert_processing),
    "roberta": (byte_level_bpe, ROBERTA_SPECIAL, "RobertaTokenizer", roberta_processing),
    "xlm-roberta": (unigram, ROBERTA_SPECIAL, "XLMRobertaTokenizer", xlm_roberta_template),
    "albert": (albert_unigram, ALBERT_SPECIAL, "AlbertTokenizer", bert_template),
    "deberta-v2": (deberta_unigram, BERT_SPECIAL, "DebertaV2Tokenizer", bert_template),
}


def save_folder(
    folder, model_type, own_template=True, named=True, tokenizer_class=None, trained=None
):
    """A family's tokenizer folder. own_template: tokenizer.json holds the family's
    post_processor (else none); named: tokenizer_config.json and special_tokens_map.json name
    the special tokens (else neither does); tokenizer_class: tokenizer_config.json's (else
    transformers' generic fast tokenizer, which applies tokenizer.json as it is); trained: the
    trained model to save (else one trained here; Unigram training is not deterministic)."""
    train, special, _, template = FAMILIES[model_type]
    tok = trained or train(special)
    tok.post_processor = template(tok, special) if own_template else None
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    fast.save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    if not named:
        config = {k: v for k, v in config.items() if k not in special and k != "bos_token"}
        config.pop("extra_special_tokens", None)
        (folder / "special_tokens_map.json").unlink(missing_ok=True)
    if tokenizer_class:
        config["tokenizer_class"] = tokenizer_class
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if model_type:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


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
