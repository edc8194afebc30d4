"""`stqa synth --check` (stqa.data.leakage): passes on the synthetic benchmark, fails on deliberately leaky
annotations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import write_leaky_set

from stqa.cli import main as cli_main
from stqa.data import leakage, synth, tgifqa


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_clean")
    synth.generate(root, 1000, 3, write_gifs=False)
    return root


def test_check_passes_on_the_synthetic_benchmark(clean_set):
    report = leakage.check_dataset(clean_set)
    assert report["checked"] == list(tgifqa.TASKS)
    for task, entry in report["tasks"].items():
        assert entry["passed"], (task, entry["rule"], entry["baselines"])
    assert report["passed"]
    text = report["tasks"]["action"]["baselines"]["text-only"]["accuracy"]
    assert text <= 0.2 + leakage.MC_MARGIN
    # Sibling questions do not name the correct candidate much more often than a distractor.
    for task, s in report["sibling_mentions"]["train"].items():
        assert s["correct"] - s["distractor"] < 0.15, task


def test_check_fails_on_leaky_annotations(tmp_path, capsys):
    write_leaky_set(tmp_path)
    report = leakage.check_dataset(tmp_path)
    assert report["checked"] == list(tgifqa.TASKS)
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
    report = leakage.check_dataset(tmp_path)
    assert report["checked"] == ["count"]
    assert report["tasks"]["frameqa"]["passed"] is None
    assert report["tasks"]["frameqa"]["missing"] == ["train"]
    assert "test_types" in report["tasks"]["frameqa"]
    (tmp_path / "Train_count_question.csv").unlink()
    assert cli_main(["synth", "--check", str(tmp_path)]) == 2  # nothing could be checked
    assert "nothing was checked" in capsys.readouterr().err
    assert cli_main(["synth", "--check", str(tmp_path / "missing")]) == 2
