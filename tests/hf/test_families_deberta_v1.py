"""The DeBERTa family (v1, model_type "deberta"), every task transformers has, both ways: a random
transformers Deberta model of odd shapes loaded by `jaxformer.from_pretrained` matches it at
real tokens; `jaxformer.save_pretrained` writes a folder transformers' AutoModelFor<Task> loads
with nothing missing or unexpected, and that matches too. Then every layer's hidden states, the
config both ways, the configs jaxformer refuses, the multiple-choice head it has not, and the
tokenizer's defaults against DebertaTokenizer. PyTorch and transformers are the reference, used
only here (through tests/hf_parity.py)."""

import dataclasses
import json

import hf_parity
import numpy as np
import pytest
from helpers import BERT_SPECIAL, CORPUS
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import jaxformer
from jaxformer import families
from jaxformer.hf import CheckpointError
from jaxformer.models.config import BertConfig

transformers = pytest.importorskip("transformers")

VOCAB = 99
SHAPES = dict(
    vocab_size=VOCAB,
    hidden_size=40,
    num_hidden_layers=3,
    num_attention_heads=5,
    intermediate_size=52,
    max_position_embeddings=40,
    hidden_act="gelu",
)
CONFIGS = {
    # Both terms, distances clipped at 6 (shorter than the batch), absolute positions and token
    # types in the input, a narrower embedding projected to the width.
    "both": SHAPES
    | dict(
        relative_attention=True,
        max_relative_positions=6,
        pos_att_type=["c2p", "p2c"],
        position_biased_input=True,
        type_vocab_size=2,
        embedding_size=24,
        pooler_hidden_act="relu",
        hidden_act="gelu_new",
    ),
    # microsoft/deberta-base's layout: relative positions only, the old "c2p|p2c" spelling,
    # max_relative_positions -1 (max_position_embeddings), no token types.
    "relative-only": SHAPES
    | dict(
        relative_attention=True,
        max_relative_positions=-1,
        pos_att_type="c2p|p2c",
        position_biased_input=False,
        type_vocab_size=0,
    ),
    # One term only (p2c), 2 layers, distances clipped at 3.
    "p2c": SHAPES
    | dict(
        num_hidden_layers=2,
        relative_attention=True,
        max_relative_positions=3,
        pos_att_type=["p2c"],
        position_biased_input=True,
        type_vocab_size=1,
    ),
}
TASKS = tuple(t for t in hf_parity.TASKS if t != "multiple_choice")  # transformers has none


def random_hf_model(name, task, seed=0, **changes):
    """A transformers Deberta model of CONFIGS[name], every weight perturbed."""
    return hf_parity.random_hf_model("Deberta", CONFIGS[name] | changes, task, seed)


def random_batch(name, task):
    """Padding 0 and, with two token types, types 1 from position 3 on."""
    batch = hf_parity.random_batch(task, vocab=VOCAB)
    if CONFIGS[name].get("type_vocab_size", 0) > 1:
        mask = batch["attention_mask"]
        batch["token_type_ids"] = (np.arange(mask.shape[-1]) >= 3).astype(np.int32) * mask
    return batch


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_deberta_matches_transformers_both_ways(name, task, tmp_path):
    hf_model = random_hf_model(name, task, seed=len(task))
    batch = random_batch(name, task)
    model, _ = hf_parity.assert_matches_both_ways(
        hf_model, task, batch, tmp_path, f"deberta {name}"
    )
    assert model.config.model_type == "deberta"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_layer_matches(name, tmp_path):
    hf_model = random_hf_model(name, "base")
    hf_model.save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    batch = random_batch(name, "base")
    states = CONFIGS[name]["num_hidden_layers"] + 1
    hf_parity.assert_every_layer_matches(model, params, hf_model, batch, states, f"deberta {name}")


def test_bfloat16_is_finite_and_close_to_float32(tmp_path):
    random_hf_model("both", "masked_lm").save_pretrained(tmp_path)
    batch = random_batch("both", "masked_lm")
    hf_parity.assert_bfloat16_close(tmp_path, batch, "deberta both")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_both_ways(name):
    hf = transformers.DebertaConfig(**CONFIGS[name]).to_dict()
    c = BertConfig.from_hf(hf)
    r = c.relative
    assert c.model_type == "deberta" and r.pos_att_type == tuple(hf["pos_att_type"])
    assert (r.position_buckets, r.share_att_key, r.norm_rel_ebd) == (-1, False, "none")
    written = json.loads(json.dumps(c.to_hf("DebertaModel")))  # config.json's text
    assert BertConfig.from_hf(written) == c
    back = transformers.DebertaConfig(**written)
    for key in (*SHAPES, *CONFIGS[name], "layer_norm_eps", "legacy"):
        assert getattr(back, key) == hf[key], key


