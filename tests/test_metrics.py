"""The official scoring rules, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from stqa.data.tgifqa import QARecord, Vocab
from stqa.metrics import count_prediction, count_target, headline, score_task


def rec(task: str, answer, answer_type: str | None = None, i: int = 0) -> QARecord:
    cands = ("a", "b", "c", "d", "e") if task in ("action", "transition") else ()
    return QARecord(task, f"Q{i}", i, f"g{i}", "q ?", answer, cands, answer_type)


def test_count_target_maps_zero_to_one():
    assert [count_target(y) for y in (0, 1, 2, 10)] == [1, 1, 2, 10]


@pytest.mark.parametrize(
    ("y_hat", "expected"),
    [(2.5, 2), (3.5, 4), (0.5, 1), (-3.0, 1), (0.49, 1), (1.5, 2), (9.5, 10), (10.5, 10), (14.2, 10),
     (2.4999, 2), (2.5001, 3), (6.0, 6)],
)
def test_count_prediction_rounds_half_to_even_and_clips(y_hat, expected):
    assert count_prediction(y_hat) == expected


def test_count_prediction_rejects_non_finite():
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            count_prediction(bad)


def test_count_mse_by_hand():
    records = [rec("count", y, i=i) for i, y in enumerate([0, 2, 3, 10])]
    preds = [2.5, 3.5, 3.0, 12.0]
    # rounded: 2, 4, 3, 10 vs targets 1, 2, 3, 10 -> (1 + 4 + 0 + 0) / 4
    # raw: (1.5^2 + 1.5^2 + 0 + 2^2) / 4 = (2.25 + 2.25 + 4) / 4
    scores = score_task("count", records, preds)
    assert scores == {"mse": 1.25, "mse_raw": 2.125, "n": 4}
    assert headline("count", scores) == 1.25


def test_multiple_choice_accuracy():
    records = [rec("transition", a, i=i) for i, a in enumerate([0, 4, 2, 1])]
    assert score_task("transition", records, [0, 4, 1, 3]) == {"accuracy": 0.5, "n": 4}
    assert score_task("action", [rec("action", 3)], [3])["accuracy"] == 1.0
    with pytest.raises(ValueError, match="candidate index"):
        score_task("action", [rec("action", 3)], [5])
    with pytest.raises(ValueError, match="candidate index"):
        score_task("action", [rec("action", 3)], [2.5])


def test_frameqa_accuracy_by_type_and_unknown_answers():
    records = [
        rec("frameqa", "cat", "object", 0),
        rec("frameqa", "dog", "object", 1),
        rec("frameqa", "two", "number", 2),
        rec("frameqa", "zebra", "object", 3),  # not in the answer vocabulary
        rec("frameqa", "red", "color", 4),
    ]
    preds = ["cat", "cat", "two", "zebra", "blue"]
    plain = score_task("frameqa", records, preds)
    assert plain["accuracy"] == pytest.approx(3 / 5)
    assert plain["by_type"] == {"object": pytest.approx(2 / 3), "number": 1.0, "color": 0.0, "location": None}
    vocab = Vocab(["<pad>", "<unk>", "cat", "dog", "two", "red", "blue"])
    scored = score_task("frameqa", records, preds, answer_vocab=vocab)
    assert scored["accuracy"] == pytest.approx(2 / 5)  # "zebra" is <unk>: always wrong, even if predicted
    assert scored["by_type"]["object"] == pytest.approx(1 / 3)
    assert scored["n"] == 5
    # Predicting "<unk>" for an out-of-vocabulary gold answer is wrong too.
    assert score_task("frameqa", [records[3]], ["<unk>"], answer_vocab=vocab)["accuracy"] == 0.0


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="2 records but 1 predictions"):
        score_task("count", [rec("count", 1), rec("count", 2, i=1)], [1.0])
    with pytest.raises(ValueError, match="unknown task"):
        score_task("videoqa", [rec("count", 1)], [1.0])
    with pytest.raises(ValueError, match="no records"):
        score_task("count", [], [])
    with pytest.raises(ValueError, match="scored as"):
        score_task("action", [rec("transition", 1)], [1])
    with pytest.raises(ValueError, match="question type"):
        score_task("frameqa", [rec("frameqa", "x", None)], ["x"])
