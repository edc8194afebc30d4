"""What the service needs from a model, and how one is loaded.

The service never imports the Predictor class: it talks to whatever :class:`ServedPredictor` the loader
returns (``stqa.inference.Predictor`` in production, a test double in tests/test_server_plumbing.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # types only: importing them would pull PyAV into every module that names the protocol
    from stqa.video.decode import DecodedVideo, VideoLimits
    from stqa.video.pool import DecodeJob


class FeatureSpecLike(Protocol):
    """The feature spec a model was trained with (``stqa.data.features.FeatureSpec``), as GetModelInfo
    reports it."""

    @property
    def backbone(self) -> str: ...
    @property
    def channels(self) -> int: ...
    @property
    def num_frames(self) -> int: ...
    @property
    def policy(self) -> str: ...
    @property
    def image_size(self) -> int: ...


class PreparedVideoLike(Protocol):
    """A decoded clip ready for the model; the service reads only which frames were sampled."""

    @property
    def frame_indices(self) -> Sequence[int]: ...


class PredictionLike(Protocol):
    """One answer (``stqa.inference.Prediction``), as the service turns it into an AnswerResponse."""

    @property
    def answer(self) -> str: ...
    @property
    def answer_index(self) -> int: ...
    @property
    def count(self) -> float | None: ...
    @property
    def confidence(self) -> float: ...
    @property
    def top_k(self) -> Sequence[tuple[str, float]]: ...
    @property
    def temporal_attention(self) -> Any: ...
    @property
    def spatial_attention(self) -> Any: ...


@runtime_checkable
class ServedPredictor(Protocol):
    """Everything the service uses of a loaded model (read-only attributes are properties here so that
    plain attributes, lists or tuples, satisfy them)."""

    @property
    def tasks(self) -> Sequence[str]:
        """Names of the tasks the model answers (``stqa.tasks`` names)."""
        ...

    @property
    def model_version(self) -> str:
        """``name-<content hash>`` of the checkpoint, echoed in every response."""
        ...

    @property
    def spec(self) -> FeatureSpecLike: ...

    @property
    def answer_vocab(self) -> Sized | None:
        """The FrameQA answer vocabulary (only its size is reported), None without one."""
        ...

    def decode_job(self, video: bytes, limits: VideoLimits) -> DecodeJob:
        """The decode a worker process runs for ``video`` (T, sampling policy, input scale)."""
        ...

    def prepare_decoded(self, decoded: DecodedVideo) -> PreparedVideoLike:
        """Decoded frames -> the model input; runs on a waiter thread, never on the event loop."""
        ...

    def check_question(self, task: str, question: str, candidates: list[str]) -> None:
        """Raise ValueError for a question the model cannot read; cheap, run before decoding."""
        ...

    def predict(self, queries: list[Any], timings: dict[str, float] | None = None) -> Sequence[PredictionLike]:
        """Answer a batch of queries in order; with ``timings``, add per-stage seconds to it. ValueError
        means the predictor rejected a query (the batcher then isolates the culprit)."""
        ...


#: Loads one predictor: (checkpoint path or None for the bundled model, device) -> predictor.
PredictorLoader = Callable[[Path | None, str], ServedPredictor]
#: Builds the batcher's query from ``task``, ``question``, ``video`` and ``candidates`` keywords.
QueryFactory = Callable[..., Any]


def default_loader(path: Path | None, device: str) -> ServedPredictor:
    """Load one checkpoint (None: the bundled model) with the project's Predictor."""
    from stqa.inference import Predictor  # torch and the model: only when a server actually loads one

    return Predictor.load(path, device=device)


def default_query_factory() -> QueryFactory:
    """``stqa.inference.Query``, imported on first use (torch)."""
    from stqa.inference import Query

    return Query
