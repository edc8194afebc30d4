"""Running ``stqa web`` for the tests: a real subprocess serving the page on a real loopback port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from stqa.server import testing

EXAMPLES = Path(__file__).resolve().parent.parent / "stqa" / "assets" / "examples"


class WebProcess:
    """``python -m stqa web --port 0 FLAGS``; ``url`` is the page's address, read from its stdout line
    ``stqa web: page at URL ...``. Stop it with :meth:`terminate` (SIGTERM: it must exit 0)."""

    def __init__(self, *flags: str, start_timeout_s: float = 240.0) -> None:
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        self.proc = subprocess.Popen([sys.executable, "-m", "stqa", "web", "--port", "0", *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        found = threading.Event()
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout_lines, found), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr_lines, None), daemon=True).start()
        deadline = time.monotonic() + start_timeout_s
        while not found.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.terminate()
                raise RuntimeError(f"stqa web did not start (exit {self.proc.poll()}):\n"
                                   f"{''.join(self.stdout_lines)}{''.join(self.stderr_lines[-30:])}")
        line = next(x for x in self.stdout_lines if "page at" in x)
        match = re.search(r"page at (http://\S+/) \(answers from grpc (\S+)\)", line)
        assert match, line
        self.url, self.grpc_address = match.group(1), match.group(2)

    @staticmethod
    def _drain(stream, lines: list[str], found: threading.Event | None) -> None:
        for line in stream:
            lines.append(line)
            if found is not None and "page at" in line:
                found.set()

    def get(self, path: str = "") -> str:
        """The body of an HTTP GET of the page (or a path under it)."""
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.read().decode()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait; kill (and return -9) if it does not stop within ``timeout``."""
        return testing.terminate(self.proc, timeout)


def require_gradio() -> None:
    """Skip with the reason when the web extra is not installed (the development environment has it)."""
    pytest.importorskip("gradio", reason="stqa web needs the web extra: pip install 'stqa[web]'")
    pytest.importorskip("gradio_client", reason="the API test needs gradio_client (installed with gradio)")
