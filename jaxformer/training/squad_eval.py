"""SQuAD exact match and F1, as the official evaluation scripts compute them.

Mirrors evaluate-v1.1.py and evaluate-v2.0.py (https://rajpurkar.github.io/SQuAD-explorer/): an
answer is normalized (lower case, ASCII punctuation and the articles a/an/the removed, runs of
whitespace made one space); exact match compares normalized strings, F1 the bags of their
whitespace tokens; a question scores its best over its gold answers, and the totals are percents.
v2.0 adds unanswerable questions, whose only gold answer is "", and splits the totals into HasAns
and NoAns. A question without a prediction scores 0.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

from jaxformer.data.squad import QAExample

log = logging.getLogger(__name__)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, no punctuation, no articles, single spaces: the scripts' normalize_answer."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match_score(prediction: str, ground_truth: str) -> int:
    """1 if the normalized strings are equal, else 0."""
    return int(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str, version_2: bool = True) -> float:
    """F1 of the normalized answers' tokens (as multisets). With version_2 (evaluate-v2.0.py)
    two answers that normalize to nothing agree (1.0), and only one empty scores 0.0;
    evaluate-v1.1.py scores two empty answers 0.0."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    if version_2 and not (pred and gold):
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def _gold(example: QAExample, version_2: bool) -> list[str]:
    """The answers a prediction is scored against: v2.0 drops those that normalize to nothing,
    and an unanswerable question's only gold answer is ""."""
    texts = [text for text, _ in example.answers]
    if not version_2:
        return texts
    return [t for t in texts if normalize_answer(t)] or [""]


def squad_scores(
    predictions: Mapping[str, str],
    examples: Sequence[QAExample],
    version_2: bool | None = None,
) -> dict[str, float | int]:
    """{"exact_match", "f1"} in percent over `examples` and their count "total"; with version_2
    (default: when some example is unanswerable) also "HasAns_exact", "HasAns_f1",
    "HasAns_total" over the answerable questions and "NoAns_*" over the unanswerable, each where
    there are such questions. `predictions` maps a question id to its answer text ("" for no
    answer); an id it lacks scores 0, with one warning; ids it has beyond `examples` are ignored.
    """
    if not examples:
        raise ValueError("squad_scores got no examples; pass the examples the predictions are for")
    if version_2 is None:
        version_2 = any(e.is_impossible for e in examples)
    exact, f1 = {}, {}
    missing = 0
    for e in examples:
        if e.id not in predictions:
            missing += 1
            exact[e.id] = f1[e.id] = 0.0
            continue
        gold = _gold(e, version_2)
        exact[e.id] = max(exact_match_score(predictions[e.id], g) for g in gold)
        f1[e.id] = max(f1_score(predictions[e.id], g, version_2) for g in gold)
    if missing:
        log.warning("%d of %d questions have no prediction; each scores 0", missing, len(examples))

    def totals(ids: list[str], prefix: str, em_key: str) -> dict[str, float | int]:
        n = len(ids)
        return {
            f"{prefix}{em_key}": 100.0 * sum(exact[i] for i in ids) / n,
            f"{prefix}f1": 100.0 * sum(f1[i] for i in ids) / n,
            f"{prefix}total": n,
        }

    scores = totals([e.id for e in examples], "", "exact_match")
    if version_2:
        for prefix, impossible in (("HasAns_", False), ("NoAns_", True)):
            ids = [e.id for e in examples if e.is_impossible == impossible]
            if ids:
                scores |= totals(ids, prefix, "exact")
    return scores
