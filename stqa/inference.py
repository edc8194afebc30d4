"""Predictor: a checkpoint turned into answers (with attention maps), shared by evaluation and the server.

    predictor = Predictor.load()                        # the bundled model (stqa/assets/default)
    video = predictor.prepare_video(open("x.gif", "rb").read())
    [p] = predictor.predict([Query("count", "how many times does the square jump ?", video)])

``prepare_video`` is CPU-only and thread-safe (decode + sample + transform); ``predict`` runs one
batched forward per task present in the queries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stqa import tasks
from stqa.checkpoint import (
    BUNDLED_MODEL,
    Checkpoint,
    CheckpointError,
    FeatureSpec,
    config_path,
    is_checkpoint,
    load_checkpoint,
)
from stqa.data.dataset import MAX_QUESTION_LEN, encode_question, pack_questions
from stqa.data.tgifqa import Vocab, clip_text, tokenize
from stqa.models.encode import encode_frames
from stqa.models.stvqa import STVQA, ModelConfig

#: Most rows (question texts, k each for multiple choice) in one forward: a question scored against every
#: answer phrase of a large training set runs in slices of this many.
_MAX_ROWS = 64


def model_from_checkpoint(ckpt: Checkpoint, device: torch.device | str = "cpu"):
    """(model in eval mode, word vocab, answer vocab or None, FeatureSpec) from a loaded checkpoint."""
    try:
        model_cfg = ModelConfig.from_dict(ckpt.config["model"])
        word_vocab = Vocab.from_dict(ckpt.config["word_vocab"])
        answer_vocab = Vocab.from_dict(ckpt.config["answer_vocab"]) if ckpt.config.get("answer_vocab") else None
        spec = FeatureSpec(**ckpt.config["feature_spec"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path(ckpt.path)} is incomplete or invalid: {err}") from err
    model = STVQA(model_cfg)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"weights in {ckpt.path} do not fit the model config: {err}") from err
    model.to(device).eval()
    return model, word_vocab, answer_vocab, spec


@dataclass
class PreparedVideo:
    """A clip ready for the model: ``frames`` [T, 3, S, S] (right-padded), ``mask`` [T] (True = real
    frame), ``frame_indices`` (which decoded frames were used), ``n_frames`` (decoded frame count).

    ``features`` [T, G, G, C]: the backbone's maps of the frames, filled in by the first
    :meth:`Predictor.predict` that reads the clip; a clip that has them needs no ``frames`` (the server
    caches :meth:`features_only` copies, so a follow-up question skips decoding and the backbone).
    """

    frames: torch.Tensor | None
    mask: torch.Tensor
    frame_indices: list[int]
    n_frames: int
    features: torch.Tensor | None = None

    def features_only(self) -> PreparedVideo:
        """This clip without its frames (its features must be computed): what a cache keeps."""
        if self.features is None:
            raise ValueError("the clip's features have not been computed yet")
        return PreparedVideo(frames=None, mask=self.mask, frame_indices=list(self.frame_indices),
                             n_frames=self.n_frames, features=self.features)

    @property
    def nbytes(self) -> int:
        """Bytes held by its tensors (frames, features, mask)."""
        return sum(t.numel() * t.element_size() for t in (self.frames, self.features, self.mask) if t is not None)


@dataclass
class Query:
    """One question about one prepared clip. ``candidates``: exactly the task's number for multiple
    choice, or none to score every answer phrase the model saw in training (``Predictor.answer_phrases``)."""

    task: str
    question: str
    video: PreparedVideo
    candidates: list[str] = field(default_factory=list)


@dataclass
class Prediction:
    """One answer. ``answer_index`` is the chosen candidate (-1 unless multiple choice); ``count`` the raw
    regression value (count only); ``top_k`` (answer, probability) best first; attention maps over the
    clip's T steps (None for variants without that attention; for multiple choice, the chosen
    candidate's maps)."""

    task: str
    answer: str
    answer_index: int
    count: float | None
    confidence: float
    top_k: list[tuple[str, float]]
    temporal_attention: np.ndarray | None
    spatial_attention: np.ndarray | None
    #: Question/candidate words outside the checkpoint's vocabulary: the model saw "<unk>" for each.
    unknown_words: list[str] = field(default_factory=list)


