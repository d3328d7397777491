"""Entity-level precision, recall and F1 of tagged sentences, for named-entity recognition.

Mirrors seqeval 1.2 (github.com/chakki-works/seqeval), which transformers' run_ner.py reports:
the default chunking is `seqeval.metrics.sequence_labeling.get_entities`, that of the CoNLL
shared tasks' conlleval script, which reads IOB1, IOB2 and IOBES alike (an I-X after O or after
another type starts an entity, as IOB1 means it). strict=True is seqeval's mode="strict" with
scheme=IOB2 or IOBES (`seqeval.scheme`): only well-formed entities count (an IOB2 entity starts
with B-X, an IOBES one is S-X or B-X I-X... E-X). `entity_scores` is classification_report's
micro average and per-type rows, and accuracy_score: an entity is right when its type, first
and last token all match, and a ratio with nothing to divide by is 0.
"""

from __future__ import annotations

import re
from collections import Counter

TAG_RE = re.compile(r"O|[BIES](-.+)?")  # seqeval also reads a bare prefix: type "_"
SCHEMES = ("IOB1", "IOB2", "IOBES")
ALL = "IOBES"
# seqeval.scheme's patterns: (previous token's prefixes, this token's prefixes, whether the two
# types must be the same ("same"), differ ("diff") or either ("any")).
STRICT = {
    "IOB2": {
        "allowed": "IOB",
        "start": ((ALL, "B", "any"),),
        "inside": (("B", "I", "same"), ("I", "I", "same")),
        "end": (
            ("I", "O", "any"),
            ("I", "I", "diff"),
            ("I", "B", "any"),
            ("B", "O", "any"),
            ("B", "I", "diff"),
            ("B", "B", "any"),
        ),
    },
    "IOBES": {
        "allowed": ALL,
        "start": ((ALL, "B", "any"), (ALL, "S", "any")),
        "inside": (("B", "I", "same"), ("B", "E", "same"), ("I", "I", "same"), ("I", "E", "same")),
        "end": (("S", ALL, "any"), ("E", ALL, "any")),
    },
}


def _split(tags: list[str]) -> list[tuple[str, str]]:
    """(prefix, type) of each tag; "O" is ("O", "_")."""
    out = []
    for k, tag in enumerate(tags):
        if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
            raise ValueError(
                f"tag {tag!r} at position {k} is not IOB-like (O, B-X, I-X, E-X or S-X)"
            )
        out.append((tag[0], tag[2:] or "_"))
    return out


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (
        prev_tag in "ES"
        or (prev_tag in "BI" and tag in "BSO")
        or (prev_tag != "O" and prev_type != type_)
    )


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return tag in "BS" or (prev_tag in "ESO" and tag in "EI") or (tag != "O" and prev_type != type_)


def _lenient(tokens: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """conlleval's chunks, as seqeval's default get_entities."""
    chunks = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, (tag, type_) in enumerate([*tokens, ("O", "_")]):
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _matches(prev: tuple[str, str], token: tuple[str, str], patterns) -> bool:
    for prev_prefixes, prefixes, types in patterns:
        same = prev[1] == token[1]
        if prev[0] in prev_prefixes and token[0] in prefixes:
            if types == "any" or (types == "same") == same:
                return True
    return False


def _strict(tokens: list[tuple[str, str]], scheme: str) -> list[tuple[str, int, int]]:
    """seqeval.scheme.Tokens.entities: an entity starts where `start` matches, runs while
    `inside` matches, and counts only if the token after it matches `end`."""
    rules = STRICT[scheme]
    for k, (prefix, _) in enumerate(tokens):
        if prefix not in rules["allowed"]:
            raise ValueError(
                f"tag prefix {prefix}- at position {k} is not part of the {scheme} scheme; pass "
                "the scheme of these tags (IOBES has E- and S-) or strict=False"
            )
    tokens = [*tokens, ("O", "_")]
    entities = []
    i, prev = 0, ("O", "_")
    while i < len(tokens):
        if _matches(prev, tokens[i], rules["start"]):
            end = i + 1
            while _matches(tokens[end - 1], tokens[end], rules["inside"]):
                end += 1
            if _matches(tokens[end - 1], tokens[end], rules["end"]):
                entities.append((tokens[i][1], i, end - 1))
            i = end
        else:
            i += 1
        prev = tokens[i - 1]
    return entities


def _check_mode(scheme: str, strict: bool) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}; choose one of {SCHEMES}")
    if strict and scheme not in STRICT:
        raise ValueError(
            f"strict mode reads {tuple(STRICT)}, not {scheme}; use strict=False for IOB1"
        )


def get_entities(
    tags: list[str], scheme: str = "IOB2", strict: bool = False
) -> list[tuple[str, int, int]]:
    """The entities of one tagged sequence as (type, first index, last index inclusive), in
    order. strict=False (conlleval's chunking) reads every scheme and ignores `scheme`;
    strict=True keeps only entities well formed in `scheme` ("IOB2" or "IOBES") and rejects
    tags outside it."""
    _check_mode(scheme, strict)
    tokens = _split(list(tags))
    return _strict(tokens, scheme) if strict else _lenient(tokens)


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _prf(correct: int, predicted: int, true: int) -> dict[str, float]:
    precision, recall = _ratio(correct, predicted), _ratio(correct, true)
    f1 = _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(
    true: list[list[str]], pred: list[list[str]], scheme: str = "IOB2", strict: bool = False
) -> dict:
    """Micro-averaged entity precision, recall and F1 over all sentences, token accuracy, and
    per entity type (sorted; every type that is true or predicted somewhere) precision, recall,
    F1 and support (its number of true entities):

    {"precision", "recall", "f1", "token_accuracy", "per_type": {type: {"precision", "recall",
    "f1", "support"}}}. true[i] and pred[i] are sentence i's tags, of the same length.
    """
    _check_mode(scheme, strict)
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true sentences but {len(pred)} predicted; give one each")
    true_entities, pred_entities = set(), set()
    tokens = right = 0
    for i, (t, p) in enumerate(zip(true, pred, strict=True)):
        if len(t) != len(p):
            raise ValueError(
                f"sentence {i} has {len(t)} true tags but {len(p)} predicted; predict one tag "
                "per word"
            )
        for tags, entities, name in ((t, true_entities, "true"), (p, pred_entities, "pred")):
            try:
                found = get_entities(tags, scheme, strict)
            except ValueError as e:
                raise ValueError(f"{name} sentence {i}: {e}") from None
            entities.update((i, *entity) for entity in found)
        tokens += len(t)
        right += sum(a == b for a, b in zip(t, p, strict=True))
    correct = true_entities & pred_entities
    n_true, n_pred, n_correct = (
        Counter(e[1] for e in s) for s in (true_entities, pred_entities, correct)
    )
    per_type = {
        name: _prf(n_correct[name], n_pred[name], n_true[name]) | {"support": n_true[name]}
        for name in sorted(n_true | n_pred)
    }
    return _prf(len(correct), len(pred_entities), len(true_entities)) | {
        "token_accuracy": _ratio(right, tokens),
        "per_type": per_type,
    }
