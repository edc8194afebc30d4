"""`stqa synth --check`: passes on the synthetic benchmark, fails on deliberately leaky annotations."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import numpy as np
import pytest

from stqa.cli import main as cli_main
from stqa.data import synth

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")


def write_leaky_set(root: Path, n_train: int = 500, n_test: int = 150, seed: int = 0) -> None:
    """TGIF-format files whose text gives the answer away, one kind of leak per task:

    count: the colour in the question fixes the count; action: the correct candidate is always the longest;
    transition: the correct candidate is the one named in the question; frameqa: the object fixes the colour.
    """
    rng = np.random.default_rng(seed)
    pool = ["".join(rng.choice(list(string.ascii_lowercase), size=int(n))) for n in rng.integers(3, 12, size=300)]
    objects = [f"thing{i}" for i in range(8)]
    root.mkdir(parents=True, exist_ok=True)
    for split, n, offset in (("Train", n_train, 0), ("Test", n_test, n_train)):
        rows: dict[str, list[list[str]]] = {t: [] for t in synth.TASKS}
        for i in range(n):
            key, gif = str(offset + i + 1), f"leak_{offset + i:05d}"
            color = COLORS[int(rng.integers(len(COLORS)))]
            rows["count"].append([gif, f"How many times does the {color} dog jump ?",
                                  str(COLORS.index(color) + 1), f"COUNT{key}", key])
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
            rows["frameqa"].append([gif, f"what color is the {objects[obj]} ?", COLORS[obj % len(COLORS)], "2",
                                    f"FRAMEQA{key}", key, "a leaky caption ."])
        for task in synth.TASKS:
            synth._write_tsv(root / f"{split}_{task}_question.csv", synth.HEADERS[task], rows[task])


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_clean")
    synth.generate(root, 1000, 3, write_gifs=False)
    return root


def test_check_passes_on_the_synthetic_benchmark(clean_set):
    report = synth.check_dataset(clean_set)
    assert report["checked"] == list(synth.TASKS)
    for task, entry in report["tasks"].items():
        assert entry["passed"], (task, entry["rule"], entry["baselines"])
    assert report["passed"]
    text = report["tasks"]["action"]["baselines"]["text-only"]["accuracy"]
    assert text <= 0.2 + synth.MC_MARGIN
    # Sibling questions do not name the correct candidate much more often than a distractor.
    for task, s in report["sibling_mentions"]["train"].items():
        assert s["correct"] - s["distractor"] < 0.15, task


def test_check_fails_on_leaky_annotations(tmp_path, capsys):
    write_leaky_set(tmp_path)
    report = synth.check_dataset(tmp_path)
    assert report["checked"] == list(synth.TASKS)
    assert not report["passed"]
    for task, entry in report["tasks"].items():
        assert entry["passed"] is False, (task, entry["rule"])
    assert cli_main(["synth", "--check", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "text-only" in out
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False


def test_check_reports_missing_splits(clean_set, tmp_path, capsys):
    for f in clean_set.glob("Test_*_question.csv"):
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(clean_set / "Train_count_question.csv", tmp_path)
    report = synth.check_dataset(tmp_path)
    assert report["checked"] == ["count"]
    assert report["tasks"]["frameqa"]["passed"] is None
    assert report["tasks"]["frameqa"]["missing"] == ["train"]
    assert "test_types" in report["tasks"]["frameqa"]
    (tmp_path / "Train_count_question.csv").unlink()
    assert cli_main(["synth", "--check", str(tmp_path)]) == 2  # nothing could be checked
    assert "nothing was checked" in capsys.readouterr().err
    assert cli_main(["synth", "--check", str(tmp_path / "missing")]) == 2
