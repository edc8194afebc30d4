"""``stqa ask``: ask a running ``stqa serve`` a question about a video, optionally drawing the attention.

    stqa ask clip.gif "how many times does the man nod ?" --attention-out nod.png

The task is inferred from the question by the server (``stqa.tasks.infer_task``) unless ``--task`` says it.

:class:`VideoQAClient` is the same thing as a library (one channel, reused for every call).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from stqa import tasks
from stqa.server.config import AUTH_TOKEN_ENV, read_token
from stqa.v1 import video_qa_pb2 as pb
from stqa.v1 import video_qa_pb2_grpc as pb_grpc

DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 80 * 1024 * 1024


def task_value(task: str | int | None) -> int:
    """Task name ("count", ...; any case) or proto enum value -> proto enum value; None ->
    ``TASK_UNSPECIFIED`` (the server infers the task from the question)."""
    if task is None:
        return pb.TASK_UNSPECIFIED
    if isinstance(task, int):
        return task
    if not isinstance(task, str) or task.lower() not in tasks.TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(tasks.TASK_NAMES)}")
    return tasks.get(task.lower()).proto_value


class VideoQAClient:
    """A connection to the VideoQA service. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        tls_ca: str | Path | None = None,
        tls: bool = False,
        auth_token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        """``tls_ca``: PEM root certificate(s) to trust (implies TLS); ``tls=True`` uses the system roots."""
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        if tls_ca is not None or tls:
            roots = Path(tls_ca).read_bytes() if tls_ca is not None else None
            self._channel = grpc.secure_channel(server, grpc.ssl_channel_credentials(roots), options=options)
        else:
            self._channel = grpc.insecure_channel(server, options=options)
        self._metadata = [("authorization", f"Bearer {auth_token}")] if auth_token else []
        self._stub = pb_grpc.VideoQAStub(self._channel)
        self.server = server
        self._sent: set[str] = set()  # SHA-256 of videos the server answered for: asked again by reference

    def answer(
        self,
        video: bytes | str | Path | None,
        question: str,
        task: str | int | None = None,
        candidates: Sequence[str] = (),
        *,
        return_attention: bool = False,
        timeout: float | None = 30.0,
        by_reference: bool | None = None,
        video_sha256: str | None = None,
    ) -> pb.AnswerResponse:
        """Send one Answer call. Raises grpc.RpcError.

        ``video``: the encoded file's bytes or its path (None: ask about ``video_sha256``, a video the
        server has cached; NOT_FOUND if it has not). ``task`` None lets the server infer it from the
        question (the response's ``task`` and ``task_inferred`` say what it chose); ``candidates`` may be
        empty for action/transition (the model's training answer phrases are ranked instead).
        ``by_reference``: send only the video's SHA-256 first and the bytes only if the server answers
        NOT_FOUND (evicted); None (default) does so for videos this client has already sent.
        """
        if video is None:
            if not video_sha256:
                raise ValueError("give the video (bytes or a path) or the video_sha256 of one sent before")
            return self._call(pb.AnswerRequest(video_sha256=video_sha256, question=question, task=task_value(task),
                                               candidates=list(candidates), return_attention=return_attention),
                              timeout)
        data = bytes(video) if isinstance(video, (bytes, bytearray)) else Path(video).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        request = pb.AnswerRequest(question=question, task=task_value(task), candidates=list(candidates),
                                   return_attention=return_attention, video_sha256=sha)
        if by_reference or (by_reference is None and sha in self._sent):
            try:
                return self._call(request, timeout)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            # Evicted (or never sent to this server): send the bytes after all.
        request.video = data
        return self._call(request, timeout)

    def _call(self, request: pb.AnswerRequest, timeout: float | None) -> pb.AnswerResponse:
        response = self._stub.Answer(request, timeout=timeout, metadata=self._metadata)
        if response.video_sha256:
            self._sent.add(response.video_sha256)
        return response

    def model_info(self, timeout: float | None = 10.0) -> pb.ModelInfo:
        """What the server serves (tasks, model versions, feature spec, limits)."""
        return self._stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=timeout, metadata=self._metadata)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> VideoQAClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe(response: pb.AnswerResponse, question: str, top: int = 5) -> str:
    """A human-readable report of one answer (what ``stqa ask`` prints)."""
    task = pb.Task.Name(response.task) if response.task else "?"
    if response.task_inferred:
        task += " (inferred from the question)"
    lines = [f"question: {question}", f"answer:   {response.answer}"]
    details = [f"task {task}", f"confidence {response.confidence:.2f}"]
    if response.task == pb.COUNT:
        details.insert(1, f"raw count {response.count:.2f}")
    if response.answer_index >= 0:
        details.insert(1, f"candidate #{response.answer_index}")
    lines.append("          " + ", ".join(details))
    if response.top_k and response.task != pb.COUNT:
        lines.append("top-k:    " + "  |  ".join(f"{s.text} {s.score:.2f}" for s in response.top_k[:top]))
    lines.append("frames:   " + " ".join(str(i) for i in response.frame_indices))
    t = response.timings
    lines.append(f"timings:  decode {t.decode_ms:.1f} ms, queue {t.queue_ms:.1f} ms, features {t.features_ms:.1f} ms, "
                 f"model {t.model_ms:.1f} ms, total {t.total_ms:.1f} ms (server side)")
    lines.append(f"model:    {response.model_version}")
    if response.video_sha256:
        lines.append(f"video:    sha256 {response.video_sha256}")
    return "\n".join(lines)


