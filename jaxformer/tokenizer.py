"""BERT WordPiece tokenization with head or head+tail truncation, on Hugging Face `tokenizers`.

Mirrors transformers' BertTokenizer(Fast): a checkpoint's tokenizer.json, or one built from
vocab.txt as transformers' BertConverter does (BertNormalizer, BertPreTokenizer, WordPiece), with
`do_lower_case` from a BertTokenizer's tokenizer_config.json winning over tokenizer.json's
normalizer, as in transformers. Long texts keep their head (the first max_length - 2 tokens) or
head and tail (the first 128 and last max_length - 130 tokens; Sun et al. 2019, "How to Fine-Tune
BERT for Text Classification?"), then become [CLS] tokens [SEP].
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from jaxformer.data.pipeline import pad_ids
from jaxformer.hf import CheckpointError
from jaxformer.hf.hub import resolve_checkpoint

TRUNCATIONS = ("head", "head_tail")
PADDINGS = ("longest", "max_length")
HEAD_TOKENS = 128  # head_tail keeps this many leading content tokens
# transformers' classes that rebuild the normalizer from do_lower_case.
BERT_CLASSES = ("BertTokenizer", "BertTokenizerFast", "DistilBertTokenizer")
SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


def _check_length(max_length: int, truncation: str) -> None:
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation={truncation!r}; choose one of {TRUNCATIONS}")
    least = HEAD_TOKENS + 3 if truncation == "head_tail" else 3
    if not isinstance(max_length, int) or max_length < least:
        raise ValueError(
            f"max_length={max_length!r} is too short for truncation={truncation!r}: it needs at "
            f"least {least} ([CLS], [SEP] and "
            + (f"{HEAD_TOKENS} head tokens plus one tail token)" if least > 3 else "one token)")
        )


class Tokenizer:
    """A `tokenizers.Tokenizer` that truncates our way and returns numpy int32 batches.

    Attributes: pad_id, cls_id, sep_id, vocab_size, max_length, truncation, fingerprint (a hash
    of the tokenizer's JSON, max_length and truncation, for cache keys).
    """

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        max_length: int = 512,
        truncation: str = "head",
        special_tokens: dict[str, str] | None = None,
        tokenizer_class: str = "BertTokenizer",
    ):
        _check_length(max_length, truncation)
        self.tokenizer_class = tokenizer_class  # transformers' class, written back by `save`
        self.tokenizer = tokenizer
        # Some tokenizer.json files carry their own truncation/padding (MiniLM's: 128); we do ours.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.special_tokens = {**SPECIAL_TOKENS, **(special_tokens or {})}
        self.max_length, self.truncation = max_length, truncation
        self.pad_id, self.cls_id, self.sep_id = (
            self._token_id(self.special_tokens[k]) for k in ("pad_token", "cls_token", "sep_token")
        )
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        content = tokenizer.to_str() + f"|max_length={max_length}|truncation={truncation}"
        self.fingerprint = hashlib.sha256(content.encode()).hexdigest()[:16]

    def _token_id(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise ValueError(f"special token {token!r} is not in the tokenizer's vocabulary")
        return i

    def _truncate(self, ids: list[int], max_length: int) -> np.ndarray:
        """Content ids -> [CLS] kept content [SEP], at most max_length long."""
        budget = max_length - 2
        if len(ids) > budget:
            if self.truncation == "head":
                ids = ids[:budget]
            else:
                ids = ids[:HEAD_TOKENS] + ids[len(ids) - (budget - HEAD_TOKENS) :]
        return np.array([self.cls_id, *ids, self.sep_id], np.int32)

    def encode_ids(self, texts: Sequence[str], max_length: int | None = None) -> list[np.ndarray]:
        """Unpadded int32 ids per text, with [CLS]/[SEP], truncated to max_length (default
        self.max_length)."""
        max_length = self.max_length if max_length is None else max_length
        _check_length(max_length, self.truncation)
        if isinstance(texts, str):
            texts = [texts]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [self._truncate(e.ids, max_length) for e in encodings]

    def pad(
        self, ids: Sequence[np.ndarray], padding: str = "longest", max_length: int | None = None
    ) -> dict[str, np.ndarray]:
        """Pads id sequences into (b, t) int32 arrays: input_ids, attention_mask, token_type_ids
        (see `jaxformer.data.pipeline.pad_ids`). padding="longest" pads to the longest sequence,
        "max_length" to max_length (default self.max_length)."""
        if padding not in PADDINGS:
            raise ValueError(f"padding={padding!r}; choose one of {PADDINGS}")
        longest = max((len(x) for x in ids), default=0)
        length = (max_length or self.max_length) if padding == "max_length" else longest
        return pad_ids(ids, length, self.pad_id)

    def __call__(
        self, texts: str | Sequence[str], max_length: int | None = None, padding: str = "longest"
    ) -> dict[str, np.ndarray]:
        """Tokenizes a batch of texts (a single str is a batch of one) into padded int32 arrays."""
        return self.pad(self.encode_ids(texts, max_length), padding, max_length)

    def save(self, folder: str | os.PathLike) -> None:
        """Writes tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json,
        which transformers' AutoTokenizer and `load_tokenizer` both read."""
        folder = Path(folder)
        self.tokenizer.save(str(folder / "tokenizer.json"))
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        by_id = sorted(vocab, key=vocab.get)
        if [vocab[t] for t in by_id] == list(range(len(by_id))):  # WordPiece: one token a line
            (folder / "vocab.txt").write_text("".join(f"{t}\n" for t in by_id), encoding="utf-8")
        config = {
            "tokenizer_class": self.tokenizer_class,
            "model_max_length": self.max_length,
            **self.special_tokens,
        }
        if self.tokenizer_class in BERT_CLASSES:
            config["do_lower_case"] = _lowercases(self.tokenizer) is not False
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (folder / "special_tokens_map.json").write_text(
            json.dumps(self.special_tokens, indent=2) + "\n"
        )


def _lowercases(tokenizer: tokenizers.Tokenizer) -> bool | None:
    """Whether a tokenizer's BertNormalizer lower-cases; None if it has none."""
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    return normalizer.get("lowercase") if normalizer.get("type") == "BertNormalizer" else None


def _read_json(path: Path) -> dict:
    """A JSON object from `path`; {} if there is no such file."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); download or save it again") from e
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(value).__name__}, not an object; download or save it again"
        )
    return value


# tokenizer_config.json fields we read -> the types they may have.
CONFIG_TYPES = {
    "do_lower_case": (bool,),
    "tokenize_chinese_chars": (bool,),
    "strip_accents": (bool, type(None)),
    "tokenizer_class": (str, type(None)),
}


def _check_tokenizer_config(config: dict, path: Path) -> None:
    for key, types in CONFIG_TYPES.items():
        if key in config and not isinstance(config[key], types):
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise CheckpointError(
                f"{path}: {key}={config[key]!r} is not valid; it must be {allowed}"
            )


def _special_tokens(folder: Path, special_map: dict, tokenizer_config: dict) -> dict[str, str]:
    """The special tokens: special_tokens_map.json, else tokenizer_config.json, else BERT's.
    Each is a string or an AddedToken object {"content": string, ...}."""
    special = {}
    for key, default in SPECIAL_TOKENS.items():
        file, value = "special_tokens_map.json", special_map.get(key)
        if value is None:  # null, or absent: as if not there
            file, value = "tokenizer_config.json", tokenizer_config.get(key)
            value = default if value is None else value
        if isinstance(value, dict):
            value = value.get("content")
        if not isinstance(value, str) or not value:
            raise CheckpointError(
                f"{folder / file}: {key} is {value!r}; a special token must be a non-empty "
                'string or an object {"content": string}'
            )
        special[key] = value
    return special


def _bert_normalizer(tokenizer_config: dict, lowercase: bool) -> normalizers.BertNormalizer:
    return normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=tokenizer_config.get("tokenize_chinese_chars", True),
        strip_accents=tokenizer_config.get("strip_accents"),
        lowercase=lowercase,
    )


def _from_vocab(vocab_file: Path, tokenizer_config: dict, special: dict) -> tokenizers.Tokenizer:
    """transformers' BertConverter: the fast tokenizer equivalent to BertTokenizer(vocab.txt)."""
    try:
        vocab_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(
            f"{vocab_file} is not UTF-8 text ({e}); it should hold one token a line"
        ) from e
    vocab = models.WordPiece.read_file(str(vocab_file))
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=special["unk_token"]))
    tok.normalizer = _bert_normalizer(tokenizer_config, tokenizer_config.get("do_lower_case", True))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    present = [t for t in special.values() if t in vocab]
    tok.add_special_tokens(present)  # never split "[SEP]" etc. in text
    return tok


