"""Host-side metrics of sequence classification, one function per Hugging Face `problem_type`.

`single_label` ("single_label_classification": softmax over k classes), `multi_label`
("multi_label_classification": an independent sigmoid per label) and `regression`
("regression": one real output). Each takes numpy arrays of a whole split and returns a flat,
JSON-able dict of Python numbers. The figures follow sklearn.metrics and scipy.stats: a ratio
with nothing to divide by is 0 (sklearn's zero_division=0), the Matthews coefficient is the
multiclass R_K of `matthews_corrcoef`, and Spearman's rho is Pearson's r of average ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NAN = float("nan")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den is 0. Any shapes that broadcast; float64 out."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _prf(tp: np.ndarray, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall and F1 from true-positive, predicted and true counts, each (k,)."""
    precision, recall = _ratio(tp, pred), _ratio(tp, true)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def _mean(x: np.ndarray) -> float:
    """Mean of x in float64 as a Python float; nan when x is empty."""
    x = np.asarray(x, np.float64)
    return float(x.mean()) if x.size else NAN


def _matthews(confusion: np.ndarray) -> float:
    """Gorodkin's R_K of a (k, k) [true, predicted] confusion matrix; 0.0 if undefined.

    (c s - t.p) / sqrt((s^2 - p.p) (s^2 - t.t)) with c the correct count, s the total, t the
    true counts per class and p the predicted counts per class."""
    c = np.asarray(confusion, np.float64)
    s, correct = c.sum(), np.trace(c)
    t, p = c.sum(1), c.sum(0)
    den = np.sqrt(s * s - p @ p) * np.sqrt(s * s - t @ t)
    return float((correct * s - t @ p) / den) if den > 0 else 0.0


def single_label(
    logits: np.ndarray, labels: np.ndarray, loss: np.ndarray, label_names: Sequence[str]
) -> dict:
    """Accuracy, loss, precision/recall/F1, Matthews coefficient and confusion matrix.

    logits: (n, k), labels: (n,) class ids, loss: (n,) per-example loss, label_names: k names.
    "precision", "recall" and "f1" are those of class 1 when k == 2, else the macro averages;
    "macro_*" are always the unweighted means over the k classes. Per class: "{name}_precision",
    "{name}_recall", "{name}_f1", "{name}_support". "confusion_matrix": k x k, [true][predicted].
    """
    logits = np.asarray(logits)
    k = logits.shape[-1]
    if len(label_names) != k:
        raise ValueError(f"{len(label_names)} label names for {k} classes of logits")
    labels = np.asarray(labels, np.int64).reshape(-1)
    preds = logits.reshape(-1, k).argmax(-1)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, preds), 1)
    tp, support = np.diag(confusion), confusion.sum(1)
    precision, recall, f1 = _prf(tp, confusion.sum(0), support)
    macro = [float(v.mean()) for v in (precision, recall, f1)]
    headline = [float(v[1]) for v in (precision, recall, f1)] if k == 2 else macro
    n = len(labels)
    out = {
        "examples": n,
        "loss": _mean(loss),
        "accuracy": _mean(preds == labels),
        "precision": headline[0],
        "recall": headline[1],
        "f1": headline[2],
        "macro_precision": macro[0],
        "macro_recall": macro[1],
        "macro_f1": macro[2],
        "mcc": _matthews(confusion),
    }
    for i, name in enumerate(label_names):
        out[f"{name}_precision"] = float(precision[i])
        out[f"{name}_recall"] = float(recall[i])
        out[f"{name}_f1"] = float(f1[i])
        out[f"{name}_support"] = int(support[i])
    out["confusion_matrix"] = confusion.tolist()
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) elementwise in float64, without overflow for large |x|."""
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def multi_label(
    logits: np.ndarray,
    labels: np.ndarray,
    loss: np.ndarray,
    label_names: Sequence[str],
    threshold: float = 0.5,
) -> dict:
    """Micro and macro F1, subset and per-cell accuracy of independent binary labels.

    logits: (n, k) raw scores, a label predicted where sigmoid(logit) > threshold; labels: (n, k)
    in {0, 1}; loss: (n,) per-example loss; label_names: k names. "micro_*" pool the true and
    false positives and false negatives of all labels; "macro_f1" is the mean of the k labels'
    F1. "exact_match": fraction of examples with every label right; "hamming_accuracy": fraction
    of (example, label) cells right. Per label: "{name}_f1" and "{name}_support" (true count).
    """
    logits = np.asarray(logits)
    k = logits.shape[-1]
    if len(label_names) != k:
        raise ValueError(f"{len(label_names)} label names for {k} labels of logits")
    pred = _sigmoid(logits.reshape(-1, k)) > threshold
    true = np.asarray(labels).reshape(-1, k) > 0.5
    tp = (pred & true).sum(0)
    support = true.sum(0)
    _, _, f1 = _prf(tp, pred.sum(0), support)
    micro_p, micro_r, micro_f1 = _prf(tp.sum(), pred.sum(), true.sum())
    out = {
        "examples": len(true),
        "loss": _mean(loss),
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "micro_f1": float(micro_f1),
        "macro_f1": float(f1.mean()) if k else 0.0,
        "exact_match": _mean((pred == true).all(-1)),
        "hamming_accuracy": _mean(pred == true),
    }
    for i, name in enumerate(label_names):
        out[f"{name}_f1"] = float(f1[i])
        out[f"{name}_support"] = int(support[i])
    return out


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x (n,), tied values sharing the mean of their ranks (scipy.stats.rankdata
    method "average"): [10, 20, 20, 30] -> [1, 2.5, 2.5, 4]. (n,) float64."""
    x = np.asarray(x).reshape(-1)
    if x.size == 0:
        return np.zeros(0)
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    new = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], x.size)
    group_rank = (starts + 1 + ends) / 2  # mean of the ranks starts + 1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = group_rank[np.cumsum(new) - 1]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r of x and y, both (n,); nan when n < 2 or either side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return NAN
    dx, dy = x - x.mean(), y - y.mean()
    r = (dx @ dy) / np.sqrt((dx @ dx) * (dy @ dy))
    return float(np.clip(r, -1.0, 1.0))


def regression(predictions: np.ndarray, targets: np.ndarray) -> dict:
    """Mean squared and absolute error, Pearson's r and Spearman's rho.

    predictions: (n,) or (n, 1), targets: (n,). "loss" and "mse" are both the mean squared
    error; "spearman" is Pearson's r of the average ranks. Correlations are nan when n < 2 or
    either side is constant; the errors are nan when n == 0."""
    pred = np.asarray(predictions, np.float64).reshape(-1)
    target = np.asarray(targets, np.float64).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"{pred.size} predictions for {target.size} targets")
    err = pred - target
    mse = _mean(err**2)
    return {
        "examples": int(pred.size),
        "loss": mse,
        "mse": mse,
        "mae": _mean(np.abs(err)),
        "pearson": _pearson(pred, target),
        "spearman": _pearson(average_ranks(pred), average_ranks(target)),
    }
