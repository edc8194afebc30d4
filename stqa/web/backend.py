"""What the page does, without the page: ask the gRPC service, shape its answer for display, and turn
every failure into one sentence a person can act on.

Gradio-free on purpose: :mod:`stqa.web.page` wires these functions to components, and the tests can
call them directly. The page is a client of the service like ``stqa ask`` (one :class:`VideoQAClient`),
never a second inference path, so what it shows is exactly what the server answered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from stqa import tasks
from stqa.client import VideoQAClient, save_picture
from stqa.v1 import video_qa_pb2 as pb

if TYPE_CHECKING:  # the page with --server never imports the model server
    from stqa.server.background import ServerThread

log = logging.getLogger("stqa.web")

#: The bundled synthetic examples (generated with ``stqa synth --seed 12345``: videos the model never saw).
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
#: What the upload box accepts; the server decodes more (Matroska, AVI), but these are what people have.
VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".mov")
#: The task dropdown: "auto" sends TASK_UNSPECIFIED and the server infers the task from the question.
AUTO = "auto"
TASK_CHOICES = (AUTO, *tasks.TASK_NAMES)
#: How long one question may take, end to end (a normal one takes tens of milliseconds).
DEFAULT_TIMEOUT_S = 30.0


class PageError(Exception):
    """A problem the person asking can fix or understand; ``str()`` is the sentence the page shows."""


@dataclass(frozen=True)
class Example:
    """One bundled example: a video and a question about it, with the answer the video was made with."""

    video: Path
    question: str
    task: str
    candidates: tuple[str, ...]
    truth: str

    def row(self) -> list[str]:
        """The example as the page's inputs: video, question, task, candidates."""
        return [str(self.video), self.question, AUTO, ", ".join(self.candidates)]


def load_examples(directory: Path = EXAMPLES_DIR) -> list[Example]:
    """The bundled examples listed in ``directory/examples.json`` (ValueError naming a missing video)."""
    meta = json.loads((directory / "examples.json").read_text())
    out = []
    for item in meta["examples"]:
        video = directory / item["video"]
        if not video.is_file():
            raise ValueError(f"examples.json names {item['video']}, which is not in {directory}")
        out.append(Example(video, item["question"], item["task"], tuple(item["candidates"]), item["truth"]))
    return out


@dataclass
class Result:
    """One answer, shaped for the page.

    ``summary``: the answer and its confidence (Markdown); ``top_k``: text -> score for the bars;
    ``picture``: the attention strip (what ``stqa ask --attention-out`` draws), PNG bytes;
    ``frame_indices``/``temporal``: the temporal attention over the sampled frames; ``timings``: where the
    time went (Markdown); ``response``: the server's reply as it came.
    """

    summary: str
    top_k: dict[str, float]
    picture: bytes
    frame_indices: list[int]
    temporal: list[float]
    timings: str
    response: pb.AnswerResponse = field(repr=False)


