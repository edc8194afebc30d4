"""The service in this process, on a background thread: ``stqa web``'s own server, tests, demos, benchmarks.

The server's asyncio loop lives on its own thread, so synchronous code (a web page's handlers, a test, a
grpc sync client) can talk to it over a real port, like any other client, and stop it again.
"""

from __future__ import annotations

import asyncio
import threading

from .config import ServerConfig
from .lifecycle import VideoQAServer
from .predictor import PredictorLoader, QueryFactory, default_loader


class ServerThread:
    """``with ServerThread(config) as s: ... s.port ...``: a started, ready server; stopped on exit."""

    def __init__(self, config: ServerConfig, loader: PredictorLoader = default_loader,
                 query_factory: QueryFactory | None = None, ready_timeout_s: float = 120.0) -> None:
        self.config = config
        self._loader = loader
        self._query_factory = query_factory
        self._ready_timeout_s = ready_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stqa-server-loop", daemon=True)
        self.server: VideoQAServer | None = None
        self._stop_lock = threading.Lock()

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.port is not None
        return self.server.port

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def call(self, coro, timeout: float | None = None):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self, wait_ready: bool = True) -> ServerThread:
        """Bind and start; with ``wait_ready`` also wait for the models (else call ``wait_ready()``)."""
        self._thread.start()

        async def boot():
            self.server = VideoQAServer(self.config, self._loader, self._query_factory)
            await self.server.start()
            if wait_ready:
                await self.server.wait_ready()

        try:
            self.call(boot(), self._ready_timeout_s)
        except BaseException:
            self.stop(0)
            raise
        return self

    def wait_ready(self) -> None:
        """Wait for model loading to finish (re-raises its error)."""
        assert self.server is not None
        self.call(self.server.wait_ready(), self._ready_timeout_s)

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop the server (within ``grace`` s, default the config's), then the loop thread."""
        with self._stop_lock:
            if self.server is not None:
                server, self.server = self.server, None
                self.call(server.stop(grace), (self.config.grace_s if grace is None else grace) + 30)
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
            if not self._loop.is_closed() and not self._loop.is_running():
                self._loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
