"""A checkpoint's tokenizer files read into a `jaxformer.tokenizer.Tokenizer`: tokenizer.json,
or vocab.txt built as transformers' BertConverter builds it, with tokenizer_config.json's and
special_tokens_map.json's settings and special tokens, as transformers' fast tokenizers read
them (`do_lower_case` of a BertTokenizer winning over tokenizer.json's normalizer).
"""

from __future__ import annotations

import os
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from jaxformer.hf import CheckpointError
from jaxformer.hf.hub import read_json_object, resolve_checkpoint
from jaxformer.tokenizer import (
    BERT_CLASSES,
    SPECIAL_TOKENS,
    Tokenizer,
    check_length,
    family_special_tokens,
    lowercases,
    pieces,
)

NEEDED_TOKENS = ("cls_token", "sep_token", "pad_token")


def _read_json(path: Path) -> dict:
    """A JSON object from `path`; {} if there is no such file."""
    return read_json_object(path) if path.is_file() else {}


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


def _tokenizer_json_tokens(tok: tokenizers.Tokenizer) -> dict[str, tuple[str, str]]:
    """Special tokens that tokenizer.json itself names -> (token, where): cls and sep as its
    post_processor puts them around a single text (one special token before it, one after),
    and padding's pad token."""
    found = {}
    processor = tok.post_processor
    if processor is not None and processor.num_special_tokens_to_add(False):
        single = pieces(processor, pair=False)
        segments = [p.segment for p in single]
        if segments.count(0) == 1:
            text = segments.index(0)
            for key, around in (("cls_token", single[:text]), ("sep_token", single[text + 1 :])):
                if len(around) == 1 and (token := tok.id_to_token(around[0].token_id)):
                    found[key] = token, "from tokenizer.json's post_processor"
    if (token := (tok.padding or {}).get("pad_token")) is not None:
        found["pad_token"] = token, "from tokenizer.json's padding"
    return found


def _special_tokens(
    folder: Path,
    special_map: dict,
    tokenizer_config: dict,
    from_json: dict[str, tuple[str, str]],
    model_type: str | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """The special tokens and where each came from: special_tokens_map.json, else
    tokenizer_config.json (each a string or an AddedToken object {"content": string, ...}), else
    tokenizer.json (`_tokenizer_json_tokens`), else the defaults of config.json's model_type,
    else BERT's."""
    if (family_defaults := family_special_tokens(model_type)) is not None:
        defaults = family_defaults
        default_origin = f"the default for config.json's model_type {model_type!r}"
    else:
        defaults = SPECIAL_TOKENS
        default_origin = "BERT's default" + (
            f" (model_type {model_type!r} has none here)" if model_type else ""
        )
    special, origins = {}, {}
    for key, default in defaults.items():
        file, value = "special_tokens_map.json", special_map.get(key)
        if value is None:  # null, or absent: as if not there
            file, value = "tokenizer_config.json", tokenizer_config.get(key)
        if value is None:
            value, origins[key] = from_json.get(key, (default, default_origin))
        else:
            origins[key] = f"named in {file}"
        if isinstance(value, dict):
            value = value.get("content")
        if not isinstance(value, str) or not value:
            raise CheckpointError(
                f"{folder / file}: {key} is {value!r}; a special token must be a non-empty "
                'string or an object {"content": string}'
            )
        special[key] = value
    return special, origins


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
    its tokenizer.json if present, else one built from vocab.txt. config.json's model_type, if
    there is one beside it, gives the special tokens and the template that the tokenizer files
    do not name."""
    check_length(max_length, truncation)
    folder = resolve_checkpoint(path_or_hub_id)
    tokenizer_config = _read_json(folder / "tokenizer_config.json")
    _check_tokenizer_config(tokenizer_config, folder / "tokenizer_config.json")
    special_map = _read_json(folder / "special_tokens_map.json")
    model_type = _read_json(folder / "config.json").get("model_type")
    model_type = model_type if isinstance(model_type, str) else None
    source = folder / "tokenizer.json"
    if source.is_file():
        try:
            tok = tokenizers.Tokenizer.from_file(str(source))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise CheckpointError(
                f"{source} could not be read ({e}); download or save it again"
            ) from e
        special, origins = _special_tokens(
            folder, special_map, tokenizer_config, _tokenizer_json_tokens(tok), model_type
        )
        # transformers' BertTokenizer rebuilds the normalizer from do_lower_case; other classes
        # (and no class) keep tokenizer.json's.
        lowercase = tokenizer_config.get("do_lower_case")
        is_bert = tokenizer_config.get("tokenizer_class") in BERT_CLASSES
        if is_bert and lowercase is not None and lowercases(tok) not in (None, lowercase):
            tok.normalizer = _bert_normalizer(tokenizer_config, lowercase)
    elif (source := folder / "vocab.txt").is_file():
        special, origins = _special_tokens(folder, special_map, tokenizer_config, {}, model_type)
        tok = _from_vocab(source, tokenizer_config, special)
    else:
        raise FileNotFoundError(
            f"{folder} has neither tokenizer.json nor vocab.txt; copy the checkpoint's tokenizer "
            "files into it"
        )
    for key in NEEDED_TOKENS:
        if tok.token_to_id(special[key]) is None:
            raise CheckpointError(
                f"{source}: special token {special[key]!r} is not in the tokenizer's vocabulary: "
                f"it is the {key}, {origins[key]}; is this the checkpoint's tokenizer? If so, "
                f"name its {key} in tokenizer_config.json"
            )
    cls = tokenizer_config.get("tokenizer_class") or "BertTokenizer"
    return Tokenizer(tok, max_length, truncation, special, cls, model_type)
