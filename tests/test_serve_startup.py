"""``stqa serve`` loads and checks its models before it binds or says "listening" (issue 22)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest
from stqa.server.config import ServerConfig
from stqa.server.lifecycle import VideoQAServer


def test_a_missing_checkpoint_fails_before_listening(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "stqa", "serve", "--checkpoint", str(tmp_path / "nope"),
                           "--port", "0", "--metrics-port", "-1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "listening" not in proc.stdout and "ready" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("stqa serve:")]
    assert len(errors) == 1 and "could not load the model" in errors[0] and "nope" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_load_raises_before_anything_is_bound():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    calls: list[int] = []

    def broken_loader(path, device):
        calls.append(1)
        assert _port_is_free(port), "the port was bound before the model was loaded"
        raise ValueError("not a stqa checkpoint")

    server = VideoQAServer(ServerConfig(host="127.0.0.1", port=port, metrics_port=None), loader=broken_loader)
    with pytest.raises(ValueError, match="not a stqa checkpoint"):
        asyncio.run(server.load())
    assert calls == [1] and server.port is None and _port_is_free(port)
