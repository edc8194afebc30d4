"""RPC validation: a request message -> checked fields, or a :class:`RequestError` with its status.

The one place where the server checks what a caller sent before any decoding: the request parsed at all,
the task, the question and candidates (with the limits of :class:`ServerConfig`), the served model's
``check_question``, and the video's size. The Predictor's own checks guard its library API (a
``Query`` object); they are not repeated here and the server never relies on them for a request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from stqa import tasks
from stqa.tasks import TaskSpec
from stqa.v1 import video_qa_pb2 as pb

from .cache import is_sha256
from .config import ServerConfig
from .predictor import ServedPredictor

# "COUNT, ACTION, TRANSITION or FRAMEQA": the task values a request may name, in registry order.
_TASK_CHOICES = ", ".join(s.proto_name for s in tasks.TASKS.values())
_TASK_CHOICES = " or ".join(_TASK_CHOICES.rsplit(", ", 1))


class RequestError(Exception):
    """A request that ends with a non-OK status; ``message`` says what was wrong."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    """The caller's input is wrong: INVALID_ARGUMENT."""
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass(frozen=True)
class MalformedRequest:
    """Stands in for a request whose bytes did not parse (e.g. a string field with invalid UTF-8).

    gRPC would answer a deserializer exception with a generic error; passing this marker on lets the
    handler reply INVALID_ARGUMENT with the parser's reason instead.
    """

    message_type: str
    reason: str


def lenient_deserializer(message_cls: type[Message]) -> Callable[[bytes], Any]:
    """A request deserializer that returns :class:`MalformedRequest` instead of raising."""

    def deserialize(data: bytes) -> Any:
        try:
            return message_cls.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(message_cls.DESCRIPTOR.full_name, str(exc))

    return deserialize


def check_parsed(request: Any) -> None:
    """Refuse a request that did not parse (any RPC)."""
    if isinstance(request, MalformedRequest):
        raise invalid(f"request is not a valid {request.message_type}: {request.reason}")


@dataclass
class CheckedAnswer:
    """An AnswerRequest that passed every check that needs no decoding; ``video`` is the one copy the
    service keeps (it empties the field once it has taken the bytes); ``task_inferred``: the request left
    the task unspecified and ``task`` comes from the question; ``video_sha256``: the video the request
    refers to (lower-case hex), "" unless it sent one (with ``video`` too, the server checks they agree)."""

    task: TaskSpec
    predictor: ServedPredictor
    question: str
    candidates: list[str]
    video: bytes
    return_attention: bool
    task_inferred: bool = False
    video_sha256: str = ""


def check_answer_request(request: Any, served: Mapping[int, ServedPredictor],
                         config: ServerConfig) -> CheckedAnswer:
    """Check everything about an Answer request that can be checked without decoding.

    ``served``: proto task value -> the predictor serving it. Checks run in a fixed order (parsing,
    task (inferred from the question when unspecified), question, candidates, the model's own question
    check, video), so a request with several faults is always refused for the same one.
    """
    check_parsed(request)
    question = request.question
    value = request.task
    inferred = value == pb.TASK_UNSPECIFIED
    if inferred:  # the caller left the task to us: the question's wording says which (stqa.tasks.infer_task)
        # (a question over the limit is refused below; it is not worth reading here)
        value = tasks.get(tasks.infer_task(question if len(question) <= config.max_question_chars else "")).proto_value
    try:
        task = tasks.from_proto(value)
    except ValueError:
        raise invalid(f"unknown task value {value}; expected {_TASK_CHOICES}, or none to infer it") from None
    how = " (inferred from the question; set task to override)" if inferred else ""
    predictor = served.get(value)
    if predictor is None:
        names = ", ".join(tasks.from_proto(v).proto_name for v in sorted(served))
        raise invalid(f"task {task.proto_name}{how} is not served by this server (serves {names})")
    if not question.strip():
        raise invalid("question is empty")
    if len(question) > config.max_question_chars:
        raise invalid(f"question is {len(question)} characters; the limit is {config.max_question_chars}")
    candidates = list(request.candidates)
    if task.multiple_choice:
        # None: the model chooses among its training answer phrases (predictor.check_question below
        # refuses that for a checkpoint without them).
        if candidates and len(candidates) != task.num_candidates:
            raise invalid(f"{task.proto_name}{how} needs exactly {task.num_candidates} candidates (or none, to "
                          f"choose among the model's training answer phrases), got {len(candidates)}")
        for i, text in enumerate(candidates):
            if not text.strip():
                raise invalid(f"candidate {i} is empty")
            if len(text) > config.max_candidate_chars:
                raise invalid(f"candidate {i} is {len(text)} characters; the limit is {config.max_candidate_chars}")
    elif candidates:
        raise invalid(f"{task.proto_name}{how} takes no candidates, got {len(candidates)}")
    try:  # before decoding: a question the model cannot read costs nothing
        predictor.check_question(task.name, question, candidates)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    video = request.video
    reference = request.video_sha256.strip().lower()
    if reference and not is_sha256(reference):
        raise invalid(f"video_sha256 must be 64 hex digits (a SHA-256), got {request.video_sha256[:80]!r}")
    if not video and not reference:
        raise invalid("video is empty (send the video, or the video_sha256 of one sent before)")
    if len(video) > config.max_video_bytes:
        raise invalid(f"video is {len(video)} bytes; the limit is {config.max_video_bytes}")
    return CheckedAnswer(task, predictor, question, candidates, video, bool(request.return_attention), inferred,
                         reference)
