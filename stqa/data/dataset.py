"""Torch-side data for training and evaluation: encoded questions, clips, collation, batch schedules.

A clip comes from one of three sources with the same interface (``clip(record) -> tensor [t, ...]``,
unpadded, ``t <= num_frames``); all hold data only, never a model:
  - :class:`FeatureClips`: per-key ``[t, 7, 7, C]`` arrays from the HDF5 feature store;
  - :class:`FrameClips`: the video file decoded, sampled and transformed to ``[t, 3, S, S]`` for a
    backbone trained end to end. Decoding is the slow part, so transformed clips are cached in memory
    (float16) after the first use; the cache is keyed by the video, so tasks sharing a GIF share it;
  - :class:`EncodedClips`: per-video ``[t, 7, 7, C]`` maps held in memory, as the encoding stage
    (:func:`stqa.models.encode.encode_clips`) computed them from frame clips.

The two that read files also say which records they lack (``missing``), so :func:`check_clips` can refuse
a store or folder missing any clip before a model is built.

Questions are turned into token ids by :func:`encode_question` and packed into padded tensors by
:func:`pack_questions`, the one packing used by training, evaluation and the Predictor.

Collation right-pads clips to ``num_frames`` with a validity mask (:func:`stqa.video.pad_clip`) and
questions to the longest one in the batch with their lengths, so nothing downstream treats padding as data.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from stqa import tasks
from stqa.data.tgifqa import QARecord, Vocab, clip_text, find_video_file, tokenize, video_file
from stqa.video.transforms import pad_clip

MAX_QUESTION_LEN = 35  # the official max_sequence_length (longest TGIF-QA question: 31 tokens)


def encode_text(vocab: Vocab, text: str, max_len: int = MAX_QUESTION_LEN) -> list[int]:
    """Token ids of ``text`` (unknown words -> ``<unk>``), truncated to ``max_len``; never empty."""
    ids = vocab.encode(tokenize(text))[:max_len]
    if not ids:
        raise ValueError(f"question {clip_text(text)!r} has no tokens")
    return ids


def encode_question(vocab: Vocab, task: str, question: str, candidates: Sequence[str] = (),
                    max_len: int = MAX_QUESTION_LEN) -> list[list[int]]:
    """Token ids of every text the model reads for one question (one per candidate for multiple choice,
    :meth:`stqa.tasks.TaskSpec.question_texts`)."""
    return [encode_text(vocab, text, max_len) for text in tasks.get(task).question_texts(question, candidates)]


def pack_questions(token_ids: Sequence[Sequence[Sequence[int]]], task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Questions' token ids (per question, per text) -> right-padded ``tokens`` [B, L] ([B, k, L] for
    multiple choice) and ``lengths`` [B] ([B, k]), L the longest text."""
    max_len = max(len(ids) for texts in token_ids for ids in texts)
    k = len(token_ids[0])
    tokens = torch.zeros((len(token_ids), k, max_len), dtype=torch.long)
    lengths = torch.zeros((len(token_ids), k), dtype=torch.long)
    for i, texts in enumerate(token_ids):
        for j, ids in enumerate(texts):
            tokens[i, j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            lengths[i, j] = len(ids)
    if not tasks.get(task).multiple_choice:
        tokens, lengths = tokens[:, 0], lengths[:, 0]
    return tokens, lengths


def answer_target(record: QARecord, answer_vocab: Vocab | None) -> int:
    """The training/evaluation target of a record (:meth:`stqa.tasks.TaskSpec.encode_target`)."""
    return tasks.get(record.task).encode_target(record.answer, answer_vocab)


def check_clips(clips, records: Sequence[QARecord]) -> None:
    """Refuse a clip source (:class:`FeatureClips`, :class:`FrameClips`) that lacks the clip of any of
    ``records``, before any work: one ``ValueError`` line saying how many GIFs are missing and naming a few."""
    missing = clips.missing(records)
    if missing:
        total = len({r.gif_name for r in records})
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise ValueError(f"{clips.source} lacks {len(missing)} of the {total} GIFs this run reads "
                         f"(e.g. {shown})")


def _first_of_each(records: Sequence[QARecord]) -> list[QARecord]:
    """One record per GIF, in order of first appearance."""
    seen: dict[str, QARecord] = {}
    for r in records:
        seen.setdefault(str(r.gif_name), r)
    return list(seen.values())


class FeatureClips:
    """Clips from an HDF5 feature store (:class:`stqa.data.features.FeatureStore`)."""

    kind = "features"

    def __init__(self, store) -> None:
        self.store = store
        self.spec = store.spec
        self.num_frames = int(store.spec.num_frames)
        self.source = f"feature store {store.path}"

    def missing(self, records: Sequence[QARecord]) -> list[str]:
        """The GIFs of ``records`` the store has no clip for (``name (key k)``, each once)."""
        return [f"{r.gif_name} (key {r.key})" for r in _first_of_each(records) if r.key not in self.store]

    def clip(self, record: QARecord) -> torch.Tensor:
        try:
            arr = self.store[int(record.key)]
        except KeyError as err:
            raise KeyError(f"feature store has no clip for key {record.key} ({record.gif_name})") from err
        return torch.from_numpy(np.asarray(arr, dtype=np.float32))

    def preload(self, records: Sequence[QARecord], desc: str = "features") -> None:
        """Nothing to do: HDF5 reads are cheap compared with decoding."""


class _CachedClips:
    """Clips computed from video files once per video and kept in memory (``cache_dtype``), thread-safe.

    Subclasses set ``kind``, ``spec``, ``num_frames`` and ``preload_desc`` and implement ``compute``.
    """

    kind = ""
    preload_desc = "clips"

    def __init__(self, cache: bool = True, cache_dtype: torch.dtype = torch.float16) -> None:
        self._cache: dict[str, torch.Tensor] | None = {} if cache else None
        self._cache_dtype = cache_dtype
        self._lock = threading.Lock()

    def compute(self, record: QARecord) -> torch.Tensor:
        """The clip of ``record``'s video, float32 (uncached)."""
        raise NotImplementedError

    def clip(self, record: QARecord) -> torch.Tensor:
        name = str(record.gif_name)
        if self._cache is not None:
            with self._lock:
                hit = self._cache.get(name)
            if hit is not None:
                return hit.float()
        x = self.compute(record)
        if self._cache is not None:
            with self._lock:
                self._cache[name] = x.to(self._cache_dtype)
        return x

    def preload(self, records: Sequence[QARecord], desc: str | None = None) -> None:
        """Compute every distinct video of ``records`` once (with a progress bar)."""
        from stqa.progress import progress

        for r in progress(_first_of_each(records), desc=desc or self.preload_desc, unit="video", leave=False):
            self.clip(r)


class FrameClips(_CachedClips):
    """Clips decoded from video files ``<videos_dir>/<gif_name>.gif`` (or another of
    :data:`stqa.data.tgifqa.VIDEO_EXTENSIONS`).

    ``spec`` is the model's :class:`~stqa.data.features.FeatureSpec` (num_frames, policy, image_size).
    Thread-safe; decoded clips are cached (float16) so every epoch after the first skips decoding.
    """

    kind = "frames"
    preload_desc = "decoding"

    def __init__(self, videos_dir: str | Path, spec, limits=None, cache: bool = True) -> None:
        super().__init__(cache)
        self.videos_dir = Path(videos_dir)
        if not self.videos_dir.is_dir():
            raise FileNotFoundError(f"videos directory {self.videos_dir} does not exist")
        self.source = f"videos directory {self.videos_dir}"
        self.spec = spec
        self.num_frames = int(spec.num_frames)
        self.limits = limits

    def path_for(self, record: QARecord) -> Path:
        return find_video_file(self.videos_dir, record.gif_name)

    def missing(self, records: Sequence[QARecord]) -> list[str]:
        """The GIFs of ``records`` with no video file (each once)."""
        return [str(r.gif_name) for r in _first_of_each(records) if video_file(self.videos_dir, r.gif_name) is None]

    def load(self, source) -> torch.Tensor:
        """Decode + sample + transform one video: ``[t, 3, S, S]`` float32."""
        from stqa.video import VideoLimits, decode_video, frames_to_tensor

        # shrink_to: frames are resampled to the model's scale while decoding, exactly as the Predictor
        # (stqa.inference) and stqa extract do, so training and serving see the same pixels.
        decoded = decode_video(
            source, self.num_frames, limits=self.limits or VideoLimits(), policy=self.spec.policy,
            shrink_to=int(self.spec.image_size),
        )
        return frames_to_tensor(decoded.frames, int(self.spec.image_size))

    def compute(self, record: QARecord) -> torch.Tensor:
        return self.load(self.path_for(record))


class EncodedClips:
    """Feature maps ``[t, 7, 7, C]`` per video, held in memory (made by
    :func:`stqa.models.encode.encode_clips`); ``spec`` is the frames' spec, whose backbone made them."""

    kind = "features"

    def __init__(self, spec, maps: dict[str, torch.Tensor]) -> None:
        self.spec = spec
        self.num_frames = int(spec.num_frames)
        self._maps = maps

    def clip(self, record: QARecord) -> torch.Tensor:
        try:
            return self._maps[str(record.gif_name)].float()
        except KeyError:
            raise KeyError(f"no encoded clip for {record.gif_name!r}") from None

    def preload(self, records: Sequence[QARecord], desc: str = "features") -> None:
        """Nothing to do: every clip was encoded up front."""


class QADataset(torch.utils.data.Dataset):
    """One task's records, encoded: item = dict(index, tokens, lengths, target, clip)."""

    def __init__(
        self,
        records: Sequence[QARecord],
        task: str,
        word_vocab: Vocab,
        answer_vocab: Vocab | None,
        clips,
        max_question_len: int = MAX_QUESTION_LEN,
    ) -> None:
        bad = [r.qid for r in records if r.task != task]
        if bad:
            raise ValueError(f"records of another task in the {task} dataset: {bad[:3]}")
        self.records = list(records)
        self.task = task
        self.clips = clips
        self.tokens: list[list[list[int]]] = [
            encode_question(word_vocab, task, r.question, r.candidates, max_question_len) for r in self.records
        ]
        self.targets = [answer_target(r, answer_vocab) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def with_clips(self, clips) -> QADataset:
        """The same encoded questions over another clip source."""
        other = copy.copy(self)
        other.clips = clips
        return other

    def __getitem__(self, index: int) -> dict:
        return {
            "index": index,
            "tokens": self.tokens[index],
            "target": self.targets[index],
            "clip": self.clips.clip(self.records[index]),
        }


def collate_text(items: Sequence[dict], task: str) -> dict:
    """Questions of one task: ``tokens`` [B, L] ([B, 5, L] for multiple choice), ``token_lengths``,
    ``target``, ``index``."""
    tokens, lengths = pack_questions([it["tokens"] for it in items], task)
    return {
        "tokens": tokens,
        "token_lengths": lengths,
        "target": torch.tensor([it["target"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }


def collate(items: Sequence[dict], task: str, num_frames: int, clip_kind: str) -> dict:
    """Stack single-task items into a model batch: :func:`collate_text` plus ``frame_mask`` [B, T] and
    ``features`` or ``frames`` (each question with its own clip)."""
    batch = collate_text(items, task)
    clips, masks = zip(*(pad_clip(it["clip"], num_frames) for it in items), strict=True)
    batch["frame_mask"] = torch.stack(masks)
    batch["features" if clip_kind == "features" else "frames"] = torch.stack(clips)
    return batch


def video_groups(datasets: dict[str, QADataset]) -> dict[int, list[tuple[str, int]]]:
    """GIF key -> the (task, item index) of every question about it, over all tasks."""
    groups: dict[int, list[tuple[str, int]]] = {}
    for task in sorted(datasets):
        for i, r in enumerate(datasets[task].records):
            groups.setdefault(int(r.key), []).append((task, i))
    return groups


def training_schedule(
    groups: dict[int, list[tuple[str, int]]], batch_size: int, seed: int, epoch: int, world_size: int = 1
) -> list[list[int]]:
    """The epoch's steps as lists of GIF keys: keys shuffled, then cut so each step holds about
    ``batch_size`` questions (all tasks together; a video's questions are never split, so its clip is
    encoded once per step). Deterministic in (seed, epoch) and the same on every rank; rank r trains on
    ``keys[r::world_size]``. A last step with fewer keys than ``world_size`` is dropped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    keys = sorted(groups)
    order = [keys[i] for i in torch.randperm(len(keys), generator=gen).tolist()]
    steps: list[list[int]] = []
    current: list[int] = []
    n_questions = 0
    for key in order:
        current.append(key)
        n_questions += len(groups[key])
        if n_questions >= batch_size:
            steps.append(current)
            current, n_questions = [], 0
    if len(current) >= world_size and current:
        steps.append(current)
    return steps


def make_step_batch(datasets: dict[str, QADataset], groups: dict[int, list[tuple[str, int]]],
                    keys: Sequence[int]) -> dict:
    """A multi-task batch for :meth:`stqa.models.stvqa.STVQA.forward_tasks`: one padded clip per key
    (``frames`` or ``features`` [V, T, ...], ``frame_mask`` [V, T]) and per task ``tokens``,
    ``token_lengths``, ``clip_index`` (row of its clip) and ``target``."""
    any_ds = next(iter(datasets.values()))
    clips, masks = [], []
    per_task: dict[str, list[tuple[int, dict]]] = {}
    for row, key in enumerate(keys):
        members = groups[key]
        task0, i0 = members[0]
        clip, mask = pad_clip(any_ds.clips.clip(datasets[task0].records[i0]), any_ds.clips.num_frames)
        clips.append(clip)
        masks.append(mask)
        for task, i in members:
            per_task.setdefault(task, []).append((row, _item(datasets[task], i)))
    inputs, targets = {}, {}
    for task, rows in per_task.items():
        sub = collate_text([it for _, it in rows], task)
        sub["clip_index"] = torch.tensor([row for row, _ in rows], dtype=torch.long)
        targets[task] = sub.pop("target")
        inputs[task] = sub
    batch = {"inputs": inputs, "targets": targets, "frame_mask": torch.stack(masks)}
    batch["features" if any_ds.clips.kind == "features" else "frames"] = torch.stack(clips)
    return batch


def _item(dataset: QADataset, index: int) -> dict:
    """An item without its clip (the step batch loads each clip once)."""
    return {"index": index, "tokens": dataset.tokens[index], "target": dataset.targets[index]}


def evaluation_batches(size: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[list[int]]:
    """This rank's share of ``range(size)`` in batches: a strided shard without padding, so over all
    ranks every item appears exactly once."""
    mine = list(range(rank, size, world_size))
    for start in range(0, len(mine), batch_size):
        yield mine[start : start + batch_size]


def make_batch(dataset: QADataset, indices: Sequence[int]) -> dict:
    """Collate ``dataset[indices]`` into a model batch."""
    return collate([dataset[i] for i in indices], dataset.task, dataset.clips.num_frames, dataset.clips.kind)


def model_inputs(batch: dict, device: torch.device | str) -> dict:
    """The keyword arguments of :meth:`stqa.models.stvqa.STVQA.forward` from a collated batch."""
    out = {k: batch[k].to(device) for k in ("tokens", "token_lengths", "frame_mask")}
    for k in ("features", "frames"):
        if k in batch:
            out[k] = batch[k].to(device)
    return out
