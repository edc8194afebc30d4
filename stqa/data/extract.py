"""``stqa extract``: decode every GIF the annotations reference, sample T frames, write backbone maps.

Each GIF is decoded once (``<videos>/<gif_name>.gif``, or .mp4/.webm/.avi/... if that is what is
there; frames resampled to the backbone's input scale while decoding, ``shrink_to``, as the server and
training on frames do), sampled with :func:`stqa.video.sampling.sample_indices`, transformed with
:func:`stqa.video.transforms.frames_to_tensor` and run through the backbone; the maps of its real
frames are stored under its TGIF ``key`` (:mod:`stqa.data.features`). Decoding runs in a small
thread pool ahead of the backbone. With ``--motion`` a motion backbone (:mod:`stqa.models.motion`) also
maps the 16-frame clip centred on each sampled frame, and its channels follow the appearance channels.
The run is resumable: keys already in ``--out`` are skipped,
and a file written with other settings is refused. Videos that cannot be read are listed in
``<out>.failures.jsonl`` and make the exit status 1; nothing is ever written for them. A ``--videos``
folder holding none of the annotated GIFs is refused before the output file is created. The first line
says which backbone weights are used (given, or the bundled model's for ``tiny``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stqa.checkpoint import FeatureSpec
from stqa.data import tgifqa
from stqa.data.features import FeatureWriter
from stqa.models.backbone import BACKBONES, Backbone, build_backbone
from stqa.models.motion import MOTION_BACKBONES, MotionBackbone, build_motion_backbone, extract_motion
from stqa.progress import progress
from stqa.video.decode import VideoError, VideoLimits, decode_video
from stqa.video.sampling import POLICIES, sample_indices
from stqa.video.transforms import frames_to_tensor

SPLIT_CHOICES = {"test": ("test",), "train": ("train",), "all": ("train", "test")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", required=True, type=Path, help="folder with <gif_name>.gif files")
    parser.add_argument("--annotations", required=True, type=Path,
                        help="folder with the official {Train,Test}_<task>_question.csv files")
    parser.add_argument("--backbone", required=True, choices=sorted(BACKBONES))
    parser.add_argument("--weights", type=Path, default=None,
                        help="local state_dict (.pth / .safetensors) of the backbone, or a stqa checkpoint "
                             "directory trained end to end (its backbone is used); default for tiny: the "
                             "bundled model's trained backbone; nothing is downloaded")
    parser.add_argument("--motion", choices=sorted(MOTION_BACKBONES), default=None,
                        help="also extract a motion stream (ST-VQA's appearance + motion input): its 7x7 maps "
                             "from 16-frame clips centred on the sampled frames are stored after the appearance "
                             "channels (docs/data.md, 'Motion stream')")
    parser.add_argument("--motion-weights", type=Path, default=None,
                        help="local state_dict of the --motion backbone (torchvision's Kinetics-400 "
                             "r2plus1d_18 .pth, or the Sports-1M c3d.pickle); required with --motion")
    parser.add_argument("--out", required=True, type=Path, help="HDF5 feature file (created or resumed)")
    parser.add_argument("--fp16", action="store_true", help="store float16 instead of float32")
    parser.add_argument("--frames", type=int, default=35, help="T: frames sampled per GIF (default 35)")
    parser.add_argument("--policy", choices=POLICIES, default="uniform", help="frame sampling policy")
    parser.add_argument("--batch-size", type=int, default=64, help="frames per backbone forward (default 64)")
    parser.add_argument("--device", default="cpu", help="torch device for the backbone (default cpu)")
    parser.add_argument("--tasks", nargs="+", choices=tgifqa.TASKS, default=list(tgifqa.TASKS),
                        help="which tasks' annotation files to collect GIFs from (default all)")
    parser.add_argument("--split", choices=sorted(SPLIT_CHOICES), default="all",
                        help="annotation split(s) to collect GIFs from (default all = train + test)")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N GIFs (by key); for trials")


@dataclass(frozen=True)
class GifRef:
    key: int
    gif_name: str


def collect_gifs(annotations: Path, tasks: list[str], splits: tuple[str, ...]) -> tuple[list[GifRef], list[str]]:
    """Unique GIFs referenced by the annotation files present; also the file names that were read."""
    names: dict[int, str] = {}
    used: list[str] = []
    for task in tasks:
        for split in splits:
            path = annotations / tgifqa.annotation_filename(task, split)
            if not path.is_file():
                continue
            used.append(path.name)
            for record in tgifqa.load(annotations, task, split):
                previous = names.setdefault(record.key, record.gif_name)
                if previous != record.gif_name:
                    raise ValueError(f"{path}: key {record.key} is {record.gif_name!r} here but {previous!r} "
                                     f"in another file")
    return [GifRef(k, names[k]) for k in sorted(names)], used


@dataclass
class Prepared:
    ref: GifRef
    frames: torch.Tensor | None = None  # [t, 3, S, S]
    n_frames: int = 0
    indices: np.ndarray | None = None
    error: BaseException | None = None
    all_frames: np.ndarray | None = None  # every decoded frame, uint8 [n, H, W, 3] (motion stream only)


def _prepare(ref: GifRef, videos: Path, num_frames: int, policy: str, size: int, limits: VideoLimits,
             motion: bool = False) -> Prepared:
    """Decode one GIF, frames resampled to the appearance input scale while decoding (``shrink_to``, as
    training on frames and the server do). With ``motion`` every frame is kept, since each sampled frame's
    clip needs its neighbours; the sampled ones are then picked with the same rule (``sample_indices``)."""
    try:
        path = tgifqa.find_video_file(videos, ref.gif_name)
        if not motion:
            video = decode_video(path, num_frames, limits=limits, policy=policy, shrink_to=size)
            return Prepared(ref, frames_to_tensor(video.frames, size), video.n_frames, video.indices)
        video = decode_video(path, None, limits=limits, policy=policy, shrink_to=size)
        indices = sample_indices(video.n_frames, num_frames, policy)
        return Prepared(ref, frames_to_tensor(video.frames[indices], size), video.n_frames, indices,
                        all_frames=video.frames)
    except (OSError, VideoError, ValueError) as exc:
        return Prepared(ref, error=exc)


def _prefetch(pool: ThreadPoolExecutor, refs: list[GifRef], depth: int, fn) -> Iterator[Prepared]:
    """Results of ``fn(ref)`` in order, keeping at most ``depth`` decodes in flight."""
    pending: list[Future] = []
    it = iter(refs)
    for ref in it:
        pending.append(pool.submit(fn, ref))
        if len(pending) >= depth:
            break
    while pending:
        done = pending.pop(0).result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(fn, nxt))
        yield done


def _bundled_backbone(name: str) -> Path | None:
    """The bundled model's directory when its end-to-end trained backbone is ``name``, else None."""
    from stqa.checkpoint import BUNDLED_MODEL, read_config

    try:
        config = read_config(BUNDLED_MODEL)
    except (OSError, ValueError):
        return None
    return BUNDLED_MODEL if config.get("model", {}).get("backbone") == name else None


