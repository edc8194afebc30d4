from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    COUNT: _ClassVar[Task]
    ACTION: _ClassVar[Task]
    TRANSITION: _ClassVar[Task]
    FRAMEQA: _ClassVar[Task]
TASK_UNSPECIFIED: Task
COUNT: Task
ACTION: Task
TRANSITION: Task
FRAMEQA: Task

class AnswerRequest(_message.Message):
    __slots__ = ("video", "question", "task", "candidates", "return_attention", "video_sha256")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    RETURN_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    VIDEO_SHA256_FIELD_NUMBER: _ClassVar[int]
    video: bytes
    question: str
    task: Task
    candidates: _containers.RepeatedScalarFieldContainer[str]
    return_attention: bool
    video_sha256: str
    def __init__(self, video: _Optional[bytes] = ..., question: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., candidates: _Optional[_Iterable[str]] = ..., return_attention: _Optional[bool] = ..., video_sha256: _Optional[str] = ...) -> None: ...

class AnswerScore(_message.Message):
    __slots__ = ("text", "score")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    text: str
    score: float
    def __init__(self, text: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_ms", "queue_ms", "features_ms", "model_ms", "total_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    queue_ms: float
    features_ms: float
    model_ms: float
    total_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., features_ms: _Optional[float] = ..., model_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class AnswerResponse(_message.Message):
    __slots__ = ("answer", "answer_index", "count", "confidence", "top_k", "frame_indices", "temporal_attention", "spatial_attention", "model_version", "timings", "task", "attention_grid", "task_inferred", "video_sha256")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ANSWER_INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDICES_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    SPATIAL_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_GRID_FIELD_NUMBER: _ClassVar[int]
    TASK_INFERRED_FIELD_NUMBER: _ClassVar[int]
    VIDEO_SHA256_FIELD_NUMBER: _ClassVar[int]
    answer: str
    answer_index: int
    count: float
    confidence: float
    top_k: _containers.RepeatedCompositeFieldContainer[AnswerScore]
    frame_indices: _containers.RepeatedScalarFieldContainer[int]
    temporal_attention: _containers.RepeatedScalarFieldContainer[float]
    spatial_attention: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    timings: Timings
    task: Task
    attention_grid: int
    task_inferred: bool
    video_sha256: str
    def __init__(self, answer: _Optional[str] = ..., answer_index: _Optional[int] = ..., count: _Optional[float] = ..., confidence: _Optional[float] = ..., top_k: _Optional[_Iterable[_Union[AnswerScore, _Mapping]]] = ..., frame_indices: _Optional[_Iterable[int]] = ..., temporal_attention: _Optional[_Iterable[float]] = ..., spatial_attention: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., task: _Optional[_Union[Task, str]] = ..., attention_grid: _Optional[int] = ..., task_inferred: _Optional[bool] = ..., video_sha256: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FeatureSpec(_message.Message):
    __slots__ = ("backbone", "channels", "num_frames", "policy", "image_size")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    backbone: str
    channels: int
    num_frames: int
    policy: str
    image_size: int
    def __init__(self, backbone: _Optional[str] = ..., channels: _Optional[int] = ..., num_frames: _Optional[int] = ..., policy: _Optional[str] = ..., image_size: _Optional[int] = ...) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("tasks", "model_version", "spec", "answer_vocab_size")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ANSWER_VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedScalarFieldContainer[Task]
    model_version: str
    spec: FeatureSpec
    answer_vocab_size: int
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, str]]] = ..., model_version: _Optional[str] = ..., spec: _Optional[_Union[FeatureSpec, _Mapping]] = ..., answer_vocab_size: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_video_bytes", "max_pixels", "max_frames", "max_duration_s", "decode_timeout_s", "max_question_chars", "max_in_flight", "max_queue", "max_batch_size", "max_batch_delay_ms", "max_aspect_ratio", "max_decoded_pixels", "decode_memory_bytes", "max_bytes_in_flight", "cache_bytes")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_VIDEO_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_QUESTION_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_ASPECT_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_DECODED_PIXELS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_video_bytes: int
    max_pixels: int
    max_frames: int
    max_duration_s: float
    decode_timeout_s: float
    max_question_chars: int
    max_in_flight: int
    max_queue: int
    max_batch_size: int
    max_batch_delay_ms: float
    max_aspect_ratio: float
    max_decoded_pixels: int
    decode_memory_bytes: int
    max_bytes_in_flight: int
    cache_bytes: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_video_bytes: _Optional[int] = ..., max_pixels: _Optional[int] = ..., max_frames: _Optional[int] = ..., max_duration_s: _Optional[float] = ..., decode_timeout_s: _Optional[float] = ..., max_question_chars: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., max_queue: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_batch_delay_ms: _Optional[float] = ..., max_aspect_ratio: _Optional[float] = ..., max_decoded_pixels: _Optional[int] = ..., decode_memory_bytes: _Optional[int] = ..., max_bytes_in_flight: _Optional[int] = ..., cache_bytes: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("tasks", "model_version", "spec", "limits", "models", "server_version")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedScalarFieldContainer[Task]
    model_version: str
    spec: FeatureSpec
    limits: Limits
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    server_version: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, str]]] = ..., model_version: _Optional[str] = ..., spec: _Optional[_Union[FeatureSpec, _Mapping]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ..., server_version: _Optional[str] = ...) -> None: ...
