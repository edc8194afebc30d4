"""Decoding in worker processes that can be stopped: a runaway decode is killed, never waited out.

In-process decoding can only be interrupted between frames, and a hostile file can make FFmpeg spend
seconds or gigabytes inside one frame. So the server hands each decode to one of a few long-lived
worker processes. Each worker:

- is a fresh interpreter (``python -m stqa.video.pool``, not a fork of the server: gRPC's threads do
  not survive a fork) that imports only PyAV, numpy and :mod:`stqa.video.decode`, no torch, so it
  starts in a fraction of a second and stays small;
- runs under its own address-space limit (``RLIMIT_AS``), so a decode that needs more memory fails
  there with :class:`DecoderMemoryExceeded` instead of growing the server;
- decodes one video at a time and returns the sampled, shrunk uint8 frames.

Stopping a decode (the caller cancelled, or its time is up) first asks the worker to stop between
frames (SIGUSR1, answered within milliseconds, and the worker is reused); a worker that does not answer
within ``kill_grace_s`` is killed (SIGKILL) and replaced. Other decodes never notice.

The API is synchronous and thread-safe: call :meth:`DecodePool.decode` from as many threads as there
are callers; it waits for a free worker, within the same deadline.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from stqa.video.decode import (
    DecodeCancelled,
    DecodedVideo,
    DecodeTimeout,
    VideoError,
    VideoLimits,
    decode_video,
)

log = logging.getLogger("stqa.video.pool")

MiB = 1024 * 1024

# How often a waiting caller looks at its cancel flag and deadline.
_POLL_S = 0.01
# How long a new worker may take to import its modules.
_START_TIMEOUT_S = 60.0
# A worker whose resident memory is above this after a job returns its free heap to the OS.
_TRIM_ABOVE_BYTES = 128 * MiB


class DecoderMemoryExceeded(VideoError):
    """Decoding this video needs more memory than a decode worker may use (``memory_limit_bytes``)."""


class DecoderCrashed(VideoError):
    """The decode worker died on this video (FFmpeg crashed, or the kernel killed it)."""


class DecodePoolBusy(Exception):
    """No decode worker became free before the request's deadline (the server is overloaded)."""


class DecodePoolClosed(Exception):
    """The pool is shutting down and takes no new work."""


@dataclass(frozen=True)
class DecodeJob:
    """One decode: the encoded bytes and the arguments of :func:`stqa.video.decode.decode_video`."""

    data: bytes
    num_frames: int | None
    policy: str = "uniform"
    shrink_to: int | None = None
    limits: VideoLimits = VideoLimits()


def _worker_main(conn, memory_limit_bytes: int | None) -> None:
    """Loop of one worker process: receive a job, decode it, send back ``(status, payload)``."""
    import resource

    if memory_limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    stop_requested = [False]  # set by the signal handler, read between frames

    def request_stop(_signum, _frame) -> None:
        stop_requested[0] = True

    signal.signal(signal.SIGUSR1, request_stop)
    # Ctrl-C in a terminal signals the whole process group; the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            job = dataclasses.replace(job, data=conn.recv_bytes())  # the payload travels unpickled
        except (EOFError, OSError):
            return
        # A stop request for the previous job is handled before recv() returns (signals interrupt the
        # blocking read), so clearing here cannot lose one meant for this job.
        stop_requested[0] = False
        try:
            reply = ("ok", decode_video(job.data, job.num_frames, limits=job.limits, policy=job.policy,
                                        shrink_to=job.shrink_to, should_stop=lambda: stop_requested[0]))
        except VideoError as exc:
            reply = ("video_error", exc)
        except DecodeCancelled:
            reply = ("cancelled", None)
        except MemoryError:
            reply = ("memory", None)
        except Exception as exc:  # a bug: reported to the caller, the worker stays usable
            reply = ("error", f"{type(exc).__name__}: {exc}")
        del job
        try:
            conn.send(reply)
        except (MemoryError, OSError):
            return  # the parent sees the worker die and replaces it
        del reply
        _trim_heap()


def _trim_heap() -> None:
    """Give freed heap pages back after a big decode, so idle workers stay small."""
    try:
        with open("/proc/self/statm") as fh:
            resident = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return
    if resident > _TRIM_ABOVE_BYTES:
        release_free_memory()


