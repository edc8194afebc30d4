"""The VideoQA servicer and the server around it (health, reflection, metrics, auth, TLS, limits).

Request path of ``Answer``: admission (before a byte of the request is read) -> receive and parse the
one request message -> input validation -> decode in a killable worker process (bounded by the decode
limits, the request deadline and cancellation) -> the batcher of the model serving the task -> response.
Every failure maps to one status code (docs/serving.md): the caller's input -> INVALID_ARGUMENT,
capacity -> RESOURCE_EXHAUSTED, loading/draining -> UNAVAILABLE, deadline -> DEADLINE_EXCEEDED,
and INTERNAL only for bugs, which are logged with their traceback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from stqa.v1 import video_qa_pb2 as pb

from .auth import BearerTokenInterceptor
from .batcher import Batcher, BatcherClosed, BatchResult, Expired, QueueFull
from .config import MiB, ServerConfig
from .metrics import ServerMetrics

log = logging.getLogger("stqa.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VideoQA"].full_name  # "stqa.v1.VideoQA"
MULTIPLE_CHOICE_CANDIDATES = 5

#: proto enum value <-> the task names the Predictor uses.
TASK_NAMES: dict[int, str] = {pb.COUNT: "count", pb.ACTION: "action", pb.TRANSITION: "transition",
                              pb.FRAMEQA: "frameqa"}
TASK_VALUES: dict[str, int] = {name: value for value, name in TASK_NAMES.items()}
MULTIPLE_CHOICE_TASKS = {pb.ACTION, pb.TRANSITION}

#: Trailing metadata telling a refused client when to retry (gRPC's retry policy honours it).
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
# Requests at least this large trigger returning freed heap memory to the OS once they are done.
_LARGE_REQUEST_BYTES = MiB
_TRIM_INTERVAL_S = 1.0
# How long an admitted call may wait for its turn to be received before it is refused.
_RECEIVE_WAIT_S = 1.0
# Longest user input echoed back in an error message.
_ECHO_CHARS = 80

#: Loads one predictor: (checkpoint path or None for the bundled model, device) -> Predictor.
PredictorLoader = Callable[[Path | None, str], Any]


class RequestError(Exception):
    """A request that ends with a non-OK status; ``message`` says what was wrong."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _clip(text: str) -> str:
    """User input as echoed in an error: at most ``_ECHO_CHARS`` characters."""
    from stqa.inference import clip_text

    return clip_text(text, _ECHO_CHARS)


@dataclass(frozen=True)
class MalformedRequest:
    """Stands in for a request whose bytes did not parse (e.g. a string field with invalid UTF-8).

    gRPC would answer a deserializer exception with a generic error; passing this marker on lets the
    handler reply INVALID_ARGUMENT with the parser's reason instead.
    """

    message_type: str
    reason: str


def _lenient(message_cls) -> Callable[[bytes], Any]:
    def deserialize(data: bytes):
        try:
            return message_cls.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(message_cls.DESCRIPTOR.full_name, str(exc))

    return deserialize


class _HeldBytes:
    """The request bytes one call holds, counted in the service's ``_bytes_in_flight``."""

    def __init__(self, service: VideoQAService) -> None:
        self._service = service
        self._n = 0

    def hold(self, n: int) -> None:
        """Now hold ``n`` bytes (0 releases everything); waiting receivers are told when bytes are freed."""
        freed = n < self._n
        self._service._bytes_in_flight += n - self._n
        self._n = n
        if freed:
            self._service._notify_bytes_freed()


@dataclass
class _Checked:
    """A request that passed every check that needs no decoding."""

    route: _Route
    task: int
    question: str
    candidates: list[str]
    video: bytes
    return_attention: bool


@dataclass
class _Route:
    """One loaded model, its batcher and the tasks it answers."""

    predictor: Any
    batcher: Batcher
    tasks: tuple[int, ...]


def _predict_runner(predictor) -> Callable[[Sequence[Any]], tuple[list[Any], dict[str, float]]]:
    """Wrap ``predictor.predict`` for the batcher: results plus per-stage seconds for the whole batch
    (``features``: the backbone; ``model``: the rest of the model), as the predictor reports them."""

    def run(queries: Sequence[Any]) -> tuple[list[Any], dict[str, float]]:
        timings: dict[str, float] = {}
        return predictor.predict(list(queries), timings=timings), timings

    return run


