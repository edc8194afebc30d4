"""Server settings: one dataclass, filled from ``stqa serve`` flags (see docs/serving.md for the table)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024

#: Environment variable read for the bearer token (server and client), unless a token file is given.
AUTH_TOKEN_ENV = "STQA_AUTH_TOKEN"

# Calls beyond max_in_flight that the transport still accepts: health, reflection, GetModelInfo.
_CONTROL_RPC_SLACK = 16
# Per-stream receive window (256 KiB: ~2.5 MB/s per upload at 100 ms round trip, 25 MB/s at 10 ms).
_STREAM_LOOKAHEAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``stqa serve`` can be told; defaults are the documented production defaults."""

    host: str = "127.0.0.1"
    port: int = 50051
    checkpoints: tuple[Path, ...] = ()
    device: str = "cpu"
    # gRPC's own limit, symmetric for send and receive: the largest video plus headroom for the rest.
    max_message_bytes: int = 17 * MiB
    # Video limits (mapped onto stqa.video.VideoLimits). The defaults fit what a 112-224 px model can
    # use and what decodes within the time budget on one core (docs/serving.md, "Limits").
    max_video_bytes: int = 16 * MiB
    max_pixels: int = 1920 * 1088
    max_aspect_ratio: float = 8.0
    max_decoded_pixels: int = 64 * MiB
    max_frames: int = 10_000
    max_duration_s: float = 600.0
    decode_timeout_s: float = 2.0
    decode_memory_bytes: int = 512 * MiB
    max_question_chars: int = 1000
    max_candidate_chars: int = 1000
    # Capacity: Answer calls admitted at once (receiving, decoding, queued or running), and decoded
    # requests waiting for the model.
    max_in_flight: int = 32
    # Request bytes held at once, counting each call being received at the full message limit until its
    # size is known: with max_message_bytes, it bounds how many uploads are received concurrently. The
    # server's memory peaks at about 5-6x this (gRPC's buffers, the parsed message, the decode worker's
    # copy: docs/serving.md).
    max_bytes_in_flight: int = 32 * MiB
    max_queue: int = 32
    # The video cache (server/cache.py): bytes of prepared clips (backbone features) kept for follow-up
    # questions; 0 turns it off. The bundled model's clip takes 0.6 MiB, so the default holds ~400 videos.
    cache_bytes: int = 256 * MiB
    decode_workers: int = 2
    max_batch_size: int = 8
    max_batch_delay_ms: float = 2.0
    grace_s: float = 10.0
    reflection: bool = True
    metrics_port: int | None = 9464
    metrics_host: str = "127.0.0.1"  # its own address: exposing gRPC must not expose the metrics too
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_token: str | None = None
    extra_options: tuple[tuple[str, int], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        positive = {
            "max_message_bytes": self.max_message_bytes, "max_video_bytes": self.max_video_bytes,
            "max_pixels": self.max_pixels, "max_aspect_ratio": self.max_aspect_ratio,
            "max_decoded_pixels": self.max_decoded_pixels, "max_frames": self.max_frames,
            "max_duration_s": self.max_duration_s, "decode_timeout_s": self.decode_timeout_s,
            "decode_memory_bytes": self.decode_memory_bytes,
            "max_question_chars": self.max_question_chars, "max_candidate_chars": self.max_candidate_chars,
            "max_in_flight": self.max_in_flight, "max_bytes_in_flight": self.max_bytes_in_flight,
            "max_queue": self.max_queue,
            "decode_workers": self.decode_workers, "max_batch_size": self.max_batch_size,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0 (0 turns the cache off), got {self.cache_bytes}")
        if self.max_aspect_ratio < 1:
            raise ValueError(f"max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}")
        if self.decode_memory_bytes < 256 * MiB:
            raise ValueError(f"the decode memory limit must be at least 256 MiB (a worker's own footprint), "
                             f"got {self.decode_memory_bytes // MiB} MiB")
        if self.max_batch_delay_ms < 0:
            raise ValueError(f"max_batch_delay_ms must be >= 0, got {self.max_batch_delay_ms}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {self.grace_s}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in 0..65535 (or None to disable), got {self.metrics_port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together: give both or neither")
        if self.auth_token is not None and not self.auth_token.strip():
            raise ValueError("the auth token must not be blank")
        if self.max_video_bytes > self.max_message_bytes:
            raise ValueError(
                f"max_video_bytes ({self.max_video_bytes}) must not exceed max_message_bytes "
                f"({self.max_message_bytes}): such videos could never arrive"
            )
        if self.max_bytes_in_flight < self.max_message_bytes:
            raise ValueError(f"max_bytes_in_flight ({self.max_bytes_in_flight}) must be at least max_message_bytes "
                             f"({self.max_message_bytes}), or no upload of the largest size could be received")

    def video_limits(self):
        """The decode limits as the video pipeline's ``VideoLimits``."""
        from stqa.video.decode import VideoLimits

        return VideoLimits(
            max_bytes=self.max_video_bytes,
            max_pixels=self.max_pixels,
            max_aspect_ratio=self.max_aspect_ratio,
            max_decoded_pixels=self.max_decoded_pixels,
            max_frames=self.max_frames,
            max_duration_s=self.max_duration_s,
            decode_timeout_s=self.decode_timeout_s,
        )

    @property
    def max_concurrent_rpcs(self) -> int:
        """The transport's cap on calls of any method (``grpc.aio.server(maximum_concurrent_rpcs=)``).

        Answer calls are admitted up to ``max_in_flight`` by the service; the slack keeps health checks
        and GetModelInfo answerable at full load, and the cap bounds everything else.
        """
        return self.max_in_flight + _CONTROL_RPC_SLACK

    def grpc_options(self) -> list[tuple[str, int]]:
        """Channel arguments for the server: symmetric message limits, bounded receive buffering (+ extras).

        Without BDP probing, each stream's receive window stays at ``_STREAM_LOOKAHEAD_BYTES``: a call the
        server has not admitted (or refuses) can park at most that much in the transport. With probing
        on, gRPC grows the windows until whole multi-MB uploads sit in memory before any handler runs.
        """
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", _STREAM_LOOKAHEAD_BYTES),
            # One server per port: with SO_REUSEPORT a second `stqa serve` would bind too and split traffic.
            ("grpc.so_reuseport", 0),
            *self.extra_options,
        ]


def token_from_env() -> str | None:
    """The bearer token from ``$STQA_AUTH_TOKEN`` (None when unset or empty)."""
    value = os.environ.get(AUTH_TOKEN_ENV, "")
    return value or None


def read_token(token_file: str | os.PathLike | None) -> str | None:
    """The bearer token: the first line of ``token_file`` if given, else ``$STQA_AUTH_TOKEN``, else None.

    Never from a command-line value: a process's arguments are readable by every local user (``ps``).
    Raises ValueError for an unreadable or empty file.
    """
    if token_file is None:
        return token_from_env()
    try:
        text = Path(token_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the auth token file {os.fspath(token_file)}: {exc}") from None
    token = text.splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ValueError(f"the auth token file {os.fspath(token_file)} is empty")
    return token
