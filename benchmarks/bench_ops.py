#!/usr/bin/env python
"""Benchmark the fused attention-pooling op against the eager reference and torch.compile(reference).

For every shape / dtype / impl it measures the forward pass (inference: no autograd) and
forward+backward (gradients for values, keys, query and weight), as the median over --repeats
timed runs after --warmup untimed ones, and reports the effective bandwidth (minimal bytes moved /
time) and the speedup over eager in the same run. On CUDA the times come from CUDA events and the
bandwidth is also given as a fraction of a measured device-to-device copy; on CPU the copy figure is
a copy into an already allocated tensor (no page faults).

    python benchmarks/bench_ops.py                         # CPU, writes benchmarks/results/ops_cpu.{json,md}
    python benchmarks/bench_ops.py --device cuda           # GPU, writes ops_cuda.{json,md}
    python benchmarks/bench_ops.py --quick                 # small shapes, a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import stqa
from stqa.ops import attention_pool, reference

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Shape:
    name: str
    B: int
    R: int
    L: int
    C: int
    K: int
    score: str = "additive"
    masked: bool = False  # temporal: per-item lengths mask


SHAPES = {
    # TGIF-QA spatial attention: 16 videos x 35 frames x 7x7 ResNet-152 res5c cells (C = 2048 + 1024 C3D-style
    # concat as in ST-VQA: 3072), hidden 512.
    "tgifqa_spatial": Shape("tgifqa_spatial", 16, 35, 49, 3072, 512),
    # serving: one video per request
    "serving_spatial": Shape("serving_spatial", 1, 35, 49, 3072, 512),
    # temporal attention over 35 frame states (R = 1, L = T) with a lengths mask
    "tgifqa_temporal": Shape("tgifqa_temporal", 16, 1, 35, 1024, 512, masked=True),
}
QUICK_SHAPES = {
    "quick_spatial": Shape("quick_spatial", 2, 8, 49, 256, 64),
    "quick_temporal": Shape("quick_temporal", 4, 1, 35, 128, 64, masked=True),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_inputs(shape: Shape, dtype: torch.dtype, device: str, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    values = torch.randn(shape.B, shape.R, shape.L, shape.C, generator=g).to(device, dtype)
    keys = torch.randn(shape.B, shape.R, shape.L, shape.K, generator=g).to(device, dtype)
    query = torch.randn(shape.B, shape.K, generator=g).to(device, dtype)
    weight = (torch.randn(shape.K, generator=g) / shape.K**0.5).to(device, dtype)
    mask = None
    if shape.masked:
        lengths = torch.randint(shape.L // 2, shape.L + 1, (shape.B,), generator=g)
        mask = (torch.arange(shape.L) < lengths[:, None])[:, None, :].expand(shape.B, shape.R, shape.L)
        mask = mask.contiguous().to(device)
    return values, keys, query, weight, mask


def min_bytes(shape: Shape, dtype: torch.dtype, backward: bool) -> int:
    """Bytes a perfect implementation moves: forward reads values, keys, query, weight and writes the
    outputs; backward re-reads values and keys, reads grad_pooled and writes grad_values, grad_keys."""
    s = torch.tensor([], dtype=dtype).element_size()
    v = shape.B * shape.R * shape.L * shape.C
    k = shape.B * shape.R * shape.L * shape.K
    small = shape.B * shape.K + shape.K + shape.B * shape.R * (shape.C + shape.L)
    fwd = (v + k + small) * s
    if not backward:
        return fwd
    return fwd + (2 * v + 2 * k + shape.B * shape.R * shape.C) * s


class Timer:
    def __init__(self, device: str, min_time: float = 0.0, max_repeats: int = 200, clock: str = "wall"):
        self.device = device
        self.min_time = min_time
        self.max_repeats = max_repeats
        # "cpu": CPU time of this process (user + system, all threads); unlike wall time it does not
        # count the time other processes hold the cores, so a 1-thread run stays comparable on a busy box.
        self.now = time.process_time if clock == "cpu" else time.perf_counter

    def __call__(self, fn, warmup: int, repeats: int) -> list[float]:
        """At least `repeats` timed runs and, up to max_repeats, at least min_time seconds of them
        (short cases get many samples, so that the median resists a busy machine)."""
        for _ in range(warmup):
            fn()
        self.sync()
        times: list[float] = []
        while len(times) < repeats or (sum(times) < self.min_time and len(times) < self.max_repeats):
            if self.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = self.now()
                fn()
                times.append(self.now() - t0)
        return times

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()


def copy_bandwidth(device: str, nbytes: int, timer: Timer) -> float:
    """GB/s of a plain copy (bytes read + written) of an nbytes buffer: the practical roofline."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    times = timer(lambda: dst.copy_(src), warmup=2, repeats=7)
    return 2 * nbytes / statistics.median(times) / 1e9