def _backbones(args: argparse.Namespace) -> tuple[Backbone, MotionBackbone | None, str]:
    """The appearance backbone, the motion backbone (or None) and one line saying which weights each has.
    Bad options and unreadable weights are one-line errors (``SystemExit``, ``ValueError``, ``OSError``)."""
    weights, origin = args.weights, "given"
    if weights is None:
        weights, origin = _bundled_backbone(args.backbone), "the bundled model's trained backbone"
    if weights is None:
        # Random-init features would differ on every run (and across a resumed file): meaningless.
        raise SystemExit(f"error: --weights PATH is required ({args.backbone} with random weights gives features "
                         "that are neither meaningful nor reproducible); nothing is downloaded")
    backbone = build_backbone(args.backbone, weights)
    said = f"{args.backbone} weights: {weights} ({origin})"
    if args.motion_weights is not None and args.motion is None:
        raise SystemExit("error: --motion-weights needs --motion (r2plus1d_18 or c3d)")
    if args.motion is None:
        return backbone, None, said
    if args.motion_weights is None:
        raise SystemExit(f"error: --motion {args.motion} needs --motion-weights PATH (a local state_dict; "
                         "nothing is downloaded)")
    motion = build_motion_backbone(args.motion, args.motion_weights)
    return backbone, motion, f"{said}; {args.motion} motion weights: {args.motion_weights} (given)"


