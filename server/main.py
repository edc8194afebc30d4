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
from pathlib import Path

from .config import AUTH_TOKEN_ENV, MiB, ServerConfig, read_token

log = logging.getLogger("stqa.server")


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

    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-message-mb", type=float, default=d.max_message_bytes / MiB,
                        help="gRPC max send/receive message size in MiB (default %(default)g)")
    limits.add_argument("--max-video-mb", type=float, default=d.max_video_bytes / MiB,
                        help="largest encoded video in MiB (default %(default)g)")
    limits.add_argument("--max-pixels", type=int, default=d.max_pixels,
                        help="largest frame area width*height, a GIF's whole screen (default %(default)s = 1920x1088)")
    limits.add_argument("--max-aspect-ratio", type=float, default=d.max_aspect_ratio,
                        help="most elongated frame, longer side / shorter side (default %(default)g)")
    limits.add_argument("--max-decoded-mpx", type=float, default=d.max_decoded_pixels / MiB,
                        help="decode budget per video: frame area x frames decoded, in units of 2^20 pixels "
                             "(default %(default)g)")
    limits.add_argument("--max-frames", type=int, default=d.max_frames,
                        help="most decoded frames per video (default %(default)s)")
    limits.add_argument("--max-duration-s", type=float, default=d.max_duration_s,
                        help="longest video in seconds (default %(default)g)")
    limits.add_argument("--decode-timeout-s", type=float, default=d.decode_timeout_s,
                        help="decode time budget per video in seconds, also capped by the call's deadline "
                             "(default %(default)g)")
    limits.add_argument("--decode-memory-mb", type=float, default=d.decode_memory_bytes / MiB,
                        help="address-space limit of each decode worker process in MiB (default %(default)g)")
    limits.add_argument("--max-question-chars", type=int, default=d.max_question_chars,
                        help="longest question in characters (default %(default)s)")
    limits.add_argument("--max-in-flight", type=int, default=d.max_in_flight,
                        help="Answer calls handled at once; more get RESOURCE_EXHAUSTED (default %(default)s)")
    limits.add_argument("--max-inflight-mb", type=float, default=d.max_bytes_in_flight / MiB,
                        help="request bytes held at once; a call being received counts as --max-message-mb "
                             "until its size is known (default %(default)g)")
    limits.add_argument("--max-queue", type=int, default=d.max_queue,
                        help="decoded requests waiting for the model; more get RESOURCE_EXHAUSTED "
                             "(default %(default)s)")

    perf = parser.add_argument_group("performance")
    perf.add_argument("--decode-workers", type=int, default=d.decode_workers,
                      help="worker processes decoding videos (default %(default)s)")
    perf.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                      help="most requests per forward; 1 disables batching (default %(default)s)")
    perf.add_argument("--cache-mb", type=float, default=d.cache_bytes / MiB,
                      help="video cache for follow-up questions (features of each video's sampled frames), "
                           "in MiB; 0 turns it off (default %(default)g)")
    perf.add_argument("--max-batch-delay-ms", type=float, default=d.max_batch_delay_ms,
                      help="how long a batch waits for more requests after its first (default %(default)g)")
    perf.add_argument("--grace-s", type=float, default=d.grace_s,
                      help="on SIGTERM/SIGINT, time in-flight calls get to finish (default %(default)g)")
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
        max_message_bytes=int(args.max_message_mb * MiB),
        max_video_bytes=int(args.max_video_mb * MiB),
        max_pixels=args.max_pixels,
        max_aspect_ratio=args.max_aspect_ratio,
        max_decoded_pixels=int(args.max_decoded_mpx * MiB),
        max_frames=args.max_frames,
        max_duration_s=args.max_duration_s,
        decode_timeout_s=args.decode_timeout_s,
        decode_memory_bytes=int(args.decode_memory_mb * MiB),
        max_question_chars=args.max_question_chars,
        max_in_flight=args.max_in_flight,
        max_bytes_in_flight=int(args.max_inflight_mb * MiB),
        max_queue=args.max_queue,
        cache_bytes=int(args.cache_mb * MiB),
        decode_workers=args.decode_workers,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        grace_s=args.grace_s,
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