def run_impl(fn, inputs, shape: Shape, backward: bool):
    values, keys, query, weight, mask = inputs
    if not backward:

        def infer():
            with torch.no_grad():
                fn(values, keys, query, weight, mask, shape.score, 1.0)

        return infer
    leaves = [t.detach().clone().requires_grad_() for t in (values, keys, query, weight)]
    grad_out = torch.randn(shape.B, shape.R, shape.C, device=values.device).to(values.dtype)

    def step():
        for t in leaves:
            t.grad = None
        pooled, _ = fn(*leaves, mask, shape.score, 1.0)
        pooled.backward(grad_out)

    return step


def fused(values, keys, query, weight, mask, score, scale):
    return attention_pool(values, keys, query, weight, mask, score, scale, impl="fused")


def machine_info(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "stqa_build": stqa.build_info(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtypes", nargs="+", default=None, choices=sorted(DTYPES),
                        help="default: float32 bfloat16 (cpu), float32 bfloat16 float16 (cuda)")
    parser.add_argument("--shapes", nargs="+", default=None, help=f"subset of {sorted(SHAPES)}")
    parser.add_argument("--impls", nargs="+", default=["fused", "eager", "compiled"],
                        choices=["fused", "eager", "compiled"])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 7 cpu, 50 cuda)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2 cpu, 10 cuda)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="keep timing a case until this many seconds are spent (default 2 cpu, 0.5 cuda)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for the run (default: torch's default, all cores)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="cpu: process CPU time instead of wall time (CPU device only; meant for --threads 1)")
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats (smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/ops_<device>.json)")
    parser.add_argument("--md", type=Path, default=None, help="markdown path (default results/ops_<device>.md)")
    args = parser.parse_args(argv)

    device = args.device
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    if device == "cuda" and args.clock == "cpu":
        parser.error("--clock cpu is for the CPU device (CUDA runs are timed with CUDA events)")
    dtypes = args.dtypes or (["float32", "bfloat16"] if device == "cpu" else ["float32", "bfloat16", "float16"])
    if device == "cpu" and "float16" in dtypes:
        parser.error("the CPU kernel has no float16 (float32, float64, bfloat16)")
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        unknown = set(args.shapes) - set(shapes)
        if unknown:
            parser.error(f"unknown shapes {sorted(unknown)}; choose from {sorted(shapes)}")
        shapes = {k: v for k, v in shapes.items() if k in args.shapes}
    repeats = args.repeats or (3 if args.quick else (7 if device == "cpu" else 50))
    warmup = args.warmup or (1 if args.quick else (2 if device == "cpu" else 10))
    min_time = args.min_time if args.min_time is not None else (0.0 if args.quick else (2.0 if device == "cpu" else 0.5))
    timer = Timer(device, min_time=min_time, clock=args.clock)
    impls = {"fused": fused, "eager": reference.attention_pool}
    # one specialised graph per shape x dtype x grad mode: more than dynamo's default recompile limit (8)
    # (names differ across torch versions; fail_on_*: never time a silent fallback to eager)
    dynamo_config = torch._dynamo.config
    for name, value in (("recompile_limit", 64), ("cache_size_limit", 64),
                        ("fail_on_recompile_limit_hit", True), ("fail_on_cache_limit_hit", True)):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, value)
    compiled_ref = torch.compile(reference.attention_pool, dynamic=False) if "compiled" in args.impls else None

    largest = max(s.B * s.R * s.L * s.C for s in shapes.values()) * 4
    copy_gbps = copy_bandwidth(device, largest, timer)
    load_before = os.getloadavg()
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"copy={copy_gbps:.1f} GB/s loadavg={load_before[0]:.2f}")

    rows = []
    header = (f"{'shape':<16} {'dtype':<9} {'impl':<9} {'fwd ms':>9} {'fwd GB/s':>9} {'x eager':>8} "
              f"{'fwd+bwd ms':>11} {'GB/s':>7} {'x eager':>8}")
    print(header)
    print("-" * len(header))
    for shape in shapes.values():
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            inputs = make_inputs(shape, dtype, device)
            per_impl = {}
            for impl in args.impls:
                fn = compiled_ref if impl == "compiled" else impls[impl]
                entry = {}
                for backward in (False, True):
                    step = run_impl(fn, inputs, shape, backward)
                    if impl == "compiled":
                        t0 = time.perf_counter()
                        step()  # compile outside the timed runs
                        timer.sync()
                        entry["compile_s" + ("_bwd" if backward else "")] = time.perf_counter() - t0
                    times = timer(step, warmup, repeats)
                    key = "fwdbwd" if backward else "fwd"
                    entry[f"{key}_ms"] = statistics.median(times) * 1e3
                    entry[f"{key}_ms_all"] = [t * 1e3 for t in times]
                    entry[f"{key}_gbps"] = min_bytes(shape, dtype, backward) / statistics.median(times) / 1e9
                    entry[f"{key}_copy_fraction"] = entry[f"{key}_gbps"] / copy_gbps
                per_impl[impl] = entry
            for impl, entry in per_impl.items():
                if "eager" in per_impl:
                    entry["speedup_fwd"] = per_impl["eager"]["fwd_ms"] / entry["fwd_ms"]
                    entry["speedup_fwdbwd"] = per_impl["eager"]["fwdbwd_ms"] / entry["fwdbwd_ms"]
                row = {**asdict(shape), "shape": shape.name, "dtype": dtype_name, "device": device, "impl": impl,
                       **entry}
                del row["name"]
                rows.append(row)
                print(f"{shape.name:<16} {dtype_name:<9} {impl:<9} {entry['fwd_ms']:>9.2f} {entry['fwd_gbps']:>9.1f} "
                      f"{entry.get('speedup_fwd', float('nan')):>8.2f} {entry['fwdbwd_ms']:>11.2f} "
                      f"{entry['fwdbwd_gbps']:>7.1f} {entry.get('speedup_fwdbwd', float('nan')):>8.2f}")
            del inputs

    load_after = os.getloadavg()
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "machine": machine_info(device),
        "copy_gbps": copy_gbps,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "clock": args.clock,
        "repeats": repeats,
        "min_time_s": min_time,
        "warmup": warmup,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "THP_MEM_ALLOC_ENABLE") if k in os.environ},
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "results": rows,
    }
    stem = f"ops_{device}" + ("_quick" if args.quick else "")
    out = args.out or RESULTS / f"{stem}.json"
    md = args.md or RESULTS / f"{stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(markdown(report))
    print(f"wrote {out} and {md}")
    return 0


