"""`stqa synth --check` (stqa.data.leakage): passes on the synthetic benchmark, fails on deliberately leaky
annotations."""

from __future__ import annotations

import json
import os
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
    capsys.readouterr()
    (tmp_path / "Train_count_question.csv").unlink()
    assert cli_main(["synth", "--check", str(tmp_path)]) == 2  # nothing could be checked
    captured = capsys.readouterr()
    assert "nothing was checked" in captured.err and "PASS" not in captured.out  # no verdict, never PASS
    assert cli_main(["synth", "--check", str(tmp_path / "missing")]) == 2


def test_a_folder_without_annotation_files_is_one_error_line_never_pass(tmp_path, capsys):
    (tmp_path / "unrelated.txt").write_text("not an annotation file\n")
    assert cli_main(["synth", "--check", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no report, so no PASS
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"stqa synth --check: {tmp_path} holds no ")
    assert "Train_count_question.csv" in captured.err and "Test_frameqa_question.csv" in captured.err


def test_wilson_interval_matches_the_formula():
    lo, hi = leakage.wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)  # the textbook example
    lo, hi = leakage.wilson_interval(0, 8)
    assert lo == 0.0 and hi == pytest.approx(0.3244, abs=1e-4)  # no success: still a wide interval
    assert leakage.mean_interval([3.0]) == (float("-inf"), float("inf"))
    assert leakage.decide((0.02, 0.47), 0.3, higher_is_clean=False) == "INCONCLUSIVE"
    assert leakage.decide((0.45, 0.49), 0.3, higher_is_clean=False) == "FAIL"
    assert leakage.decide((0.18, 0.24), 0.3, higher_is_clean=False) == "PASS"
    assert leakage.decide((4.68, 5.25), 4.5, higher_is_clean=True) == "PASS"


def test_small_sets_are_inconclusive_with_their_sample_size_and_interval(tmp_path, capsys):
    """20 videos give 7-16 test questions a task: too few to call a leak, so no FAIL (nor PASS)."""
    synth.generate(tmp_path, 20, 1, write_gifs=False)
    assert cli_main(["synth", "--check", str(tmp_path), "--json", str(tmp_path / "r.json")]) == leakage.EXIT_INCONCLUSIVE
    out = capsys.readouterr().out
    assert "FAIL" not in out and "INCONCLUSIVE" in out and "n=8)" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verdict"] == "INCONCLUSIVE" and report["passed"] is False
    for task in report["checked"]:
        entry = report["tasks"][task]
        assert entry["n"] == len(tgifqa.load(tmp_path, task, "test")) == entry["baselines"]["text-only"]["n"]
        lo, hi = entry["interval"]
        if entry["verdict"] == "INCONCLUSIVE":
            assert lo <= entry["limit"] <= hi and entry["passed"] is None, (task, entry)
        assert entry["verdict"] != "FAIL", (task, entry["rule"])


def test_reported_distributions_are_the_loaders(tmp_path):
    """The answers the check reports are the ones training reads: counts of 0 stay 0 (scored as 1)."""
    from collections import Counter

    synth.generate(tmp_path, 20, 2, write_gifs=False)
    # TGIF-QA's count files hold the answer 0 (a quarter of Train_count); the generator never writes it
    records = tgifqa.load(tmp_path, "count", "train")
    tgifqa.write(tmp_path, "count", "train", [
        {"gif_name": r.gif_name, "question": r.question, "answer": 0 if i % 4 == 0 else r.answer,
         "vid_id": r.qid, "key": r.key} for i, r in enumerate(records)])
    report = leakage.check_dataset(tmp_path)
    for task in tgifqa.TASKS:
        entry = report["tasks"][task]
        for split in ("train", "test"):
            loaded = tgifqa.load(tmp_path, task, split)
            assert entry["sizes"][split] == len(loaded)
            if task == "count":
                assert entry[f"{split}_answers"] == {str(k): n for k, n in sorted(Counter(r.answer for r in loaded).items())}
            elif task == "frameqa":
                assert entry[f"{split}_types"] == dict(sorted(Counter(r.answer_type for r in loaded).items()))
            else:
                dist = Counter(r.answer for r in loaded)
                assert entry[f"{split}_answer_index"] == {str(i): dist[i] for i in range(5)}
    assert report["tasks"]["count"]["train_answers"]["0"] == len(records[::4])


@pytest.mark.skipif(not os.environ.get("STQA_TGIFQA_ROOT"), reason="STQA_TGIFQA_ROOT (the official files) not set")
def test_real_count_answers_are_the_loaders(tmp_path):
    """On TGIF-QA's count files (a quarter of the answers are 0) the check reports 0 where the loader reads 0."""
    from collections import Counter

    root = Path(os.environ["STQA_TGIFQA_ROOT"])
    for split in ("train", "test"):  # count only, so the check fits a test's time
        shutil.copy(root / tgifqa.annotation_filename("count", split), tmp_path)
    entry = leakage.check_dataset(tmp_path)["tasks"]["count"]
    for split in ("train", "test"):
        loaded = Counter(r.answer for r in tgifqa.load(root, "count", split))
        assert entry[f"{split}_answers"] == {str(k): n for k, n in sorted(loaded.items())} and loaded[0] > 0