@pytest.mark.parametrize(
    "change, match",
    [
        ({"talking_head": True}, r"talking_head=True is not supported.*talking_head=False"),
        ({"legacy": False}, r"legacy=False is not supported.*legacy=True"),
        ({"pos_att_type": ["p2p"]}, r"pos_att_type=\['p2p'\] is not supported"),
        ({"relative_attention": "yes"}, r"relative_attention='yes' is not valid"),
    ],
)
def test_configs_jaxformer_does_not_read_are_refused(change, match, tmp_path):
    random_hf_model("relative-only", "base").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(CheckpointError, match=match):
        jaxformer.from_pretrained(tmp_path, task="base")


@pytest.mark.parametrize(
    "change",
    [dict(position_buckets=8), dict(share_att_key=True), dict(norm_rel_ebd="layer_norm")],
)
@pytest.mark.parametrize("task", ["base", "classification"])
def test_deberta_v2_fields_are_refused(change, task):
    c = BertConfig.from_hf({"model_type": "deberta", **CONFIGS["both"]})
    c = c.replace(relative=dataclasses.replace(c.relative, **change))
    ((name, value),) = change.items()
    match = rf"^relative\.{name}={value!r}: DeBERTa \(model_type 'deberta'\) has no .*'deberta-v2'$"
    with pytest.raises(ValueError, match=match):
        families.model_class("deberta", task)(c)


def test_multiple_choice_is_not_a_deberta_model(tmp_path):
    match = r"model_type='deberta' has no 'multiple_choice' model in jaxformer; its tasks are"
    with pytest.raises(ValueError, match=match):
        families.model_class("deberta", "multiple_choice")
    random_hf_model("p2c", "base").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=match):
        jaxformer.from_pretrained(tmp_path, task="multiple_choice")


def _bpe_folder(folder):
    """A byte-level BPE tokenizer with DeBERTa's special tokens and no post_processor, its
    tokenizer_config.json naming DebertaTokenizer and no special tokens, config.json "deberta"."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # DebertaTokenizer's ids 0-4
    trainer = trainers.BpeTrainer(
        vocab_size=150,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config = {k: v for k, v in config.items() if k not in BERT_SPECIAL and k != "bos_token"}
    config.pop("extra_special_tokens", None)
    config["tokenizer_class"] = "DebertaTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").unlink(missing_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "deberta"}))
    return folder


def test_tokenizer_defaults_equal_deberta_tokenizer(tmp_path):
    """DebertaTokenizer's specials and template: [CLS] A [SEP] and [CLS] A [SEP] [SEP] B [SEP],
    all token types 0."""
    folder = _bpe_folder(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(hf).__name__ == "DebertaTokenizer"
    assert {k: v for k, v in hf.special_tokens_map.items() if k in BERT_SPECIAL} == BERT_SPECIAL
    tok = jaxformer.load_tokenizer(folder, max_length=17)
    assert tok.special_tokens == {k: BERT_SPECIAL[k] for k in tok.special_tokens}
    texts = ["the movie was fun", "A boring, DULL plot!", "naïve scenes " * 30, "x"]
    pairs = ["a dull plot", "the actors " * 20, "naïve scenes " * 30, "loved it"]
    for second in (None, pairs):
        args = (texts,) if second is None else (texts, second)
        want = hf(*args, truncation=True, max_length=17, return_token_type_ids=True)
        ids, types = tok.encode(texts, 17, pairs=second)
        assert [x.tolist() for x in ids] == want["input_ids"]
        assert [x.tolist() for x in types] == want["token_type_ids"]
    cls, sep = hf.cls_token_id, hf.sep_token_id
    a, b = (hf(x, add_special_tokens=False)["input_ids"] for x in ("a dull", "plot"))
    assert list(tok.encode(["a dull"], 17, pairs=["plot"])[0][0]) == [cls, *a, sep, sep, *b, sep]
