"""jaxformer.training.scores against hand-worked figures: single-label precision, recall, F1 and
Matthews coefficient, multi-label micro/macro F1 and subset accuracy, regression errors, Pearson
and Spearman with ties, and splits of no examples."""

import json
import math

import numpy as np
import pytest

from jaxformer.training.scores import average_ranks, multi_label, regression, single_label


def one_hot_logits(preds, k):
    """Logits (n, k) whose argmax is `preds`."""
    return np.eye(k)[np.asarray(preds)] * 4.0 - 2.0


def assert_json_numbers(out):
    """Every value a Python int or float, but the confusion matrix (nested lists of ints)."""
    for key, value in out.items():
        if key == "confusion_matrix":
            assert all(type(v) is int for row in value for v in row)
        else:
            assert type(value) in (int, float), (key, type(value))
    json.dumps(out)


def test_binary_scores_by_hand():
    # [true][predicted]: TN = 2, FP = 1, FN = 2, TP = 3.
    labels = [0, 0, 0, 1, 1, 1, 1, 1]
    preds = [0, 0, 1, 0, 0, 1, 1, 1]
    loss = np.array([0.5, 1.0, 1.5, 3.0, 0.5, 1.0, 1.5, 3.0], np.float32)
    m = single_label(one_hot_logits(preds, 2), np.array(labels), loss, ["neg", "pos"])
    assert m["examples"] == 8
    assert m["loss"] == pytest.approx(1.5)  # 12 / 8
    assert m["accuracy"] == 5 / 8  # TN + TP = 5
    assert m["confusion_matrix"] == [[2, 1], [2, 3]]
    # Positive class: precision 3 / (3 + 1), recall 3 / (3 + 2), F1 2 * .75 * .6 / 1.35 = 2 / 3.
    assert m["precision"] == pytest.approx(0.75)
    assert m["recall"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(2 / 3)
    # Negative class: precision 2 / (2 + 2), recall 2 / (2 + 1), F1 2 * .5 * (2/3) / (7/6) = 4 / 7.
    assert (m["neg_precision"], m["neg_recall"]) == pytest.approx((0.5, 2 / 3))
    assert m["neg_f1"] == pytest.approx(4 / 7)
    assert (m["neg_support"], m["pos_support"]) == (3, 5)
    # Macro F1: (2/3 + 4/7) / 2 = (14/21 + 12/21) / 2 = 13 / 21, not the headline F1.
    assert m["macro_f1"] == pytest.approx(13 / 21)
    assert m["macro_precision"] == pytest.approx(0.625)  # (0.5 + 0.75) / 2
    # MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 2) / sqrt(4*5*3*4)
    #     = 4 / sqrt(240) = 0.2581988897...
    assert m["mcc"] == pytest.approx(0.2581988897)
    assert_json_numbers(m)


def test_three_class_matthews_is_gorodkins_rk():
    # Confusion [true][predicted]: [[3, 1, 0], [1, 2, 1], [1, 0, 1]]
    # s = 10 examples, c = 3 + 2 + 1 = 6 correct, true counts t = (4, 4, 2), predicted p = (5, 3, 2)
    # t.p = 20 + 12 + 4 = 36, p.p = 25 + 9 + 4 = 38, t.t = 16 + 16 + 4 = 36
    # R_K = (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (60 - 36) / sqrt(62 * 64)
    #     = 24 / (8 sqrt(62)) = 3 / sqrt(62) = 0.3810003810...
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    preds = [0, 0, 0, 1, 0, 1, 1, 2, 0, 2]
    m = single_label(one_hot_logits(preds, 3), np.array(labels), np.zeros(10), ["a", "b", "c"])
    assert m["confusion_matrix"] == [[3, 1, 0], [1, 2, 1], [1, 0, 1]]
    assert m["mcc"] == pytest.approx(0.3810003810)
    # F1 per class: a: P 3/5, R 3/4 -> 2/3; b: P 2/3, R 1/2 -> 4/7; c: P 1/2, R 1/2 -> 1/2.
    # Macro: (28/42 + 24/42 + 21/42) / 3 = 73 / 126; with k > 2 the headline F1 is the macro F1.
    assert m["macro_f1"] == pytest.approx(73 / 126)
    assert m["f1"] == m["macro_f1"]
    assert m["precision"] == m["macro_precision"] == pytest.approx(0.5888888889)  # (.6+2/3+.5)/3


@pytest.mark.parametrize(
    "labels, preds",
    [
        ([0, 0, 1, 1, 1], [0, 0, 0, 0, 0]),  # every prediction one class: s^2 - p.p = 25 - 25
        ([2, 2, 2], [2, 2, 2]),  # one true class, all right: s^2 - t.t = 9 - 9
        ([0, 1, 2, 2], [1, 1, 1, 1]),  # three classes, one predicted: 16 - 16
    ],
)
def test_matthews_of_a_zero_denominator_is_zero(labels, preds):
    m = single_label(one_hot_logits(preds, 3), np.array(labels), np.zeros(len(labels)), "xyz")
    assert m["mcc"] == 0.0


def test_class_never_predicted_has_zero_precision_and_user_names():
    # Confusion [true][predicted]: [[2, 0, 0], [1, 0, 1], [0, 0, 2]]; "neutral" never predicted.
    names = ["neg", "neutral", "very positive"]
    labels = [0, 0, 1, 1, 2, 2]
    preds = [0, 0, 0, 2, 2, 2]
    m = single_label(one_hot_logits(preds, 3), np.array(labels), np.zeros(6), names)
    assert m["confusion_matrix"] == [[2, 0, 0], [1, 0, 1], [0, 0, 2]]
    assert (m["neutral_precision"], m["neutral_recall"], m["neutral_f1"]) == (0.0, 0.0, 0.0)
    assert m["neutral_support"] == 2
    # neg and "very positive": TP 2 of 3 predicted and 2 true -> P 2/3, R 1, F1 (4/3)/(5/3) = 4/5.
    assert m["very positive_precision"] == pytest.approx(2 / 3)
    assert m["very positive_recall"] == 1.0
    assert m["very positive_f1"] == pytest.approx(0.8)
    assert m["neg_f1"] == pytest.approx(0.8)
    assert m["macro_precision"] == pytest.approx(4 / 9)  # (2/3 + 0 + 2/3) / 3
    assert m["macro_recall"] == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3
    assert m["macro_f1"] == pytest.approx(8 / 15)  # (0.8 + 0 + 0.8) / 3
    assert m["accuracy"] == pytest.approx(2 / 3)  # 4 of 6
    assert_json_numbers(m)


def test_single_label_of_no_examples():
    m = single_label(np.zeros((0, 3)), np.zeros(0, int), np.zeros(0), ["a", "b", "c"])
    assert m["examples"] == 0
    assert math.isnan(m["accuracy"]) and math.isnan(m["loss"])
    assert m["f1"] == m["macro_f1"] == m["mcc"] == m["a_precision"] == 0.0
    assert m["b_support"] == 0
    assert m["confusion_matrix"] == [[0, 0, 0]] * 3
    assert_json_numbers(m)


def test_single_label_rejects_a_wrong_number_of_names():
    with pytest.raises(ValueError, match="2 label names for 3 classes"):
        single_label(np.zeros((1, 3)), np.zeros(1, int), np.zeros(1), ["a", "b"])


def test_multi_label_by_hand():
    # true:       predicted (logit +3 / -3):
    #  a b c       a b c
    # [1 0 1]     [1 0 0]   c missed
    # [0 1 1]     [0 1 0]   c missed
    # [1 0 0]     [1 0 0]   all right
    # [1 1 0]     [1 0 0]   b missed
    true = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 0], [1, 1, 0]], np.float32)
    pred = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0]])
    loss = np.array([0.5, 1.0, 1.5, 3.0])
    m = multi_label(np.where(pred, 3.0, -3.0), true, loss, ["a", "b", "c"])
    assert m["examples"] == 4
    assert m["loss"] == pytest.approx(1.5)  # 6 / 4
    # a: TP 3, FP 0, FN 0 -> F1 1; b: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3; c never predicted -> 0
    assert m["a_f1"] == 1.0 and m["b_f1"] == pytest.approx(2 / 3) and m["c_f1"] == 0.0
    assert (m["a_support"], m["b_support"], m["c_support"]) == (3, 2, 2)
    # Pooled: TP 4, FP 0, FN 3 -> P 1, R 4/7, F1 2*4 / (2*4 + 0 + 3) = 8 / 11 = 0.7272...
    assert m["micro_precision"] == 1.0
    assert m["micro_recall"] == pytest.approx(4 / 7)
    assert m["micro_f1"] == pytest.approx(8 / 11)
    # Macro: (1 + 2/3 + 0) / 3 = 5 / 9 = 0.5555..., below the micro F1.
    assert m["macro_f1"] == pytest.approx(5 / 9)
    assert m["macro_f1"] < m["micro_f1"]
    assert m["exact_match"] == 0.25  # only the third row has every label right
    assert m["hamming_accuracy"] == 0.75  # 3 wrong cells of 12
    assert_json_numbers(m)


