"""Server plumbing with a test double of the Predictor: batcher, limits, status codes, auth, metrics.

The double decodes with the real stqa.video decoder (so video limits are real) but replaces the
model with a recorder, which lets these tests control timing (block a batch, poison one query).
End-to-end tests with the real Predictor are in test_server_e2e.py.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import urllib.request
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import protocol_mismatches
from PIL import Image
from stqa.server.background import ServerThread
from stqa.server.batcher import Batcher, Expired, QueueFull
from stqa.server.config import ServerConfig
from stqa.server.predictor import ServedPredictor

from stqa.v1 import video_qa_pb2 as pb
from stqa.v1 import video_qa_pb2_grpc as pb_grpc

NUM_FRAMES = 4


def make_gif(n_frames: int = 6, size: int = 32) -> bytes:
    frames = [Image.new("RGB", (size, size), (40 * i % 255, 80, 160)) for i in range(n_frames)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


class FakePredictor:
    """Predictor test double: real decoding, recorded batches, controllable model time and failures."""

    tasks = ("count", "action", "transition", "frameqa")
    model_version = "fake-1"
    spec = SimpleNamespace(backbone="tiny", channels=8, num_frames=NUM_FRAMES, policy="uniform", image_size=32)
    num_frames = NUM_FRAMES
    answer_vocab = ("cat", "dog", "red")

    def __init__(self, model_s: float = 0.02) -> None:
        self.model_s = model_s
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def decode_job(self, video, limits):
        from stqa.video.pool import DecodeJob

        return DecodeJob(data=video, num_frames=NUM_FRAMES, policy="uniform", shrink_to=32, limits=limits)

    def prepare_decoded(self, decoded):
        return SimpleNamespace(frame_indices=[int(i) for i in decoded.indices], n_frames=decoded.n_frames)

    def check_question(self, task, question, candidates):
        # Like the real one (no token the tokenizer keeps), reduced to "no letter or digit at all".
        if not any(ch.isalnum() for ch in question):
            raise ValueError(f"question {question!r} has no words the model can read")

    def predict(self, queries, timings=None):
        self.entered.set()
        self.gate.wait(30)
        self.batches.append([q.question for q in queries])
        time.sleep(self.model_s)
        if timings is not None:
            timings["model"] = timings.get("model", 0.0) + self.model_s
        if any(q.question == "poison" for q in queries):
            raise ValueError("question 'poison' is not allowed")
        out = []
        for q in queries:
            t = len(q.video.frame_indices)
            temporal = np.full(NUM_FRAMES, 0.0, np.float32)
            temporal[:t] = 1.0 / t
            out.append(SimpleNamespace(
                task=q.task, answer=q.candidates[1] if q.candidates else "cat",
                answer_index=1 if q.candidates else -1, count=2.4 if q.task == "count" else None,
                confidence=0.9, top_k=[("cat", 0.9), ("dog", 0.1)], temporal_attention=temporal,
                spatial_attention=np.full((NUM_FRAMES, 7, 7), 1 / 49, np.float32)))
        return out


def test_the_fake_predictor_is_a_served_predictor():
    assert isinstance(FakePredictor(), ServedPredictor)
    assert protocol_mismatches(FakePredictor(), ServedPredictor) == []
    # the check has teeth: a double without check_question, or with other parameters, is caught
    assert protocol_mismatches(SimpleNamespace(**{k: getattr(FakePredictor(), k) for k in ("tasks", "spec")}),
                               ServedPredictor)[:2] == ["missing answer_vocab", "missing check_question"]

    class Renamed(FakePredictor):
        def predict(self, batch, timings=None):
            return []

    assert protocol_mismatches(Renamed(), ServedPredictor) == ["predict('batch', 'timings') should take "
                                                              "('queries', 'timings')"]


def query(question: str, task: str = "frameqa"):
    return SimpleNamespace(question=question, task=task)


# -- the batcher alone ----------------------------------------------------------------------------------

def _runner(log: list, model_s: float = 0.02, gate: threading.Event | None = None):
    def run(queries):
        if gate is not None:
            gate.wait(10)
        log.append([q.question for q in queries])
        time.sleep(model_s)
        if any(q.question == "poison" for q in queries):
            raise ValueError("poisoned")
        return [q.question.upper() for q in queries], {"model": model_s}

    return run


def test_batcher_groups_concurrent_requests():
    async def main():
        log: list = []
        b = Batcher(_runner(log), max_batch_size=8, max_batch_delay_s=0.05, max_queue=64)
        b.start()
        results = await asyncio.gather(*(b.submit(query(f"q{i}")) for i in range(8)))
        await b.close()
        return log, results

    log, results = asyncio.run(main())
    assert [r.value for r in results] == [f"Q{i}" for i in range(8)]
    assert max(len(batch) for batch in log) > 1
    assert sum(len(batch) for batch in log) == 8
    assert all(r.batch_size >= 1 for r in results)


def test_batcher_size_one_never_groups():
    async def main():
        log: list = []
        b = Batcher(_runner(log, 0.005), max_batch_size=1, max_batch_delay_s=0.05, max_queue=64)
        b.start()
        await asyncio.gather(*(b.submit(query(f"q{i}")) for i in range(5)))
        await b.close()
        return log

    assert [len(batch) for batch in asyncio.run(main())] == [1] * 5


def test_batcher_drops_expired_and_cancelled_before_the_forward():
    async def main():
        log: list = []
        gate = threading.Event()
        b = Batcher(_runner(log, gate=gate), max_batch_size=4, max_batch_delay_s=0.0, max_queue=64)
        b.start()
        first = asyncio.ensure_future(b.submit(query("first")))
        await asyncio.sleep(0.05)  # "first" is now blocked inside the runner
        expired = asyncio.ensure_future(b.submit(query("expired"), deadline=time.monotonic() + 0.05))
        cancelled = asyncio.ensure_future(b.submit(query("cancelled")))
        alive = asyncio.ensure_future(b.submit(query("alive")))
        await asyncio.sleep(0.1)
        cancelled.cancel()
        gate.set()
        results = await asyncio.gather(first, expired, alive, return_exceptions=True)
        await b.close()
        return log, results

    log, (first, expired, alive) = asyncio.run(main())
    assert first.value == "FIRST" and alive.value == "ALIVE"
    assert isinstance(expired, Expired)
    seen = [q for batch in log for q in batch]
    assert "expired" not in seen and "cancelled" not in seen


def test_batcher_isolates_a_bad_query():
    async def main():
        log: list = []
        b = Batcher(_runner(log), max_batch_size=4, max_batch_delay_s=0.05, max_queue=64)
        b.start()
        results = await asyncio.gather(*(b.submit(query(q)) for q in ("a", "poison", "b")),
                                       return_exceptions=True)
        await b.close()
        return results

    a, poison, b = asyncio.run(main())
    assert a.value == "A" and b.value == "B"
    assert isinstance(poison, ValueError)


def test_batcher_queue_full():
    async def main():
        gate = threading.Event()
        b = Batcher(_runner([], gate=gate), max_batch_size=1, max_batch_delay_s=0.0, max_queue=2)
        b.start()
        running = asyncio.ensure_future(b.submit(query("running")))
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(b.submit(query(f"w{i}"))) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await b.submit(query("one too many"))
        gate.set()
        await asyncio.gather(running, *waiting)
        await b.close()

    asyncio.run(main())


# -- the server over a real port ------------------------------------------------------------------------

def _config(**overrides) -> ServerConfig:
    base = dict(host="127.0.0.1", port=0, metrics_port=0, grace_s=5.0, max_batch_delay_ms=20.0)
    base.update(overrides)
    return ServerConfig(**base)


@pytest.fixture(scope="module")
def fake_server():
    predictor = FakePredictor()
    with ServerThread(_config(max_message_bytes=2 * 1024 * 1024, max_video_bytes=1024 * 1024),
                      loader=lambda path, device: predictor, query_factory=SimpleNamespace) as s:
        s.predictor = predictor
        yield s


def _stub(address: str, max_mb: int = 100):
    options = [("grpc.max_send_message_length", max_mb << 20), ("grpc.max_receive_message_length", max_mb << 20)]
    channel = grpc.insecure_channel(address, options=options)
    return channel, pb_grpc.VideoQAStub(channel)


def _healthy(channel) -> bool:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="stqa.v1.VideoQA"))
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_answer_and_model_info(fake_server):
    channel, stub = _stub(fake_server.address)
    with channel:
        reply = stub.Answer(pb.AnswerRequest(video=make_gif(), question="what color?", task=pb.FRAMEQA,
                                             return_attention=True), timeout=10)
        assert reply.answer == "cat" and reply.answer_index == -1 and reply.model_version == "fake-1"
        assert list(reply.frame_indices) == [0, 1, 3, 4]  # floor(linspace(0, 6, 4, endpoint=False))
        assert len(reply.temporal_attention) == 4 and len(reply.spatial_attention) == 4 * 49
        assert reply.timings.total_ms >= reply.timings.model_ms > 0
        # No deadline at all is fine too.
        assert stub.Answer(pb.AnswerRequest(video=make_gif(), question="no deadline", task=pb.COUNT)).answer
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert list(info.tasks) == [pb.COUNT, pb.ACTION, pb.TRANSITION, pb.FRAMEQA]
        assert info.limits.max_video_bytes == 1024 * 1024 and info.spec.num_frames == NUM_FRAMES
        assert info.models[0].answer_vocab_size == 3


def _raw_answer(channel, payload: bytes, timeout: float = 10):
    call = channel.unary_unary("/stqa.v1.VideoQA/Answer", request_serializer=lambda b: b,
                               response_deserializer=pb.AnswerResponse.FromString)
    return call(payload, timeout=timeout)


def test_invalid_utf8_question_is_invalid_argument(fake_server):
    good = pb.AnswerRequest(video=make_gif(), question="ab", task=pb.FRAMEQA).SerializeToString()
    bad = good.replace(b"\x12\x02ab", b"\x12\x02\xff\xfe")
    assert bad != good
    channel, _ = _stub(fake_server.address)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            _raw_answer(channel, bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UTF-8" in err.value.details()
        assert _healthy(channel)


@pytest.mark.parametrize("request_fields, expected", [
    (dict(question="q", task=pb.FRAMEQA), "video is empty"),
    (dict(video=b"GIF89a garbage", question="q", task=pb.FRAMEQA), "video rejected"),
    (dict(video=b"x", question="   ", task=pb.FRAMEQA), "question is empty"),
    (dict(video=b"x", question="q" * 1001, task=pb.FRAMEQA), "1001 characters"),
    (dict(video=b"x", question="q", task=pb.ACTION, candidates=["a", "b"]), "exactly 5 candidates"),
    (dict(video=b"x", question="q", task=pb.COUNT, candidates=["a"]), "takes no candidates"),
    (dict(video=b"x", question="q", task=pb.ACTION, candidates=["a", "b", "", "d", "e"]), "candidate 2"),
    (dict(video=b"x", question="q", candidates=["a"]), "FRAMEQA (inferred from the question; set task to override)"),
    (dict(video=b"x", question="q", task=9), "unknown task"),
    (dict(video=b"x", question="?!", task=pb.FRAMEQA), "has no words the model can read"),
    (dict(video=b"x" * (1024 * 1024 + 1), question="q", task=pb.COUNT), "the limit is 1048576"),
])
def test_bad_requests_are_invalid_argument(fake_server, request_fields, expected):
    channel, stub = _stub(fake_server.address)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            stub.Answer(pb.AnswerRequest(**request_fields), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert expected in err.value.details()
        assert _healthy(channel)


def test_over_message_size_is_resource_exhausted(fake_server):
    channel, stub = _stub(fake_server.address)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            stub.Answer(pb.AnswerRequest(video=b"x" * (3 * 1024 * 1024), question="q", task=pb.COUNT), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _healthy(channel)


def test_predictor_rejecting_a_query_is_invalid_argument_and_spares_the_batch(fake_server):
    channel, stub = _stub(fake_server.address)
    gif = make_gif()
    with channel:
        futures = [stub.Answer.future(pb.AnswerRequest(video=gif, question=q, task=pb.FRAMEQA), timeout=20)
                   for q in ("one", "poison", "two")]
        with pytest.raises(grpc.RpcError) as err:
            futures[1].result()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "poison" in err.value.details()
        assert futures[0].result().answer == "cat" and futures[2].result().answer == "cat"


def test_metrics_endpoint(fake_server):
    channel, stub = _stub(fake_server.address)
    with channel:
        stub.Answer(pb.AnswerRequest(video=make_gif(), question="m", task=pb.COUNT), timeout=10)
    text = urllib.request.urlopen(f"http://127.0.0.1:{fake_server.server.metrics_port}/metrics", timeout=5).read()
    text = text.decode()
    assert 'stqa_requests_total{code="OK",method="Answer"}' in text
    assert 'stqa_stage_latency_seconds_count{stage="decode"}' in text
    assert "stqa_batch_size_bucket" in text and "stqa_in_flight" in text and "stqa_queue_depth" in text


def test_capacity_and_draining():
    predictor = FakePredictor()
    predictor.gate.clear()
    s = ServerThread(_config(max_in_flight=1, grace_s=10.0), loader=lambda p, d: predictor,
                     query_factory=SimpleNamespace).start()
    channel, stub = _stub(s.address)
    try:
        held = stub.Answer.future(pb.AnswerRequest(video=make_gif(), question="held", task=pb.COUNT), timeout=30)
        assert predictor.entered.wait(10)
        with pytest.raises(grpc.RpcError) as err:
            stub.Answer(pb.AnswerRequest(video=make_gif(), question="extra", task=pb.COUNT), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Drain with the held request in flight: it must still complete.
        stopper = threading.Thread(target=s.stop)
        stopper.start()
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as err:
            stub.Answer(pb.AnswerRequest(video=make_gif(), question="late", task=pb.COUNT), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        predictor.gate.set()
        assert held.result().answer == "cat"
        assert predictor.batches == [["held"]]
        stopper.join(30)
        assert not stopper.is_alive()
    finally:
        predictor.gate.set()
        channel.close()
        s.stop()


def _self_signed_cert(tmp_path):
    """A throwaway certificate for localhost / 127.0.0.1 (openssl CLI; `cryptography` is not a dependency)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls_and_bearer_token(tmp_path):
    cert, key = _self_signed_cert(tmp_path)
    predictor = FakePredictor()
    config = _config(tls_cert=cert, tls_key=key, auth_token="s3cret")
    with ServerThread(config, loader=lambda p, d: predictor, query_factory=SimpleNamespace) as s:
        request = pb.AnswerRequest(video=make_gif(), question="tls", task=pb.FRAMEQA)
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{s.port}", credentials) as channel:
            stub = pb_grpc.VideoQAStub(channel)
            assert stub.Answer(request, timeout=10, metadata=[("authorization", "Bearer s3cret")]).answer == "cat"
            for metadata in ([], [("authorization", "Bearer wrong")], [("authorization", "s3cret")]):
                with pytest.raises(grpc.RpcError) as err:
                    stub.Answer(request, timeout=10, metadata=metadata)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert _healthy(channel)  # health stays open without a token (documented)
        # A plaintext client cannot talk to the TLS port.
        with grpc.insecure_channel(f"127.0.0.1:{s.port}") as channel:
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.VideoQAStub(channel).Answer(request, timeout=5, metadata=[("authorization", "Bearer s3cret")])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_reflection_lists_the_service(fake_server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel, _ = _stub(fake_server.address)
    with channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=10))
    names = {service.name for service in replies[0].list_services_response.service}
    assert {"stqa.v1.VideoQA", "grpc.health.v1.Health"} <= names