class VideoQAService:
    """Implements stqa.v1.VideoQA; owns the decode pool, the batchers and the health state."""

    def __init__(
        self,
        config: ServerConfig,
        metrics: ServerMetrics,
        health_servicer: health.aio.HealthServicer,
        query_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.health = health_servicer
        self._query_factory = query_factory
        self._limits = config.video_limits()
        self._decode_pool = None  # the worker processes, started with start_decoders()
        # Threads that wait on a decode worker (each admitted call may): cheap, they mostly sleep in poll().
        self._decode_waiters = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_in_flight, thread_name_prefix="stqa-decode-wait")
        self._routes: dict[int, _Route] = {}
        self._route_list: list[_Route] = []
        self._in_flight = 0
        self._large_in_flight = 0
        self._bytes_in_flight = 0
        self._bytes_freed: asyncio.Condition | None = None  # created on the serving loop
        self._last_trim = 0.0
        self._trim_scheduled = False
        self._latency_ewma_s = 0.05
        self.ready = False
        self.draining = False

    def start_decoders(self) -> None:
        """Start the decode worker processes (each under the decode memory limit); on the serving loop."""
        from stqa.video.pool import DecodePool

        if self._bytes_freed is None:
            self._bytes_freed = asyncio.Condition()
        if self._decode_pool is None:
            self._decode_pool = DecodePool(self.config.decode_workers,
                                           memory_limit_bytes=self.config.decode_memory_bytes)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    def attach(self, predictors: Sequence[Any]) -> None:
        """Route each task to the predictor serving it (a task served twice is a configuration error)."""
        routes: dict[int, _Route] = {}
        route_list = []
        for predictor in predictors:
            tasks = []
            for name in predictor.tasks:
                if name not in TASK_VALUES:
                    raise ValueError(f"model {predictor.model_version} serves unknown task {name!r}")
                value = TASK_VALUES[name]
                if value in routes:
                    raise ValueError(f"task {name!r} is served by two checkpoints "
                                     f"({routes[value].predictor.model_version} and {predictor.model_version})")
                tasks.append(value)
            batcher = Batcher(
                _predict_runner(predictor), max_batch_size=self.config.max_batch_size,
                max_batch_delay_s=self.config.max_batch_delay_ms / 1000.0, max_queue=self.config.max_queue,
                metrics=self.metrics, name=f"model{len(route_list)}",
            )
            route = _Route(predictor, batcher, tuple(tasks))
            route_list.append(route)
            for value in tasks:
                routes[value] = route
        if not routes:
            raise ValueError("the loaded checkpoints serve no task")
        for route in route_list:
            route.batcher.start()
        self._routes = routes
        self._route_list = route_list
        self.ready = True

    async def close(self) -> None:
        """Stop the decode workers (decodes still running end at once), finish queued model work, then
        stop the batchers."""
        if self._decode_pool is not None:
            self._decode_pool.close()
        self._decode_waiters.shutdown(wait=False, cancel_futures=True)
        for route in self._route_list:
            await route.batcher.close()

    # -- RPCs ------------------------------------------------------------------------------------------

    async def Answer(self, request_iterator, context: grpc.aio.ServicerContext):
        """Registered as a stream-unary handler (clients call it unary): admission runs before the request
        message is read, so a refused call costs no parsing and no buffering of its video."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        admitted = large = False
        held = _HeldBytes(self)
        try:
            self._check_available()
            self._admit(context)
            self._in_flight += 1
            admitted = True
            self.metrics.in_flight.set(self._in_flight)
            await self._reserve_receive(held, context)
            request = await context.read()
            if request is grpc.aio.EOF:
                raise _invalid("no request message was sent")
            try:
                checked = self._validate(request)
            finally:
                del request  # frees the parsed message (and its copy of the video) before decoding
            held.hold(len(checked.video))
            large = len(checked.video) >= _LARGE_REQUEST_BYTES
            if large:
                self._large_in_flight += 1
            return await self._answer(checked, context, started, held)
        except RequestError as exc:
            code = exc.code
            await context.abort(exc.code, exc.message)
        except asyncio.CancelledError:
            # gRPC cancels the handler both when the client goes away and when the deadline passes.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("Answer failed with an unexpected error")
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error (logged on the server)")
        finally:
            held.hold(0)
            if admitted:
                self._in_flight -= 1
                self.metrics.in_flight.set(self._in_flight)
            if large:
                self._large_in_flight -= 1
                self._maybe_release_memory()
            self.metrics.requests.labels(method="Answer", code=code.name).inc()
            if code == grpc.StatusCode.OK:
                total = time.perf_counter() - started
                self.metrics.stage_latency.labels(stage="total").observe(total)
                self._latency_ewma_s += 0.1 * (total - self._latency_ewma_s)

    async def GetModelInfo(self, request, context: grpc.aio.ServicerContext):
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, MalformedRequest):
                raise _invalid(f"request is not a valid {request.message_type}: {request.reason}")
            self._check_available()
            return self._model_info()
        except RequestError as exc:
            code = exc.code
            await context.abort(exc.code, exc.message)
        finally:
            self.metrics.requests.labels(method="GetModelInfo", code=code.name).inc()

    # -- internals ------------------------------------------------------------------------------------

    def _check_available(self) -> None:
        if self.draining:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        if not self.ready:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the model is still loading")

    def _admit(self, context: grpc.aio.ServicerContext) -> None:
        """Refuse a call over ``max_in_flight`` with retry pushback."""
        if self._in_flight >= self.config.max_in_flight:
            self._refuse(context, f"server at capacity ({self.config.max_in_flight} requests in flight)")

    def _refuse(self, context: grpc.aio.ServicerContext, reason: str) -> None:
        pushback = self._pushback_ms()
        context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(pushback)),))
        self.metrics.admission_refused.inc()
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{reason}; retry after {pushback} ms")

    async def _reserve_receive(self, held: _HeldBytes, context: grpc.aio.ServicerContext) -> None:
        """Wait (briefly) until the message may be received: a call being received counts as a full-size
        message against ``max_bytes_in_flight`` until its size is known. While it waits, the transport
        holds at most one stream window of its data; the client's upload waits behind flow control."""
        c = self.config
        remaining = context.time_remaining()
        wait = _RECEIVE_WAIT_S if remaining is None else min(_RECEIVE_WAIT_S, max(remaining, 0.0))
        async with self._bytes_freed:
            try:
                await asyncio.wait_for(self._bytes_freed.wait_for(
                    lambda: self._bytes_in_flight + c.max_message_bytes <= c.max_bytes_in_flight), wait)
            except asyncio.TimeoutError:
                self._refuse(context, f"server at capacity ({self._bytes_in_flight // MiB} MiB of requests "
                                      f"being received or held, limit {c.max_bytes_in_flight // MiB} MiB)")
            held.hold(c.max_message_bytes)

    def _notify_bytes_freed(self) -> None:
        if self._bytes_freed is not None:
            asyncio.get_running_loop().create_task(self._wake_receivers())

    async def _wake_receivers(self) -> None:
        async with self._bytes_freed:
            self._bytes_freed.notify_all()

    def _pushback_ms(self) -> int:
        """When a refused client should retry: about one recent request's latency (50 ms .. 5 s)."""
        return int(min(max(self._latency_ewma_s, 0.05), 5.0) * 1000)

    def _maybe_release_memory(self) -> None:
        """Once the last large request is done, hand the freed heap back to the OS (at most once a second):
        gRPC assembles a large message from many small slices in per-thread malloc arenas, which glibc
        keeps mapped after they are freed, so RSS would otherwise stay at the burst's peak."""
        if self._large_in_flight or self._trim_scheduled:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_trim + _TRIM_INTERVAL_S - time.monotonic()
        if wait > 0:  # trimmed recently: once more when the interval is over, if still quiet then
            self._trim_scheduled = True
            loop.call_later(wait, self._trim_later)
            return
        self._last_trim = time.monotonic()
        from stqa.video.pool import release_free_memory

        gc.collect()  # videos pinned by reference cycles (tracebacks of refused requests) go first
        loop.run_in_executor(None, release_free_memory)

    def _trim_later(self) -> None:
        self._trim_scheduled = False
        self._maybe_release_memory()

    def _validate(self, request) -> _Checked:
        """Check everything about the request that can be checked without decoding."""
        if isinstance(request, MalformedRequest):
            raise _invalid(f"request is not a valid {request.message_type}: {request.reason}")
        task = request.task
        if task == pb.TASK_UNSPECIFIED:
            raise _invalid("task is required (COUNT, ACTION, TRANSITION or FRAMEQA)")
        if task not in TASK_NAMES:
            raise _invalid(f"unknown task value {task}; expected COUNT, ACTION, TRANSITION or FRAMEQA")
        route = self._routes.get(task)
        if route is None:
            served = ", ".join(pb.Task.Name(t) for t in sorted(self._routes))
            raise _invalid(f"task {pb.Task.Name(task)} is not served by this server (serves {served})")
        question = request.question
        if not question.strip():
            raise _invalid("question is empty")
        if len(question) > self.config.max_question_chars:
            raise _invalid(f"question is {len(question)} characters; the limit is {self.config.max_question_chars}")
        candidates = list(request.candidates)
        if task in MULTIPLE_CHOICE_TASKS:
            if len(candidates) != MULTIPLE_CHOICE_CANDIDATES:
                raise _invalid(f"{pb.Task.Name(task)} needs exactly {MULTIPLE_CHOICE_CANDIDATES} candidates, "
                               f"got {len(candidates)}")
            for i, text in enumerate(candidates):
                if not text.strip():
                    raise _invalid(f"candidate {i} is empty")
                if len(text) > self.config.max_candidate_chars:
                    raise _invalid(f"candidate {i} is {len(text)} characters; the limit is "
                                   f"{self.config.max_candidate_chars}")
        elif candidates:
            raise _invalid(f"{pb.Task.Name(task)} takes no candidates, got {len(candidates)}")
        check_question = getattr(route.predictor, "check_question", None)
        if check_question is not None:  # before decoding: a question the model cannot read costs nothing
            try:
                check_question(TASK_NAMES[task], question, candidates)
            except ValueError as exc:
                raise _invalid(str(exc)) from None
        video = request.video
        if not video:
            raise _invalid("video is empty")
        if len(video) > self.config.max_video_bytes:
            raise _invalid(f"video is {len(video)} bytes; the limit is {self.config.max_video_bytes}")
        return _Checked(route, task, question, candidates, video, bool(request.return_attention))

    def _prepare(self, predictor, video: bytes, timeout_s: float, cancel: threading.Event):
        """On a waiter thread: decode in a worker process, then turn the frames into the model input."""
        job = predictor.decode_job(video, self._limits)
        del video
        try:
            decoded = self._decode_pool.decode(job, timeout_s=timeout_s, cancel=cancel)
        finally:
            del job  # an error's traceback keeps this frame: it must not keep the video too
        return predictor.prepare_decoded(decoded)

    async def _decode(self, route: _Route, video: bytes, deadline: float | None):
        from stqa.video.decode import DecodeCancelled, DecodeTimeout, VideoError
        from stqa.video.pool import DecodePoolBusy, DecodePoolClosed

        if self._decode_pool is None:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the decoders are not running")
        budget = self.config.decode_timeout_s
        deadline_binds = False
        if deadline is not None and deadline - time.monotonic() < budget:
            budget = deadline - time.monotonic()
            deadline_binds = True
        if budget <= 0:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before decoding")
        cancel = threading.Event()
        job = asyncio.get_running_loop().run_in_executor(
            self._decode_waiters, functools.partial(self._prepare, route.predictor, video, budget, cancel))
        del video
        try:
            return await job
        except asyncio.CancelledError:
            cancel.set()  # the worker stops between frames, or is killed: its slot is free again at once
            raise
        except (DecodeTimeout, DecodePoolBusy, DecodePoolClosed, DecodeCancelled, VideoError) as exc:
            error = self._decode_error(exc, budget, deadline_binds)
        finally:
            del job  # the future holds the decoder's exception, whose traceback holds the video
        # Raised outside the except block: the reply must not keep the decoder's traceback (and the video
        # its frames hold) alive.
        raise error

    def _decode_error(self, exc: Exception, budget: float, deadline_binds: bool) -> RequestError:
        from stqa.video.decode import DecodeTimeout, VideoError
        from stqa.video.pool import DecodePoolBusy

        if isinstance(exc, DecodeTimeout):
            if deadline_binds:
                return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed while decoding the video")
            return _invalid(f"video rejected: decoding takes longer than decode_timeout_s="
                            f"{self.config.decode_timeout_s:g} s")
        if isinstance(exc, DecodePoolBusy):
            if deadline_binds:
                return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    "the deadline passed while waiting for a decode worker")
            return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"no decode worker became free within {budget:.1f} s (server overloaded)")
        if isinstance(exc, VideoError):
            return _invalid(f"video rejected: {exc}")
        return RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    async def _answer(self, checked: _Checked, context: grpc.aio.ServicerContext, started: float,
                      held: _HeldBytes):
        route, task, question, candidates = checked.route, checked.task, checked.question, checked.candidates
        video, checked.video = checked.video, b""  # the one copy of the video; it goes once decoded
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        if deadline is not None and remaining <= 0:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline had passed on arrival")

        decode_started = time.perf_counter()
        try:
            prepared = await self._decode(route, video, deadline)
        finally:
            del video  # not pinned by the traceback of a refusal
        held.hold(0)
        decode_s = time.perf_counter() - decode_started
        self.metrics.stage_latency.labels(stage="decode").observe(decode_s)

        query = self._make_query(task=TASK_NAMES[task], question=question, video=prepared, candidates=candidates)
        try:
            result: BatchResult = await route.batcher.submit(query, deadline)
        except QueueFull as exc:
            context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(self._pushback_ms())),))
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except Expired as exc:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from None
        except BatcherClosed as exc:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        except ValueError as exc:  # the predictor rejected this query (after isolating it from its batch)
            raise _invalid(str(exc)) from None
        self.metrics.stage_latency.labels(stage="queue").observe(result.queue_s)
        for stage, seconds in result.stage_s.items():
            self.metrics.stage_latency.labels(stage=stage).observe(seconds)
        return self._response(checked.return_attention, task, prepared, result, decode_s, started, route)

    def _make_query(self, **fields):
        if self._query_factory is None:
            from stqa.inference import Query

            self._query_factory = Query
        return self._query_factory(**fields)

    def _response(self, return_attention: bool, task: int, prepared, result: BatchResult, decode_s: float, started: float,
                  route: _Route):
        prediction = result.value
        frame_indices = [int(i) for i in prepared.frame_indices]
        n_valid = len(frame_indices)
        response = pb.AnswerResponse(
            answer=str(prediction.answer),
            answer_index=int(prediction.answer_index),
            count=float(prediction.count) if prediction.count is not None else 0.0,
            confidence=float(prediction.confidence),
            top_k=[pb.AnswerScore(text=str(text), score=float(score)) for text, score in prediction.top_k],
            frame_indices=frame_indices,
            model_version=str(route.predictor.model_version),
            task=task,
        )
        if return_attention:
            if prediction.temporal_attention is None or prediction.spatial_attention is None:
                raise RuntimeError("the predictor returned no attention although the model has it")
            temporal = np.asarray(prediction.temporal_attention, dtype=np.float32)[:n_valid]
            spatial = np.asarray(prediction.spatial_attention, dtype=np.float32)[:n_valid]
            grid = spatial.shape[-1] if spatial.ndim == 3 else 0
            if temporal.shape != (n_valid,) or spatial.shape != (n_valid, grid, grid) or grid == 0:
                raise RuntimeError(f"attention shapes {temporal.shape}, {spatial.shape} do not match "
                                   f"{n_valid} sampled frames")
            response.temporal_attention.extend(temporal.tolist())
            response.spatial_attention.extend(spatial.reshape(-1).tolist())
            response.attention_grid = grid
        stages = result.stage_s
        t = response.timings
        t.decode_ms = decode_s * 1000.0
        t.queue_ms = result.queue_s * 1000.0
        t.features_ms = stages.get("features", 0.0) * 1000.0
        t.model_ms = stages.get("model", 0.0) * 1000.0
        t.total_ms = (time.perf_counter() - started) * 1000.0
        return response

    def _model_info(self):
        from stqa import __version__

        c = self.config
        info = pb.ModelInfo(
            tasks=sorted(self._routes),
            limits=pb.Limits(
                max_message_bytes=c.max_message_bytes, max_video_bytes=c.max_video_bytes,
                max_pixels=c.max_pixels, max_frames=c.max_frames, max_duration_s=c.max_duration_s,
                decode_timeout_s=c.decode_timeout_s, max_question_chars=c.max_question_chars,
                max_in_flight=c.max_in_flight, max_queue=c.max_queue, max_bytes_in_flight=c.max_bytes_in_flight, max_batch_size=c.max_batch_size,
                max_batch_delay_ms=c.max_batch_delay_ms, max_aspect_ratio=c.max_aspect_ratio,
                max_decoded_pixels=c.max_decoded_pixels, decode_memory_bytes=c.decode_memory_bytes,
            ),
            server_version=__version__,
        )
        for route in self._route_list:
            predictor = route.predictor
            spec = predictor.spec
            vocab = getattr(predictor, "answer_vocab", None) or ()
            info.models.append(pb.ServedModel(
                tasks=list(route.tasks), model_version=str(predictor.model_version),
                spec=pb.FeatureSpec(backbone=str(spec.backbone), channels=int(spec.channels),
                                    num_frames=int(spec.num_frames), policy=str(spec.policy),
                                    image_size=int(spec.image_size)),
                answer_vocab_size=len(vocab) if pb.FRAMEQA in route.tasks else 0,
            ))
        first = self._routes[min(self._routes)]
        info.model_version = str(first.predictor.model_version)
        info.spec.CopyFrom(info.models[self._route_list.index(first)].spec)
        return info


