"""Memory of `stqa serve` under hostile input: peak RSS per hostile request, and recovery after a burst of
large uploads. Run: ``python benchmarks/bench_hostile.py`` (about a minute; writes
``benchmarks/results/hostile_cpu.{json,md}``).

Each hostile request goes to a fresh server (default flags, bundled model), so that its peak (VmHWM of the
server process, and of its decode workers) is its own. The burst sends N concurrent uploads of random bytes
(refused by the decoder after they have been received and handed to a worker) and then samples RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the stqa of this checkout

from stqa.server.testing import ServeProcess, h264_clip, screen_gif  # noqa: E402

from stqa.v1 import video_qa_pb2 as pb  # noqa: E402
from stqa.v1 import video_qa_pb2_grpc as pb_grpc  # noqa: E402

MiB = 1024 * 1024


def memory_mib(pid: int) -> dict[str, float]:
    """Current and peak RSS of ``pid`` and of its children (the decode workers), in MiB."""
    def read(p: str) -> tuple[float, float]:
        status = Path(f"/proc/{p}/status").read_text()
        return (int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024,
                int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024)

    rss, hwm = read(str(pid))
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    worker_hwm = max((read(c)[1] for c in children), default=0.0)
    return {"rss": round(rss, 1), "hwm": round(hwm, 1), "worker_hwm": round(worker_hwm, 1)}


def stub(address: str):
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 80 * MiB)])
    return channel, pb_grpc.VideoQAStub(channel)


def ask(s, video: bytes) -> tuple[str, float]:
    channel, st = stub(s.address)
    started = time.monotonic()
    try:
        st.Answer(pb.AnswerRequest(video=video, question="how many times does it jump ?", task=pb.COUNT), timeout=120)
        code = "OK"
    except grpc.RpcError as err:
        code = err.code().name
    finally:
        channel.close()
    return code, time.monotonic() - started


def overload(address: str, video: bytes, clients: int, seconds: float) -> dict:
    """Closed-loop ``clients`` (grpc.aio, one channel) for ``seconds``: answered and refused per second,
    and the p50 latency of the answered ones."""
    import asyncio

    async def run() -> dict:
        ok: list[float] = []
        refused = other = 0
        stop = time.monotonic() + seconds
        async with grpc.aio.insecure_channel(address) as channel:
            st = pb_grpc.VideoQAStub(channel)
            request = pb.AnswerRequest(video=video, question="how many times does it jump ?", task=pb.COUNT)

            async def client() -> None:
                nonlocal refused, other
                while time.monotonic() < stop:
                    started = time.monotonic()
                    try:
                        await st.Answer(request, timeout=30)
                        ok.append(time.monotonic() - started)
                    except grpc.aio.AioRpcError as err:
                        if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            refused += 1
                            await asyncio.sleep(0.05)  # a polite client honours the pushback a little
                        else:
                            other += 1

            await asyncio.gather(*(client() for _ in range(clients)))
        ok.sort()
        return {"clients": clients, "answered_per_s": round(len(ok) / seconds, 1),
                "refused_per_s": round(refused / seconds, 1), "other_errors": other,
                "p50_ms": round(1000 * ok[len(ok) // 2], 1) if ok else None}

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=20, help="concurrent uploads in the burst")
    parser.add_argument("--upload-mb", type=float, default=15.0, help="size of each upload")
    parser.add_argument("--overload-s", type=float, default=8.0, help="seconds per overload level")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hostile_cpu")
    args = parser.parse_args()

    hostile = {
        "GIF 65535x1 screen, 1 image (43 B)": screen_gif(65535, 1, 1),
        "GIF 4096x4096 screen, 30 images": screen_gif(4096, 4096, 30),
        "GIF 4096x4096 screen, 9,999 images": screen_gif(4096, 4096, 9999),
        "GIF 1024x1024 screen, 4,000 images": screen_gif(1024, 1024, 4000),
        "H.264 4096x4096, 30 frames": h264_clip(4096, 4096, 30),
        "H.264 1920x1080, 40 frames": h264_clip(1920, 1080, 40),
    }
    rows = []
    for name, video in hostile.items():
        s = ServeProcess("--metrics-port", "-1")
        try:
            ask(s, screen_gif(64, 64, 2))  # warm: the model has run once
            idle = memory_mib(s.proc.pid)
            code, seconds = ask(s, video)
            after = memory_mib(s.proc.pid)
        finally:
            s.terminate()
        rows.append({"request": name, "bytes": len(video), "code": code, "seconds": round(seconds, 3),
                     "idle_rss_mib": idle["rss"], "peak_rss_mib": after["hwm"],
                     "peak_over_idle_mib": round(after["hwm"] - idle["hwm"], 1),
                     "worker_peak_mib": after["worker_hwm"]})
        print(rows[-1], flush=True)

    s = ServeProcess("--metrics-port", "-1")
    try:
        ask(s, screen_gif(64, 64, 2))
        idle = memory_mib(s.proc.pid)
        big = os.urandom(int(args.upload_mb * MiB))
        codes: dict[str, int] = {}
        lock = threading.Lock()

        def upload() -> None:
            code, _ = ask(s, big)
            with lock:
                codes[code] = codes.get(code, 0) + 1

        threads = [threading.Thread(target=upload) for _ in range(args.burst)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        burst_s = time.monotonic() - started
        peak = memory_mib(s.proc.pid)
        samples = []
        for _ in range(6):
            time.sleep(0.5)
            samples.append(memory_mib(s.proc.pid)["rss"])
    finally:
        s.terminate()
    burst = {"uploads": args.burst, "upload_mib": args.upload_mb, "codes": codes, "seconds": round(burst_s, 2),
             "idle_rss_mib": idle["rss"], "peak_rss_mib": peak["hwm"],
             "rss_after_s": dict(zip(["0.5", "1.0", "1.5", "2.0", "2.5", "3.0"], samples, strict=True))}
    print(burst, flush=True)

    s = ServeProcess("--metrics-port", "-1")
    try:
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-hostile-{os.getpid()}"
        subprocess.run([sys.executable, "-m", "stqa", "synth", "--out", str(out), "--videos", "2", "--seed", "1"],
                       check=True, capture_output=True)
        clip = sorted((out / "gifs").glob("*.gif"))[0].read_bytes()
        levels = [overload(s.address, clip, n, args.overload_s) for n in (8, 200)]
    finally:
        s.terminate()
    for level in levels:
        print(level, flush=True)

    import av
    import torch

    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
              "av": av.__version__, "grpcio": grpc.__version__, "requests": rows, "burst": burst, "overload": levels}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Hostile input, server memory ({report['date']}, {report['cpus']} CPUs, torch {report['torch']}, "
             f"PyAV {report['av']}, grpcio {report['grpcio']})", "",
             "| request | bytes | status | s | idle RSS MiB | peak over idle MiB | worker peak MiB |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['request']} | {r['bytes']:,} | {r['code']} | {r['seconds']} | {r['idle_rss_mib']} | "
                     f"{r['peak_over_idle_mib']} | {r['worker_peak_mib']} |")
    lines += ["", f"Burst: {burst['uploads']} concurrent uploads of {burst['upload_mib']} MiB, statuses "
              f"{burst['codes']}, {burst['seconds']} s; RSS idle {burst['idle_rss_mib']} MiB, peak "
              f"{burst['peak_rss_mib']} MiB, then every 0.5 s: "
              + ", ".join(str(v) for v in burst["rss_after_s"].values()) + " MiB.", "",
              "| closed-loop clients | answered/s | refused/s (RESOURCE_EXHAUSTED) | other errors | p50 ms |",
              "|---:|---:|---:|---:|---:|"]
    for level in levels:
        lines.append(f"| {level['clients']} | {level['answered_per_s']} | {level['refused_per_s']} | "
                     f"{level['other_errors']} | {level['p50_ms']} |")
    lines += [""]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