def parse_candidates(text: str | None) -> list[str]:
    """The candidates box: comma-separated answers, blanks dropped ("jump, shake,, grow" -> 3)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def readable_error(err: grpc.RpcError, server: str, timeout_s: float) -> str:
    """One sentence for a failed call: what happened and, where it helps, what to do about it."""
    code, details = err.code(), (err.details() or "").strip()
    if code == grpc.StatusCode.UNAVAILABLE:
        if "loading" in details or "draining" in details:
            return f"The stqa server at {server} is not ready: {details}. Try again in a moment."
        return (f"No stqa server answers at {server}: it may be down or still starting. Start one with "
                f"`stqa serve`, or run `stqa web` without --server to start its own.")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return f"The server could not answer this: {details}."
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return f"The server refused the request (busy, or over a size limit): {details}."
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"The server did not answer within {timeout_s:g} s; it may be overloaded. Try again."
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"The stqa server at {server} requires a token: {details}."
    if code == grpc.StatusCode.CANCELLED:
        return "The question was cancelled before the server answered."
    return f"The server failed to answer ({code.name}): {details or 'no details'}."


class Asker:
    """Asks the service on the page's behalf: one channel to ``server``, reused for every question."""

    def __init__(self, server: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self._client = VideoQAClient(server)
        self._limits: pb.Limits | None = None
        self._answered: set[str] = set()  # SHA-256 of videos answered: the client asks about them by reference
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def limits(self) -> pb.Limits | None:
        """The server's limits (asked once; None while it cannot be reached, so the server decides)."""
        with self._lock:
            if self._limits is None:
                try:
                    self._limits = self._client.model_info(timeout=5.0).limits
                except grpc.RpcError:
                    return None
            return self._limits

    def describe_server(self) -> str:
        """One line about the server for the page's header (or why there is none)."""
        try:
            info = self._client.model_info(timeout=5.0)
        except grpc.RpcError as err:
            return readable_error(err, self.server, 5.0)
        return (f"Answers come from the stqa server at `{self.server}`, model `{info.model_version}` "
                f"(tasks: {', '.join(tasks.from_proto(t).name for t in info.tasks)}).")

    def check(self, video: str | Path | None, question: str | None, task: str, candidates: Sequence[str]) -> Path:
        """Refuse what the server would refuse anyway, before uploading it; returns the video's path."""
        if not video:
            raise PageError("Upload a video (GIF, MP4, WebM or MOV) or pick one of the examples first.")
        path = Path(video)
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise PageError(f"“{path.name}” is not a video this page takes: upload a GIF, MP4, WebM or MOV file.")
        if not path.is_file():
            raise PageError(f"The uploaded file “{path.name}” is gone; upload it again.")
        if not (question or "").strip():
            raise PageError("Type a question about the video, e.g. “how many times does the red circle jump ?”.")
        if task not in TASK_CHOICES:
            raise PageError(f"Unknown task “{task}”: choose one of {', '.join(TASK_CHOICES)}.")
        if candidates and task != AUTO and not tasks.get(task).multiple_choice:
            choice = ", ".join(t for t in tasks.TASK_NAMES if tasks.get(t).multiple_choice)
            raise PageError(f"Candidates are only for multiple-choice questions ({choice}), not {task}: "
                            f"clear the candidates box or choose another task.")
        limits = self.limits()
        size = path.stat().st_size
        if limits is not None and limits.max_video_bytes and size > limits.max_video_bytes:
            raise PageError(f"The video is {_size(size)}; this server takes videos up to "
                            f"{_size(limits.max_video_bytes)} (`stqa serve --max-video-mb`).")
        return path

    def ask(self, video: str | Path | None, question: str | None, task: str = AUTO,
            candidates_text: str | None = "") -> Result:
        """Ask one question about one video; PageError with a readable sentence for anything that fails."""
        candidates = parse_candidates(candidates_text)
        task = (task or AUTO).strip().lower()
        path = self.check(video, question, task, candidates)
        question = str(question).strip()
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        asked_before = sha in self._answered
        started = time.perf_counter()
        try:
            response = self._client.answer(path, question, None if task == AUTO else task, candidates,
                                           return_attention=True, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise PageError(readable_error(err, self.server, self.timeout_s)) from None
        round_trip_ms = (time.perf_counter() - started) * 1000
        self._answered.add(sha)
        started = time.perf_counter()
        picture = _draw(path, question, response)
        picture_ms = (time.perf_counter() - started) * 1000
        return Result(
            summary=summarise(response),
            top_k={s.text: float(s.score) for s in response.top_k},
            picture=picture,
            frame_indices=list(response.frame_indices),
            temporal=list(response.temporal_attention),
            timings=describe_timings(response, round_trip_ms, picture_ms, asked_before),
            response=response,
        )


def _size(n: int) -> str:
    """Bytes as a person reads them: 9.4 KiB, 16.0 MiB."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _draw(path: Path, question: str, response: pb.AnswerResponse) -> bytes:
    """The attention strip as PNG bytes, drawn by the same function as ``stqa ask --attention-out``."""
    with tempfile.TemporaryDirectory(prefix="stqa-web-") as tmp:
        try:
            out = save_picture(Path(tmp) / "attention.png", path, question, response)
        except ValueError as err:  # the server decoded it, so this is rare: a file changed under us
            raise PageError(f"The answer came back, but the attention picture could not be drawn: {err}.") from None
        return out.read_bytes()


def summarise(response: pb.AnswerResponse) -> str:
    """The answer in one Markdown paragraph: the answer, its confidence, and which task answered."""
    spec = tasks.from_proto(response.task) if response.task else None
    how = " (inferred from the question)" if getattr(response, "task_inferred", False) else ""
    lines = [f"## {response.answer}", ""]
    details = [f"confidence **{response.confidence:.2f}**", f"task **{spec.name if spec else '?'}**{how}"]
    if spec is not None and spec.target == "count":
        details.insert(1, f"raw count {response.count:.2f}")
    if response.answer_index >= 0:
        details.append(f"candidate #{response.answer_index + 1}")
    lines.append(" · ".join(details))
    if response.unknown_words:
        # The model read these as <unk>: its answer cannot depend on them, however confident it looks.
        words = ", ".join(f"`{w}`" for w in response.unknown_words)
        lines += ["", f"⚠️ **The model does not know these words and ignored them:** {words}. "
                      "The confidence does not take them into account."]
    lines.append("")
    lines.append(f"model `{response.model_version}`")
    return "\n".join(lines)


def describe_timings(response: pb.AnswerResponse, round_trip_ms: float, picture_ms: float,
                     asked_before: bool = False) -> str:
    """Where the time went: the server's stages, the round trip the page measured, and drawing.

    ``asked_before``: this page already had an answer about these very bytes. The client then sends the
    video by its SHA-256 and the server answers from its cache, with no decoding (well under a
    millisecond for the hash lookup, where a real decode takes milliseconds); if the server had evicted
    it, the client re-sent the bytes and the decode time shows it, so the note is only made when both hold.
    """
    t = response.timings
    return (f"server: decode {t.decode_ms:.1f} ms · queue {t.queue_ms:.1f} ms · features {t.features_ms:.1f} ms · "
            f"model {t.model_ms:.1f} ms · **total {t.total_ms:.1f} ms**  \n"
            f"page: round trip {round_trip_ms:.1f} ms · drawing the attention strip {picture_ms:.1f} ms"
            + ("  \nasked about this video before: the server answered from its cache (no decoding, no backbone)"
               if asked_before and t.decode_ms < 1.0 else ""))


def temporal_figure(frame_indices: Sequence[int], temporal: Sequence[float]) -> Any:
    """A bar plot of the temporal attention over the sampled frames (a matplotlib Figure, no pyplot:
    nothing global to leak between requests on the page's threads)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 2.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    positions = list(range(len(temporal)))
    best = max(positions, key=lambda i: temporal[i]) if temporal else -1
    colors = ["#d9480f" if i == best else "#4c6ef5" for i in positions]
    ax.bar(positions, temporal, color=colors, width=0.8)
    step = max(1, len(positions) // 12)
    ax.set_xticks(positions[::step], [str(frame_indices[i]) for i in positions[::step]])
    ax.set_xlabel("video frame (the sampled frames, in order)")
    ax.set_ylabel("attention")
    ax.set_ylim(0, max(temporal, default=1.0) * 1.15 or 1.0)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def local_server(checkpoints: Sequence[Path] = (), ready_timeout_s: float = 180.0) -> ServerThread:
    """The model's gRPC server, in this process on a thread, at a free loopback port (start it, stop it).

    The server runs on its own asyncio loop (the service is asyncio) while the page's web server runs on
    another; they talk over the loopback port like any client and server, so ``stqa web`` alone shows
    exactly what ``stqa web --server`` shows against ``stqa serve``.
    """
    # Imported here: the page with --server never needs the model server's modules.
    from stqa.server.background import ServerThread
    from stqa.server.config import ServerConfig

    # port 0: the kernel picks a free port; no metrics port: two pages must not fight over :9464;
    # a short grace: closing the page should not wait 10 s for an answer nobody will see.
    config = ServerConfig(host="127.0.0.1", port=0, checkpoints=tuple(checkpoints), metrics_port=None, grace_s=2.0)
    return ServerThread(config, ready_timeout_s=ready_timeout_s)
