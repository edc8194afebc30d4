"""Run the service for tests, demos and benchmarks as a real `stqa serve` subprocess (ServeProcess), and
the hostile inputs the service must survive. In-process servers: :mod:`stqa.server.background`.
"""

from __future__ import annotations

import io
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import urllib.request


class ServeProcess:
    """`python -m stqa serve --port 0 FLAGS` in a subprocess; the bound address (and metrics URL) come from
    its first stdout line, readiness from the second. Stop it with :meth:`terminate` (SIGTERM, drains)."""

    def __init__(self, *flags: str, checkpoint: str | os.PathLike | None = None, env: dict | None = None,
                 cwd: str | os.PathLike | None = None, cgroup_procs: str | os.PathLike | None = None) -> None:
        cmd = [sys.executable, "-m", "stqa", "serve", "--port", "0", *flags]
        if checkpoint is not None:
            cmd += ["--checkpoint", os.fspath(checkpoint)]

        def join_cgroup() -> None:  # in the child before exec: the server and its decode workers are in it
            with open(os.fspath(cgroup_procs), "w") as fh:
                fh.write(str(os.getpid()))

        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                     env={**os.environ, **(env or {})},
                                     preexec_fn=join_cgroup if cgroup_procs is not None else None)
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        first = self.proc.stdout.readline()
        match = re.search(r"listening on (\S+):(\d+)", first)
        ready = self.proc.stdout.readline() if match else ""
        if not match or "ready" not in ready:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"stqa serve did not start: {first!r} {ready!r}\n{''.join(self.stderr_lines[-20:])}")
        self.address = f"{match.group(1)}:{match.group(2)}"
        metrics = re.search(r"metrics (http://\S+)", first)
        self.metrics_url = metrics.group(1) if metrics else None
        self.banner = first.strip() + "\n" + ready.strip()

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def metrics(self) -> str:
        """The Prometheus exposition text (the server must have been started with a metrics port)."""
        if self.metrics_url is None:
            raise RuntimeError("this server was started without a metrics port")
        return urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (graceful drain) and wait; kill and return -9 if it does not exit within ``timeout``."""
        return terminate(self.proc, timeout)


def terminate(proc: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM a server process and wait; kill it (and return -9) if it does not exit within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# -- hostile inputs --------------------------------------------------------------------------------------


def screen_gif(width: int, height: int, n_images: int) -> bytes:
    """A GIF of ``n_images`` one-pixel images on a ``width`` x ``height`` logical screen: a few bytes per
    image, but a decoder that paints every frame onto the full screen allocates width x height x 4 bytes
    each (65535x1 or 4096x4096 screens made the server allocate gigabytes)."""
    out = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    for i in range(n_images):
        out += (b"\x21\xf9\x04\x04\x04\0\0\0\x2c" + struct.pack("<HHHHB", i % width, 0, 1, 1, 0)
                + b"\x02\x02\x44\x01\x00")
    return out + b"\x3b"


def gif_image_data(data: bytes) -> list[list[tuple[int, int]]]:
    """Per image of a GIF, the (start, end) byte ranges of its LZW data sub-blocks (block sizes excluded)."""
    pos, images = 13, []
    if data[10] & 0x80:
        pos += 3 * (2 << (data[10] & 0x07))
    while pos < len(data) and data[pos] != 0x3B:
        if data[pos] == 0x21:
            pos += 2
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        elif data[pos] == 0x2C:
            local = data[pos + 9]
            pos += 10 + (3 * (2 << (local & 0x07)) if local & 0x80 else 0) + 1
            blocks = []
            while data[pos]:
                blocks.append((pos + 1, pos + 1 + data[pos]))
                pos += data[pos] + 1
            images.append(blocks)
            pos += 1
        else:
            break
    return images


def garbled_gif(data: bytes, image: int, seed: int = 0) -> bytes:
    """``data`` with the LZW bytes of one image's middle sub-block replaced by noise, the block structure
    intact: FFmpeg decodes such a file without failing, into wrong pixels, unless told to notice."""
    import random

    blocks = gif_image_data(data)[image]
    start, end = blocks[len(blocks) // 2]
    rng = random.Random(seed)
    out = bytearray(data)
    for i in range(start, end):
        out[i] = rng.randrange(256)
    return bytes(out)


def h264_clip(width: int, height: int, n_frames: int) -> bytes:
    """An MP4 (H.264, ultrafast) of ``n_frames`` moving noise frames: small on disk, large to decode."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        base = np.random.default_rng(0).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        base = base.repeat(8, axis=0).repeat(8, axis=1)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 8 * i, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()
