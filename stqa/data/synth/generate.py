"""Writing a synthetic set: the GIFs, the TGIF-QA annotation files (through :func:`stqa.data.tgifqa.write`)
and ``synth.json``, which records how the set was made; reading ``synth.json`` back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stqa.data import tgifqa
from stqa.data.synth.render import FRAME_DURATION_MS, render_frames, write_gif
from stqa.data.synth.scenes import (
    ACTIONS,
    ACTIVE_FRAMES,
    COLORS,
    FORMAT_VERSION,
    NUMBER_WORDS,
    REST_FRAMES,
    SHAPES,
    ZONE_NAMES,
    SynthConfig,
    gif_name_for,
    sample_video,
)
from stqa.tasks import TASK_NAMES
from stqa.tasks import get as get_task

SPLITS: tuple[str, ...] = ("train", "test")  # the splits a set has (tgifqa's names); every video is in one
# Rendering and GIF encoding, one core: 2,000 videos took 30-50 s on the 2-core VM (docs/synthetic.md).
SECONDS_PER_VIDEO = 0.02


def plan(out_dir: str | Path, n_videos: int, seed: int, write_gifs: bool = True) -> str:
    """What :func:`generate` is about to do, in one line: how many videos, where, and roughly how long
    (printed before it starts, since a large set takes minutes)."""
    what = f"{n_videos:,} videos" if write_gifs else f"the questions of {n_videos:,} videos (no GIFs)"
    seconds = n_videos * SECONDS_PER_VIDEO if write_gifs else 0.0
    took = f"about {round(seconds / 60)} min" if seconds >= 90 else "under 2 min"
    return f"generating {what} (seed {seed}) in {out_dir}, {took}"


def synth_command(out_dir: str | Path, n_videos: int, seed: int) -> str:
    """The ``stqa synth`` command line that generates this set."""
    return f"stqa synth --out {out_dir} --videos {n_videos} --seed {seed}"


def test_indices(seed: int, n_videos: int, test_fraction: float) -> set[int]:
    """The video indices a ``generate(seed, n_videos, test_fraction)`` set puts in its test split (the rest
    are train, which training splits again into train and validation)."""
    n_test = min(n_videos - 1, max(1, round(n_videos * test_fraction)))
    perm = np.random.default_rng(np.random.SeedSequence([seed, 2**31 - 1])).permutation(n_videos)
    return set(perm[:n_test].tolist())


def generate(
    out_dir: str | Path,
    n_videos: int,
    seed: int,
    *,
    size: int = 112,
    min_frames: int = 16,
    max_frames: int = 48,
    max_count: int = 6,
    test_fraction: float = 0.2,
    write_gifs: bool = True,
    progress: bool = False,
    announce: Callable[[str], None] | None = None,
) -> dict:
    """Render ``n_videos`` GIFs and write the TGIF-QA annotation files into ``out_dir``.

    Deterministic: the same arguments give byte-identical files. ``write_gifs=False`` writes only the
    annotations (same questions and answers; useful for leakage checks on many videos). Once the arguments
    are checked, ``announce`` gets the :func:`plan` line (a large set takes minutes). Returns the contents
    of ``synth.json``.
    """
    cfg = SynthConfig(size, min_frames, max_frames, max_count, test_fraction)
    cfg.validate()
    if n_videos < 2:
        raise ValueError(f"n_videos must be >= 2 (a Train and a Test video), got {n_videos}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gif_dir = out / "gifs"
    if gif_dir.is_dir():
        # GIFs of an earlier, different run would sit next to the new annotations unnoticed.
        planned = {f"{gif_name_for(seed, i)}.gif" for i in range(n_videos)}
        stale = sorted(p.name for p in gif_dir.glob("*.gif") if p.name not in planned)
        if stale:
            raise ValueError(
                f"{gif_dir} holds {len(stale)} GIF(s) of another run (e.g. {stale[0]}); use an empty or new --out"
            )
    if announce is not None:
        announce(plan(out, n_videos, seed, write_gifs))
    if write_gifs:
        gif_dir.mkdir(exist_ok=True)

    test_ids = test_indices(seed, n_videos, test_fraction)
    n_test = len(test_ids)

    rows: dict[str, dict[str, list[dict[str, str]]]] = {s: {t: [] for t in TASK_NAMES} for s in SPLITS}
    counters = dict.fromkeys(TASK_NAMES, 0)
    frame_counts: list[int] = []
    iterator = range(n_videos)
    if progress:
        from stqa.progress import progress as progress_bar  # tqdm loads only when a bar is shown

        iterator = progress_bar(iterator, desc="synth", unit="video")
    for index in iterator:
        scene, questions = sample_video(seed, index, cfg)
        gif_name = gif_name_for(seed, index)
        key = str(index + 1)
        split = "test" if index in test_ids else "train"
        frame_counts.append(scene.n_frames)
        if write_gifs:
            write_gif(render_frames(scene, size), gif_dir / f"{gif_name}.gif")
        for q in questions:
            counters[q.task] += 1
            vid_id = f"{get_task(q.task).vid_id_prefix}{counters[q.task]}"
            rows[split][q.task].append({**q.fields, "gif_name": gif_name, "key": key, "vid_id": vid_id})

    for split in SPLITS:
        for task in TASK_NAMES:
            tgifqa.write(out, task, split, rows[split][task])

    meta = {
        "generator": "stqa synth",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "n_videos": n_videos,
        "size": size,
        "min_frames": min_frames,
        "max_frames": max_frames,
        "max_count": max_count,
        "test_fraction": test_fraction,
        "gifs_written": write_gifs,
        "frame_duration_ms": FRAME_DURATION_MS,
        "frames_per_event": {"active": ACTIVE_FRAMES, "rest": REST_FRAMES},
        "min_num_frames_for_sampling": max_frames // 2 + 1,
        "frame_count_range": [min(frame_counts), max(frame_counts)],
        # synth.json names the splits as the file names do: "Train", "Test"
        "videos": {tgifqa.split_prefix(s): (n_test if s == "test" else n_videos - n_test) for s in SPLITS},
        "questions": {tgifqa.split_prefix(s): {t: len(rows[s][t]) for t in TASK_NAMES} for s in SPLITS},
        "vocabulary": {
            "shapes": list(SHAPES),
            "colors": {k: list(v) for k, v in COLORS.items()},
            "actions": list(ACTIONS),
            "locations": list(ZONE_NAMES),
            "numbers": list(NUMBER_WORDS),
            "frameqa_types": list(tgifqa.FRAMEQA_TYPES),
        },
    }
    (out / "synth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def read_meta(root: str | Path) -> dict:
    """The ``synth.json`` of a generated set, checked to come from this generator's format.

    A set from another format has other scenes and questions, so nothing may be rendered or trained from it.
    """
    path = Path(root) / "synth.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root} has no synth.json, so it is not a `stqa synth` set")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    found = meta.get("format_version") if isinstance(meta, dict) else None
    if found != FORMAT_VERSION:
        raise ValueError(f"{root} holds synthetic format {found} but this stqa generates format {FORMAT_VERSION}")
    return meta


def config_from_meta(meta: dict) -> SynthConfig:
    """The :class:`SynthConfig` a ``synth.json`` was generated with."""
    try:
        return SynthConfig(size=int(meta["size"]), min_frames=int(meta["min_frames"]),
                           max_frames=int(meta["max_frames"]), max_count=int(meta["max_count"]),
                           test_fraction=float(meta["test_fraction"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"synth.json lacks a generation parameter: {err}") from err