def test_multi_label_threshold_and_extreme_logits():
    # sigmoid(0) = 0.5 is not > 0.5; sigmoid(-1000) ~ 0 and sigmoid(1000) ~ 1 without overflow
    # (underflow of exp(-1000) to 0 is harmless).
    logits = np.array([[-1000.0, 1000.0, 0.0]], np.float32)
    labels = np.array([[0, 1, 1]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        m = multi_label(logits, labels, np.zeros(1), ["x", "y", "z"])
    assert m["z_f1"] == 0.0 and m["y_f1"] == 1.0
    assert m["exact_match"] == 0.0 and m["hamming_accuracy"] == pytest.approx(2 / 3)
    # With threshold 0.3, sigmoid(0) = 0.5 > 0.3: every label right.
    m = multi_label(logits, labels, np.zeros(1), ["x", "y", "z"], threshold=0.3)
    assert m["exact_match"] == 1.0 and m["micro_f1"] == 1.0
    # x has no true and no predicted positives: F1 0, so the macro is (0 + 1 + 1) / 3.
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_multi_label_of_no_examples():
    m = multi_label(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), ["a", "b"])
    assert m["examples"] == 0 and math.isnan(m["loss"])
    assert math.isnan(m["exact_match"]) and math.isnan(m["hamming_accuracy"])
    assert m["micro_f1"] == m["macro_f1"] == m["a_f1"] == 0.0 and m["b_support"] == 0
    assert_json_numbers(m)


def test_regression_errors_by_hand():
    # errors: 2.5 - 3 = -0.5, 0 - (-0.5) = 0.5, 2 - 2 = 0, 8 - 7 = 1
    # MSE = (0.25 + 0.25 + 0 + 1) / 4 = 0.375; MAE = (0.5 + 0.5 + 0 + 1) / 4 = 0.5
    m = regression(np.array([[2.5], [0.0], [2.0], [8.0]]), np.array([3.0, -0.5, 2.0, 7.0]))
    assert m["examples"] == 4
    assert m["mse"] == m["loss"] == pytest.approx(0.375)
    assert m["mae"] == pytest.approx(0.5)
    assert_json_numbers(m)


def test_pearson_by_hand():
    # x = (1, 2, 3), y = (1, 2, 4): means 2 and 7/3; dx = (-1, 0, 1), dy = (-4/3, -1/3, 5/3)
    # dx.dy = 4/3 + 5/3 = 3, dx.dx = 2, dy.dy = (16 + 1 + 25) / 9 = 14/3
    # r = 3 / sqrt(2 * 14/3) = sqrt(27/28) = 0.9819805060...
    m = regression(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert m["pearson"] == pytest.approx(0.9819805060)
    assert m["spearman"] == pytest.approx(1.0)  # both orders the same: ranks (1, 2, 3) each


def test_spearman_with_ties_by_hand():
    # x = (1, 2, 2, 10) -> ranks (1, 2.5, 2.5, 4); y = (1, 3, 2, 4) -> ranks (1, 3, 2, 4)
    # rank means 2.5; dx = (-1.5, 0, 0, 1.5), dy = (-1.5, 0.5, -0.5, 1.5)
    # dx.dy = 2.25 + 2.25 = 4.5, dx.dx = 4.5, dy.dy = 2.25 + 0.25 + 0.25 + 2.25 = 5
    # rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9) = 0.9486832980...
    # Pearson of the raw values differs: x mean 3.75, dx = (-2.75, -1.75, -1.75, 6.25),
    # dx.dy = 4.125 - 0.875 + 0.875 + 9.375 = 13.5, dx.dx = 52.75, r = 13.5 / sqrt(263.75)
    m = regression(np.array([1.0, 2.0, 2.0, 10.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert m["spearman"] == pytest.approx(0.9486832980)
    assert m["pearson"] == pytest.approx(0.8312612469)


@pytest.mark.parametrize(
    "x, ranks",
    [
        ([10, 20, 20, 30], [1, 2.5, 2.5, 4]),  # ranks 2 and 3 shared: 2.5
        ([30, 20, 10, 20], [4, 2.5, 1, 2.5]),
        ([5, 5, 5, 1], [3, 3, 3, 1]),  # ranks 2, 3, 4 shared: 3
        ([0.5, -1.0], [2, 1]),
        ([7], [1]),
    ],
)
def test_average_ranks(x, ranks):
    assert average_ranks(np.array(x)).tolist() == ranks


@pytest.mark.parametrize(
    "pred, target",
    [
        ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]),
        ([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]),  # constant, whose float mean is not exactly 0.1
        ([1.0], [2.0]),  # one example
    ],
)
def test_correlations_of_a_constant_side_or_one_example_are_nan(pred, target):
    m = regression(np.array(pred), np.array(target))
    assert math.isnan(m["pearson"]) and math.isnan(m["spearman"])


def test_regression_of_no_examples():
    m = regression(np.zeros((0, 1)), np.zeros(0))
    assert m["examples"] == 0
    assert all(math.isnan(m[k]) for k in ("loss", "mse", "mae", "pearson", "spearman"))
    assert average_ranks(np.zeros(0)).shape == (0,)
