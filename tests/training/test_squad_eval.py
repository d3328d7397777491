"""jaxformer.training.squad_eval: the official SQuAD v1.1 / v2.0 scores on hand-worked cases."""

import logging

import pytest

from jaxformer.data.squad import QAExample
from jaxformer.training.squad_eval import (
    exact_match_score,
    f1_score,
    normalize_answer,
    squad_scores,
)


def example(qid, *answers, impossible=False):
    return QAExample(qid, "?", "", tuple((a, 0) for a in answers), impossible)


@pytest.mark.parametrize(
    "text,normalized",
    [
        ("The  Quick, brown-fox!", "quick brownfox"),
        ("An apple a day", "apple day"),
        ("theater anthem", "theater anthem"),  # articles only as whole words
        ("A.B.C.", "abc"),
        ("\t«Über»\n", "«über»"),  # ASCII punctuation only
        ("the", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match():
    assert exact_match_score("The Eiffel Tower", "eiffel   tower.") == 1
    assert exact_match_score("Eiffel", "Eiffel Tower") == 0


def test_f1():
    # "cat sat on mat" against "cat on mat": 3 shared, precision 3/4, recall 1.
    assert f1_score("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # Tokens count as a multiset: one "dog" shared, precision 1/3, recall 1.
    assert f1_score("dog dog dog", "dog") == pytest.approx(0.5)
    assert f1_score("Paris", "London") == 0.0


def test_f1_of_empty_answers():
    assert f1_score("", "") == 1.0 and f1_score("the", "") == 1.0  # v2.0: both "no answer"
    assert f1_score("x", "") == 0.0 and f1_score("", "x") == 0.0
    assert f1_score("", "", version_2=False) == 0.0  # v1.1 has no empty answers


def test_v1_best_gold_answer_and_percent():
    examples = [
        example("q1", "Denver Broncos", "the Denver Broncos", "Broncos"),
        example("q2", "Santa Clara, California"),
        example("q3", "1966", "February 7, 1966"),
    ]
    predictions = {"q1": "Denver Broncos!", "q2": "Santa Clara", "q3": "7 February 1966"}
    # q2: precision 1, recall 2/3 -> 0.8; q3: all three tokens of "February 7, 1966".
    assert squad_scores(predictions, examples) == pytest.approx(
        {"exact_match": 100 / 3, "f1": 100 * (1 + 0.8 + 1) / 3, "total": 3}
    )


def test_missing_prediction_scores_zero_with_one_warning(caplog):
    examples = [example("q1", "Broncos"), example("q2", "Santa Clara"), example("q3", "1966")]
    with caplog.at_level(logging.WARNING):
        scores = squad_scores({"q1": "Broncos", "q9": "extra"}, examples)
    assert scores == pytest.approx({"exact_match": 100 / 3, "f1": 100 / 3, "total": 3})
    assert [r.getMessage() for r in caplog.records] == [
        "2 of 3 questions have no prediction; each scores 0"
    ]


def test_v2_splits_answerable_and_unanswerable():
    examples = [
        example("a", "Paris"),
        example("b", impossible=True),
        example("c", impossible=True),
        example("d", "the Seine river"),
    ]
    predictions = {"a": "paris", "b": "", "c": "London", "d": "Seine"}
    # d: "seine" against "seine river", precision 1, recall 1/2 -> 2/3.
    assert squad_scores(predictions, examples) == pytest.approx(
        {
            "exact_match": 50.0,
            "f1": 100 * (1 + 1 + 0 + 2 / 3) / 4,
            "total": 4,
            "HasAns_exact": 50.0,
            "HasAns_f1": 100 * (1 + 2 / 3) / 2,
            "HasAns_total": 2,
            "NoAns_exact": 50.0,
            "NoAns_f1": 50.0,
            "NoAns_total": 2,
        }
    )


def test_gold_answers_that_normalize_to_nothing():
    """v2.0 drops them (an answer of only "the" leaves the question unanswerable's ""); v1.1
    keeps them, with exact match on two empty strings and F1 0."""
    examples = [example("e", "The", "Loire")]
    assert squad_scores({"e": "a"}, examples) == {"exact_match": 100.0, "f1": 0.0, "total": 1}
    assert squad_scores({"e": "a"}, examples, version_2=True) == {
        "exact_match": 0.0,
        "f1": 0.0,
        "total": 1,
        "HasAns_exact": 0.0,
        "HasAns_f1": 0.0,
        "HasAns_total": 1,
    }
    only_article = [example("f", "the")]
    assert squad_scores({"f": ""}, only_article, version_2=True)["f1"] == 100.0


def test_no_examples():
    with pytest.raises(ValueError, match="no examples"):
        squad_scores({}, [])