def test_no_reflection_flag():
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    predictor = FakePredictor()
    with ServerThread(_config(reflection=False, metrics_port=None), loader=lambda p, d: predictor,
                      query_factory=SimpleNamespace) as s:
        with grpc.insecure_channel(s.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                               timeout=10))
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_not_serving_until_loaded_then_serving():
    release = threading.Event()
    predictor = FakePredictor()

    def slow_loader(path, device):
        release.wait(10)
        return predictor

    s = ServerThread(_config(), loader=slow_loader, query_factory=SimpleNamespace).start(wait_ready=False)
    try:
        with grpc.insecure_channel(s.address) as channel:
            assert not _healthy(channel)
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.VideoQAStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "loading" in err.value.details()
            release.set()
            s.wait_ready()
            assert _healthy(channel)
    finally:
        release.set()
        s.stop()


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="max_batch_size"):
        ServerConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="tls"):
        ServerConfig(tls_cert="cert.pem")
    with pytest.raises(ValueError, match="max_video_bytes"):
        ServerConfig(max_video_bytes=100 << 20, max_message_bytes=80 << 20)
    with pytest.raises(ValueError, match="max_bytes_in_flight"):
        ServerConfig(max_video_bytes=60 << 20, max_message_bytes=64 << 20)
    with pytest.raises(ValueError, match="max_aspect_ratio"):
        ServerConfig(max_aspect_ratio=0.5)
    with pytest.raises(ValueError, match="256 MiB"):
        ServerConfig(decode_memory_bytes=100 << 20)