def save_picture(path: str | Path, video: str | Path | bytes, question: str, response: pb.AnswerResponse,
                 truth: str | None = None) -> Path:
    """Draw the response's attention over the video's sampled frames (decoded locally) into ``path``."""
    import numpy as np

    from stqa.viz import frames_for_indices, save_attention_picture

    n, g = len(response.frame_indices), response.attention_grid
    if g == 0 or len(response.temporal_attention) != n or len(response.spatial_attention) != g * g * n:
        raise ValueError("the response carries no attention (ask with return_attention=True)")
    frames = frames_for_indices(video, list(response.frame_indices))
    task = pb.Task.Name(response.task)
    extra = f"count {response.count:.2f}, " if response.task == pb.COUNT else ""
    subtitle = f"{task}  ·  {extra}confidence {response.confidence:.2f}  ·  model {response.model_version}"
    return save_attention_picture(
        path, frames, np.asarray(response.temporal_attention), np.asarray(response.spatial_attention).reshape(n, g, g),
        question=question, answer=response.answer, frame_indices=list(response.frame_indices), truth=truth,
        subtitle=subtitle,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``stqa ask``."""
    parser.add_argument("video", type=Path, help="video file (GIF, MP4, WebM, ...)")
    parser.add_argument("question", help="the question, in quotes")
    parser.add_argument("--task", choices=tasks.TASK_NAMES, default=None,
                        help="which task answers (default: the server infers it from the question)")
    parser.add_argument("--candidates", nargs="+", default=[], metavar="TEXT",
                        help="the 5 answer candidates of an action/transition question")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="HOST:PORT of stqa serve (default %(default)s)")
    parser.add_argument("--attention-out", type=Path, default=None, metavar="PNG",
                        help="write the attention picture (frames, spatial heat maps, temporal weights) here")
    parser.add_argument("--tls-ca", type=Path, default=None,
                        help="PEM CA certificate to trust: connect with TLS (use the server's host name)")
    parser.add_argument("--auth-token-file", type=Path, default=None,
                        help=f"file whose first line is the server's bearer token (default: ${AUTH_TOKEN_ENV})")
    # The token itself is never a flag value: every local user can read a process's command line.
    parser.add_argument("--auth-token", dest="auth_token_value", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds (default %(default)g)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``stqa ask``: 0 answered, 1 the server refused (status printed), 2 bad usage."""
    task = args.task  # None: the server infers it from the question
    if not args.video.is_file():
        print(f"stqa ask: no such video file: {args.video}", file=sys.stderr)
        return 2
    if args.auth_token_value is not None:
        print(f"stqa ask: --auth-token would show the token to every local user (ps); put it in a file for "
              f"--auth-token-file, or in ${AUTH_TOKEN_ENV}", file=sys.stderr)
        return 2
    try:
        token = read_token(args.auth_token_file)
    except ValueError as exc:
        print(f"stqa ask: {exc}", file=sys.stderr)
        return 2
    with VideoQAClient(args.server, tls_ca=args.tls_ca, auth_token=token) as client:
        try:
            # By reference first: a video the server still has cached is not uploaded again.
            response = client.answer(args.video, args.question, task, args.candidates, by_reference=True,
                                     return_attention=args.attention_out is not None, timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"stqa ask: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print(describe(response, args.question))
    if args.attention_out is not None:
        path = save_picture(args.attention_out, args.video, args.question, response)
        print(f"picture:  {path}")
    return 0
