"""The VideoQA servicer: admission, the bytes-in-flight budget, decoding, batching, responses.

Request path of ``Answer``: admission (before a byte of the request is read) -> receive and parse the
one request message -> input validation -> decode in a killable worker process (bounded by the decode
limits, the request deadline and cancellation) -> the batcher of the model serving the task -> response.
Every failure maps to one status code (docs/serving.md): the caller's input -> INVALID_ARGUMENT,
capacity -> RESOURCE_EXHAUSTED, loading/draining -> UNAVAILABLE, deadline -> DEADLINE_EXCEEDED,
and INTERNAL only for bugs, which are logged with their traceback.

Request checks live in validation.py, proto conversion in convert.py, the server around the service
(port, TLS, health, reflection, metrics, model loading, shutdown) in lifecycle.py.
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
from typing import Any

import grpc

from stqa.v1 import video_qa_pb2 as pb
from stqa.v1 import video_qa_pb2_grpc as pb_grpc
from stqa.video.decode import DecodeCancelled, DecodeTimeout, VideoError
from stqa.video.pool import DecodePoolBusy, DecodePoolClosed, release_free_memory

from . import convert
from .batcher import Batcher, BatcherClosed, BatchResult, Expired, QueueFull
from .cache import VideoCache, video_sha256
from .config import MiB, ServerConfig
from .metrics import ServerMetrics
from .predictor import QueryFactory, ServedPredictor, default_query_factory
from .validation import (
    CheckedAnswer,
    RequestError,
    check_answer_request,
    check_parsed,
    invalid,
    lenient_deserializer,
)

log = logging.getLogger("stqa.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VideoQA"].full_name  # "stqa.v1.VideoQA"

#: Trailing metadata telling a refused client when to retry (gRPC's retry policy honours it).
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
# Requests at least this large trigger returning freed heap memory to the OS once they are done.
_LARGE_REQUEST_BYTES = MiB
_TRIM_INTERVAL_S = 1.0
# How close to the server's view of the deadline a cancellation counts as the deadline passing.
_DEADLINE_SKEW_S = 0.25
# How long an admitted call may wait for its turn to be received before it is refused.
_RECEIVE_WAIT_S = 1.0
# Videos at least this large are hashed on a waiter thread, not on the event loop (~2 ms per MiB).
_HASH_OFF_LOOP_BYTES = 256 * 1024
# A decode shared by identical concurrent requests that fails with one of these failed for the leader's
# own reasons (its deadline, its cancellation, capacity): a follower decodes for itself instead.
_LEADER_ONLY_CODES = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                      grpc.StatusCode.RESOURCE_EXHAUSTED)


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
class _Route:
    """One loaded model, its batcher and the tasks it answers."""

    predictor: ServedPredictor
    batcher: Batcher
    tasks: tuple[int, ...]


def _predict_runner(predictor: ServedPredictor) -> Callable[[Sequence[Any]], tuple[list[Any], dict[str, float]]]:
    """Wrap ``predictor.predict`` for the batcher: results plus per-stage seconds for the whole batch
    (``features``: the backbone; ``model``: the rest of the model), as the predictor reports them."""

    def run(queries: Sequence[Any]) -> tuple[list[Any], dict[str, float]]:
        timings: dict[str, float] = {}
        return predictor.predict(list(queries), timings=timings), timings

    return run


class VideoQAService(pb_grpc.VideoQAServicer):
    """Implements stqa.v1.VideoQA: admission, decoding, routing to the batchers, responses.

    Owns the decode pool and the batchers; the server around it (lifecycle.VideoQAServer) owns the port,
    health, reflection, metrics endpoint and model loading, and flips ``ready``/``draining``.
    """

    def __init__(self, config: ServerConfig, metrics: ServerMetrics,
                 query_factory: QueryFactory | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self._query_factory = query_factory
        self._limits = config.video_limits()
        self._decode_pool = None  # the worker processes, started with start_decoders()
        # Threads that wait on a decode worker (each admitted call may): cheap, they mostly sleep in poll().
        self._decode_waiters = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_in_flight, thread_name_prefix="stqa-decode-wait")
        self._routes: dict[int, _Route] = {}
        self._route_list: list[_Route] = []
        self._served: dict[int, ServedPredictor] = {}  # proto task value -> its predictor, for validation
        self._in_flight = 0
        self._large_in_flight = 0
        self._bytes_in_flight = 0
        self._bytes_freed: asyncio.Condition | None = None  # created on the serving loop
        self._last_trim = 0.0
        self._trim_scheduled = False
        self._latency_ewma_s = 0.05
        # Follow-up questions: prepared clips (features) by (video SHA-256, model version), and the decodes
        # in progress under the same key, so identical concurrent videos are decoded once (single-flight).
        self.cache = VideoCache(config.cache_bytes, metrics)
        self._decoding: dict[tuple[str, str], asyncio.Future] = {}
        self._closed = False  # close() began: no new work for the waiter threads
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

    # -- set-up and tear-down (driven by lifecycle.VideoQAServer) -------------------------------------

    def attach(self, predictors: Sequence[ServedPredictor]) -> None:
        """Route each task to the predictor serving it (a task served twice is a configuration error)."""
        routes: dict[int, _Route] = {}
        route_list = []
        for predictor in predictors:
            tasks = []
            for name in predictor.tasks:
                try:
                    value = convert.task_value(name)
                except ValueError:
                    raise ValueError(f"model {predictor.model_version} serves unknown task {name!r}") from None
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
        self._served = {value: route.predictor for value, route in routes.items()}
        self.ready = True

    def served_tasks(self) -> list[str]:
        """Names of the tasks being served, in proto order (empty until the models are attached)."""
        return [convert.task_name(value) for value in sorted(self._routes)]

    async def wait_idle(self, timeout: float) -> None:
        """Wait until no Answer call is in flight, at most ``timeout`` seconds (shutdown's grace period)."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def stop_decoding(self) -> None:
        """Stop the decode workers now: decodes in progress end, their calls answer UNAVAILABLE."""
        if self._decode_pool is not None:
            self._decode_pool.close()

    async def close(self) -> None:
        """Stop the decode workers (decodes still running end at once), finish queued model work, then
        stop the batchers."""
        self._closed = True
        if self._decode_pool is not None:
            self._decode_pool.close()
        self._decode_waiters.shutdown(wait=False, cancel_futures=True)
        for route in self._route_list:
            await route.batcher.close()
        self.cache.clear()

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
                raise invalid("no request message was sent")
            try:
                checked = check_answer_request(request, self._served, self.config)
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
            # gRPC cancels the handler both when the client goes away and when the deadline passes. A
            # client cancels at its own deadline, which falls before the server's by the request's transit
            # time: a cancellation that close to the deadline is the deadline.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= _DEADLINE_SKEW_S
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
            check_parsed(request)
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
        gc.collect()  # videos pinned by reference cycles (tracebacks of refused requests) go first
        loop.run_in_executor(None, release_free_memory)

    def _trim_later(self) -> None:
        self._trim_scheduled = False
        self._maybe_release_memory()

    def _prepare(self, predictor: ServedPredictor, video: bytes, timeout_s: float, cancel: threading.Event):
        """On a waiter thread: decode in a worker process, then turn the frames into the model input."""
        job = predictor.decode_job(video, self._limits)
        del video
        try:
            decoded = self._decode_pool.decode(job, timeout_s=timeout_s, cancel=cancel)
        finally:
            del job  # an error's traceback keeps this frame: it must not keep the video too
        return predictor.prepare_decoded(decoded)

    async def _decode(self, route: _Route, video: bytes, deadline: float | None):
        if self._decode_pool is None:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the decoders are not running")
        if self._closed:  # e.g. a follower whose leader's decode was stopped by the shutdown
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
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
        if isinstance(exc, DecodeTimeout):
            if deadline_binds:
                return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed while decoding the video")
            return invalid(f"video rejected: decoding takes longer than decode_timeout_s="
                            f"{self.config.decode_timeout_s:g} s")
        if isinstance(exc, DecodePoolBusy):
            if deadline_binds:
                return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    "the deadline passed while waiting for a decode worker")
            return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"no decode worker became free within {budget:.1f} s (server overloaded)")
        if isinstance(exc, VideoError):
            return invalid(f"video rejected: {exc}")
        return RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    async def _video_key(self, video: bytes, reference: str) -> str:
        """The SHA-256 the request's video is cached under: computed from its bytes (a caller's claim is
        never trusted to name other bytes), or the reference when only that was sent."""
        if not video:
            return reference
        if self._closed:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        if len(video) >= _HASH_OFF_LOOP_BYTES:
            sha = await asyncio.get_running_loop().run_in_executor(self._decode_waiters, video_sha256, video)
        else:
            sha = video_sha256(video)
        if reference and reference != sha:
            raise invalid(f"video_sha256 {reference[:16]}... is not the SHA-256 of the video sent ({sha[:16]}...)")
        return sha

    async def _prepared(self, route: _Route, key: tuple[str, str], video: bytes, deadline: float | None):
        """(The clip for ``key``, the future this call published as the leader or None): decoded here, or
        by an identical request already decoding it (single-flight).

        The leader publishes its decode in ``_decoding`` until its request is done (``_answer`` removes it
        once the features are cached), so a follower arriving meanwhile shares the decoded frames, and the
        batcher's backbone runs once for both. A leader that fails for its own reasons (deadline,
        cancellation, capacity) makes its followers decode for themselves; a bad video fails them all.
        """
        while (shared := self._decoding.get(key)) is not None:
            try:
                return await asyncio.shield(shared), None
            except RequestError as exc:
                if exc.code not in _LEADER_ONLY_CODES:
                    raise RequestError(exc.code, exc.message) from None
            except asyncio.CancelledError:
                if not shared.cancelled():  # this call itself was cancelled
                    raise
            if self._decoding.get(key) is shared:
                del self._decoding[key]
            cached = self.cache.get(*key)
            if cached is not None:
                return cached, None
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        # A failure nobody waits for must not be logged as "never retrieved".
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._decoding[key] = future
        try:
            prepared = await self._decode(route, video, deadline)
        except BaseException as exc:
            video = None  # this frame is in the error's traceback: it must not keep the video alive
            # Waiting followers get the outcome; later calls must not (a decode timeout under load may not
            # recur), and the entry must not outlive the call.
            if isinstance(exc, RequestError):
                future.set_exception(RequestError(exc.code, exc.message))
            else:
                future.cancel()
            if self._decoding.get(key) is future:
                del self._decoding[key]
            raise
        future.set_result(prepared)
        return prepared, future

    async def _answer(self, checked: CheckedAnswer, context: grpc.aio.ServicerContext, started: float,
                      held: _HeldBytes) -> pb.AnswerResponse:
        route, task, question, candidates = (self._routes[checked.task.proto_value], checked.task, checked.question,
                                             checked.candidates)
        video, checked.video = checked.video, b""  # the one copy of the video; it goes once decoded
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        if deadline is not None and remaining <= 0:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline had passed on arrival")

        decode_started = time.perf_counter()
        key = (await self._video_key(video, checked.video_sha256), route.predictor.model_version)
        mine: asyncio.Future | None = None  # the decode this call leads, published to identical calls
        try:
            prepared = self.cache.get(*key)  # a hit skips decoding (and the backbone) entirely
            if prepared is None and not video:
                raise RequestError(grpc.StatusCode.NOT_FOUND, self._not_cached_message(key[0]))
            if prepared is None:
                try:
                    prepared, mine = await self._prepared(route, key, video, deadline)
                finally:
                    del video  # not pinned by the traceback of a refusal
            else:
                del video
            held.hold(0)
            decode_s = time.perf_counter() - decode_started
            self.metrics.stage_latency.labels(stage="decode").observe(decode_s)

            query = self._make_query(task=task.name, question=question, video=prepared, candidates=candidates)
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
                raise invalid(str(exc)) from None
            self._remember(key, prepared)
        finally:
            if mine is not None and self._decoding.get(key) is mine:
                del self._decoding[key]
        self.metrics.stage_latency.labels(stage="queue").observe(result.queue_s)
        for stage, seconds in result.stage_s.items():
            self.metrics.stage_latency.labels(stage=stage).observe(seconds)
        response = convert.answer_response(result.value, task=task.proto_value, frame_indices=prepared.frame_indices,
                                           model_version=route.predictor.model_version,
                                           return_attention=checked.return_attention,
                                           task_inferred=checked.task_inferred, video_sha256=key[0])
        convert.fill_timings(response.timings, decode_s=decode_s, queue_s=result.queue_s, stage_s=result.stage_s,
                             total_s=time.perf_counter() - started)
        return response

    def _not_cached_message(self, sha: str) -> str:
        if not self.cache.enabled:
            return (f"video {sha[:16]}... is not cached: this server keeps no video cache (--cache-mb 0); "
                    "send the video's bytes")
        return f"video {sha[:16]}... is not cached (evicted, or never sent to this model); send the video's bytes"

    def _remember(self, key: tuple[str, str], prepared: Any) -> None:
        """Cache the clip's features once the model has computed them (a clip the predictor could not
        reduce to features is not cached)."""
        features_only = getattr(prepared, "features_only", None)
        if features_only is None or getattr(prepared, "features", None) is None or not self.cache.enabled:
            return
        if prepared.frames is None:  # it came from the cache: only touch it
            return
        entry = features_only()
        self.cache.put(key[0], key[1], entry, entry.nbytes)

    def _make_query(self, **fields: Any) -> Any:
        if self._query_factory is None:
            self._query_factory = default_query_factory()
        return self._query_factory(**fields)

    def _model_info(self) -> pb.ModelInfo:
        from stqa import __version__  # a lazy attribute: it loads the compiled extension

        return convert.model_info(self.config, ((route.tasks, route.predictor) for route in self._route_list),
                                  __version__)


def add_video_qa_service(server: grpc.aio.Server, service: VideoQAService) -> None:
    """Register the service with deserializers that turn unparsable requests into INVALID_ARGUMENT.

    Not the generated ``add_VideoQAServicer_to_server`` (grpc's examples use it), for two reasons that
    change what a caller sees: Answer is registered stream-unary, so that its handler runs (and admits or
    refuses the call) before the request message is received, where the generated unary handler would
    only run once gRPC had buffered and parsed the whole video; and both methods parse with
    ``lenient_deserializer``, so a malformed message gets INVALID_ARGUMENT with the parser's reason, not
    gRPC's generic deserialization error. The wire format is the same: clients call both RPCs as the
    unary RPCs the proto declares.
    """
    handlers = {
        "Answer": grpc.stream_unary_rpc_method_handler(
            service.Answer, request_deserializer=lenient_deserializer(pb.AnswerRequest),
            response_serializer=pb.AnswerResponse.SerializeToString),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            service.GetModelInfo, request_deserializer=lenient_deserializer(pb.GetModelInfoRequest),
            response_serializer=pb.ModelInfo.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
