"""End to end: `stqa serve` as a subprocess with the real Predictor, real videos, over 127.0.0.1.

The model is the bundled one when it exists, else a tiny checkpoint trained here for one epoch on a
few synthetic videos (the answers are then poor, but every path of the service is real).
"""

from __future__ import annotations

import io
import re
import signal
import time
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import CANDIDATES, model_checkpoint, protocol_mismatches, sample_videos
from PIL import Image
from stqa.server import testing

from stqa.v1 import video_qa_pb2 as pb
from stqa.v1 import video_qa_pb2_grpc as pb_grpc


class ServeProcess(testing.ServeProcess):
    """The server under test: metrics on, INFO logs, the bundled model (or a freshly trained tiny one)."""

    def __init__(self, *flags: str, env: dict | None = None) -> None:
        super().__init__("--metrics-port", "0", "--log-level", "INFO", *flags, checkpoint=model_checkpoint(),
                         env=env)


def channel_to(address: str, max_mb: int = 100) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.max_send_message_length", max_mb << 20),
                                                   ("grpc.max_receive_message_length", max_mb << 20)])


def is_serving(channel: grpc.Channel) -> bool:
    stub = health_pb2_grpc.HealthStub(channel)
    return all(stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
               == health_pb2.HealthCheckResponse.SERVING for name in ("", "stqa.v1.VideoQA"))