class _TaskSubset(FakePredictor):
    def __init__(self, tasks: tuple[str, ...], version: str) -> None:
        super().__init__()
        self.tasks = tasks
        self.model_version = version


def test_requests_are_routed_to_the_checkpoint_serving_their_task():
    counting = _TaskSubset(("count",), "counter-1")
    rest = _TaskSubset(("action", "transition"), "mc-1")
    by_path = {"count.ckpt": counting, "mc.ckpt": rest}
    config = _config(checkpoints=("count.ckpt", "mc.ckpt"))
    with ServerThread(config, loader=lambda path, device: by_path[str(path)], query_factory=SimpleNamespace) as s:
        channel, stub = _stub(s.address)
        with channel:
            gif = make_gif()
            count = stub.Answer(pb.AnswerRequest(video=gif, question="how many", task=pb.COUNT), timeout=10)
            action = stub.Answer(pb.AnswerRequest(video=gif, question="what", task=pb.ACTION,
                                                  candidates=list("abcde")), timeout=10)
            assert (count.model_version, action.model_version) == ("counter-1", "mc-1")
            assert action.answer == "b" and action.answer_index == 1
            assert counting.batches == [["how many"]] and rest.batches == [["what"]]
            with pytest.raises(grpc.RpcError) as err:
                stub.Answer(pb.AnswerRequest(video=gif, question="what color", task=pb.FRAMEQA), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "FRAMEQA is not served" in err.value.details()
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            assert list(info.tasks) == [pb.COUNT, pb.ACTION, pb.TRANSITION]
            assert [m.model_version for m in info.models] == ["counter-1", "mc-1"]
            assert info.models[1].answer_vocab_size == 0


def test_a_task_served_twice_is_a_startup_error():
    a, b = _TaskSubset(("count", "action"), "a"), _TaskSubset(("action",), "b")
    by_path = {"a": a, "b": b}
    s = ServerThread(_config(checkpoints=("a", "b")), loader=lambda path, device: by_path[str(path)],
                     query_factory=SimpleNamespace)
    with pytest.raises(ValueError, match="'action' is served by two checkpoints"):
        s.start()
