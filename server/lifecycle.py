"""The server around the VideoQA service: its port (TLS or not), auth, health, reflection, the metrics
endpoint, model loading in the background, and graceful shutdown.

The shape follows grpc's Python examples (``grpc.aio.server`` -> add servicers -> add port -> start ->
``stop(grace)``), split into ``start`` / ``wait_ready`` / ``stop`` so that ``stqa serve`` (main.py) and
the in-process test server (testing.py) drive the same code.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .auth import BearerTokenInterceptor
from .config import ServerConfig
from .metrics import ServerMetrics
from .predictor import PredictorLoader, QueryFactory, ServedPredictor, default_loader
from .service import SERVICE_NAME, VideoQAService, add_video_qa_service

log = logging.getLogger("stqa.server")
# After the grace period and the decoders' stop, how long the last calls get to send their status.
_STOP_AFTER_GRACE_S = 1.0


class VideoQAServer:
    """One running server: gRPC port (+ health, reflection), metrics port, model loading, shutdown."""

    def __init__(self, config: ServerConfig, loader: PredictorLoader = default_loader,
                 query_factory: QueryFactory | None = None) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self._loader = loader
        self._health = health.aio.HealthServicer()
        self.service = VideoQAService(config, self.metrics, query_factory)
        self._server: grpc.aio.Server | None = None
        self._load_task: asyncio.Task | None = None
        self._preloaded: list[ServedPredictor] | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None

    async def load(self) -> None:
        """Load and check every model now, before :meth:`start` binds anything.

        ``stqa serve`` calls it first, so a bad ``--checkpoint`` fails without the port ever being bound or
        "listening" announced; :meth:`start` then serves these models at once. Without it (the in-process
        test server), :meth:`start` loads in the background while health says NOT_SERVING.
        """
        self._preloaded = await self._load_predictors()

    async def start(self) -> int:
        """Bind and start serving; the models :meth:`load` loaded, or loading continues in the background
        (health NOT_SERVING until it is done).

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
            from grpc_reflection.v1alpha import reflection  # only when reflection is on

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
        await self._set_health(False)
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

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    async def _load_predictors(self) -> list[ServedPredictor]:
        loop = asyncio.get_running_loop()
        paths: list[Path | None] = list(self.config.checkpoints) or [None]
        predictors: list[ServedPredictor] = []
        for path in paths:
            predictor = await loop.run_in_executor(None, self._loader, path, self.config.device)
            log.info("loaded %s: tasks %s, version %s", path or "the bundled model",
                     ", ".join(predictor.tasks), predictor.model_version)
            predictors.append(predictor)
        return predictors

    async def _load(self) -> None:
        predictors = self._preloaded if self._preloaded is not None else await self._load_predictors()
        self.service.attach(predictors)
        if not self.service.draining:
            await self._set_health(True)

    def service_tasks(self) -> list[str]:
        """Names of the tasks being served (empty until the models are loaded)."""
        return self.service.served_tasks()

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
            # Calls in flight get the grace period; then their decodes are stopped, so each ends with a
            # status of its own (UNAVAILABLE: shutting down) instead of being cancelled by gRPC, whose
            # cancellation of a running handler is logged as an unhandled error.
            await self.service.wait_idle(grace)
            self.service.stop_decoding()
            await self._server.stop(_STOP_AFTER_GRACE_S)
            self._server = None
        await self.service.close()
        self.metrics.close()