def release_free_memory() -> None:
    """``malloc_trim(0)``: return free pages of every glibc arena to the OS (a no-op elsewhere).

    glibc keeps freed memory of its per-thread arenas mapped; after a burst of large messages (gRPC
    assembles them from many small slices) that is hundreds of MB of RSS that never comes back.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass(eq=False)  # identity semantics: workers live in a set
class _Worker:
    process: subprocess.Popen
    conn: Connection
    # close() and the thread using the worker may both end it: only the first does.
    lock: threading.Lock = field(default_factory=threading.Lock)
    ended: bool = False

    def alive(self) -> bool:
        return self.process.poll() is None


class DecodePool:
    """``workers`` decode processes, each limited to ``memory_limit_bytes`` of address space."""

    def __init__(self, workers: int = 2, *, memory_limit_bytes: int | None = 1024 * MiB,
                 kill_grace_s: float = 0.25) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if memory_limit_bytes is not None and memory_limit_bytes < 64 * MiB:
            raise ValueError(f"memory_limit_bytes must be at least 64 MiB, got {memory_limit_bytes}")
        self.workers = workers
        self.memory_limit_bytes = memory_limit_bytes
        self.kill_grace_s = kill_grace_s
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0  # workers killed or lost and replaced (for tests and metrics)
        started = [self._start() for _ in range(workers)]  # interpreters start in parallel
        for worker in started:
            self._idle.put(self._await_ready(worker))

    # -- public ---------------------------------------------------------------------------------------

    def decode(self, job: DecodeJob, *, timeout_s: float | None = None,
               cancel: threading.Event | None = None) -> DecodedVideo:
        """Decode ``job`` in a worker within ``timeout_s`` (default: the job's ``decode_timeout_s``),
        waiting for a free worker within the same time.

        Raises the job's :class:`VideoError` (including :class:`DecoderMemoryExceeded` and
        :class:`DecoderCrashed`), :class:`DecodeTimeout` when the time runs out while decoding,
        :class:`DecodePoolBusy` when it runs out before a worker is free, :class:`DecodeCancelled`
        once ``cancel`` is set, and :class:`DecodePoolClosed` after :meth:`close`.
        """
        timeout_s = job.limits.decode_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        worker = self._take(deadline, cancel)
        healthy = False
        try:
            remaining = max(deadline - time.monotonic(), 1e-3)
            # The worker enforces the time between frames itself; the kill below is for a stuck frame.
            job = dataclasses.replace(job, limits=dataclasses.replace(job.limits, decode_timeout_s=remaining))
            worker.conn.send(dataclasses.replace(job, data=b""))
            worker.conn.send_bytes(job.data)  # no pickled copy of a large video
            while not worker.conn.poll(_POLL_S):
                if self._closed:
                    raise DecodePoolClosed("the decode pool is shutting down")
                if cancel is not None and cancel.is_set():
                    healthy = self._interrupt(worker)
                    raise DecodeCancelled("the caller cancelled the decode")
                if time.monotonic() > deadline + self.kill_grace_s:
                    healthy = self._interrupt(worker)
                    raise DecodeTimeout(f"decoding took longer than {timeout_s:.2f} s (the worker was stopped)")
                if not worker.alive():
                    break
            status, payload = worker.conn.recv()
            healthy = True
        except (EOFError, OSError) as exc:
            raise self._died(worker) from exc
        finally:
            self._release(worker, healthy)
            job = None  # this frame outlives the call in an error's traceback: drop the video now
        if status == "ok":
            return payload
        if status == "video_error":
            try:
                raise payload
            finally:  # no exception -> traceback -> this frame -> exception cycle
                payload = None
        if status == "memory":
            raise DecoderMemoryExceeded(f"decoding needs more than the decode worker's memory limit "
                                        f"({self.memory_limit_bytes // MiB} MiB)")
        if status == "cancelled":  # only after a stop request that came too late to matter
            raise DecodeCancelled("the decode was stopped")
        raise RuntimeError(f"decode worker failed: {payload}")

    def close(self) -> None:
        """Stop every worker now (decodes in progress end with :class:`DecodePoolClosed`)."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            self._terminate(worker)

    def pids(self) -> list[int]:
        """Process ids of the current workers (for tests and monitoring)."""
        with self._lock:
            return [w.process.pid for w in self._all]

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        return self._await_ready(self._start())

    def _start(self) -> _Worker:
        parent, child = socket.socketpair()
        # The worker must import this very stqa (a source tree, an install), whatever its sys.path.
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
               # Two malloc arenas instead of 8 per core: a smaller address space under RLIMIT_AS.
               "MALLOC_ARENA_MAX": "2"}
        cmd = [sys.executable, "-m", "stqa.video.pool", "--worker-fd", str(child.fileno()),
               "--memory-limit", str(self.memory_limit_bytes or 0)]
        try:
            process = subprocess.Popen(cmd, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=env)
        finally:
            child.close()
        return _Worker(process, Connection(parent.detach()))

    def _await_ready(self, worker: _Worker) -> _Worker:
        # Wait for its imports, so that no request's time budget is spent starting an interpreter.
        if not worker.conn.poll(_START_TIMEOUT_S) or worker.conn.recv()[0] != "ready":
            self._terminate(worker)
            raise OSError(f"a decode worker did not start within {_START_TIMEOUT_S:g} s")
        with self._lock:
            if self._closed:
                self._terminate(worker)
                raise DecodePoolClosed("the decode pool is shutting down")
            self._all.add(worker)
        return worker

    def _take(self, deadline: float, cancel: threading.Event | None) -> _Worker:
        while True:
            if self._closed:
                raise DecodePoolClosed("the decode pool is shutting down")
            if cancel is not None and cancel.is_set():
                raise DecodeCancelled("the caller cancelled while waiting for a decode worker")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DecodePoolBusy(f"no decode worker became free in time ({self.workers} workers, all busy)")
            try:
                return self._idle.get(timeout=min(left, 0.05))
            except queue.Empty:
                continue

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if self._closed:
            self._terminate(worker)
            return
        if healthy and worker.alive():
            self._idle.put(worker)
            return
        with self._lock:
            self._all.discard(worker)
            self.restarts += 1
        # Kill and replace off the caller's thread: its error reply need not wait for a new interpreter.
        threading.Thread(target=self._replace, args=(worker,), name="stqa-decode-respawn", daemon=True).start()

    def _replace(self, worker: _Worker) -> None:
        self._terminate(worker)
        try:
            self._idle.put(self._spawn())
        except DecodePoolClosed:
            pass
        except OSError:
            log.exception("could not start a decode worker")

    def _interrupt(self, worker: _Worker) -> bool:
        """Ask the worker to stop between frames; True if it answered (and is reusable)."""
        try:
            os.kill(worker.process.pid, signal.SIGUSR1)
            if worker.conn.poll(self.kill_grace_s):
                worker.conn.recv()  # the stopped job's reply, dropped
                return True
        except (OSError, EOFError, ProcessLookupError):
            pass
        return False

    def _died(self, worker: _Worker) -> Exception:
        try:
            code = worker.process.wait(1.0)
        except subprocess.TimeoutExpired:
            code = None
        if self._closed:
            return DecodePoolClosed("the decode pool is shutting down")
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            return DecoderCrashed(f"the decoder process died on this video ({name})")
        return DecoderCrashed(f"the decoder process died on this video (exit code {code})")

    @staticmethod
    def _terminate(worker: _Worker) -> None:
        """Kill the worker and close its socket, once, whichever thread gets here first (close() may end
        a worker while the thread decoding on it is still reading its socket)."""
        with worker.lock:
            if worker.ended:
                return
            worker.ended = True
        if worker.alive():
            worker.process.kill()
        try:
            worker.process.wait(5.0)
        except subprocess.TimeoutExpired:
            log.error("decode worker %d did not exit after SIGKILL", worker.process.pid)
        try:
            worker.conn.close()
        except OSError:  # closed under a reader's feet: nothing is left to release
            pass


def _main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process (started by :class:`DecodePool`, not by hand)."""
    parser = argparse.ArgumentParser(prog="python -m stqa.video.pool", description=__doc__.splitlines()[0])
    parser.add_argument("--worker-fd", type=int, required=True, help="socket to the pool")
    parser.add_argument("--memory-limit", type=int, default=0, help="RLIMIT_AS in bytes (0: none)")
    args = parser.parse_args(argv)
    _worker_main(Connection(args.worker_fd), args.memory_limit or None)


if __name__ == "__main__":
    _main()
