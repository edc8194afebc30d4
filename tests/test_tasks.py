"""The task registry: its facts agree with the wire format and the annotation files, and the one path
from scores to answers decides as the official code does (ties to the lowest index, <pad>/<unk> never)."""

from __future__ import annotations

import numpy as np
import pytest

from stqa import tasks
from stqa.v1 import video_qa_pb2 as pb


def test_every_task_matches_its_proto_enum_value():
    assert set(tasks.TASK_NAMES) == {"count", "action", "transition", "frameqa"}
    for spec in tasks.TASKS.values():
        assert pb.Task.Value(spec.proto_name) == spec.proto_value
        assert tasks.from_proto(spec.proto_value) is spec
    with pytest.raises(ValueError, match="unknown task value 0"):
        tasks.from_proto(pb.TASK_UNSPECIFIED)
    with pytest.raises(ValueError, match="unknown task 'dance'"):
        tasks.get("dance")


def test_multiple_choice_tasks_have_five_candidate_columns():
    for spec in tasks.TASKS.values():
        candidate_columns = [c for c in spec.columns if c[0] == "a" and c[1:].isdigit()]
        assert len(candidate_columns) == spec.num_candidates
    assert tasks.MC_TASKS == ("action", "transition")


def test_task_lists():
    assert tasks.parse_task_list("all") == tasks.TASK_NAMES
    assert tasks.parse_task_list("frameqa, count") == ("count", "frameqa")
    with pytest.raises(ValueError, match="unknown task 'cnt'"):
        tasks.parse_task_list("count,cnt")
    with pytest.raises(ValueError, match="no task named"):
        tasks.parse_task_list(" , ")


def test_multiple_choice_ties_go_to_the_lowest_index():
    d = tasks.get("action").decide([0.5, 2.0, 2.0, -1.0, 0.0], ["a", "b", "c", "d", "e"])
    assert (d.prediction, d.answer, d.answer_index, d.best) == (1, "b", 1, 1)
    assert [t for t, _ in d.top_k] == ["b", "c", "a", "e", "d"]
    assert d.confidence == pytest.approx(d.top_k[0][1]) and sum(p for _, p in d.top_k) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="expected 5 candidate scores"):
        tasks.get("transition").decide([1.0, 2.0])


def test_count_rounds_half_to_even_and_clips():
    spec = tasks.get("count")
    assert spec.decide([2.5]).answer == "2" and spec.decide([3.5]).answer == "4"
    assert spec.decide([0.2]).answer == "1" and spec.decide([14.0]).answer == "10"
    d = spec.decide(np.array([3.25]))
    assert d.prediction == 3.25 and d.count == 3.25 and d.confidence == pytest.approx(0.5)
    with pytest.raises(ValueError, match="finite"):
        spec.decide([float("nan")])


def test_frameqa_never_answers_a_reserved_word_and_ties_go_low():
    words = ["<pad>", "<unk>", "cat", "dog", "red"]
    d = tasks.get("frameqa").decide([9.0, 9.0, 1.0, 3.0, 3.0], answer_words=words)
    assert d.answer == "dog" and d.prediction == "dog" and d.best == 3
    assert [t for t, _ in d.top_k] == ["dog", "red", "cat"]
    with pytest.raises(ValueError, match="answer vocabulary"):
        tasks.get("frameqa").decide([1.0, 2.0, 3.0])


def test_decide_takes_torch_tensors():
    torch = pytest.importorskip("torch")
    d = tasks.get("action").decide(torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]))
    assert d.answer_index == 1
