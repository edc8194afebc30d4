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


#: The smallest end-to-end training that still runs every stage (one epoch, narrow model, few small frames).
TINY_TRAINING = {"epochs": 1, "batch_size": 32, "embed_dim": 16, "hidden_dim": 32, "att_hidden_dim": 16,
                 "num_frames": 8, "image_size": 64}


def option_flags(options: dict) -> list[str]:
    """``{"batch_size": 32}`` -> ``["--batch-size", "32"]``."""
    return [a for name, value in options.items() for a in ("--" + name.replace("_", "-"), str(value))]


@functools.lru_cache(maxsize=1)
def model_checkpoint() -> Path | None:
    """None (= the bundled model) if it exists; else :func:`tiny_checkpoint`."""
    return None if (BUNDLED / "config.json").is_file() else tiny_checkpoint()


@functools.lru_cache(maxsize=1)
def tiny_checkpoint() -> Path:
    """A tiny all-task checkpoint trained for one short epoch on :func:`synthetic_set` (read it, don't change
    it: the session shares it; its run directory, with ``split.json``, is its parent)."""
    data = synthetic_set()
    run_dir = _workdir() / "run"
    subprocess.run(
        [sys.executable, "-m", "stqa", "train", "--data", str(data), "--videos", str(data / "gifs"),
         "--backbone", "tiny", "--task", "all", "--variant", "sptp", *option_flags(TINY_TRAINING),
         "--out", str(run_dir), "--name", "e2e-tiny"],
        check=True, capture_output=True, timeout=300,
    )
    return run_dir / "best"


def sample_videos() -> list[Path]:
    return sorted((synthetic_set() / "gifs").glob("*.gif"))


# --- TGIF-QA files with deliberate answer leaks (test_synth_check, test_baselines) -----------------------
# Kept as one block with its imports inside the function, so it stays self-contained in this shared file.

LEAKY_COLORS = ("red", "green", "blue", "yellow", "purple", "orange")


def write_leaky_set(root: Path, n_train: int = 500, n_test: int = 150, seed: int = 0) -> None:
    """TGIF-format files whose text gives the answer away, one kind of leak per task:

    count: the colour in the question fixes the count; action: the correct candidate is always the longest;
    transition: the correct candidate is the one named in the question; frameqa: the object fixes the colour.
    """
    import string

    import numpy as np

    from stqa.data import tgifqa

    rng = np.random.default_rng(seed)
    pool = ["".join(rng.choice(list(string.ascii_lowercase), size=int(n))) for n in rng.integers(3, 12, size=300)]
    objects = [f"thing{i}" for i in range(8)]
    root.mkdir(parents=True, exist_ok=True)
    for split, n, offset in (("train", n_train, 0), ("test", n_test, n_train)):
        rows: dict[str, list[list[str]]] = {t: [] for t in tgifqa.TASKS}
        for i in range(n):
            key, gif = str(offset + i + 1), f"leak_{offset + i:05d}"
            color = LEAKY_COLORS[int(rng.integers(len(LEAKY_COLORS)))]
            rows["count"].append([gif, f"How many times does the {color} dog jump ?",
                                  str(LEAKY_COLORS.index(color) + 1), f"COUNT{key}", key])
            words = list(rng.choice(pool, size=5, replace=False))
            while sorted(len(w) for w in words)[-1] == sorted(len(w) for w in words)[-2]:
                words = list(rng.choice(pool, size=5, replace=False))
            answer = int(np.argmax([len(w) for w in words]))
            rows["action"].append([gif, "What does the dog do 3 times ?", *words, str(answer), f"ACTION{key}", key])
            words = list(rng.choice(pool, size=5, replace=False))
            answer = int(rng.integers(5))
            rows["transition"].append([gif, f"What does the dog do after {words[answer]} ?", *words, str(answer),
                                       f"TRANS{key}", key])
            obj = int(rng.integers(len(objects)))
            rows["frameqa"].append([gif, f"what color is the {objects[obj]} ?", LEAKY_COLORS[obj % len(LEAKY_COLORS)],
                                    "2", f"FRAMEQA{key}", key, "a leaky caption ."])
        for task in tgifqa.TASKS:
            tgifqa.write(root, task, split, rows[task])
