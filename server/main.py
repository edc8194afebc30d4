"""``stqa serve``: run the gRPC VideoQA service until SIGTERM/SIGINT, then drain and exit 0.

With no arguments it serves the bundled model on 127.0.0.1:50051 with Prometheus metrics on :9464.
Every flag is listed in docs/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import AUTH_TOKEN_ENV, MiB, ServerConfig, read_token

log = logging.getLogger("stqa.server")


@dataclass(frozen=True)
class _Tunable:
    """A numeric ``stqa serve`` flag that sets one ServerConfig field, given in ``unit``s of that field."""

    name: str
    field: str
    help: str
    type: type = int
    unit: int = 1

    @property
    def default_text(self) -> str:
        return "%(default)s" if self.type is int else "%(default)g"

    def default(self, config: ServerConfig) -> int | float:
        value = getattr(config, self.field)
        return value if self.unit == 1 else value / self.unit

    def value(self, args: argparse.Namespace) -> int | float:
        value = getattr(args, self.field)
        return value if self.unit == 1 else int(value * self.unit)


# One row per limit or performance flag: its name, the ServerConfig field it sets, and its help, in one place.
_TUNABLES: dict[str, tuple[_Tunable, ...]] = {
    "limits": (
        _Tunable("--max-message-mb", "max_message_bytes", "gRPC max send/receive message size in MiB",
                 float, MiB),
        _Tunable("--max-video-mb", "max_video_bytes", "largest encoded video in MiB", float, MiB),
        _Tunable("--max-pixels", "max_pixels",
                 "largest frame area width*height, a GIF's whole screen (default %(default)s = 1920x1088)"),
        _Tunable("--max-aspect-ratio", "max_aspect_ratio",
                 "most elongated frame, longer side / shorter side", float),
        _Tunable("--max-decoded-mpx", "max_decoded_pixels",
                 "decode budget per video: frame area x frames decoded, in units of 2^20 pixels", float, MiB),
        _Tunable("--max-frames", "max_frames", "most decoded frames per video"),
        _Tunable("--max-duration-s", "max_duration_s", "longest video in seconds", float),
        _Tunable("--decode-timeout-s", "decode_timeout_s",
                 "decode time budget per video in seconds, also capped by the call's deadline", float),
        _Tunable("--decode-memory-mb", "decode_memory_bytes",
                 "address-space limit of each decode worker process in MiB", float, MiB),
        _Tunable("--max-question-chars", "max_question_chars", "longest question in characters"),
        _Tunable("--max-in-flight", "max_in_flight",
                 "Answer calls handled at once; more get RESOURCE_EXHAUSTED"),
        _Tunable("--max-inflight-mb", "max_bytes_in_flight",
                 "request bytes held at once; a call being received counts as --max-message-mb until its size "
                 "is known", float, MiB),
        _Tunable("--max-queue", "max_queue", "decoded requests waiting for the model; more get RESOURCE_EXHAUSTED"),
    ),
    "performance": (
        _Tunable("--decode-workers", "decode_workers", "worker processes decoding videos"),
        _Tunable("--max-batch-size", "max_batch_size", "most requests per forward; 1 disables batching"),
        _Tunable("--cache-mb", "cache_bytes",
                 "video cache for follow-up questions (features of each video's sampled frames), in MiB; "
                 "0 turns it off", float, MiB),
        _Tunable("--max-batch-delay-ms", "max_batch_delay_ms",
                 "how long a batch waits for more requests after its first", float),
        _Tunable("--grace-s", "grace_s", "on SIGTERM/SIGINT, time in-flight calls get to finish", float),
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``stqa serve``."""
    d = ServerConfig()
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=d.host, help="address to bind (default %(default)s: loopback only)")
    net.add_argument("--port", type=int, default=d.port,
                     help="gRPC port (default %(default)s; 0 picks a free port and prints it)")
    net.add_argument("--metrics-port", type=int, default=d.metrics_port,
                     help="Prometheus metrics HTTP port (default %(default)s; 0 picks a free one; -1 disables)")
    net.add_argument("--metrics-host", default=d.metrics_host,
                     help="address the metrics HTTP server binds (default %(default)s, whatever --host is)")
    net.add_argument("--no-reflection", dest="reflection", action="store_false",
                     help="disable gRPC server reflection (on by default)")
    net.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve over TLS (with --tls-key)")
    net.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    net.add_argument("--auth-token-file", type=Path, default=None,
                     help=f"require 'authorization: Bearer TOKEN' on every call except health, TOKEN being this "
                          f"file's first line (default: ${AUTH_TOKEN_ENV} if set, else no auth)")
    # The token itself is never a flag value: every local user can read a process's command line.
    net.add_argument("--auth-token", dest="auth_token_value", help=argparse.SUPPRESS)

    model = parser.add_argument_group("model")
    model.add_argument("--checkpoint", type=Path, action="append", default=[], dest="checkpoints",
                       help="checkpoint to serve; repeat for one per task (default: the bundled model)")
    model.add_argument("--device", default=d.device, help="torch device for the model (default %(default)s)")

    for title, flags in _TUNABLES.items():
        group = parser.add_argument_group(title)
        for flag in flags:
            text = flag.help if "%(default)" in flag.help else f"{flag.help} (default {flag.default_text})"
            group.add_argument(flag.name, dest=flag.field, type=flag.type, default=flag.default(d), help=text,
                               metavar=flag.name.lstrip("-").replace("-", "_").upper())
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Turn parsed flags into a validated ServerConfig (ValueError names the bad flag's value)."""
    if getattr(args, "auth_token_value", None) is not None:
        raise ValueError(f"--auth-token would show the token to every local user (ps); put it in a file "
                         f"for --auth-token-file, or in ${AUTH_TOKEN_ENV}")
    return ServerConfig(
        host=args.host,
        port=args.port,
        checkpoints=tuple(args.checkpoints),
        device=args.device,
        **{flag.field: flag.value(args) for flags in _TUNABLES.values() for flag in flags},
        reflection=args.reflection,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        metrics_host=args.metrics_host,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        auth_token=read_token(args.auth_token_file),
    )


async def serve(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status (0 after a clean drain, 1 if loading failed)."""
    from .lifecycle import VideoQAServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = VideoQAServer(config)
    # Load and check the models before binding: a bad checkpoint must fail before anything says "listening"
    # (a supervisor or script waiting for that line would otherwise send traffic to a server about to die).
    try:
        await server.load()
    except Exception as exc:  # any loader failure (missing files, bad config, wrong spec) ends serve the same way
        log.debug("loading failed", exc_info=True)
        print(f"stqa serve: could not load the model: {exc}", file=sys.stderr)
        return 1
    try:
        port = await server.start()
    except OSError as exc:
        print(f"stqa serve: {exc}", file=sys.stderr)
        return 1
    scheme = "grpcs" if config.tls_cert else "grpc"
    metrics = "off" if server.metrics_port is None else \
        f"http://{config.metrics_host}:{server.metrics_port}/metrics"
    # One parseable line on stdout (tests, scripts/demo.py and the benchmark read the ports from it).
    print(f"stqa serve: listening on {config.host}:{port} ({scheme}); metrics {metrics}", flush=True)

    load = asyncio.ensure_future(server.wait_ready())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({load, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if load.done() and load.exception() is not None:
        log.error("could not load the model: %s", load.exception())
        stopped.cancel()
        await server.stop(0)
        return 1
    if load.done():
        print(f"stqa serve: ready ({', '.join(server.service_tasks())})", flush=True)
        await stopped
    log.info("signal received: draining (grace %.1f s)", config.grace_s)
    await server.stop()
    if not load.done():
        load.cancel()
    log.info("stopped cleanly")
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``stqa serve``."""
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"stqa serve: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(config))
