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
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stqa.server.testing import ServeProcess

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

    from stqa.checkpoint import BUNDLED_MODEL, is_checkpoint
    from stqa.client import VideoQAClient, save_picture, spec_of

    if args.checkpoint is None and not is_checkpoint(BUNDLED_MODEL):
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
    try:
        server = ServeProcess("--metrics-port", "-1", "--log-level", "WARNING", checkpoint=args.checkpoint, cwd=ROOT)
    except RuntimeError as exc:
        raise SystemExit(f"demo: {exc}") from None
    print("   " + server.banner.replace("\n", "\n   "), flush=True)
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
                                       truth=truth, spec=spec_of(info, reply.model_version))
                print(f"   [{record.task:10s}] Q: {record.question}")
                if record.candidates:
                    print(f"                candidates: {' | '.join(record.candidates)}")
                print(f"                A: {reply.answer!r} (confidence {reply.confidence:.2f})   truth: {truth!r}"
                      f"   {'correct' if ok else 'wrong'}   [{reply.timings.total_ms:.0f} ms]")
                print(f"                picture: {picture.relative_to(ROOT)}", flush=True)
    finally:
        step("4. SIGTERM -> drain -> exit")
        code = server.terminate()
    print(f"   server exit status {code}")
    if code != 0:
        sys.stderr.write("".join(server.stderr_lines[-30:]))
        raise SystemExit("demo: the server did not shut down cleanly")
    print(f"\ndemo done in {time.monotonic() - started:.0f} s: {correct}/{total} answers correct; "
          f"pictures and metrics in {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
