"""`stqa evaluate` warns when a synthetic set holds the checkpoint's own training videos (issue 22)."""

from __future__ import annotations

import hashlib
import json

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
