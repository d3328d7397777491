"""Question-answering inputs: (question, context) pairs cut into overlapping windows over the
context, as transformers' fast tokenizers give them to run_qa.py (truncation="only_second",
stride, return_overflowing_tokens, return_offsets_mapping), with each context token's characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import tokenizers

from jaxformer.tokenizer import Piece, check_texts

if TYPE_CHECKING:
    from jaxformer.tokenizer import Tokenizer


class Window(NamedTuple):
    """One window of a (question, context) pair (`encode_windows`)."""

    ids: np.ndarray  # (t,) int32
    type_ids: np.ndarray  # (t,) int32
    offsets: np.ndarray  # (t, 2) int32: a context token's [start, end) characters; else -1, -1
    question_index: int  # the pair it comes from (transformers' overflow_to_sample_mapping)


def _segment_start(pieces: tuple[Piece, ...], n_question: int) -> int:
    """Where the pair template puts the context's (text B's) first token."""
    at = 0
    for p in pieces:
        if p.segment == 1:
            return at
        at += n_question if p.segment == 0 else 1
    raise ValueError("the tokenizer's pair template has no second text; it cannot encode pairs")


def _check_room(n: int, room: int, stride: int, name: str) -> None:
    """A context of n tokens that does not fit in `room` is cut into windows of `room` tokens,
    each starting room - stride tokens after the previous one (tokenizers' Encoding.truncate),
    which needs room > stride."""
    if room <= stride:
        raise ValueError(
            f"{name}: the question and special tokens leave {max(room, 0)} tokens for the "
            f"context, which must be more than doc_stride={stride} to cut its {n} tokens into "
            "windows; raise max_length, lower doc_stride or cut questions with max_query_length"
        )


def encode_windows(
    tokenizer: Tokenizer,
    questions: str | Sequence[str],
    contexts: str | Sequence[str],
    max_length: int | None = None,
    doc_stride: int = 128,
    *,
    max_query_length: int | None = None,
    names: Sequence[str] | None = None,
) -> list[Window]:
    """(question, context) pairs as windows over the context, as transformers' fast tokenizer
    gives them with truncation="only_second", stride=doc_stride and
    return_overflowing_tokens=True: each window is `tokenizer`'s template around the whole
    question and a run of the context's tokens, at most max_length (default
    tokenizer.max_length) long. A context that fits is one window; a longer one is cut into runs
    of `room` tokens (what the question and special tokens leave) starting every
    room - doc_stride tokens, so consecutive windows share doc_stride tokens, the last run ending
    at the context's end. A window's offsets are its context tokens' [start, end) characters in
    the context (the fast tokenizer's offset_mapping), (-1, -1) for the question's and the
    special tokens.

    The question is never cut unless max_query_length is given; then it keeps its first
    max_query_length tokens (the cut of transformers' legacy squad_convert_examples, which
    uses 64). A question so long that the room left is no more than doc_stride, for a context
    that needs windows, is a ValueError naming it (`names[i]`, default "questions[i]").

    Returns a list of `Window`s, the windows of pair 0 first, then of pair 1, ...
    """
    max_length = tokenizer.max_length if max_length is None else max_length
    questions = check_texts(questions, "questions")
    contexts = check_texts(contexts, "contexts")
    if len(questions) != len(contexts):
        raise ValueError(
            f"{len(questions)} questions but {len(contexts)} contexts; give one context each"
        )
    checks = [("max_length", max_length, 1), ("doc_stride", doc_stride, 0)]
    if max_query_length is not None:
        checks.append(("max_query_length", max_query_length, 1))
    for key, value, least in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{key}={value!r}; it must be an int >= {least}")
    names = [f"questions[{i}]" for i in range(len(questions))] if names is None else names
    template, tok = tokenizer.template, tokenizer.tokenizer
    n_special = template.n_special(pair=True)
    # Windows are cut from the context's tokens before the post-processor runs, as tokenizers
    # truncates, and the post-processor then trims each window's offsets on its own (RoBERTa's
    # trim_offsets keeps a window's first token's leading space): so the context is tokenized
    # by a copy without post-processor, and windows are post-processed.
    raw = tokenizers.Tokenizer.from_str(tok.to_str())
    raw.post_processor = None
    # Contexts repeat (SQuAD asks about 5 questions per paragraph): tokenize each once.
    unique = list(dict.fromkeys(contexts))
    by_context = dict(zip(unique, raw.encode_batch(unique, add_special_tokens=False), strict=True))
    encoded = tok.encode_batch(questions, add_special_tokens=False)
    windows = []
    for i, (question, context) in enumerate(zip(encoded, contexts, strict=True)):
        question_ids = question.ids[:max_query_length]
        room = max_length - n_special - len(question_ids)
        # merge of one encoding is a copy: truncate works in place.
        encoding = tokenizers.Encoding.merge([by_context[context]], growing_offsets=False)
        if len(encoding.ids) > room:
            _check_room(len(encoding.ids), room, doc_stride, names[i])
            encoding.truncate(room, doc_stride)
        encoding = tok.post_processor.process(encoding, None, False)
        at = _segment_start(template.pair, len(question_ids))
        for part in [encoding, *encoding.overflowing]:
            ids, type_ids = template.apply([question_ids, part.ids])
            offsets = np.full((len(ids), 2), -1, np.int32)  # (t, 2)
            offsets[at : at + len(part.ids)] = np.asarray(part.offsets, np.int32).reshape(-1, 2)
            windows.append(Window(ids, type_ids, offsets, i))
    return windows
