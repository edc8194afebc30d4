"""The data split of a training run: which GIFs train, which validate, and which are dropped because a
test file holds them.

TGIF-QA's train/test splits are per task and not disjoint across tasks: hundreds of Count-test GIFs are
in ``Train_action`` (where a question such as "What does the woman do 7 times ?" gives the Count answer
away). So every GIF key that appears in **any** ``Test_*`` file of the annotation directory, of any task,
is dropped from training and validation, for single- and multi-task runs alike; there is no switch. The
remaining keys are split into train and validation once for all tasks of the run (a GIF shared by two
tasks is never in one task's train and another's validation).

The split is written to ``RUN/split.json``::

    {"format": "stqa-split/1", "seed": 0, "val_fraction": 0.1, "test_files": [...],
     "tasks": {"count": {"train": [keys], "val": [keys], "dropped_test_overlap": [keys]}, ...}}

and ``--resume`` reuses it (or the validation keys of a run's older ``val_split.json``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from stqa import tasks
from stqa.data import tgifqa

SPLIT_FILE = "split.json"
#: What runs before the test-overlap exclusion wrote: the validation keys only.
LEGACY_SPLIT_FILE = "val_split.json"
FORMAT = "stqa-split/1"


def held_out_keys(data: str | os.PathLike) -> dict[str, frozenset[int]]:
    """The GIF keys of every ``Test_<task>_question.csv`` present in ``data``, by file name."""
    found: dict[str, frozenset[int]] = {}
    for task in tasks.TASK_NAMES:
        name = tgifqa.annotation_filename(task, "test")
        if (Path(data) / name).is_file():
            found[name] = frozenset(r.key for r in tgifqa.load(data, task, "test"))
    return found


@dataclass
class TaskSplit:
    """One task's training records, split: ``dropped`` are the records whose GIF a test file holds."""

    train: list[tgifqa.QARecord] = field(default_factory=list)
    val: list[tgifqa.QARecord] = field(default_factory=list)
    dropped: list[tgifqa.QARecord] = field(default_factory=list)

    def keys(self) -> dict[str, list[int]]:
        """The ``split.json`` entry of the task: sorted unique keys of each part."""
        return {"train": _keys(self.train), "val": _keys(self.val), "dropped_test_overlap": _keys(self.dropped)}


@dataclass
class RunSplit:
    """Every task's split, and how it was made."""

    tasks: dict[str, TaskSplit]
    seed: int
    val_fraction: float
    test_files: list[str]

    @property
    def train(self) -> dict[str, list[tgifqa.QARecord]]:
        return {t: s.train for t, s in self.tasks.items()}

    @property
    def val(self) -> dict[str, list[tgifqa.QARecord]]:
        return {t: s.val for t, s in self.tasks.items()}

    def seen_keys(self) -> frozenset[int]:
        """Every GIF key the run trains or validates on (what a checkpoint records)."""
        return frozenset(r.key for s in self.tasks.values() for r in s.train + s.val)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "seed": self.seed, "val_fraction": self.val_fraction,
                "test_files": self.test_files, "tasks": {t: s.keys() for t, s in self.tasks.items()}}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")


def _keys(records: list[tgifqa.QARecord]) -> list[int]:
    return sorted({r.key for r in records})


def build_split(data: str | os.PathLike, names: list[str], val_fraction: float, seed: int,
                val_keys: frozenset[int] | None = None) -> RunSplit:
    """Load each task's training file, drop every record whose GIF a ``Test_*`` file holds, and hold
    out validation GIFs (``val_keys``, or a seeded ``val_fraction`` of the remaining GIFs of all tasks)."""
    held_out = held_out_keys(data)
    excluded = frozenset().union(*held_out.values())
    loaded = {t: tgifqa.load(data, t, "train") for t in names}
    kept = {t: [r for r in loaded[t] if r.key not in excluded] for t in names}
    if val_keys is None:
        val_keys = tgifqa.validation_keys([r.key for t in names for r in kept[t]], val_fraction, seed)
    parts: dict[str, TaskSplit] = {}
    for t in names:
        train, val = tgifqa.apply_split(kept[t], val_keys)
        parts[t] = TaskSplit(train, val, [r for r in loaded[t] if r.key in excluded])
        if not train or not val:
            raise SystemExit(f"error: {t}: {len(train)} train / {len(val)} validation items after the split "
                             f"({len(parts[t].dropped)} dropped because a test file holds their GIF); "
                             "need at least one of each")
    return RunSplit(parts, int(seed), float(val_fraction), sorted(held_out))


def read_recorded(out: Path) -> tuple[frozenset[int], dict | None] | None:
    """The validation keys a run directory recorded, and its ``split.json`` (None for a run that only
    has the older ``val_split.json``); None when the run recorded no split."""
    path = out / SPLIT_FILE
    if path.is_file():
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise SystemExit(f"error: {path} is not valid JSON ({err})") from err
        if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(payload.get("tasks"), dict):
            raise SystemExit(f"error: {path} is not a {FORMAT} file")
        val = frozenset(int(k) for part in payload["tasks"].values() for k in part.get("val", []))
        return val, payload
    legacy = out / LEGACY_SPLIT_FILE
    if legacy.is_file():
        return tgifqa.load_split(legacy), None
    return None


def split_for_run(data: str | os.PathLike, names: list[str], val_fraction: float, seed: int, out: Path,
                  write: bool) -> RunSplit:
    """The run's split: the one ``out`` recorded (``--resume``, or a ``--dry-run`` before it), else a new
    one; written to ``out/split.json`` when ``write`` (rank 0).

    A recorded split is rebuilt from today's files with the recorded validation keys and must come out
    the same; if a test file was added or the training files changed since, the run is refused rather
    than continued on different data.
    """
    recorded = read_recorded(out)
    if recorded is None:
        split = build_split(data, names, val_fraction, seed)
    else:
        val_keys, payload = recorded
        split = build_split(data, names, val_fraction, seed, val_keys=val_keys)
        if payload is None:
            print(f"note: {out / LEGACY_SPLIT_FILE} is from a run that did not exclude test GIFs; its validation "
                  f"keys are kept, test GIFs are dropped from now on (earlier epochs may have trained on them)",
                  file=sys.stderr)
        else:
            _check_same(split, payload, out / SPLIT_FILE)
    if write:
        split.save(out / SPLIT_FILE)
    return split


def _check_same(split: RunSplit, payload: dict, path: Path) -> None:
    recorded = payload["tasks"]
    if sorted(recorded) != sorted(split.tasks):
        raise SystemExit(f"error: {path} splits tasks {sorted(recorded)}, this run trains {sorted(split.tasks)}")
    for task, part in split.tasks.items():
        for name, keys in part.keys().items():
            if sorted(int(k) for k in recorded[task].get(name, [])) != keys:
                raise SystemExit(f"error: {path}: the {task} {name} GIFs differ from what the annotation files "
                                 "give today (a test or training file changed since the run started); "
                                 "start a new run with another --out")


def summary_lines(split: RunSplit) -> list[str]:
    """One line per task: what the exclusion dropped (printed by every training run)."""
    lines = []
    for task, part in split.tasks.items():
        n_gifs = len({r.key for r in part.train + part.val + part.dropped})
        lines.append(f"{task}: dropped {len(part.keys()['dropped_test_overlap'])} of {n_gifs} training GIFs "
                     f"({len(part.dropped)} questions) held by a test file")
    return lines
