"""Named-entity inputs: sentences of pre-split words encoded as transformers'
`is_split_into_words=True` encodes them, each word on its own, with the word of every token."""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import tokenizers

from jaxformer.tokenizer import check_length

if TYPE_CHECKING:
    from jaxformer.tokenizer import Tokenizer

# Tokenizer -> its tokenizer for pre-split words (`_words_tokenizer`), built once per Tokenizer.
_WORDS_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_words(words_batch: Sequence[Sequence[str]]) -> list[list[str]]:
    if isinstance(words_batch, str):
        raise TypeError("words_batch is a str; give a batch of sentences, each a list of words")
    batch = []
    for i, words in enumerate(words_batch):
        if isinstance(words, str):
            raise TypeError(f"words_batch[{i}] is a str, not a list of words; split it into words")
        for j, word in enumerate(words):
            if not isinstance(word, str):
                raise TypeError(f"words_batch[{i}][{j}] is a {type(word).__name__}, not a str")
        batch.append(list(words))
    return batch


def _prefix_space(spec: dict | None) -> bool:
    """Turns on add_prefix_space in every ByteLevel pre-tokenizer of a tokenizer.json
    pre_tokenizer spec (in place); whether any was off."""
    if not spec:
        return False
    changed = spec.get("type") == "ByteLevel" and not spec.get("add_prefix_space")
    if changed:
        spec["add_prefix_space"] = True
    return any([changed] + [_prefix_space(p) for p in spec.get("pretokenizers") or ()])


def _words_tokenizer(tokenizer: Tokenizer) -> tokenizers.Tokenizer:
    """The `tokenizers.Tokenizer` for pre-split words, built once per Tokenizer. A byte-level
    BPE (RoBERTa's) gets each word as if after a space, as transformers encodes split words with
    add_prefix_space=True (which run_ner.py passes for RoBERTa): without it "York" in "New York"
    would be encoded as the start of a text, which pre-training never saw mid-sentence."""
    found = _WORDS_TOKENIZERS.get(tokenizer)
    if found is None:
        spec = json.loads(tokenizer.tokenizer.to_str())
        found = tokenizer.tokenizer
        if _prefix_space(spec.get("pre_tokenizer")):
            found = tokenizers.Tokenizer.from_str(json.dumps(spec))
        _WORDS_TOKENIZERS[tokenizer] = found
    return found


def encode_words(
    tokenizer: Tokenizer, words_batch: Sequence[Sequence[str]], max_length: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Unpadded int32 (ids, word_ids) per sentence of pre-split words, with `tokenizer`'s
    template's special tokens, at most max_length (default tokenizer.max_length) long.

    As transformers' `tok(words, is_split_into_words=True, truncation=True,
    max_length=max_length)` with its `.input_ids` and `.word_ids()`: each word is normalized and
    tokenized on its own (a byte-level BPE's as if after a space, see `_words_tokenizer`);
    word_ids[k] is the index in the sentence of the word token k comes from, -1 for a special
    token. A word may give no token at all (an empty word, or one the normalizer removes, such
    as a control character). Sentences always keep their head, whatever the tokenizer's
    `truncation` says: the words past max_length are cut.
    """
    max_length = tokenizer.max_length if max_length is None else max_length
    check_length(max_length, "head")
    batch = _check_words(words_batch)
    template = tokenizer.template
    budget = max_length - template.n_special(pair=False)
    encodings = _words_tokenizer(tokenizer).encode_batch(
        batch, is_pretokenized=True, add_special_tokens=False
    )
    ids, word_ids = [], []
    for e in encodings:
        ids.append(template.apply([e.ids[:budget]])[0])
        word_ids.append(template.word_ids(e.word_ids[:budget]))
    return ids, word_ids