class Predictor:
    """Answers questions about videos with a trained ST-VQA checkpoint."""

    def __init__(self, ckpt: Checkpoint, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model, self.word_vocab, self.answer_vocab, self.spec = model_from_checkpoint(ckpt, self.device)
        if self.model.backbone is not None:  # this model only ever runs forwards
            self.model.backbone.fold_batchnorm().to(memory_format=torch.channels_last)
        self.tasks: list[str] = list(self.model.config.tasks)
        self.model_version: str = ckpt.model_version
        self.num_frames: int = int(self.spec.num_frames)
        self.max_question_len = int(ckpt.config.get("max_question_len", MAX_QUESTION_LEN))
        self.checkpoint_path = ckpt.path
        # Every answer phrase of each multiple-choice task's training data (stqa.engine records it): what
        # a question without candidates is scored against. Older checkpoints lack it.
        phrases = ckpt.config.get("answer_phrases") or {}
        self.answer_phrases: dict[str, list[str]] = {
            task: [str(p) for p in phrases[task]] for task in self.tasks
            if tasks.get(task).multiple_choice and phrases.get(task)
        }
        self._lock = threading.Lock()

    def _sync(self) -> None:
        """Wait for queued GPU work, so that stage timings measure it (a no-op on CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> Predictor:
        """Load a checkpoint directory (or run directory); None = the bundled default model."""
        if path is None:
            if not is_checkpoint(BUNDLED_MODEL):
                raise CheckpointError(f"the bundled model is missing from {BUNDLED_MODEL} (run `make model`)")
            path = BUNDLED_MODEL
        return cls(load_checkpoint(path), device)

    def decode_job(self, video: bytes, limits=None):
        """The :class:`stqa.video.pool.DecodeJob` that decodes ``video`` for this model: its T, sampling
        policy, and frames shrunk to its input scale while decoding (the server runs it in a worker)."""
        # PyAV and the decode pool: only when this process decodes video (not for feature-only use).
        from stqa.video.decode import VideoLimits
        from stqa.video.pool import DecodeJob

        self._check_raw_video_input()
        return DecodeJob(data=video, num_frames=self.num_frames, policy=self.spec.policy,
                         shrink_to=int(self.spec.image_size), limits=limits or VideoLimits())

    def prepare_decoded(self, decoded) -> PreparedVideo:
        """Sampled frames (a :class:`stqa.video.DecodedVideo`) -> the normalised, padded model input."""
        from stqa.video.transforms import frames_to_tensor, pad_clip  # with the decoders, as above

        frames = frames_to_tensor(decoded.frames, int(self.spec.image_size))
        padded, mask = pad_clip(frames, self.num_frames)
        return PreparedVideo(
            frames=padded, mask=mask, frame_indices=[int(i) for i in decoded.indices], n_frames=int(decoded.n_frames)
        )

    def prepare_video(self, source: bytes | str | Path, limits=None) -> PreparedVideo:
        """Decode, sample and transform a video (bytes or a path) for this model, in this process.
        CPU only, thread-safe.

        Raises the :mod:`stqa.video` ``VideoError`` subclasses for undecodable or over-limit input.
        """
        from stqa.video.decode import VideoLimits, decode_video  # PyAV: as in decode_job

        self._check_raw_video_input()
        decoded = decode_video(source, self.num_frames, limits=limits or VideoLimits(), policy=self.spec.policy,
                               shrink_to=int(self.spec.image_size))
        return self.prepare_decoded(decoded)

    def _check_raw_video_input(self) -> None:
        if self.model.backbone is None:
            raise ValueError(
                f"model {self.model_version} reads precomputed {self.spec.backbone} features and has no "
                "backbone to run on raw video; serve a model trained end to end (e.g. the bundled one)"
            )

    def missing_phrases_message(self, task: str) -> str:
        """Why a ``task`` question without candidates cannot be answered by this model."""
        spec = tasks.get(task)
        return (f"{spec.proto_name} without candidates needs the checkpoint's list of training answer phrases, "
                f"which model {self.model_version} does not have; send the {spec.num_candidates} candidates")

    def check_question(self, task: str, question: str, candidates: list[str] = ()) -> None:
        """Raise ValueError if the question (or a candidate) has no token this model can read, or if it
        is a multiple-choice question without candidates and the model has no answer phrases; cheap, so
        the server checks it before spending a decode on the request."""
        if tasks.get(task).multiple_choice and not candidates and task not in self.answer_phrases:
            raise ValueError(self.missing_phrases_message(task))
        for text in tasks.get(task).question_texts(question, candidates):
            if not tokenize(text):
                raise ValueError(f"question {clip_text(question)!r} has no words the model can read")

    def _validate(self, q: Query) -> None:
        if not isinstance(q, Query):
            raise ValueError(f"queries must be stqa.inference.Query objects, got {type(q).__name__}")
        spec = tasks.get(q.task)
        if q.task not in self.tasks:
            raise ValueError(f"task {q.task!r} is not served by model {self.model_version} (tasks: {', '.join(self.tasks)})")
        if not isinstance(q.question, str) or not q.question.strip():
            raise ValueError("empty question")
        n_cand = len(q.candidates)
        if spec.multiple_choice and not n_cand:
            if q.task not in self.answer_phrases:
                raise ValueError(self.missing_phrases_message(q.task))
        elif spec.multiple_choice:
            if n_cand != spec.num_candidates:
                raise ValueError(f"task {q.task!r} needs exactly {spec.num_candidates} candidates, got {n_cand}")
            if any(not isinstance(c, str) or not c.strip() for c in q.candidates):
                raise ValueError(f"task {q.task!r}: every candidate must be a non-empty string")
        elif n_cand:
            raise ValueError(f"task {q.task!r} takes no candidates, got {n_cand}")
        if not isinstance(q.video, PreparedVideo):
            raise ValueError("query.video must be a PreparedVideo (use Predictor.prepare_video)")
        if q.video.features is None:
            expected = (self.num_frames, 3, int(self.spec.image_size), int(self.spec.image_size))
            frames_shape = None if q.video.frames is None else list(q.video.frames.shape)
            if frames_shape != list(expected) or tuple(q.video.mask.shape) != (self.num_frames,):
                raise ValueError(f"video frames must be {list(expected)} with mask [{self.num_frames}], got "
                                 f"{frames_shape} / {list(q.video.mask.shape)}")
        else:
            shape = tuple(q.video.features.shape)
            if len(shape) != 4 or (shape[0], shape[3]) != (self.num_frames, int(self.spec.channels)) or tuple(
                    q.video.mask.shape) != (self.num_frames,):
                raise ValueError(f"video features must be [{self.num_frames}, G, G, {self.spec.channels}] with mask "
                                 f"[{self.num_frames}], got {list(shape)} / {list(q.video.mask.shape)}")
        if not bool(q.video.mask.any()):
            raise ValueError("video has no real frames")

    def predict(self, queries: list[Query], timings: dict[str, float] | None = None) -> list[Prediction]:
        """Answer ``queries`` (any mix of tasks): one batched forward per task, results in query order.

        With ``timings``, adds the seconds spent in the backbone (``"features"``) and in the rest of the
        model (``"model"``) to it.
        """
        for q in queries:
            self._validate(q)
        results: list[Prediction | None] = [None] * len(queries)
        groups: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(q.task, []).append(i)
        for task, idxs in groups.items():
            group = [queries[i] for i in idxs]
            for i, p in zip(idxs, self._predict_task(task, group, timings), strict=True):
                results[i] = p
        return results  # type: ignore[return-value]

    def unknown_words(self, question: str, candidates: Sequence[str] = ()) -> list[str]:
        """The tokens of ``question`` and ``candidates`` not in the word vocabulary, first appearance first
        (the model reads each as ``<unk>``, so its answer cannot depend on what they mean)."""
        unknown: dict[str, None] = {}
        for text in (question, *candidates):
            for token in tokenize(text):
                if token not in self.word_vocab.stoi:
                    unknown.setdefault(token)
        return list(unknown)

    def _texts(self, q: Query) -> list[str]:
        """What one query chooses among: its candidates, or (multiple choice without them) every answer
        phrase of the task; empty for the other tasks."""
        if not tasks.get(q.task).multiple_choice:
            return []
        return list(q.candidates) if q.candidates else self.answer_phrases[q.task]

    def _encode(self, group: list[Query], timings: dict[str, float] | None) -> torch.Tensor:
        """The group's clip features [B, T, G, G, C]: the backbone runs once per clip that lacks them (a clip
        shared by several queries, or already encoded, costs nothing) and stores them in the clip."""
        pending: dict[int, PreparedVideo] = {}
        for q in group:
            if q.video.features is None:
                pending.setdefault(id(q.video), q.video)
        if pending:
            started = time.perf_counter()
            videos = list(pending.values())
            frames = torch.stack([v.frames for v in videos]).to(self.device)
            mask = torch.stack([v.mask for v in videos]).to(self.device)
            features = encode_frames(self.model.backbone, frames, mask)
            for v, f in zip(videos, features, strict=True):
                v.features = f
            if timings is not None:
                self._sync()
                timings["features"] = timings.get("features", 0.0) + time.perf_counter() - started
        return torch.stack([q.video.features.to(self.device) for q in group])

    def _predict_task(self, task: str, group: list[Query], timings: dict[str, float] | None) -> list[Prediction]:
        spec = tasks.get(task)
        k = spec.num_candidates
        mask = torch.stack([q.video.mask for q in group]).to(self.device)
        if spec.multiple_choice:
            # The model scores k (question + answer) texts per row, each independently of the others; a
            # query's texts (its k candidates, or all the task's answer phrases) are cut into rows of k,
            # the last row padded by repeating its last text, every row pointing at the query's clip.
            texts = [self._texts(q) for q in group]
            rows, clip_rows = [], []
            for i, (q, options) in enumerate(zip(group, texts, strict=True)):
                for start in range(0, len(options), k):
                    chunk = options[start:start + k]
                    chunk = chunk + [chunk[-1]] * (k - len(chunk))
                    rows.append(encode_question(self.word_vocab, task, q.question, chunk, self.max_question_len))
                    clip_rows.append(i)
        else:
            rows = [encode_question(self.word_vocab, task, q.question, q.candidates, self.max_question_len)
                    for q in group]
            clip_rows = list(range(len(group)))
        clip_index = torch.tensor(clip_rows, dtype=torch.long, device=self.device)
        with self._lock, torch.inference_mode():
            features = self._encode(group, timings)
            started = time.perf_counter()
            outs = []
            for start in range(0, len(rows), _MAX_ROWS):  # bounded memory however many phrases a task has
                tokens, lengths = pack_questions(rows[start:start + _MAX_ROWS], task)
                outs.append(self.model(task, tokens.to(self.device), lengths.to(self.device), mask, features=features,
                                       clip_index=clip_index[start:start + _MAX_ROWS]))
            if timings is not None:
                self._sync()
                timings["model"] = timings.get("model", 0.0) + time.perf_counter() - started
        scores = torch.cat([o.scores.float().cpu() for o in outs])
        tw = torch.cat([o.temporal_attention.float().cpu() for o in outs]) if outs[0].temporal_attention is not None else None
        sw = torch.cat([o.spatial_attention.float().cpu() for o in outs]) if outs[0].spatial_attention is not None else None
        if spec.multiple_choice:  # rows back to queries: [n_rows, k, ...] -> each query's [n_texts, ...]
            per_query = [[r for r, c in enumerate(clip_rows) if c == i] for i in range(len(group))]
            n_texts = [len(t) for t in texts]

            def gather(x: torch.Tensor | None, i: int) -> torch.Tensor | None:
                return None if x is None else x[per_query[i]].flatten(0, 1)[: n_texts[i]]

            scores_q = [gather(scores, i) for i in range(len(group))]
            tw_q = [gather(tw, i) for i in range(len(group))]
            sw_q = [gather(sw, i) for i in range(len(group))]
        else:
            scores_q = [scores[i] for i in range(len(group))]
            tw_q = [tw[i] if tw is not None else None for i in range(len(group))]
            sw_q = [sw[i] if sw is not None else None for i in range(len(group))]
        words = self.answer_vocab.itos if self.answer_vocab is not None else None
        preds = []
        for i, q in enumerate(group):
            if spec.multiple_choice and not q.candidates:
                d = spec.decide_among(scores_q[i], texts[i])
            else:
                d = spec.decide(scores_q[i], q.candidates, words)
            t_att, s_att = tw_q[i], sw_q[i]
            if spec.multiple_choice:  # the chosen answer's maps
                t_att = t_att[d.best] if t_att is not None else None
                s_att = s_att[d.best] if s_att is not None else None
            side = int(round(s_att.shape[-1] ** 0.5)) if s_att is not None else 0
            preds.append(
                Prediction(
                    task=task, answer=d.answer, answer_index=d.answer_index, count=d.count,
                    confidence=d.confidence, top_k=d.top_k,
                    temporal_attention=t_att.numpy() if t_att is not None else None,
                    spatial_attention=s_att.reshape(s_att.shape[0], side, side).numpy() if s_att is not None else None,
                    unknown_words=self.unknown_words(q.question, q.candidates),
                )
            )
        return preds
