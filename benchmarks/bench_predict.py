"""In-process serving path: ``Predictor.prepare_video`` and ``Predictor.predict`` per request vs batch size.

What the server's decode pool and model thread each cost per request, without gRPC or a load generator,
and what batching does to it: the backbone in cache-sized chunks (the default) vs the whole batch in one
call, and BatchNorm folded into the convolutions (the Predictor's default) vs kept. Requests cycle through
synthetic GIFs and the four tasks. Medians of ``--repeats`` runs; ratios are against the unchunked,
unfolded baseline measured in the same run.

    python benchmarks/bench_predict.py [--checkpoint DIR] [--threads 2] [--batch-sizes 1 4 8 16 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATES = ["jump", "blink", "grow", "shrink", "shake"]
QUESTIONS = [
    ("count", "how many times does the red circle jump ?", []),
    ("action", "what does the red circle do 3 times ?", CANDIDATES),
    ("transition", "what does the red circle do after it jumps ?", CANDIDATES),
    ("frameqa", "what shape is blinking ?", []),
]


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--videos", type=int, default=32, help="synthetic GIFs to cycle through")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "predict_cpu", help="output stem (.json, .md)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from stqa.data.synth import generate
    from stqa.inference import Predictor, Query

    predictor = Predictor.load(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), args.videos, seed=11)
        data = [p.read_bytes() for p in sorted(Path(tmp, "gifs").glob("*.gif"))]
    videos = [predictor.prepare_video(d) for d in data]
    prepare_ms = statistics.median(
        [median_ms(lambda d=d: predictor.prepare_video(d), 1) for d in data[: min(len(data), 16)]]
    )

    # Baseline: the model as the checkpoint loads it, BatchNorm kept, the backbone on the whole batch at once.
    from stqa.checkpoint import load_checkpoint
    from stqa.inference import BUNDLED_MODEL, model_from_checkpoint

    folded_backbone = predictor.model.backbone
    unfolded, *_ = model_from_checkpoint(load_checkpoint(args.checkpoint or BUNDLED_MODEL))
    configs = {
        "whole batch, BN kept (before)": (unfolded.backbone, 10**9),
        "chunked, BN kept": (unfolded.backbone, type(folded_backbone).cpu_inference_chunk),
        "chunked, BN folded (default)": (folded_backbone, type(folded_backbone).cpu_inference_chunk),
    }
    # Backbone arithmetic per clip (all frames real): what batching cannot share between requests.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        folded_backbone(videos[0].frames[videos[0].mask].contiguous(memory_format=torch.channels_last))
    clip_flops = counter.get_total_flops()
    rows = []
    for b in args.batch_sizes:
        queries = [Query(task=QUESTIONS[i % 4][0], question=QUESTIONS[i % 4][1], candidates=QUESTIONS[i % 4][2],
                         video=videos[i % len(videos)]) for i in range(b)]
        row: dict = {"batch": b}
        for name, (backbone, chunk) in configs.items():
            predictor.model.backbone = backbone
            backbone.cpu_inference_chunk = chunk
            row[name] = round(median_ms(lambda q=queries: predictor.predict(q), args.repeats) / b, 2)
        for backbone in (unfolded.backbone, folded_backbone):
            del backbone.cpu_inference_chunk  # back to the class default
        # The default path split into its two stages: the backbone (per frame, compute-bound) and the rest.
        stages = []
        for _ in range(args.repeats):
            timings: dict[str, float] = {}
            predictor.predict(queries, timings=timings)
            stages.append(timings)
        row["backbone ms/request"] = round(1e3 * statistics.median(t["features"] for t in stages) / b, 2)
        row["rest ms/request"] = round(1e3 * statistics.median(t["model"] for t in stages) / b, 2)
        row["backbone GFLOP/s"] = round(clip_flops / (1e6 * row["backbone ms/request"]), 1)
        rows.append(row)
        print(row, flush=True)

    report = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg()},
        "model": predictor.model_version,
        "prepare_video_ms": round(prepare_ms, 2),
        "backbone_gflop_per_clip": round(clip_flops / 1e9, 3),
        "predict_ms_per_request": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    names = list(configs)
    lines = [
        "# Predictor per request (in process)",
        "",
        f"- date (UTC): {report['date_utc']}; {report['machine']['cpus']} CPUs, torch {report['machine']['torch']} "
        f"({report['machine']['torch_threads']} threads), load {tuple(round(x, 2) for x in report['machine']['load_avg'])}",
        f"- model: {report['model']}; prepare_video (decode + sample + transform): {report['prepare_video_ms']} ms per "
        "video (median)",
        f"- command: `python benchmarks/bench_predict.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        f"- backbone arithmetic: {report['backbone_gflop_per_clip']} GFLOP per clip "
        f"({int(videos[0].mask.sum())} frames)",
        "",
        "| batch | " + " | ".join(f"{n} ms/request" for n in names) + " | default vs before "
        "| default: backbone ms/request | default: rest ms/request | backbone GFLOP/s |",
        "|---:|" + "---:|" * (len(names) + 4),
    ]
    for row in rows:
        lines.append(f"| {row['batch']} | " + " | ".join(str(row[n]) for n in names)
                     + f" | {row[names[0]] / row[names[-1]]:.2f}× | {row['backbone ms/request']} "
                     f"| {row['rest ms/request']} | {row['backbone GFLOP/s']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
