"""Predictor on the bundled model: all four tasks, shapes, attention maps, validation, thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from stqa.data import tgifqa
from stqa.inference import BUNDLED_MODEL, Predictor, PreparedVideo, Query


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from stqa.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, 3, seed=123)
    return root


def test_bundled_model_serves_all_four_tasks(predictor):
    assert sorted(predictor.tasks) == ["action", "count", "frameqa", "transition"]
    assert predictor.model_version.startswith("stqa-synthetic-")
    assert predictor.spec.backbone == "tiny" and predictor.num_frames == predictor.spec.num_frames
    assert len(predictor.answer_vocab) > 3
    size = sum(p.stat().st_size for p in BUNDLED_MODEL.iterdir())
    assert size < 10 * 2**20, f"bundled model is {size / 2**20:.1f} MiB"


def test_prepare_video_pads_and_reports_frames(predictor, synth):
    gif = next((synth / "gifs").glob("*.gif"))
    video = predictor.prepare_video(gif.read_bytes())
    t, s = predictor.num_frames, predictor.spec.image_size
    assert video.frames.shape == (t, 3, s, s) and video.frames.dtype == torch.float32
    assert video.mask.shape == (t,) and video.mask.dtype == torch.bool
    n_real = int(video.mask.sum())
    assert n_real == len(video.frame_indices) == min(video.n_frames, t)
    assert bool(video.mask[:n_real].all()) and not bool(video.mask[n_real:].any())
    assert float(video.frames[n_real:].abs().sum()) == 0.0
    again = predictor.prepare_video(gif)  # a path works too
    assert torch.equal(again.frames, video.frames)


def _queries(predictor, synth) -> list[Query]:
    queries = []
    videos = {}
    for task in ("count", "action", "transition", "frameqa"):
        for r in tgifqa.load(synth, task, "train")[:2]:
            if r.gif_name not in videos:
                videos[r.gif_name] = predictor.prepare_video(synth / "gifs" / f"{r.gif_name}.gif")
            queries.append(Query(task, r.question, videos[r.gif_name], list(r.candidates)))
    return queries


def test_predict_all_tasks_shapes_and_attention(predictor, synth):
    queries = _queries(predictor, synth)
    preds = predictor.predict(queries)
    assert len(preds) == len(queries)
    t = predictor.num_frames
    for q, p in zip(queries, preds, strict=True):
        assert p.task == q.task
        n_real = int(q.video.mask.sum())
        assert p.temporal_attention.shape == (t,)
        assert p.temporal_attention.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.all(p.temporal_attention[n_real:] == 0)
        assert p.spatial_attention.shape == (t, 7, 7)
        np.testing.assert_allclose(p.spatial_attention[:n_real].sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert 0.0 <= p.confidence <= 1.0
        if q.task in ("action", "transition"):
            assert 0 <= p.answer_index < 5 and p.answer == q.candidates[p.answer_index] and p.count is None
            assert sorted(c for c, _ in p.top_k) == sorted(q.candidates)
            assert sum(v for _, v in p.top_k) == pytest.approx(1.0, abs=1e-5)
        elif q.task == "count":
            assert p.answer_index == -1 and isinstance(p.count, float)
            assert p.answer == str(min(max(round(p.count), 1), 10))
        else:
            assert p.answer_index == -1 and p.count is None
            assert p.answer in predictor.answer_vocab.stoi and p.answer not in ("<pad>", "<unk>")
            assert p.top_k[0][0] == p.answer and len(p.top_k) == 5
    # batching does not change answers: one query at a time gives the same predictions
    for q, p in zip(queries[:4], preds[:4], strict=True):
        [alone] = predictor.predict([q])
        assert alone.answer == p.answer
        assert alone.confidence == pytest.approx(p.confidence, abs=1e-5)


def test_predict_reports_stage_timings(predictor, synth):
    queries = _queries(predictor, synth)
    timings: dict[str, float] = {}
    preds = predictor.predict(queries, timings=timings)
    assert set(timings) == {"features", "model"} and all(v > 0 for v in timings.values())
    # Timing goes through the same forward: the answers do not change.
    assert [p.answer for p in preds] == [p.answer for p in predictor.predict(queries)]


def test_invalid_queries_are_named(predictor, synth):
    video = predictor.prepare_video(next((synth / "gifs").glob("*.gif")))
    five = ["a", "b", "c", "d", "e"]
    cases = [
        (Query("weather", "what ?", video), "unknown task"),
        (Query("action", "what does it do ?", video, five[:4]), "exactly 5 candidates"),
        (Query("count", "how many ?", video, five), "takes no candidates"),
        (Query("frameqa", "   ", video), "empty question"),
        (Query("count", "how many ?", PreparedVideo(video.frames[:3], video.mask[:3], [0], 1)), "video frames must be"),
    ]
    for query, message in cases:
        with pytest.raises(ValueError, match=message):
            predictor.predict([query])


def test_prepare_video_errors_and_threads(predictor, synth):
    from stqa.video import VideoError

    with pytest.raises(VideoError):
        predictor.prepare_video(b"GIF89a definitely not a gif")
    gifs = sorted((synth / "gifs").glob("*.gif"))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: predictor.prepare_video(p.read_bytes()), gifs * 2))
    for a, b in zip(results[: len(gifs)], results[len(gifs):], strict=True):
        assert torch.equal(a.frames, b.frames)


def test_batch_evaluation_agrees_with_the_predictor(predictor, synth):
    """stqa evaluate (backbone once per video, batched by task) and Predictor.predict give the same answers."""
    from stqa.data.dataset import FrameClips, QADataset
    from stqa.evaluation.evaluator import evaluate_datasets

    clips = FrameClips(synth / "gifs", predictor.spec)
    sets = {t: QADataset(tgifqa.load(synth, t, "train"), t, predictor.word_vocab, predictor.answer_vocab, clips)
            for t in predictor.tasks}
    result = evaluate_datasets(predictor.model, sets, predictor.answer_vocab, 4, "cpu")
    for task, ds in sets.items():
        queries = [Query(task, r.question, predictor.prepare_video(synth / "gifs" / f"{r.gif_name}.gif"),
                         list(r.candidates)) for r in ds.records]
        for pred, expected in zip(predictor.predict(queries), result["predictions"][task], strict=True):
            if task == "count":
                assert pred.count == pytest.approx(expected, abs=1e-4)
            elif task == "frameqa":
                assert pred.answer == expected
            else:
                assert pred.answer_index == expected