def run(args: argparse.Namespace) -> int:
    for name in ("frames", "batch_size", "workers"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1")
    if not args.videos.is_dir():
        raise SystemExit(f"error: --videos {args.videos} is not a folder")
    refs, used = collect_gifs(args.annotations, args.tasks, SPLIT_CHOICES[args.split])
    if not used:
        wanted = [tgifqa.annotation_filename(t, s) for t in args.tasks for s in SPLIT_CHOICES[args.split]]
        raise SystemExit(f"error: no annotation files in {args.annotations} (looked for {', '.join(wanted)})")
    if args.limit is not None:
        refs = refs[: max(args.limit, 0)]
    # Before the output file exists: a wrong --videos would otherwise be one failure per GIF and an empty store.
    absent = {r.key for r in refs if tgifqa.video_file(args.videos, r.gif_name) is None}
    if refs and len(absent) == len(refs):
        raise SystemExit(f"error: none of the {len(refs)} GIFs named in the annotations is in {args.videos}")

    backbone, motion, weights_line = _backbones(args)
    print(f"stqa extract: {weights_line}", file=sys.stderr)
    device = torch.device(args.device)
    backbone = backbone.to(device).eval()
    if motion is not None:
        motion = motion.to(device).eval()
    motion_channels = int(motion.out_channels) if motion is not None else 0
    spec = FeatureSpec(backbone=backbone.name, channels=backbone.out_channels + motion_channels,
                       num_frames=args.frames, policy=args.policy, image_size=backbone.input_size,
                       motion_backbone=motion.name if motion is not None else None, motion_channels=motion_channels)
    writer = FeatureWriter(args.out, spec, backbone.weights_hash, dtype="float16" if args.fp16 else "float32",
                           motion_weights_hash=motion.weights_hash if motion is not None else None)

    failures_path = Path(f"{args.out}.failures.jsonl")
    limits = VideoLimits()
    failures = 0
    written = 0
    with writer, open(failures_path, "w", encoding="utf-8") as failures_file:
        done = writer.done_keys()
        todo = [r for r in refs if r.key not in done]
        missing = sum(r.key in absent for r in todo)
        print(f"stqa extract: {len(refs)} GIFs from {', '.join(used)}; {len(refs) - len(todo)} already in "
              f"{args.out}, {len(todo)} to do" + (f" ({missing} without a video in {args.videos})" if missing else ""),
              file=sys.stderr)

        def prepare(ref: GifRef) -> Prepared:
            return _prepare(ref, args.videos, args.frames, args.policy, backbone.input_size, limits,
                            motion=motion is not None)

        batch: list[Prepared] = []

        def flush_batch() -> None:
            nonlocal written
            if not batch:
                return
            x = torch.cat([p.frames for p in batch]).to(device)
            outs = []
            with torch.inference_mode():
                for start in range(0, len(x), args.batch_size):
                    outs.append(backbone(x[start:start + args.batch_size]).float().cpu())
            maps = torch.cat(outs).numpy()
            offset = 0
            for p in batch:
                t = len(p.indices)
                features = maps[offset:offset + t]
                if motion is not None:
                    # Appearance channels first, then motion: row i of both describes sampled frame i.
                    moving = extract_motion(motion, p.all_frames, p.indices, device=device).numpy()
                    features = np.concatenate([features, moving], axis=-1)
                writer.write(p.ref.key, features, gif_name=p.ref.gif_name,
                             n_frames=p.n_frames, indices=p.indices)
                offset += t
                written += 1
            writer.flush()
            batch.clear()

        with ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="decode") as pool:
            bar = progress(_prefetch(pool, todo, 2 * args.workers, prepare), total=len(todo), unit="gif",
                           desc="extract")
            for prepared in bar:
                if prepared.error is not None:
                    failures += 1
                    exc = prepared.error
                    failures_file.write(json.dumps({"key": prepared.ref.key, "gif_name": prepared.ref.gif_name,
                                                    "error": type(exc).__name__, "message": str(exc)}) + "\n")
                    failures_file.flush()
                    bar.set_postfix(failed=failures)
                    continue
                batch.append(prepared)
                if sum(len(p.indices) for p in batch) >= args.batch_size:
                    flush_batch()
            flush_batch()

    streams = backbone.name + (f" + {motion.name} motion" if motion is not None else "")
    print(f"stqa extract: wrote {written} GIFs to {args.out} ({streams}, C={spec.channels}, T={args.frames}, "
          f"{'float16' if args.fp16 else 'float32'})", file=sys.stderr)
    if failures:
        print(f"stqa extract: {failures} GIFs failed ({missing} without a video in {args.videos}); see "
              f"{failures_path}", file=sys.stderr)
        return 1
    if failures_path.exists() and os.path.getsize(failures_path) == 0:
        failures_path.unlink()
    return 0
