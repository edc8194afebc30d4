"""Candidates are optional for action and transition: training records every answer phrase of each
multiple-choice task, the model ranks them all, and a checkpoint without the list is refused with a clear
INVALID_ARGUMENT; over a real port on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest
from helpers import sample_videos, synthetic_set, tiny_checkpoint
from stqa.server.background import ServerThread
from stqa.server.config import ServerConfig

from stqa import tasks
from stqa.checkpoint import load_checkpoint
from stqa.client import VideoQAClient
from stqa.data import tgifqa
from stqa.data.synth import ACTIONS
from stqa.inference import Predictor, Query
from stqa.v1 import video_qa_pb2 as pb

ACTION_Q = "what does the square do 2 times ?"
TRANSITION_Q = "what does the circle do after it jumps ?"


@pytest.fixture(scope="module")
def trained() -> Path:
    """A tiny checkpoint trained on the shared synthetic set (one epoch)."""
    return tiny_checkpoint()


@pytest.fixture(scope="module")
def without_list(trained, tmp_path_factory) -> Path:
    """The same checkpoint as an older stqa wrote it: no answer phrases."""
    old = tmp_path_factory.mktemp("old") / "ckpt"
    shutil.copytree(trained, old)
    config = json.loads((old / "config.json").read_text())
    del config["answer_phrases"]
    (old / "config.json").write_text(json.dumps(config))
    return old


def test_training_records_every_candidate_of_the_training_split(trained):
    recorded = load_checkpoint(trained).config["answer_phrases"]
    assert set(recorded) == set(tasks.MC_TASKS)
    split = json.loads((trained.parent / "split.json").read_text())["tasks"]
    for task, phrases in recorded.items():
        train_keys = set(split[task]["train"])
        records = [r for r in tgifqa.load(synthetic_set(), task, "train") if r.key in train_keys]
        assert phrases == sorted({c for r in records for c in r.candidates})
        assert set(phrases) <= set(ACTIONS)


def test_the_bundled_model_knows_the_synthetic_actions():
    predictor = Predictor.load()
    assert predictor.answer_phrases == {"action": sorted(ACTIONS), "transition": sorted(ACTIONS)}
    assert predictor.model_version == "stqa-synthetic-df4c7bc3453d"  # the list changed no weight


def test_ranking_all_phrases_agrees_with_multiple_choice(trained):
    """Each (question, answer) text is scored independently, so the open ranking restricted to five
    phrases is the multiple-choice ranking of those five."""
    predictor = Predictor.load(trained)
    video = predictor.prepare_video(sample_videos()[0].read_bytes())
    phrases = predictor.answer_phrases["action"]
    five = phrases[:5]
    [mc, open_] = predictor.predict([Query("action", ACTION_Q, video, five), Query("action", ACTION_Q, video)])
    assert open_.answer_index == -1 and open_.answer in phrases
    assert len(open_.top_k) == min(tasks.TOP_K, len(phrases))
    assert open_.top_k[0][0] == open_.answer and open_.confidence == pytest.approx(open_.top_k[0][1])
    open_order = [t for t, _ in open_.top_k if t in five]
    assert open_order == [t for t, _ in mc.top_k if t in open_order]
    assert open_.temporal_attention.shape == mc.temporal_attention.shape


def test_without_candidates_over_the_port(trained):
    config = ServerConfig(port=0, metrics_port=None, checkpoints=(trained,), grace_s=5.0)
    with ServerThread(config) as server, VideoQAClient(server.address) as client:
        phrases = set(load_checkpoint(trained).config["answer_phrases"]["transition"])
        video = sample_videos()[1]
        reply = client.answer(video, TRANSITION_Q, return_attention=True)
        assert reply.task == pb.TRANSITION and reply.task_inferred
        assert reply.answer in phrases and reply.answer_index == -1
        assert [s.text for s in reply.top_k][0] == reply.answer and {s.text for s in reply.top_k} <= phrases
        assert len(reply.temporal_attention) == len(reply.frame_indices)
        with_candidates = client.answer(video, TRANSITION_Q, candidates=sorted(phrases)[:5])
        assert with_candidates.answer_index >= 0 and len(with_candidates.top_k) == 5
        with pytest.raises(grpc.RpcError) as err:
            client.answer(video, TRANSITION_Q, candidates=["a", "b"])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "exactly 5 candidates (or none" in err.value.details()


def test_a_checkpoint_without_the_list_names_what_to_send(without_list):
    config = ServerConfig(port=0, metrics_port=None, checkpoints=(without_list,), grace_s=5.0)
    with ServerThread(config) as server, VideoQAClient(server.address) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.answer(sample_videos()[0], ACTION_Q)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ACTION without candidates needs the checkpoint's list" in err.value.details()
        assert "send the 5 candidates" in err.value.details()
        reply = client.answer(sample_videos()[0], ACTION_Q, candidates=list(ACTIONS[:5]))
        assert reply.answer in ACTIONS[:5]
