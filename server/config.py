"""Server settings: one dataclass, filled from ``stqa serve`` flags (see docs/serving.md for the table)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024

#: Environment variable read for the bearer token when ``--auth-token`` is not given (server and client).
AUTH_TOKEN_ENV = "STQA_AUTH_TOKEN"


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``stqa serve`` can be told; defaults are the documented production defaults."""

    host: str = "127.0.0.1"
    port: int = 50051
    checkpoints: tuple[Path, ...] = ()
    device: str = "cpu"
    # gRPC's own limit, symmetric for send and receive: 64 MiB of video plus headroom for the rest.
    max_message_bytes: int = 80 * MiB
    # Video limits (mapped onto stqa.video.VideoLimits).
    max_video_bytes: int = 64 * MiB
    max_pixels: int = 4096 * 4096
    max_frames: int = 10_000
    max_duration_s: float = 600.0
    decode_timeout_s: float = 30.0
    max_question_chars: int = 1000
    max_candidate_chars: int = 1000
    # Capacity: Answer calls being handled at once, and decoded requests waiting for the model.
    max_in_flight: int = 64
    max_queue: int = 64
    decode_workers: int = 2
    max_batch_size: int = 8
    max_batch_delay_ms: float = 2.0
    grace_s: float = 10.0
    reflection: bool = True
    metrics_port: int | None = 9464
    metrics_host: str | None = None  # None: same as host
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_token: str | None = None
    extra_options: tuple[tuple[str, int], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        positive = {
            "max_message_bytes": self.max_message_bytes, "max_video_bytes": self.max_video_bytes,
            "max_pixels": self.max_pixels, "max_frames": self.max_frames,
            "max_duration_s": self.max_duration_s, "decode_timeout_s": self.decode_timeout_s,
            "max_question_chars": self.max_question_chars, "max_candidate_chars": self.max_candidate_chars,
            "max_in_flight": self.max_in_flight, "max_queue": self.max_queue,
            "decode_workers": self.decode_workers, "max_batch_size": self.max_batch_size,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
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

    def video_limits(self):
        """The decode limits as the video pipeline's ``VideoLimits``."""
        from stqa.video.decode import VideoLimits

        return VideoLimits(
            max_bytes=self.max_video_bytes,
            max_pixels=self.max_pixels,
            max_frames=self.max_frames,
            max_duration_s=self.max_duration_s,
            decode_timeout_s=self.decode_timeout_s,
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        """Channel arguments for the server: symmetric message limits (+ any extras)."""
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            *self.extra_options,
        ]


def token_from_env() -> str | None:
    """The bearer token from ``$STQA_AUTH_TOKEN`` (None when unset or empty)."""
    value = os.environ.get(AUTH_TOKEN_ENV, "")
    return value or None