def markdown(report: dict) -> str:
    m = report["machine"]
    cuda = report["device"] == "cuda"
    lines = [
        f"# stqa.ops.attention_pool benchmark ({report['device']})",
        "",
        f"- date: {report['date']}",
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs, torch threads {m['torch_threads']}"
        + (f", GPU {m['gpu']}" if "gpu" in m else ""),
        f"- torch {m['torch']}, stqa CPU kernels: {m['stqa_build'].get('cpu_capability')}",
        f"- command: `{report['command']}`; median of >= {report['repeats']} runs (and >= {report['min_time_s']} s)"
        f" after {report['warmup']} warm-up",
        f"- clock: {'process CPU time (user + system)' if report['clock'] == 'cpu' else 'wall time'}",
        f"- copy bandwidth (read + write, into an allocated buffer): {report['copy_gbps']:.1f} GB/s",
        f"- load average before / after: {report['loadavg_before'][0]:.2f} / {report['loadavg_after'][0]:.2f}"
        + (f"; env {report['env']}" if report["env"] else ""),
    ]
    busy = max(report["loadavg_before"][0], report["loadavg_after"][0])
    if report["device"] == "cpu" and busy > 0.5 * (m["cpu_count"] or 1):
        lines += [
            "",
            f"**Busy machine:** load average up to {busy:.1f} on {m['cpu_count']} CPUs while this ran (other jobs held"
            " the cores). "
            + ("CPU time leaves out the waits for a core, but caches and memory bandwidth were still shared."
               if report["clock"] == "cpu" else
               "Wall times then include waits for a core, worst for small cases and multi-threaded runs;"
               " `--threads 1 --clock cpu` gives a view that leaves the waits out."),
        ]
    lines += [
        "",
        "ms = median (min in brackets). GB/s = minimal bytes moved (forward: read values, keys; backward: read",
        "values, keys, write their gradients) / median time. x eager = eager median / this median (same run).",
        "compiled = torch.compile(reference). fwd = inference (no autograd); fwd+bwd = gradients for values,",
        "keys, query and weight.",
        "",
        "| shape | B,R,L,C,K | dtype | impl | fwd ms | (min) | fwd GB/s | fwd x eager | fwd+bwd ms | (min) "
        "| fwd+bwd GB/s | fwd+bwd x eager |" + (" fwd % copy | fwd+bwd % copy |" if cuda else ""),
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if cuda else ""),
    ]
    for r in report["results"]:
        dims = f"{r['B']},{r['R']},{r['L']},{r['C']},{r['K']}"
        lines.append(
            f"| {r['shape']} | {dims} | {r['dtype']} | {r['impl']} | {r['fwd_ms']:.2f} | {min(r['fwd_ms_all']):.2f} | "
            f"{r['fwd_gbps']:.1f} | {r.get('speedup_fwd', float('nan')):.2f} | {r['fwdbwd_ms']:.2f} | "
            f"{min(r['fwdbwd_ms_all']):.2f} | {r['fwdbwd_gbps']:.1f} | {r.get('speedup_fwdbwd', float('nan')):.2f} |"
            + (f" {100 * r['fwd_copy_fraction']:.0f} | {100 * r['fwdbwd_copy_fraction']:.0f} |" if cuda else "")
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
