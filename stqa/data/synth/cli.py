"""``stqa synth``: its options and entry point (generation here, ``--check`` in :mod:`stqa.data.leakage`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stqa.data.leakage import run_check
from stqa.data.synth.generate import generate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stqa synth``."""
    parser.add_argument("--out", type=Path, help="output directory (GIFs under OUT/gifs, CSVs, synth.json)")
    parser.add_argument("--videos", type=int, default=2000, help="number of videos to render (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed = byte-identical output")
    parser.add_argument("--size", type=int, default=112, help="frame width = height in pixels, 64..112")
    parser.add_argument("--min-frames", type=int, default=16)
    parser.add_argument("--max-frames", type=int, default=48)
    parser.add_argument("--max-count", type=int, default=6,
                        help="largest repetition count asked about, 2..10 (TGIF-QA's count range; default 6)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of videos in Test")
    parser.add_argument(
        "--no-gifs", action="store_true", help="write the annotations only (for leakage studies on many videos)"
    )
    parser.add_argument(
        "--check",
        type=Path,
        metavar="DIR",
        help="instead of generating: report answer distributions and blind baselines for the TGIF-QA files in "
        "DIR (synthetic or real); exit 1 if a text-only model is far above chance",
    )
    parser.add_argument("--json", type=Path, help="with --check: also write the report as JSON to this path")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``stqa synth``."""
    if args.check is not None:
        return run_check(args.check, seed=args.seed, json_path=args.json)
    if args.out is None:
        print("stqa synth: --out DIR is required (or --check DIR)", file=sys.stderr)
        return 2
    try:
        meta = generate(
            args.out,
            args.videos,
            args.seed,
            size=args.size,
            min_frames=args.min_frames,
            max_frames=args.max_frames,
            max_count=args.max_count,
            test_fraction=args.test_fraction,
            write_gifs=not args.no_gifs,
            progress=sys.stderr.isatty(),
            announce=lambda line: print(f"stqa synth: {line}", file=sys.stderr),
        )
    except ValueError as e:
        print(f"stqa synth: {e}", file=sys.stderr)
        return 2
    q = meta["questions"]
    print(
        f"wrote {meta['n_videos']} videos ({meta['videos']['Train']} train / {meta['videos']['Test']} test) to "
        f"{args.out}; questions train {q['Train']}, test {q['Test']}; frames {meta['frame_count_range']}"
    )
    return 0
