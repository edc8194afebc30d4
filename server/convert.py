"""Proto <-> Python: task enum values and names, a prediction -> AnswerResponse, the configuration and
the loaded models -> ModelInfo. Pure functions of their arguments: no service state, no gRPC calls."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from stqa import tasks
from stqa.v1 import video_qa_pb2 as pb

from .config import ServerConfig
from .predictor import FeatureSpecLike, PredictionLike, ServedPredictor


def task_name(value: int) -> str:
    """A ``stqa.v1.Task`` value -> the task name the Predictor uses (ValueError if unknown)."""
    return tasks.from_proto(value).name


def task_value(name: str) -> int:
    """A task name -> its ``stqa.v1.Task`` value (ValueError if unknown)."""
    return tasks.get(name).proto_value


def answer_response(prediction: PredictionLike, *, task: int, frame_indices: Sequence[int], model_version: str,
                    return_attention: bool, task_inferred: bool = False, video_sha256: str = "") -> pb.AnswerResponse:
    """The response for one prediction, timings left empty (the service fills them last).

    Per-frame arrays keep only the ``len(frame_indices)`` real frames: padding never reaches the caller.
    RuntimeError if the predictor's attention does not fit the sampled frames (a bug, not bad input).
    """
    frame_indices = [int(i) for i in frame_indices]
    n_valid = len(frame_indices)
    response = pb.AnswerResponse(
        answer=str(prediction.answer),
        answer_index=int(prediction.answer_index),
        count=float(prediction.count) if prediction.count is not None else 0.0,
        confidence=float(prediction.confidence),
        top_k=[pb.AnswerScore(text=str(text), score=float(score)) for text, score in prediction.top_k],
        frame_indices=frame_indices,
        model_version=str(model_version),
        task=task,
        task_inferred=task_inferred,
        video_sha256=video_sha256,
    )
    if return_attention:
        if prediction.temporal_attention is None or prediction.spatial_attention is None:
            raise RuntimeError("the predictor returned no attention although the model has it")
        temporal = np.asarray(prediction.temporal_attention, dtype=np.float32)[:n_valid]
        spatial = np.asarray(prediction.spatial_attention, dtype=np.float32)[:n_valid]
        grid = spatial.shape[-1] if spatial.ndim == 3 else 0
        if temporal.shape != (n_valid,) or spatial.shape != (n_valid, grid, grid) or grid == 0:
            raise RuntimeError(f"attention shapes {temporal.shape}, {spatial.shape} do not match "
                               f"{n_valid} sampled frames")
        response.temporal_attention.extend(temporal.tolist())
        response.spatial_attention.extend(spatial.reshape(-1).tolist())
        response.attention_grid = grid
    return response


def fill_timings(timings: pb.Timings, *, decode_s: float, queue_s: float, stage_s: dict[str, float],
                 total_s: float) -> None:
    """Server-side milliseconds per stage (``stage_s``: the batch's ``features`` and ``model`` seconds)."""
    timings.decode_ms = decode_s * 1000.0
    timings.queue_ms = queue_s * 1000.0
    timings.features_ms = stage_s.get("features", 0.0) * 1000.0
    timings.model_ms = stage_s.get("model", 0.0) * 1000.0
    timings.total_ms = total_s * 1000.0


def limits(config: ServerConfig) -> pb.Limits:
    """Every enforced limit, as GetModelInfo reports it."""
    c = config
    return pb.Limits(
        max_message_bytes=c.max_message_bytes, max_video_bytes=c.max_video_bytes,
        max_pixels=c.max_pixels, max_frames=c.max_frames, max_duration_s=c.max_duration_s,
        decode_timeout_s=c.decode_timeout_s, max_question_chars=c.max_question_chars,
        max_in_flight=c.max_in_flight, max_queue=c.max_queue, max_bytes_in_flight=c.max_bytes_in_flight,
        max_batch_size=c.max_batch_size, max_batch_delay_ms=c.max_batch_delay_ms,
        max_aspect_ratio=c.max_aspect_ratio, max_decoded_pixels=c.max_decoded_pixels,
        decode_memory_bytes=c.decode_memory_bytes, cache_bytes=c.cache_bytes,
    )


def feature_spec(spec: FeatureSpecLike) -> pb.FeatureSpec:
    """``stqa.data.features.FeatureSpec`` -> its proto mirror."""
    return pb.FeatureSpec(backbone=str(spec.backbone), channels=int(spec.channels), num_frames=int(spec.num_frames),
                          policy=str(spec.policy), image_size=int(spec.image_size))


def served_model(task_values: Sequence[int], predictor: ServedPredictor) -> pb.ServedModel:
    """One loaded checkpoint: its tasks, version, spec, and (if it answers with a vocabulary word: FrameQA)
    its answer vocabulary's size."""
    vocab = predictor.answer_vocab or ()
    answers_words = any(tasks.from_proto(v).target == "answer_word" for v in task_values)
    return pb.ServedModel(
        tasks=list(task_values), model_version=str(predictor.model_version), spec=feature_spec(predictor.spec),
        answer_vocab_size=len(vocab) if answers_words else 0,
    )


def model_info(config: ServerConfig, models: Iterable[tuple[Sequence[int], ServedPredictor]],
               server_version: str) -> pb.ModelInfo:
    """GetModelInfo's reply. ``models``: (task values, predictor) per loaded checkpoint, in loading order;
    the top-level version and spec are those of the model serving the lowest task value."""
    models = list(models)
    info = pb.ModelInfo(tasks=sorted(v for values, _ in models for v in values), limits=limits(config),
                        server_version=server_version)
    for values, predictor in models:
        info.models.append(served_model(values, predictor))
    first = min((min(values), i) for i, (values, _) in enumerate(models) if values)[1]
    info.model_version = str(models[first][1].model_version)
    info.spec.CopyFrom(info.models[first].spec)
    return info
