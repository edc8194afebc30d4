"""The VideoQA servicer and the server around it (health, reflection, metrics, auth, TLS, limits).

Request path of ``Answer``: capacity check -> input validation -> decode in the worker pool (bounded by
the decode limit and the request deadline) -> the batcher of the model serving the task -> response.
Every failure maps to one status code (docs/serving.md): the caller's input -> INVALID_ARGUMENT,
capacity -> RESOURCE_EXHAUSTED, loading/draining -> UNAVAILABLE, deadline -> DEADLINE_EXCEEDED,
and INTERNAL only for bugs, which are logged with their traceback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
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
from .config import ServerConfig
from .metrics import ServerMetrics

log = logging.getLogger("stqa.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VideoQA"].full_name  # "stqa.v1.VideoQA"
MULTIPLE_CHOICE_CANDIDATES = 5

#: proto enum value <-> the task names the Predictor uses.
TASK_NAMES: dict[int, str] = {pb.COUNT: "count", pb.ACTION: "action", pb.TRANSITION: "transition",
                              pb.FRAMEQA: "frameqa"}
TASK_VALUES: dict[str, int] = {name: value for value, name in TASK_NAMES.items()}
MULTIPLE_CHOICE_TASKS = {pb.ACTION, pb.TRANSITION}

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
        self._decode_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.decode_workers, thread_name_prefix="stqa-decode")
        self._routes: dict[int, _Route] = {}
        self._route_list: list[_Route] = []
        self._in_flight = 0
        self.ready = False
        self.draining = False

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
        """Finish queued model work, then stop the batchers and the decode pool."""
        for route in self._route_list:
            await route.batcher.close()
        self._decode_pool.shutdown(wait=True)

    # -- RPCs ------------------------------------------------------------------------------------------

    async def Answer(self, request, context: grpc.aio.ServicerContext):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        admitted = False
        try:
            self._check_available()
            if self._in_flight >= self.config.max_in_flight:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"server at capacity ({self.config.max_in_flight} requests in flight)")
            self._in_flight += 1
            admitted = True
            self.metrics.in_flight.set(self._in_flight)
            return await self._answer(request, context, started)
        except RequestError as exc:
            code = exc.code
            await context.abort(exc.code, exc.message)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("Answer failed with an unexpected error")
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error (logged on the server)")
        finally:
            if admitted:
                self._in_flight -= 1
                self.metrics.in_flight.set(self._in_flight)
            self.metrics.requests.labels(method="Answer", code=code.name).inc()
            if code == grpc.StatusCode.OK:
                self.metrics.stage_latency.labels(stage="total").observe(time.perf_counter() - started)

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

    def _validate(self, request) -> tuple[_Route, int, str, list[str], bytes]:
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
        video = request.video
        if not video:
            raise _invalid("video is empty")
        if len(video) > self.config.max_video_bytes:
            raise _invalid(f"video is {len(video)} bytes; the limit is {self.config.max_video_bytes}")
        return route, task, question, candidates, video

    async def _decode(self, route: _Route, video: bytes, deadline: float | None):
        from stqa.video.decode import VideoError

        budget = self.config.decode_timeout_s + 5.0  # the decoder enforces decode_timeout_s itself
        deadline_binds = False
        if deadline is not None and deadline - time.monotonic() < budget:
            budget = deadline - time.monotonic()
            deadline_binds = True
        if budget <= 0:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before decoding")
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._decode_pool, route.predictor.prepare_video, video, self._limits)
        try:
            return await asyncio.wait_for(job, budget)
        except VideoError as exc:
            raise _invalid(f"video rejected: {exc}") from None
        except asyncio.TimeoutError:
            if deadline_binds:
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   "the deadline passed while decoding the video") from None
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"decoding did not finish within {budget:.0f} s (decode pool overloaded)") from None

    async def _answer(self, request, context: grpc.aio.ServicerContext, started: float):
        route, task, question, candidates, video = self._validate(request)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        if deadline is not None and remaining <= 0:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline had passed on arrival")

        decode_started = time.perf_counter()
        prepared = await self._decode(route, video, deadline)
        decode_s = time.perf_counter() - decode_started
        self.metrics.stage_latency.labels(stage="decode").observe(decode_s)

        query = self._make_query(task=TASK_NAMES[task], question=question, video=prepared, candidates=candidates)
        try:
            result: BatchResult = await route.batcher.submit(query, deadline)
        except QueueFull as exc:
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
        return self._response(request, task, prepared, result, decode_s, started, route)

    def _make_query(self, **fields):
        if self._query_factory is None:
            from stqa.inference import Query

            self._query_factory = Query
        return self._query_factory(**fields)

    def _response(self, request, task: int, prepared, result: BatchResult, decode_s: float, started: float,
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
        if request.return_attention:
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
                max_in_flight=c.max_in_flight, max_queue=c.max_queue, max_batch_size=c.max_batch_size,
                max_batch_delay_ms=c.max_batch_delay_ms,
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
    """Register the service with deserializers that turn unparsable requests into INVALID_ARGUMENT."""
    handlers = {
        "Answer": grpc.unary_unary_rpc_method_handler(
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
        server = grpc.aio.server(interceptors=interceptors, options=c.grpc_options())
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
        await server.start()
        self._server = server
        self.port = port
        if c.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve_http(c.metrics_host or c.host, c.metrics_port)
            except OSError as exc:
                await server.stop(0)
                self._server = None
                raise OSError(f"cannot serve metrics on {c.metrics_host or c.host}:{c.metrics_port}: {exc}") from None
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