def add_video_qa_service(server: grpc.aio.Server, service: VideoQAService) -> None:
    """Register the service with deserializers that turn unparsable requests into INVALID_ARGUMENT.

    Not the generated ``add_VideoQAServicer_to_server``: Answer is registered stream-unary, so that its
    handler runs (and admits or refuses the call) before the request message is received; the wire
    format is the same, and clients call it as the unary RPC the proto declares.
    """
    handlers = {
        "Answer": grpc.stream_unary_rpc_method_handler(
            service.Answer, request_deserializer=_lenient(pb.AnswerRequest),
            response_serializer=pb.AnswerResponse.SerializeToString),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            service.GetModelInfo, request_deserializer=_lenient(pb.GetModelInfoRequest),
            response_serializer=pb.ModelInfo.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def default_loader(path: Path | None, device: str):
    """Load one checkpoint (None: the bundled model) with the project's Predictor."""
    from stqa.inference import Predictor

    return Predictor.load(path, device=device)


class VideoQAServer:
    """One running server: gRPC port (+ health, reflection), metrics port, model loading, shutdown."""

    def __init__(self, config: ServerConfig, loader: PredictorLoader = default_loader,
                 query_factory: Callable[..., Any] | None = None) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self._loader = loader
        self._health = health.aio.HealthServicer()
        self.service = VideoQAService(config, self.metrics, self._health, query_factory)
        self._server: grpc.aio.Server | None = None
        self._load_task: asyncio.Task | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None

    async def start(self) -> int:
        """Bind and start serving (health NOT_SERVING); model loading continues in the background.

        Returns the bound gRPC port (useful with ``port=0``). Raises OSError when a port cannot be bound
        or the TLS files cannot be read.
        """
        c = self.config
        interceptors = [BearerTokenInterceptor(c.auth_token, self.metrics)] if c.auth_token else []
        server = grpc.aio.server(interceptors=interceptors, options=c.grpc_options(),
                                 maximum_concurrent_rpcs=c.max_concurrent_rpcs)
        add_video_qa_service(server, self.service)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if c.reflection:
            from grpc_reflection.v1alpha import reflection

            reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
                                                server)
        address = f"{c.host}:{c.port}"
        try:
            if c.tls_cert is not None:
                key_pem, cert_pem = Path(c.tls_key).read_bytes(), Path(c.tls_cert).read_bytes()
                port = server.add_secure_port(address, grpc.ssl_server_credentials([(key_pem, cert_pem)]))
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError
            raise OSError(f"cannot listen on {address}: {exc}") from None
        await self.service.set_health(False)
        self.service.start_decoders()
        await server.start()
        self._server = server
        self.port = port
        if c.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve_http(c.metrics_host, c.metrics_port)
            except OSError as exc:
                await server.stop(0)
                self._server = None
                await self.service.close()
                raise OSError(f"cannot serve metrics on {c.metrics_host}:{c.metrics_port}: {exc}") from None
        self._load_task = asyncio.get_running_loop().create_task(self._load(), name="stqa-load")
        return port

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        paths: list[Path | None] = list(self.config.checkpoints) or [None]
        predictors = []
        for path in paths:
            predictor = await loop.run_in_executor(None, self._loader, path, self.config.device)
            log.info("loaded %s: tasks %s, version %s", path or "the bundled model",
                     ", ".join(predictor.tasks), predictor.model_version)
            predictors.append(predictor)
        self.service.attach(predictors)
        if not self.service.draining:
            await self.service.set_health(True)

    def service_tasks(self) -> list[str]:
        """Names of the tasks being served (empty until the models are loaded)."""
        return [TASK_NAMES[t] for t in sorted(self.service._routes)]

    async def wait_ready(self) -> None:
        """Wait until the models are loaded and serving; re-raises a loading failure."""
        assert self._load_task is not None, "start() first"
        await self._load_task

    async def stop(self, grace: float | None = None) -> None:
        """Drain: health NOT_SERVING, refuse new calls, let in-flight ones finish within ``grace`` s."""
        grace = self.config.grace_s if grace is None else grace
        self.service.draining = True
        await self._health.enter_graceful_shutdown()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await self.service.close()
        self.metrics.close()
