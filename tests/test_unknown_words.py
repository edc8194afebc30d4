"""Answers admit what the model cannot read: out-of-vocabulary words reach the response and `stqa ask`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from stqa.server.convert import answer_response

from stqa.client import describe
from stqa.v1 import video_qa_pb2 as pb


@pytest.fixture(scope="module")
def predictor():
    from stqa.inference import Predictor

    return Predictor.load(None)


def test_unknown_words_are_the_tokens_outside_the_vocabulary(predictor):
    words = predictor.unknown_words("Is there a DOG in the video? a dog!", ["chase the dog", "circle"])
    assert "dog" in words and words.count("dog") == 1 and "chase" in words
    assert all(w not in predictor.word_vocab.stoi for w in words)
    assert predictor.unknown_words("how many times does the red circle jump ?") == []


def test_the_response_carries_them_in_field_15():
    assert pb.AnswerResponse.DESCRIPTOR.fields_by_name["unknown_words"].number == 15
    prediction = SimpleNamespace(answer="left", answer_index=-1, count=None, confidence=1.0, top_k=[("left", 1.0)],
                                 temporal_attention=None, spatial_attention=None, unknown_words=["dog"])
    response = answer_response(prediction, task=pb.FRAMEQA, frame_indices=[0, 1], model_version="m",
                               return_attention=False)
    assert list(response.unknown_words) == ["dog"]


def test_ask_prints_a_warning_only_when_there_are_unknown_words():
    response = pb.AnswerResponse(answer="left", confidence=1.0, task=pb.FRAMEQA, answer_index=-1,
                                 unknown_words=["dog", "video"])
    text = describe(response, "is there a dog in the video ?")
    warning = [line for line in text.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "'dog'" in warning[0] and "'video'" in warning[0]
    response.ClearField("unknown_words")
    assert "warning" not in describe(response, "q")