def load_tokenizer(
    path_or_hub_id: str | os.PathLike, max_length: int = 512, truncation: str = "head"
) -> Tokenizer:
    """The tokenizer of a checkpoint folder or Hub id (see `jaxformer.hf.hub.resolve_checkpoint`):
    its tokenizer.json if present, else one built from vocab.txt."""
    _check_length(max_length, truncation)
    folder = resolve_checkpoint(path_or_hub_id)
    tokenizer_config = _read_json(folder / "tokenizer_config.json")
    _check_tokenizer_config(tokenizer_config, folder / "tokenizer_config.json")
    special_map = _read_json(folder / "special_tokens_map.json")
    special = _special_tokens(folder, special_map, tokenizer_config)
    source = folder / "tokenizer.json"
    if source.is_file():
        try:
            tok = tokenizers.Tokenizer.from_file(str(source))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise CheckpointError(
                f"{source} could not be read ({e}); download or save it again"
            ) from e
        # transformers' BertTokenizer rebuilds the normalizer from do_lower_case; other classes
        # (and no class) keep tokenizer.json's.
        lowercase = tokenizer_config.get("do_lower_case")
        is_bert = tokenizer_config.get("tokenizer_class") in BERT_CLASSES
        if is_bert and lowercase is not None and _lowercases(tok) not in (None, lowercase):
            tok.normalizer = _bert_normalizer(tokenizer_config, lowercase)
    elif (source := folder / "vocab.txt").is_file():
        tok = _from_vocab(source, tokenizer_config, special)
    else:
        raise FileNotFoundError(
            f"{folder} has neither tokenizer.json nor vocab.txt; copy the checkpoint's tokenizer "
            "files into it"
        )
    try:
        cls = tokenizer_config.get("tokenizer_class") or "BertTokenizer"
        return Tokenizer(tok, max_length, truncation, special, cls)
    except ValueError as e:  # a special token the vocabulary lacks
        raise CheckpointError(f"{source}: {e}; is it this checkpoint's tokenizer?") from e
