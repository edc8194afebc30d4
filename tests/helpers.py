"""Helpers shared by test modules (test modules never import each other): a small synthetic set, its
videos, and the model the server tests serve."""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "stqa" / "assets" / "default"
CANDIDATES = ["jump", "spin", "grow", "shrink", "vanish"]


def protocol_mismatches(obj: object, protocol: type) -> list[str]:
    """What ``obj`` lacks of ``protocol`` (a ``typing.Protocol``): missing members, and methods whose
    parameter names differ from the protocol's (``isinstance`` on a runtime-checkable protocol only
    checks that the names exist)."""
    import inspect

    members = {name for name in vars(protocol) if not name.startswith("_")}
    members |= set(getattr(protocol, "__annotations__", {}))
    problems = []
    for name in sorted(members):
        if not hasattr(obj, name):
            problems.append(f"missing {name}")
            continue
        declared = inspect.getattr_static(protocol, name)
        if isinstance(declared, property) or not callable(declared):
            continue
        want = [p for p in inspect.signature(declared).parameters if p != "self"]
        got = list(inspect.signature(getattr(obj, name)).parameters)
        if got != want:
            problems.append(f"{name}{tuple(got)} should take {tuple(want)}")
    return problems


@functools.lru_cache(maxsize=1)
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="stqa-server-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.lru_cache(maxsize=1)
def synthetic_set() -> Path:
    """A handful of synthetic TGIF-format videos + questions (stqa synth)."""
    out = _workdir() / "synth"
    subprocess.run([sys.executable, "-m", "stqa", "synth", "--out", str(out), "--videos", "12", "--seed", "3"],
                   check=True, capture_output=True, timeout=120)
    return out


@functools.lru_cache(maxsize=1)
def model_checkpoint() -> Path | None:
    """None (= the bundled model) if it exists; else a checkpoint trained for one short epoch."""
    if (BUNDLED / "config.json").is_file():
        return None
    data = synthetic_set()
    run_dir = _workdir() / "run"
    subprocess.run(
        [sys.executable, "-m", "stqa", "train", "--data", str(data), "--videos", str(data / "gifs"),
         "--backbone", "tiny", "--task", "all", "--variant", "sptp", "--epochs", "1", "--batch-size", "32",
         "--embed-dim", "16", "--hidden-dim", "32", "--att-hidden-dim", "16", "--num-frames", "8",
         "--image-size", "64", "--out", str(run_dir), "--name", "e2e-tiny"],
        check=True, capture_output=True, timeout=300,
    )
    return run_dir / "best"


def sample_videos() -> list[Path]:
    return sorted((synthetic_set() / "gifs").glob("*.gif"))