def gif_bytes(n_frames: int, size: int, duration_ms: int = 40) -> bytes:
    frames = [Image.new("RGB", (size, size), ((37 * i) % 255, 90, 200)) for i in range(n_frames)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return buf.getvalue()


def zero_frame_video(tmp_dir: Path) -> bytes:
    path = tmp_dir / "zero.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    return path.read_bytes()


# -- tests ------------------------------------------------------------------------------------------------

def test_the_predictor_is_what_the_server_serves():
    from stqa.server.predictor import ServedPredictor, default_loader

    from stqa.inference import Predictor

    predictor = default_loader(model_checkpoint(), "cpu")
    assert isinstance(predictor, Predictor) and isinstance(predictor, ServedPredictor)
    assert protocol_mismatches(predictor, ServedPredictor) == []


@pytest.fixture(scope="module")
def server():
    s = ServeProcess("--max-batch-delay-ms", "30", "--max-message-mb", "12", "--max-video-mb", "8",
                     "--max-pixels", str(512 * 512), "--max-frames", "200", "--grace-s", "10")
    yield s
    assert s.terminate() == 0


@pytest.fixture(scope="module")
def stub(server):
    with channel_to(server.address) as channel:
        yield pb_grpc.VideoQAStub(channel)


def _check_attention(reply: pb.AnswerResponse) -> None:
    t = len(reply.frame_indices)
    g = reply.attention_grid
    assert t >= 1 and g >= 1
    temporal = np.asarray(reply.temporal_attention)
    spatial = np.asarray(reply.spatial_attention).reshape(t, g, g)
    assert temporal.shape == (t,) and (temporal >= 0).all()
    assert temporal.sum() == pytest.approx(1.0, abs=1e-4)
    assert (spatial >= 0).all()
    np.testing.assert_allclose(spatial.sum(axis=(1, 2)), np.ones(t), atol=1e-4)


@pytest.mark.parametrize("task, candidates", [(pb.COUNT, []), (pb.ACTION, CANDIDATES),
                                              (pb.TRANSITION, CANDIDATES), (pb.FRAMEQA, [])])
def test_every_task_answers_with_attention(server, stub, task, candidates):
    from stqa.video.decode import decode_video

    video = sample_videos()[0]
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
    hits = re.search(r"^stqa_cache_hits_total (\S+)", server.metrics(), re.M).group(1)
    reply = stub.Answer(pb.AnswerRequest(video=video.read_bytes(), question="what does the red cross do ?",
                                         task=task, candidates=candidates, return_attention=True), timeout=60)
    assert reply.task == task and reply.answer and reply.model_version == info.model_version
    if candidates:
        assert 0 <= reply.answer_index < 5 and reply.answer == candidates[reply.answer_index]
        assert sorted(s.text for s in reply.top_k) == sorted(candidates)
    else:
        assert reply.answer_index == -1
    if task == pb.COUNT:
        assert reply.answer == str(int(reply.answer)) and np.isfinite(reply.count)
    assert 0.0 <= reply.confidence <= 1.0
    # The frames the server used are the project's sampling rule applied to this video.
    expected = decode_video(video, info.spec.num_frames, policy=info.spec.policy).indices.tolist()
    assert list(reply.frame_indices) == expected
    _check_attention(reply)
    assert reply.timings.total_ms > 0 and reply.timings.decode_ms > 0 and reply.timings.model_ms > 0
    cached = re.search(r"^stqa_cache_hits_total (\S+)", server.metrics(), re.M).group(1) != hits
    # The backbone, timed by the Predictor; a follow-up on the same video answers from the cached features.
    assert (reply.timings.features_ms > 0) != cached
    # Without return_attention the maps are left out.
    plain = stub.Answer(pb.AnswerRequest(video=video.read_bytes(), question="what does the red cross do ?",
                                         task=task, candidates=candidates), timeout=60)
    assert not plain.temporal_attention and not plain.spatial_attention and plain.answer == reply.answer


def test_model_info_and_health(server, stub):
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
    assert list(info.tasks) == [pb.COUNT, pb.ACTION, pb.TRANSITION, pb.FRAMEQA]
    assert info.model_version and info.spec.num_frames > 0 and info.spec.backbone
    assert info.limits.max_message_bytes == 12 << 20 and info.limits.max_video_bytes == 8 << 20
    assert info.limits.max_frames == 200 and info.limits.max_pixels == 512 * 512
    assert info.models[0].answer_vocab_size > 0
    with channel_to(server.address) as channel:
        assert is_serving(channel)


def _bad_inputs(tmp_dir: Path) -> dict[str, tuple[dict, grpc.StatusCode, str]]:
    gif = sample_videos()[0].read_bytes()
    ok = dict(question="how many times does it jump ?", task=pb.COUNT)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return {
        "empty video": (dict(ok, video=b""), invalid, "video is empty"),
        "garbage video": (dict(ok, video=np.random.default_rng(0).bytes(5000)), invalid, "video rejected"),
        "truncated video": (dict(ok, video=gif[: len(gif) // 2]), invalid, "video rejected"),
        "zero-frame video": (dict(ok, video=zero_frame_video(tmp_dir)), invalid, "no decodable frames"),
        "huge dimensions": (dict(ok, video=gif_bytes(2, 1024)), invalid, "video rejected"),
        "too many frames": (dict(ok, video=gif_bytes(260, 8)), invalid, "video rejected"),
        "empty question": (dict(ok, video=gif, question=" "), invalid, "question is empty"),
        "oversized question": (dict(ok, video=gif, question="why " * 300), invalid, "the limit is 1000"),
        "wrong candidate count": (dict(ok, video=gif, task=pb.ACTION, candidates=CANDIDATES[:4]), invalid,
                                  "exactly 5 candidates"),
        "candidates on count": (dict(ok, video=gif, candidates=CANDIDATES), invalid, "takes no candidates"),
        "unknown task": (dict(ok, video=gif, task=42), invalid, "unknown task"),
        "inferred task, wrong candidates": (dict(ok, video=gif, task=pb.TASK_UNSPECIFIED, candidates=CANDIDATES),
                                            invalid, "COUNT (inferred from the question; set task to override) "
                                                     "takes no candidates"),
        "over the video size": (dict(ok, video=b"\0" * (9 << 20)), invalid, "the limit is 8388608"),
        "over the message size": (dict(ok, video=b"\0" * (13 << 20)), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    }


def test_bad_inputs_get_the_right_code_and_the_server_stays_healthy(server, stub, tmp_path):
    with channel_to(server.address) as channel:
        for name, (fields, code, message) in _bad_inputs(tmp_path).items():
            with pytest.raises(grpc.RpcError) as err:
                stub.Answer(pb.AnswerRequest(**fields), timeout=60)
            assert err.value.code() == code, f"{name}: {err.value.code()} {err.value.details()}"
            assert message in (err.value.details() or ""), f"{name}: {err.value.details()}"
            assert is_serving(channel), name
        # Non-UTF-8 bytes in the question (a Python client cannot even build that message).
        good = pb.AnswerRequest(video=b"x", question="ab", task=pb.COUNT).SerializeToString()
        raw = channel.unary_unary("/stqa.v1.VideoQA/Answer", request_serializer=lambda b: b,
                                  response_deserializer=pb.AnswerResponse.FromString)
        with pytest.raises(grpc.RpcError) as err:
            raw(good.replace(b"\x12\x02ab", b"\x12\x02\xc3\x28"), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in err.value.details()
        # An already expired deadline.
        with pytest.raises(grpc.RpcError) as err:
            stub.Answer(pb.AnswerRequest(video=sample_videos()[0].read_bytes(), question="q", task=pb.COUNT),
                        timeout=0.0005)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert is_serving(channel)
        # And it still answers.
        assert stub.Answer(pb.AnswerRequest(video=sample_videos()[1].read_bytes(), question="q", task=pb.COUNT),
                           timeout=60).answer
    assert 'code="INVALID_ARGUMENT",method="Answer"' in server.metrics()


def test_a_video_over_grpcs_default_4_mib_is_answered(stub):
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (320, 320, 3), dtype=np.uint8)).quantize(64) for _ in range(50)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    video = buf.getvalue()
    assert len(video) > 4 << 20
    reply = stub.Answer(pb.AnswerRequest(video=video, question="what color is it ?", task=pb.FRAMEQA), timeout=60)
    assert reply.answer and reply.frame_indices[-1] < 50


def test_concurrent_requests_are_batched(server, stub):
    videos = [p.read_bytes() for p in sample_videos()[:8]]
    futures = [stub.Answer.future(pb.AnswerRequest(video=v, question="what color is the square ?", task=pb.FRAMEQA),
                                  timeout=120) for v in videos]
    assert all(f.result().answer for f in futures)
    text = server.metrics()
    total = float(re.search(r"^stqa_batch_size_sum (\S+)", text, re.M).group(1))
    count = float(re.search(r"^stqa_batch_size_count (\S+)", text, re.M).group(1))
    assert total > count, "no predict call ever ran more than one request"


def test_sigterm_drains_in_flight_requests_and_exits_zero():
    # A long batch delay keeps the requests queued inside the server when SIGTERM arrives.
    s = ServeProcess("--max-batch-delay-ms", "3000", "--max-batch-size", "64", "--grace-s", "30")
    videos = [p.read_bytes() for p in sample_videos()[:6]]
    with channel_to(s.address) as channel:
        stub = pb_grpc.VideoQAStub(channel)
        futures = [stub.Answer.future(pb.AnswerRequest(video=v, question="how many times ?", task=pb.COUNT),
                                      timeout=60) for v in videos]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(r"^stqa_in_flight (\S+)", s.metrics(), re.M)
            if match and float(match.group(1)) == len(videos):
                break
            time.sleep(0.02)
        else:
            pytest.fail("requests never got in flight")
        s.proc.send_signal(signal.SIGTERM)
        replies = [f.result() for f in futures]  # none lost
    assert all(r.answer for r in replies)
    assert s.proc.wait(60) == 0
    assert any("stopped cleanly" in line for line in s.stderr_lines)
