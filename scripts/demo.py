"""`make demo`: the whole product in a couple of minutes on a laptop CPU.

1. renders a small synthetic benchmark (`stqa synth`, fixed seed: same files every run);
2. scores the bundled model on it (`stqa evaluate`) and prints the metrics table;
3. starts `stqa serve` on a free port, asks it real questions of every task over gRPC, prints
   question / answer / truth and writes the attention pictures to out/demo/;
4. stops the server with SIGTERM and checks it drained and exited 0.

Idempotent: everything goes under out/demo/ and is overwritten.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "demo"
PER_TASK = 2
TASKS = ("count", "action", "transition", "frameqa")


def stqa(*args: str) -> list[str]:
    return [sys.executable, "-m", "stqa", *args]


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_checked(cmd: list[str], what: str) -> None:
    """Run a CLI step, print its output indented (and how long it took); stop the demo if it fails."""
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"demo: {what} failed (exit {proc.returncode}): {' '.join(cmd)}")
    for line in proc.stdout.rstrip().splitlines():
        print(f"   {line}")
    print(f"   ({what}: {time.monotonic() - started:.1f} s)", flush=True)


class Server:
    """`stqa serve --port 0` in a subprocess; the bound port is read from its first stdout line."""

    def __init__(self, checkpoint: Path | None) -> None:
        cmd = stqa("serve", "--port", "0", "--metrics-port", "-1", "--log-level", "WARNING")
        if checkpoint is not None:
            cmd += ["--checkpoint", str(checkpoint)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        first = self.proc.stdout.readline()
        match = re.search(r"listening on (\S+):(\d+)", first)
        ready = self.proc.stdout.readline() if match else ""
        if not match or "ready" not in ready:
            self.proc.kill()
            self.proc.wait()
            sys.stderr.write(first + ready + "".join(self.log))
            raise SystemExit("demo: the server did not start")
        self.address = f"{match.group(1)}:{match.group(2)}"
        print(f"   {first.strip()}\n   {ready.strip()}", flush=True)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -1


def pick_questions(data: Path) -> list:
    """A few test questions of every task, on different videos where possible."""
    from stqa.data.tgifqa import load

    picked = []
    for task in TASKS:
        records = load(data, task, "test")
        seen: set[str] = set()
        for record in records:
            if record.gif_name not in seen:
                picked.append(record)
                seen.add(record.gif_name)
            if len(seen) == PER_TASK:
                break
    return picked


def truth_text(record) -> str:
    if record.is_multiple_choice:
        return record.candidates[int(record.answer)]
    return str(record.answer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to demo instead of the bundled model")
    parser.add_argument("--videos", type=int, default=40, help="synthetic videos to render (default %(default)s)")
    args = parser.parse_args(argv)

    from stqa.client import VideoQAClient, save_picture
    from stqa.inference import BUNDLED_MODEL

    if args.checkpoint is None and not (BUNDLED_MODEL / "config.json").is_file():
        raise SystemExit(f"demo: the bundled model is missing from {BUNDLED_MODEL}; run `make model` first "
                         "(or pass --checkpoint)")
    ckpt_flags = ["--checkpoint", str(args.checkpoint)] if args.checkpoint is not None else []
    started = time.monotonic()
    data = OUT / "synth"
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    step(f"1. synthetic benchmark: {args.videos} videos -> {data.relative_to(ROOT)}")
    run_checked(stqa("synth", "--out", str(data), "--videos", str(args.videos), "--seed", "7"), "stqa synth")

    step("2. stqa evaluate (the model on the synthetic test split)")
    run_checked(stqa("evaluate", "--data", str(data), "--out", str(OUT / "eval"), *ckpt_flags), "stqa evaluate")

    step("3. stqa serve + Answer calls over gRPC")
    server = Server(args.checkpoint)
    correct = total = 0
    try:
        with VideoQAClient(server.address) as client:
            info = client.model_info()
            print(f"   model {info.model_version}: backbone {info.spec.backbone}, T={info.spec.num_frames}, "
                  f"{info.spec.image_size}px", flush=True)
            for record in pick_questions(data):
                video = data / "gifs" / f"{record.gif_name}.gif"
                reply = client.answer(video, record.question, record.task, list(record.candidates),
                                      return_attention=True, timeout=60)
                truth = truth_text(record)
                ok = reply.answer.strip().lower() == truth.strip().lower()
                correct += ok
                total += 1
                picture = save_picture(OUT / f"{record.task}_{record.gif_name}.png", video, record.question, reply,
                                       truth=truth)
                print(f"   [{record.task:10s}] Q: {record.question}")
                if record.candidates:
                    print(f"                candidates: {' | '.join(record.candidates)}")
                print(f"                A: {reply.answer!r} (confidence {reply.confidence:.2f})   truth: {truth!r}"
                      f"   {'correct' if ok else 'wrong'}   [{reply.timings.total_ms:.0f} ms]")
                print(f"                picture: {picture.relative_to(ROOT)}", flush=True)
    finally:
        step("4. SIGTERM -> drain -> exit")
        code = server.stop()
    print(f"   server exit status {code}")
    if code != 0:
        sys.stderr.write("".join(server.log[-30:]))
        raise SystemExit("demo: the server did not shut down cleanly")
    print(f"\ndemo done in {time.monotonic() - started:.0f} s: {correct}/{total} answers correct; "
          f"pictures and metrics in {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
