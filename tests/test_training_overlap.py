"""`stqa evaluate` warns when a synthetic set holds the checkpoint's own training videos (issue 22)."""

from __future__ import annotations

import hashlib
import json

from helpers import TINY_TRAINING, option_flags

from stqa.checkpoint import BUNDLED_MODEL, CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from stqa.data import synth
from stqa.evaluation.command import training_overlap_warning


def _test_names(seed: int, n: int) -> set[str]:
    return {synth.gif_name_for(seed, i) for i in synth.test_indices(seed, n, 0.2)}


def test_the_bundled_model_records_its_training_set_and_its_version_is_the_weights():
    config = json.loads((BUNDLED_MODEL / CONFIG_FILE).read_text())
    assert config["training_data"]["synthetic"]["seed"] == 0 and config["training_data"]["synthetic"]["videos"] == 24000
    # model_version pins the weights only, so recording this in config.json left the version unchanged.
    sha = hashlib.sha256((BUNDLED_MODEL / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert load_checkpoint(BUNDLED_MODEL).model_version == f"stqa-synthetic-{sha[:12]}"


def test_seed_0_overlaps_as_the_issue_counted_and_seed_1_does_not():
    config = json.loads((BUNDLED_MODEL / CONFIG_FILE).read_text())
    warning = training_overlap_warning(config, _test_names(0, 2000))
    assert warning is not None and warning.startswith("327 of the 400 videos")
    assert training_overlap_warning(config, _test_names(1, 2000)) is None
    # The training set's own test split is clean; names that are not synthetic are not judged.
    assert training_overlap_warning(config, {synth.gif_name_for(0, i) for i in synth.test_indices(0, 24000, 0.2)}) is None
    assert training_overlap_warning(config, {"tumblr_abc"}) is None
    assert training_overlap_warning({}, _test_names(0, 2000)) is None


def test_evaluate_prints_the_warning(tmp_path, capsys):
    from stqa.cli import main

    data = tmp_path / "s0"
    assert main(["synth", "--out", str(data), "--videos", "15", "--seed", "0"]) == 0  # test videos 1, 12: trained on
    assert main(["evaluate", "--data", str(data), "--task", "count"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "training or validation videos" in err and "--seed" in err


def test_stqa_train_records_its_data_and_evaluate_warns_only_for_the_same_seed(tmp_path, capsys):
    from stqa.cli import main

    data, run = tmp_path / "s5", tmp_path / "run"
    assert main(["synth", "--out", str(data), "--videos", "12", "--seed", "5"]) == 0
    assert main(["train", "--data", str(data), "--videos", str(data / "gifs"), "--backbone", "tiny",
                 "--out", str(run), *option_flags(TINY_TRAINING)]) == 0
    for ckpt in ("best", "last"):
        record = json.loads((run / ckpt / CONFIG_FILE).read_text())["training_data"]
        assert record["synthetic"]["seed"] == 5 and record["synthetic"]["videos"] == 12
        assert record["synthetic"]["test_fraction"] == 0.2
        assert record["data"] == str(data)
        assert record["files"] == [f"Train_{t}_question.csv" for t in ("count", "action", "transition", "frameqa")]
        assert record["held_out_by"] == [f"Test_{t}_question.csv" for t in ("action", "count", "frameqa", "transition")]
        # 12 videos, 2 of them test: the other 10 train or validate, each with 2 action questions
        assert record["videos"]["train"] + record["videos"]["val"] == 10
        action = record["tasks"]["action"]
        assert action["train"]["questions"] == 2 * action["train"]["videos"]
        assert action["val"]["videos"] == record["videos"]["val"] and action["dropped_test_overlap"]["videos"] == 0

    # A seed-5 set of 10 videos tests video 9, which the 12-video set trained on; seed 6 shares only keys.
    assert 9 in synth.test_indices(5, 10, 0.2) and 9 not in synth.test_indices(5, 12, 0.2)
    capsys.readouterr()
    for seed, warned in ((5, True), (6, False)):
        other = tmp_path / f"s{seed}-10"
        assert main(["synth", "--out", str(other), "--videos", "10", "--seed", str(seed)]) == 0
        capsys.readouterr()
        assert main(["evaluate", "--checkpoint", str(run), "--data", str(other), "--task", "count"]) == 0
        err = capsys.readouterr().err
        assert ("training or validation videos (synthetic seed 5" in err) is warned, err
        assert ("WARNING" in err) is warned, err  # the key check: same keys, other seed = other videos
