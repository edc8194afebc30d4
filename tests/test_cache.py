"""Follow-up questions: the video cache (features by video SHA-256 and model version, LRU under a byte
budget), asking by reference, single-flight decoding, and the client resending evicted videos; all over a
real port on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from helpers import CANDIDATES, model_checkpoint, sample_videos
from stqa.server.background import ServerThread
from stqa.server.cache import VideoCache
from stqa.server.config import ServerConfig
from stqa.server.metrics import ServerMetrics
from stqa.server.testing import ServeProcess

from stqa.cli import main as stqa_main
from stqa.client import VideoQAClient
from stqa.v1 import video_qa_pb2 as pb
from stqa.v1 import video_qa_pb2_grpc as pb_grpc

COUNT_Q = "how many times does the square jump ?"
COLOR_Q = "what color is the jumping shape ?"


def _config(**overrides) -> ServerConfig:
    ckpt = model_checkpoint()
    base = dict(port=0, metrics_port=None, checkpoints=() if ckpt is None else (ckpt,), grace_s=5.0)
    base.update(overrides)
    return ServerConfig(**base)


def _metric(server: ServerThread, name: str) -> float:
    return server.server.metrics.registry.get_sample_value(name) or 0.0


def _stub(server: ServerThread):
    channel = grpc.insecure_channel(server.address)
    return channel, pb_grpc.VideoQAStub(channel)


@pytest.fixture(scope="module")
def server():
    with ServerThread(_config()) as s:
        yield s


def test_lru_keeps_the_budget_and_evicts_the_least_recently_used():
    metrics = ServerMetrics()
    cache = VideoCache(100, metrics)
    assert cache.put("a" * 64, "m", "A", 40) and cache.put("b" * 64, "m", "B", 40)
    assert cache.get("a" * 64, "m") == "A"  # now b is the least recently used
    assert cache.put("c" * 64, "m", "C", 40)
    assert cache.get("b" * 64, "m") is None and cache.get("a" * 64, "m") == "A"
    assert cache.nbytes == 80 and len(cache) == 2
    assert not cache.put("d" * 64, "m", "D", 101)  # alone over the budget: never kept
    assert cache.get("a" * 64, "other-model") is None  # another model's features never answer
    assert metrics.registry.get_sample_value("stqa_cache_evictions_total") == 1
    assert metrics.registry.get_sample_value("stqa_cache_bytes") == 80
    assert not VideoCache(0, metrics).put("e" * 64, "m", "E", 1)


def test_a_follow_up_question_skips_decoding_and_the_backbone(server):
    video = sample_videos()[3].read_bytes()
    sha = hashlib.sha256(video).hexdigest()
    hits = _metric(server, "stqa_cache_hits_total")
    channel, stub = _stub(server)
    with channel:
        cold = stub.Answer(pb.AnswerRequest(video=video, question=COUNT_Q), timeout=60)
        assert cold.video_sha256 == sha and cold.timings.features_ms > 0
        again = stub.Answer(pb.AnswerRequest(video=video, question=COUNT_Q), timeout=60)
        by_ref = stub.Answer(pb.AnswerRequest(video_sha256=sha, question=COLOR_Q), timeout=60)
        fresh = stub.Answer(pb.AnswerRequest(video=video, question=COLOR_Q, return_attention=True), timeout=60)
    assert _metric(server, "stqa_cache_hits_total") - hits == 3
    for follow_up in (again, by_ref, fresh):
        assert follow_up.timings.features_ms == 0  # no backbone: the cached features answered
        assert follow_up.video_sha256 == sha
        assert list(follow_up.frame_indices) == list(cold.frame_indices)
    assert again.answer == cold.answer and again.count == pytest.approx(cold.count, abs=1e-4)
    assert by_ref.task == pb.FRAMEQA and by_ref.answer == fresh.answer
    assert len(fresh.temporal_attention) == len(cold.frame_indices)


def test_the_cached_answer_equals_a_cold_one_on_another_server(server):
    """The same video and question on a server without cache: same answer, same scores."""
    video = sample_videos()[4].read_bytes()
    with VideoQAClient(server.address) as client:
        client.answer(video, COLOR_Q)
        cached = client.answer(video, "what does the square do after it jumps ?", "transition", CANDIDATES)
    with ServerThread(_config(cache_bytes=0)) as cold_server, VideoQAClient(cold_server.address) as client:
        cold = client.answer(video, "what does the square do after it jumps ?", "transition", CANDIDATES)
        assert _metric(cold_server, "stqa_cache_entries") == 0
    assert cached.answer == cold.answer
    assert [s.text for s in cached.top_k] == [s.text for s in cold.top_k]
    assert [s.score for s in cached.top_k] == pytest.approx([s.score for s in cold.top_k], abs=1e-4)


def test_by_reference_errors(server):
    channel, stub = _stub(server)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            stub.Answer(pb.AnswerRequest(video_sha256="0" * 64, question=COUNT_Q), timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "is not cached" in err.value.details() and "send the video" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.Answer(pb.AnswerRequest(video_sha256="xyz", question=COUNT_Q), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "64 hex digits" in err.value.details()
        video = sample_videos()[5].read_bytes()
        # A hash that is not the bytes' own: refused, so no entry can ever be filed under other bytes' hash.
        with pytest.raises(grpc.RpcError) as err:
            stub.Answer(pb.AnswerRequest(video=video, video_sha256="1" * 64, question=COUNT_Q), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "is not the SHA-256" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.Answer(pb.AnswerRequest(video_sha256="1" * 64, question=COUNT_Q), timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_different_bytes_never_share_an_entry(server):
    a = sample_videos()[6].read_bytes()
    b = bytearray(a)
    b[-2] ^= 0x01  # one byte differs inside the trailer-adjacent data: a different file, maybe the same frames
    b = bytes(b)
    channel, stub = _stub(server)
    with channel:
        ra = stub.Answer(pb.AnswerRequest(video=a, question=COUNT_Q), timeout=60)
        try:
            rb = stub.Answer(pb.AnswerRequest(video=b, question=COUNT_Q), timeout=60)
        except grpc.RpcError as err:  # the altered file may not decode: it is then refused, not answered from a
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            return
    assert ra.video_sha256 != rb.video_sha256
    assert rb.timings.features_ms > 0  # its own decode and backbone, not a's entry


def test_concurrent_identical_videos_are_decoded_once():
    with ServerThread(_config(max_batch_delay_ms=50.0)) as s:
        video = sample_videos()[7].read_bytes()
        decodes = []
        service = s.server.service
        original = service._decode

        async def counting_decode(route, data, deadline):
            decodes.append(1)
            return await original(route, data, deadline)

        service._decode = counting_decode
        start = threading.Barrier(8)

        def ask(i: int) -> pb.AnswerResponse:
            with VideoQAClient(s.address) as client:
                start.wait()
                return client.answer(video, COUNT_Q if i % 2 else COLOR_Q)

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(ask, range(8)))
        assert len(decodes) == 1
        assert len({r.video_sha256 for r in replies}) == 1
        assert len({r.answer for r in replies if r.task == pb.COUNT}) == 1
        assert _metric(s, "stqa_cache_entries") == 1


def test_the_budget_holds_under_load_and_the_client_resends_evicted_videos():
    # About two of the bundled model's clips (0.6 MiB each) fit.
    with ServerThread(_config(cache_bytes=1_400_000)) as s:
        videos = [p.read_bytes() for p in sample_videos()[:8]]
        peak = []

        def ask(video: bytes) -> pb.AnswerResponse:
            with VideoQAClient(s.address) as client:
                reply = client.answer(video, COUNT_Q)
            peak.append(_metric(s, "stqa_cache_bytes"))
            return reply

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(ask, videos * 2))
        assert max(peak) <= 1_400_000
        assert s.server.service.cache.nbytes <= 1_400_000
        assert _metric(s, "stqa_cache_evictions_total") > 0
        with VideoQAClient(s.address) as client:
            first = client.answer(videos[0], COUNT_Q)
            for v in videos[1:]:
                client.answer(v, COUNT_Q)
            with pytest.raises(grpc.RpcError) as err:  # evicted: by reference alone it is not found
                client.answer(None, COUNT_Q, video_sha256=first.video_sha256)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            again = client.answer(videos[0], COUNT_Q)  # this client sent it before: reference, then bytes
            assert again.answer == first.answer and again.timings.features_ms > 0


def test_cache_off_and_stqa_ask_by_reference(tmp_path, capsys):
    video = sample_videos()[8]
    proc = ServeProcess("--cache-mb", "0", "--metrics-port", "0", checkpoint=model_checkpoint())
    try:
        for _ in range(2):  # stqa ask asks by reference first; the server has no cache: it resends
            assert stqa_main(["ask", str(video), COUNT_Q, "--server", proc.address]) == 0
        out = capsys.readouterr().out
        assert out.count(f"sha256 {hashlib.sha256(video.read_bytes()).hexdigest()}") == 2
        metrics = proc.metrics()
        assert "stqa_cache_hits_total 0.0" in metrics and "stqa_cache_bytes 0.0" in metrics
        assert 'code="NOT_FOUND",method="Answer"' in metrics
        with VideoQAClient(proc.address) as client:
            assert client.model_info().limits.cache_bytes == 0
            with pytest.raises(grpc.RpcError) as err:
                client.answer(None, COUNT_Q, video_sha256=hashlib.sha256(video.read_bytes()).hexdigest())
            assert "--cache-mb 0" in err.value.details()
    finally:
        assert proc.terminate() == 0


def test_a_failed_decode_leaves_nothing_behind(server):
    garbage = b"GIF89a" + bytes(range(256)) * 8
    channel, stub = _stub(server)
    with channel:
        for _ in range(2):  # decoded (and refused) each time: a failure is never cached
            with pytest.raises(grpc.RpcError) as err:
                stub.Answer(pb.AnswerRequest(video=garbage, question=COUNT_Q), timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "video rejected" in err.value.details()
    service = server.server.service
    assert service._decoding == {}
    version = service._route_list[0].predictor.model_version
    assert service.cache.get(hashlib.sha256(garbage).hexdigest(), version) is None
