"""Server benchmark: latency and throughput of `stqa serve` over loopback, batching on vs off, and an RSS soak.

    python benchmarks/bench_server.py                      # bundled model, writes benchmarks/results/server_cpu.*
    python benchmarks/bench_server.py --checkpoint RUN/best --quick

Two `stqa serve` subprocesses run side by side (batching on: --max-batch-size 8 and the default batch
delay; off: --max-batch-size 1 --max-batch-delay-ms 0) and a closed-loop grpc.aio client drives them in
turn at concurrency 1, 8 and 32 (each level: 2 x concurrency warm-up requests, then a fixed number of
requests or a time cap, whichever comes first; on and off alternate per level so that background load
affects both alike). Requests cycle through synthetic TGIF-style GIFs and all four tasks. Then a fresh batching server gets 200 warm-up requests and a soak of 2,000 more, and its RSS
is sampled before and every 500 requests.

The client runs on the same machine and competes with the server for the CPU: the numbers are for the
whole loopback system, not the server alone. Bounded in count and time; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from stqa.server.testing import ServeProcess

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# The load levels run with the video cache off: the requests cycle through a few dozen videos, which
# would otherwise be answered from the cache and no longer measure decoding and the backbone.
CONFIGS = {
    "batching_on": ["--max-batch-size", "8", "--cache-mb", "0"],  # + --max-batch-delay-ms from --batch-delay-ms
    "batching_off": ["--max-batch-size", "1", "--max-batch-delay-ms", "0", "--cache-mb", "0"],
}
#: Questions asked about each video in the follow-up measurement: the first is cold, the others follow up
#: (all FrameQA, so that the three differ only in how the video arrives).
FOLLOW_UPS = ("what shape is jumping ?", "what color is the jumping shape ?", "where is the square at the end ?")


def machine_info() -> dict:
    import google.protobuf
    import grpc
    import torch

    import stqa

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "grpcio": grpc.__version__, "protobuf": google.protobuf.__version__, "stqa": stqa.__version__,
        "loadavg_at_start": list(os.getloadavg()),
    }


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Server(ServeProcess):
    """A server under load: high in-flight/queue caps so the benchmark, not admission control, sets the load."""

    def __init__(self, checkpoint: Path | None, flags: list[str]) -> None:
        super().__init__("--metrics-port", "0", "--log-level", "WARNING", "--max-in-flight", "256",
                         "--max-queue", "256", *flags, checkpoint=checkpoint)

    def histograms(self) -> dict[str, tuple[float, float]]:
        """(sum, count) so far of the batch-size histogram ("batch") and of every stage latency."""
        text = self.metrics()
        out = {}
        for name, pattern in [("batch", r"stqa_batch_size_{}"),
                              *((stage, r"stqa_stage_latency_seconds_{}\{{stage=\"" + stage + r"\"\}}")
                                for stage in ("decode", "queue", "features", "model", "total"))]:
            values = [re.search("^" + pattern.format(kind) + r" (\S+)", text, re.M) for kind in ("sum", "count")]
            out[name] = tuple(float(v.group(1)) if v else 0.0 for v in values)
        return out


def load_requests(data: Path, limit: int) -> list:
    """(video bytes, question, task, candidates) cycling through the tasks over the synthetic test set."""
    from stqa.data.tgifqa import load
    from stqa.v1 import video_qa_pb2 as pb

    per_task = {}
    for task in ("count", "action", "transition", "frameqa"):
        per_task[task] = [r for split in ("test", "train") for r in load(data, task, split)]
    cache: dict[str, bytes] = {}
    out = []
    i = 0
    while len(out) < limit:
        for task, records in per_task.items():
            record = records[i % len(records)]
            video = cache.setdefault(record.gif_name, (data / "gifs" / f"{record.gif_name}.gif").read_bytes())
            out.append(pb.AnswerRequest(video=video, question=record.question, task=pb.Task.Value(task.upper()),
                                        candidates=list(record.candidates)))
        i += 1
    return out[:limit]


async def drive(address: str, requests: list, concurrency: int, n_requests: int, time_cap_s: float,
                warmup: int) -> dict:
    """Closed loop: ``concurrency`` workers send back-to-back until ``n_requests`` are done or the cap."""
    import grpc

    from stqa.v1 import video_qa_pb2_grpc as pb_grpc

    options = [("grpc.max_send_message_length", 80 << 20), ("grpc.max_receive_message_length", 80 << 20)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = pb_grpc.VideoQAStub(channel)
        for i in range(warmup):
            await stub.Answer(requests[i % len(requests)], timeout=60)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        counter = iter(range(n_requests))
        stop_at = time.monotonic() + time_cap_s
        server_ms: list[float] = []

        async def worker() -> None:
            for i in counter:
                if time.monotonic() > stop_at:
                    return
                started = time.perf_counter()
                try:
                    reply = await stub.Answer(requests[i % len(requests)], timeout=60)
                    latencies.append(time.perf_counter() - started)
                    server_ms.append(reply.timings.total_ms)
                except grpc.aio.AioRpcError as err:
                    errors[err.code().name] = errors.get(err.code().name, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    lat_ms = np.asarray(latencies) * 1000.0
    return {
        "concurrency": concurrency, "completed": len(latencies), "errors": errors, "wall_s": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 2) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 2), "p95_ms": round(float(np.percentile(lat_ms, 95)), 2),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 2),
        "server_total_p50_ms": round(float(np.percentile(server_ms, 50)), 2),
    }


def soak(args: argparse.Namespace, requests: list, flags: list[str], concurrency: int = 8, warmup: int = 200) -> dict:
    """RSS of a fresh batching server before and after ``args.soak`` requests (after a warm-up), sampled
    every quarter of the soak."""
    server = Server(args.checkpoint, flags)
    try:
        asyncio.run(drive(server.address, requests, concurrency, warmup, 300, warmup=0))
        samples = [rss_bytes(server.proc.pid)]
        done, errors = 0, {}
        for _ in range(4):
            part = asyncio.run(drive(server.address, requests, concurrency, args.soak // 4, 300, warmup=0))
            done += part["completed"]
            for code, n in part["errors"].items():
                errors[code] = errors.get(code, 0) + n
            samples.append(rss_bytes(server.proc.pid))
    finally:
        server.terminate()
    before, after = samples[0], samples[-1]
    return {
        "requests": done, "concurrency": concurrency, "warmup_requests": warmup, "errors": errors,
        "rss_samples_mib": [round(x / 2**20, 1) for x in samples],
        "rss_before_mib": round(before / 2**20, 1), "rss_after_mib": round(after / 2**20, 1),
        "rss_growth_pct": round(100.0 * (after - before) / before, 2),
    }


def follow_ups(checkpoint: Path | None, videos: list[bytes]) -> dict:
    """Concurrency 1 on a fresh server with the default cache: per video, a cold question (decode and
    backbone), then follow-up questions about it sending the bytes again (a cache hit) and by reference
    (``video_sha256`` only, no upload). Client-side latency."""
    import grpc

    from stqa.v1 import video_qa_pb2 as pb
    from stqa.v1 import video_qa_pb2_grpc as pb_grpc

    server = Server(checkpoint, [])
    times: dict[str, list[float]] = {"cold": [], "follow_up_bytes": [], "follow_up_reference": []}
    try:
        with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 80 << 20)]) as channel:
            stub = pb_grpc.VideoQAStub(channel)
            warm = stub.Answer(pb.AnswerRequest(video=videos[-1], question=FOLLOW_UPS[0]), timeout=60)
            assert warm.answer
            for video in videos[:-1]:
                started = time.perf_counter()
                cold = stub.Answer(pb.AnswerRequest(video=video, question=FOLLOW_UPS[0]), timeout=60)
                times["cold"].append(time.perf_counter() - started)
                started = time.perf_counter()
                stub.Answer(pb.AnswerRequest(video=video, question=FOLLOW_UPS[1]), timeout=60)
                times["follow_up_bytes"].append(time.perf_counter() - started)
                started = time.perf_counter()
                stub.Answer(pb.AnswerRequest(video_sha256=cold.video_sha256, question=FOLLOW_UPS[2]), timeout=60)
                times["follow_up_reference"].append(time.perf_counter() - started)
        text = server.metrics()
        hits = float(re.search(r"^stqa_cache_hits_total (\S+)", text, re.M).group(1))
    finally:
        server.terminate()
    p50 = {k: round(float(np.percentile(np.asarray(v) * 1000.0, 50)), 2) for k, v in times.items()}
    return {"videos": len(videos) - 1, "p50_ms": p50, "cache_hits": hits,
            "ratio_bytes": round(p50["follow_up_bytes"] / p50["cold"], 3),
            "ratio_reference": round(p50["follow_up_reference"] / p50["cold"], 3),
            "loadavg_1min": round(os.getloadavg()[0], 2)}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# stqa serve benchmark (CPU, loopback)", "",
        f"- date (UTC): {m['date_utc']}; machine: {m['cpu']}, {m['cpus']} CPUs; {m['platform']}",
        f"- python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), grpcio {m['grpcio']}, "
        f"protobuf {m['protobuf']}, stqa {m['stqa']}",
        f"- model: {report['model_version']} (backbone {report['spec']['backbone']}, T={report['spec']['num_frames']}, "
        f"{report['spec']['image_size']} px); requests: synthetic GIFs, {report['video_frames']} frames, "
        f"mean {report['video_kib']:.0f} KiB, all four tasks in turn",
        f"- load average at start: {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])} "
        "(other work on the machine shares the CPUs; the client runs on the same machine)",
        f"- command: `{report['command']}`", "",
        "| server | concurrency | completed | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | mean batch "
        "| server decode / queue / features / model (ms, mean) | load (1 min) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, rows in report["runs"].items():
        for r in rows:
            lines.append(f"| {name} | {r['concurrency']} | {r['completed']} | {r['throughput_rps']} | {r['p50_ms']} | "
                         f"{r['p95_ms']} | {r['p99_ms']} | {r['mean_batch_size']} | "
                         + " / ".join(f"{r['server_stage_mean_ms'][k]:.1f}" for k in ("decode", "queue", "features", "model"))
                         + f" | {r['loadavg_1min']} | {r['errors'] or '-'} |")
    soak_report = report.get("soak")
    lines += ["", "## Summary", ""]
    s = report.get("summary")
    if s is not None:
        lines += [
            f"- p50 at concurrency 1 (batching on): {s['p50_c1_ms']} ms (target < 100 ms)",
            f"- throughput at concurrency {s['top_concurrency']}: batching on / off = {s['batching_speedup']}x "
            "(target >= 2x at 32)",
        ]
    f = report["follow_ups"]
    lines.append(
        f"- follow-up questions (concurrency 1, {f['videos']} videos, default cache): p50 cold "
        f"{f['p50_ms']['cold']} ms, follow-up sending the bytes {f['p50_ms']['follow_up_bytes']} ms "
        f"({f['ratio_bytes']:.0%} of cold), by reference {f['p50_ms']['follow_up_reference']} ms "
        f"({f['ratio_reference']:.0%}); target <= 25%")
    if soak_report is not None:
        lines.append(
            f"- RSS over a {soak_report['requests']}-request soak (fresh batching server, {soak_report['warmup_requests']} "
            f"warm-up requests, concurrency {soak_report['concurrency']}): {soak_report['rss_before_mib']} MiB -> "
            f"{soak_report['rss_after_mib']} MiB ({soak_report['rss_growth_pct']:+.2f}%, target < 5%); samples every "
            f"quarter: {', '.join(str(x) for x in soak_report['rss_samples_mib'])} MiB")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--data", type=Path, default=None, help="synthetic set (default: render 32 videos)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, nargs="+", default=[100, 400, 800],
                        help="requests per concurrency level (same order)")
    parser.add_argument("--time-cap-s", type=float, default=60.0, help="cap per level in seconds")
    parser.add_argument("--soak", type=int, default=2000, help="requests in the RSS soak (0: no soak)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="--max-batch-size of the batching server (default 8)")
    parser.add_argument("--batch-delay-ms", type=float, default=None,
                        help="--max-batch-delay-ms of the batching server (default: the server's default)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests, short soak")
    parser.add_argument("--follow-ups-only", action="store_true",
                        help="only the follow-up measurement (cold vs cached video), no load levels or soak")
    parser.add_argument("--out", type=Path, default=RESULTS / "server_cpu", help="output stem (.json, .md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.soak, args.time_cap_s = [20, 40, 80], 100, 20.0
    if len(args.requests) != len(args.concurrency):
        parser.error("--requests needs one count per --concurrency level")

    from stqa.client import VideoQAClient

    report: dict = {"machine": machine_info(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
                    "runs": {}}
    with tempfile.TemporaryDirectory(prefix="stqa-bench-") as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "synth"
            subprocess.run([sys.executable, "-m", "stqa", "synth", "--out", str(data), "--videos", "32",
                            "--seed", "11"], check=True, capture_output=True)
        requests = load_requests(data, 64)
        from stqa.video.decode import decode_video

        frames = sorted({decode_video(r.video, 1).n_frames for r in requests})
        report["video_frames"] = f"{frames[0]}-{frames[-1]}"
        report["video_kib"] = float(np.mean([len(r.video) for r in requests]) / 1024)

        distinct = [p.read_bytes() for p in sorted((data / "gifs").glob("*.gif"))]
        report["follow_ups"] = follow_ups(args.checkpoint, distinct)
        print(f"follow-ups: {report['follow_ups']}", flush=True)
        if args.follow_ups_only:
            args.concurrency, args.requests, args.soak = [], [], 0

        configs = {name: list(flags) for name, flags in CONFIGS.items()}
        if args.batch_size is not None:
            configs["batching_on"] = ["--max-batch-size", str(args.batch_size)]
        if args.batch_delay_ms is not None:
            configs["batching_on"] += ["--max-batch-delay-ms", str(args.batch_delay_ms)]
        report["configs"] = configs
        # Both servers run side by side (an idle one costs nothing) and the levels alternate between them,
        # so that load from other jobs on the machine drifts into both configurations alike.
        servers = {}
        try:
            for name, flags in configs.items():
                servers[name] = Server(args.checkpoint, flags)
                report["runs"][name] = []
            with VideoQAClient(servers["batching_on"].address) as client:
                info = client.model_info()
            report["model_version"] = info.model_version
            report["spec"] = {"backbone": info.spec.backbone, "num_frames": info.spec.num_frames,
                              "image_size": info.spec.image_size}
            for concurrency, n in zip(args.concurrency, args.requests, strict=True):
                for name, server in servers.items():
                    asyncio.run(drive(server.address, requests, concurrency, 2 * concurrency, 60, warmup=0))
                    before = server.histograms()
                    row = asyncio.run(drive(server.address, requests, concurrency, n, args.time_cap_s, warmup=0))
                    after = server.histograms()
                    means = {k: (after[k][0] - before[k][0]) / max(after[k][1] - before[k][1], 1) for k in after}
                    row["mean_batch_size"] = round(means.pop("batch"), 2)
                    # Server stage means in ms (features/model are per batch, shared by its requests).
                    row["server_stage_mean_ms"] = {k: round(v * 1000, 2) for k, v in means.items()}
                    row["loadavg_1min"] = round(os.getloadavg()[0], 2)
                    print(f"{name:13s} c={concurrency:<3d} {row}", flush=True)
                    report["runs"][name].append(row)
        finally:
            for server in servers.values():
                code = server.terminate()
                if code != 0:
                    print(f"warning: server exited {code}", file=sys.stderr)
        if args.soak > 0:
            report["soak"] = soak(args, requests, configs["batching_on"])
            print(f"soak: {report['soak']}", flush=True)
    on = {r["concurrency"]: r for r in report["runs"]["batching_on"]}
    off = {r["concurrency"]: r for r in report["runs"]["batching_off"]}
    if args.concurrency:
        top = max(args.concurrency)
        report["summary"] = {
            "p50_c1_ms": on[min(args.concurrency)]["p50_ms"],
            "top_concurrency": top,
            "batching_speedup": round(on[top]["throughput_rps"] / off[top]["throughput_rps"], 2),
        }
    report["machine"]["loadavg_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
