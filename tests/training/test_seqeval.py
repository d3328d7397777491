"""jaxformer.training.seqeval against hand-worked chunks and scores: seqeval's README example,
IOB1 sequences, IOBES, strict against lenient chunking, per-type figures, empty predictions."""

import pytest

from jaxformer.training.seqeval import entity_scores, get_entities

README_TRUE = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
README_PRED = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]


def test_seqeval_readme_example():
    """Entities true: MISC 3-5 and PER 0-1; predicted: MISC 2-5 and PER 0-1. One of two right
    each way; 8 of the 10 tags right (positions 2 and 3 of the first sentence differ)."""
    assert get_entities(README_TRUE[0]) == [("MISC", 3, 5)]
    assert get_entities(README_PRED[0]) == [("MISC", 2, 5)]
    scores = entity_scores(README_TRUE, README_PRED)
    assert scores["precision"] == scores["recall"] == scores["f1"] == 0.5
    assert scores["token_accuracy"] == pytest.approx(0.8)
    assert scores["per_type"] == {
        "MISC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }
    assert entity_scores(README_TRUE, README_PRED, strict=True)["f1"] == 0.5


@pytest.mark.parametrize(
    "tags, entities",
    [
        # IOB1: I- opens an entity after O; B- only separates two of one type.
        (
            ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC"],
            [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5)],
        ),
        # A change of type closes one entity and opens another.
        (["I-ORG", "I-PER", "I-PER"], [("ORG", 0, 0), ("PER", 1, 2)]),
        (["B-PER", "I-ORG", "I-ORG"], [("PER", 0, 0), ("ORG", 1, 2)]),
        (["O", "O"], []),
        ([], []),
    ],
)
def test_lenient_chunking_reads_iob1(tags, entities):
    assert get_entities(tags) == entities
    assert get_entities(tags, scheme="IOB1") == entities


def test_iobes():
    tags = ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "B-ORG", "E-ORG", "S-LOC", "S-LOC"]
    want = [("PER", 0, 0), ("LOC", 2, 4), ("ORG", 5, 6), ("LOC", 7, 7), ("LOC", 8, 8)]
    assert get_entities(tags) == want
    assert get_entities(tags, "IOBES", strict=True) == want


@pytest.mark.parametrize(
    "tags, scheme, lenient, strict",
    [
        # An entity must open with B- in strict IOB2: the I-ORG run is no entity.
        (["B-PER", "I-ORG", "I-ORG"], "IOB2", [("PER", 0, 0), ("ORG", 1, 2)], [("PER", 0, 0)]),
        (["O", "I-PER", "I-PER"], "IOB2", [("PER", 1, 2)], []),
        # In strict IOBES an entity must close with E- (or be one S-).
        (["B-PER", "I-PER", "O"], "IOBES", [("PER", 0, 1)], []),
        (["I-PER", "E-PER"], "IOBES", [("PER", 0, 1)], []),
        (["B-PER", "E-PER", "E-PER"], "IOBES", [("PER", 0, 1), ("PER", 2, 2)], [("PER", 0, 1)]),
        (["B-PER", "S-PER"], "IOBES", [("PER", 0, 0), ("PER", 1, 1)], [("PER", 1, 1)]),
        (["B-PER", "E-LOC"], "IOBES", [("PER", 0, 0), ("LOC", 1, 1)], []),
    ],
)
def test_strict_keeps_only_well_formed_entities(tags, scheme, lenient, strict):
    assert get_entities(tags, scheme) == lenient
    assert get_entities(tags, scheme, strict=True) == strict


def test_strict_against_lenient_scores():
    """True PER 0-1 and LOC 3-4 (IOB2). The prediction's PER 0-1 opens with I-, which only
    lenient chunking reads as an entity; its LOC 3-4 is right either way."""
    true = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    assert entity_scores(true, pred)["f1"] == 1.0
    strict = entity_scores(true, pred, strict=True)
    assert (strict["precision"], strict["recall"]) == (1.0, 0.5)  # 1 of 1 predicted, 1 of 2 true
    assert strict["f1"] == pytest.approx(2 / 3)
    assert strict["token_accuracy"] == 0.8


def test_per_type_figures():
    """True: PER 0-1, LOC 3, ORG 5 | LOC 0-1, PER 3. Predicted: PER 0-1, ORG 3, ORG 5 | LOC 0,
    PER 3. PER 2 of 2 right; ORG 1 of 2 predicted right, its 1 true found; LOC none of its 2 (the
    predicted LOC 0 is too short). Micro: 3 of 5 each way."""
    true = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"], ["B-LOC", "I-LOC", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG"], ["B-LOC", "O", "O", "B-PER"]]
    scores = entity_scores(true, pred)
    assert scores["precision"] == scores["recall"] == pytest.approx(0.6)
    assert scores["f1"] == pytest.approx(0.6)
    assert scores["token_accuracy"] == pytest.approx(0.8)  # 5 of 6 and 3 of 4 tags
    per_type = scores["per_type"]
    assert list(per_type) == ["LOC", "ORG", "PER"]
    assert per_type["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert per_type["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert per_type["ORG"]["precision"] == 0.5 and per_type["ORG"]["recall"] == 1.0
    assert per_type["ORG"]["f1"] == pytest.approx(2 / 3) and per_type["ORG"]["support"] == 1


def test_a_type_only_predicted_has_no_support():
    scores = entity_scores([["O", "B-PER"]], [["B-LOC", "B-PER"]])
    assert scores["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert scores["precision"] == 0.5 and scores["recall"] == 1.0


def test_empty_predictions_score_zero():
    true = [["B-PER", "I-PER", "O"], ["B-LOC"]]
    scores = entity_scores(true, [["O", "O", "O"], ["O"]])
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)
    assert scores["token_accuracy"] == 0.25
    assert scores["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    nothing = entity_scores([], [])
    assert nothing == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "token_accuracy": 0.0,
        "per_type": {},
    }
    assert entity_scores([["O"]], [["O"]])["token_accuracy"] == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match=r"^sentence 1 has 3 true tags but 2 predicted"):
        entity_scores([["O"], ["O", "O", "B-PER"]], [["O"], ["O", "O"]])
    with pytest.raises(ValueError, match=r"2 true sentences but 1 predicted"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match=r"^pred sentence 0: tag 'PER' at position 1 is not"):
        entity_scores([["O", "B-PER"]], [["O", "PER"]])
    with pytest.raises(ValueError, match=r"prefix E- at position 1 is not part of the IOB2"):
        get_entities(["B-PER", "E-PER"], "IOB2", strict=True)
    with pytest.raises(ValueError, match=r"strict mode reads \('IOB2', 'IOBES'\), not IOB1"):
        get_entities(["B-PER"], "IOB1", strict=True)
    with pytest.raises(ValueError, match=r"scheme='BILOU'"):
        entity_scores([["O"]], [["O"]], scheme="BILOU")
