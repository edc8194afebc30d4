"""Training throughput of ST-VQA (sptp) at TGIF-QA shapes: fused vs reference attention op.

    python benchmarks/bench_train.py                      # CPU, B=64, T=35, 7x7x3072, hidden 512
    python benchmarks/bench_train.py --device cuda --steps 20

Times full optimisation steps (forward, loss, backward, grad clip, Adam) and inference forwards on random
inputs of the TGIF-QA shapes, for each attention implementation in the same process and on the same
model weights; reports medians, steps/s and QA/s, and the fused/reference speed-up. Writes
benchmarks/results/train_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from stqa.models.stvqa import STVQA, ModelConfig, task_loss

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(args, device: torch.device, vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    b, t = args.batch_size, args.frames
    lengths = torch.randint(5, 13, (b,), generator=g)  # TGIF-QA questions: ~9 tokens
    tokens = torch.randint(2, vocab, (b, 12), generator=g)
    tokens = tokens.masked_fill(torch.arange(12)[None] >= lengths[:, None], 0)
    n_frames = torch.randint(max(1, t // 2), t + 1, (b,), generator=g)
    n_frames[0] = t
    mask = torch.arange(t)[None] < n_frames[:, None]
    feats = torch.randn(b, t, 7, 7, args.channels, generator=g) * mask[..., None, None, None]
    if args.task == "frameqa":
        target = torch.randint(2, args.answers, (b,), generator=g)
    elif args.task == "count":
        target = torch.randint(0, 11, (b,), generator=g)
    else:
        target = torch.randint(0, 5, (b,), generator=g)
        tokens = tokens[:, None].expand(b, 5, 12).contiguous()
        lengths = lengths[:, None].expand(b, 5).contiguous()
    return {k: v.to(device) for k, v in dict(tokens=tokens, token_lengths=lengths, frame_mask=mask,
                                                 features=feats, target=target).items()}


def bench_impl(model: STVQA, impl: str, batch: dict, args, device: torch.device) -> dict:
    for m in (model.spatial_attention, model.temporal_attention):
        m.impl = impl
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs = {k: batch[k] for k in ("tokens", "token_lengths", "frame_mask", "features")}
    step_times, step_cpu = [], []
    model.train()
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = model(args.task, **inputs)
        loss = task_loss(args.task, out.scores, batch["target"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        _sync(device)
        if i >= args.warmup:
            step_times.append(time.perf_counter() - t0)
            step_cpu.append(time.process_time() - c0)
        print(f"  {impl} train step {i + 1}/{args.warmup + args.steps}: {time.perf_counter() - t0:.3f}s wall, "
              f"{time.process_time() - c0:.3f}s cpu", file=sys.stderr)
    fwd_times, fwd_cpu = [], []
    model.eval()
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            model(args.task, **inputs)
            _sync(device)
            if i >= args.warmup:
                fwd_times.append(time.perf_counter() - t0)
                fwd_cpu.append(time.process_time() - c0)
    # On a shared CPU the wall clock includes time other processes held the cores; the process CPU time
    # (all threads of this process) does not, so with one thread it is the better measure of the work done.
    # On CUDA only the wall clock is meaningful.
    wall = {"train_step_wall_s_all": step_times, "inference_forward_wall_s_all": fwd_times,
            "train_step_cpu_s_all": step_cpu, "inference_forward_cpu_s_all": fwd_cpu}
    if device.type == "cpu" and args.clock == "cpu":
        step_times, fwd_times = step_cpu, fwd_cpu
    step, fwd = statistics.median(step_times), statistics.median(fwd_times)
    return {
        "train_step_s_median": step,
        "train_steps_per_s": 1.0 / step,
        "train_qa_per_s": args.batch_size / step,
        "inference_forward_s_median": fwd,
        "inference_qa_per_s": args.batch_size / fwd,
        **wall,
    }


def machine_info(device: torch.device) -> dict:
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--frames", type=int, default=35)
    p.add_argument("--channels", type=int, default=3072)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--task", default="frameqa", choices=["count", "action", "transition", "frameqa"])
    p.add_argument("--answers", type=int, default=1748, help="FrameQA classes incl. <pad>/<unk>")
    p.add_argument("--steps", type=int, default=3, help="timed steps per implementation (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--impls", default="fused,reference")
    p.add_argument("--clock", choices=["wall", "cpu"], default="cpu",
                   help="CPU runs: time by process CPU time (default; robust to other load) or wall clock")
    p.add_argument("--out", type=Path, help="output stem (default benchmarks/results/train_<device>)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    vocab = 4000
    torch.manual_seed(0)
    cfg = ModelConfig(variant="sptp", tasks=[args.task], vocab_size=vocab, feature_dim=args.channels,
                      num_answers=args.answers if args.task == "frameqa" else 0, embed_dim=300,
                      hidden_dim=args.hidden, att_hidden_dim=512, dropout=0.2)
    machine = machine_info(device)  # load average before the run
    model = STVQA(cfg).to(device)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    batch = make_batch(args, device, vocab)
    results = {}
    for impl in args.impls.split(","):
        model.load_state_dict(initial)  # same weights for every implementation
        results[impl] = bench_impl(model, impl, batch, args, device)
    report = {
        "benchmark": "stqa train step, ST-VQA sptp",
        "shapes": {"batch": args.batch_size, "frames": args.frames, "grid": "7x7", "channels": args.channels,
                   "hidden": args.hidden, "task": args.task, "answers": args.answers},
        "steps": args.steps, "warmup": args.warmup, "device": str(device),
        "clock": args.clock if device.type == "cpu" else "wall",
        "machine": machine,
        "results": results,
    }
    if "fused" in results and "reference" in results:
        report["speedup_fused_vs_reference"] = {
            "train": results["reference"]["train_step_s_median"] / results["fused"]["train_step_s_median"],
            "inference": results["reference"]["inference_forward_s_median"] / results["fused"]["inference_forward_s_median"],
        }
    stem = args.out or RESULTS / f"train_{device.type}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# ST-VQA sptp training throughput ({device.type})",
        "",
        f"B={args.batch_size}, T={args.frames}, 7x7x{args.channels}, hidden {args.hidden}, task {args.task}; "
        f"median of {args.steps} steps after {args.warmup} warm-up; clock: {report['clock']}"
        f"{' (process CPU time)' if report['clock'] == 'cpu' else ''}.",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpu_count']} CPUs, torch "
        f"{report['machine']['torch']} ({report['machine']['torch_threads']} threads), load {report['machine']['loadavg_1m_at_start']}, "
        f"{report['machine']['date_utc']}, commit {report['machine']['git_commit']}.",
        "",
        "| attention op | train step (s) | train steps/s | train QA/s | inference QA/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for impl, r in results.items():
        lines.append(f"| {impl} | {r['train_step_s_median']:.3f} | {r['train_steps_per_s']:.3f} | "
                     f"{r['train_qa_per_s']:.1f} | {r['inference_qa_per_s']:.1f} |")
    if "speedup_fused_vs_reference" in report:
        s = report["speedup_fused_vs_reference"]
        lines += ["", f"Fused vs reference: {s['train']:.2f}x (train step), {s['inference']:.2f}x (inference forward)."]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
