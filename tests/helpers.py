"""NumPy references written from the equations, and random inputs, for the attention tests;
small tokenizers of each family, trained here and saved as Hugging Face folders, for the
tokenizer tests.

Not a test module: test modules import it as `helpers` (see conftest.py).
"""

import json
import math

import jax.numpy as jnp
import numpy as np
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


def np_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_attention(q, k, v, mask=None, bias=None) -> np.ndarray:
    """o_t = sum_s e_ts v_s, e_ts = softmax over the unmasked s of q_t . k_s / sqrt(d) + bias_ts,
    per example and head, in float64; a query with no key to attend gets zeros.

    q: (b, t, h, d); k, v: (b, s, h, d); mask: bool and bias: float, each broadcastable to
    (b, h, t, s) (a (b, t, s) mask is read as shared by the heads).
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, t, h, d = q.shape
    s = k.shape[1]
    if mask is None:
        mask = np.ones((b, h, t, s), bool)
    mask = np.asarray(mask, bool)
    if mask.ndim == 3:  # (b, t, s)
        mask = mask[:, None]
    mask = np.broadcast_to(mask, (b, h, t, s))
    bias = np.broadcast_to(np.zeros(()) if bias is None else np.asarray(bias), (b, h, t, s))
    out = np.zeros((b, t, h, d))
    for bi in range(b):
        for hi in range(h):
            for ti in range(t):
                keys = np.flatnonzero(mask[bi, hi, ti])
                if len(keys) == 0:
                    continue
                scores = np.array(
                    [
                        q[bi, ti, hi] @ k[bi, si, hi] / math.sqrt(d) + bias[bi, hi, ti, si]
                        for si in keys
                    ]
                )
                weights = np_softmax(scores)
                out[bi, ti, hi] = sum(
                    w * v[bi, si, hi] for w, si in zip(weights, keys, strict=True)
                )
    return out


def qkv(rng: np.random.Generator, b=2, t=5, s=5, h=3, d=4):
    """Standard normal q (b, t, h, d), k and v (b, s, h, d), as float32 jax arrays."""
    return tuple(
        jnp.asarray(rng.normal(size=shape), jnp.float32)
        for shape in ((b, t, h, d), (b, s, h, d), (b, s, h, d))
    )


def key_padding_mask(lengths, s: int, left: bool = False) -> jnp.ndarray:
    """(b, 1, 1, s) bool: the first (or with `left`, the last) lengths[i] keys of example i."""
    position = np.arange(s)[None, :]
    lengths = np.asarray(lengths)[:, None]
    keys = position >= s - lengths if left else position < lengths  # (b, s)
    return jnp.asarray(keys)[:, None, None, :]


def mask_and_bias(rng: np.random.Generator, mask_shape, bias_shape, t: int = 6):
    """A causal mask broadcast to `mask_shape` (per example and head, with a few more keys
    hidden at random, key 0 always kept) and a random float32 bias of `bias_shape`; None for a
    None shape."""
    mask = None
    if mask_shape is not None:
        mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), mask_shape)
        if mask_shape[0] == 2:
            mask = mask & jnp.asarray(rng.random(mask_shape) > 0.2).at[..., 0].set(True)
    bias = None if bias_shape is None else jnp.asarray(rng.normal(size=bias_shape), jnp.float32)
    return mask, bias


CORPUS = [
    "the movie was great fun, and the actors were superb",
    "a dull and boring plot; the worst film of the year",
    "loved every scene of it! Über-charming, naïve and moving",
] * 30

ROBERTA_SPECIAL = dict(
    bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>"
) | dict(pad_token="<pad>", mask_token="<mask>")
BERT_SPECIAL = dict(
    unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]"
)
ALBERT_SPECIAL = BERT_SPECIAL | dict(pad_token="<pad>", unk_token="<unk>")
MPNET_SPECIAL = ROBERTA_SPECIAL | dict(unk_token="[UNK]")


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


def mpnet_wordpiece(special):
    """BERT's WordPiece with MPNet's special tokens, <s> <pad> </s> first as its vocab has them."""
    tok = Tokenizer(models.WordPiece(unk_token=special["unk_token"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    order = ("cls_token", "pad_token", "sep_token", "unk_token", "mask_token")
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=[special[k] for k in order])
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
    "camembert": (unigram, ROBERTA_SPECIAL, "CamembertTokenizer", xlm_roberta_template),
    "albert": (albert_unigram, ALBERT_SPECIAL, "AlbertTokenizer", bert_template),
    "deberta-v2": (deberta_unigram, BERT_SPECIAL, "DebertaV2Tokenizer", bert_template),
    "mpnet": (mpnet_wordpiece, MPNET_SPECIAL, "MPNetTokenizer", roberta_processing),
}


def save_folder(
    folder, model_type, own_template=True, named=True, tokenizer_class=None, trained=None
):
    """A family's tokenizer folder. own_template: tokenizer.json holds the family's
    post_processor (else none); named: tokenizer_config.json and special_tokens_map.json name
    the special tokens (else neither does); tokenizer_class: tokenizer_config.json's (else
    transformers' generic fast tokenizer, which applies tokenizer.json as it is); trained: the
    trained model to save (else one trained here; Unigram training is not deterministic)."""
    import transformers

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


def gathered_disentangled_bias(q, k, pos_q, pos_k, relative, scores=None):
    """DeBERTa's bias as transformers' disentangled_att_bias forms it, differentiable: the
    (b, h, t, 2P) products of q with every Kr row and of k with every Qr row, then one gather
    per (t, s) at clip(delta_ts + P) and clip(-delta_st + P), the second transposed.
    q: (b, t, h, d); k: (b, s, h, d); pos_q, pos_k: (2P, h, d) or None -> float32 (b, h, t, s).
    `scores` (the program the model would pass) is not used: this is the gather form."""
    del scores
    b, t, h, _ = q.shape
    s = k.shape[1]
    bias = jnp.zeros((b, h, t, s), jnp.float32)
    if pos_k is not None:
        span = pos_k.shape[0] // 2
        index = jnp.broadcast_to(jnp.clip(relative + span, 0, 2 * span - 1), (b, h, t, s))
        c2p = jnp.einsum("bthd,rhd->bhtr", q, pos_k).astype(jnp.float32)  # (b, h, t, 2P)
        bias = bias + jnp.take_along_axis(c2p, index, axis=-1)
    if pos_q is not None:
        span = pos_q.shape[0] // 2
        index = jnp.broadcast_to(jnp.clip(-relative + span, 0, 2 * span - 1), (b, h, s, t))
        p2c = jnp.einsum("bshd,rhd->bhsr", k, pos_q).astype(jnp.float32)  # (b, h, s, 2P)
        bias = bias + jnp.swapaxes(jnp.take_along_axis(p2c, index, axis=-1), -1, -2)
    return bias


def set_fields(config, changes: dict):
    """Sets dotted fields of an experiment config (`{"optimizer.accum_steps": 4}`); returns it."""
    for key, value in changes.items():
        target = config
        *path, last = key.split(".")
        for p in path:
            target = target[p]
        target[last] = value
    return config
