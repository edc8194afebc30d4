"""`stqa train --preset tgifqa-stvqa` (issue 16 §3): the paper's values, the store it needs, and the FrameQA
numbers that sit beside published tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stqa.checkpoint import FeatureSpec, read_config
from stqa.cli import main
from stqa.data import tgifqa
from stqa.data.features import FeatureWriter
from stqa.engine import recipe

PAPER = FeatureSpec(backbone="resnet152", channels=2048 + 512, num_frames=35, policy="uniform", image_size=224,
                    motion_backbone="c3d", motion_channels=512)


def _store(path: Path, data: Path, spec: FeatureSpec) -> Path:
    """Random maps of the right shape for every GIF the annotation files name (a few frames each)."""
    rng = np.random.default_rng(0)
    keys = {}
    for split in ("train", "test"):
        for r in tgifqa.load(data, "frameqa", split):
            keys[r.key] = r.gif_name
    with FeatureWriter(path, spec, weights_hash="appearance", motion_weights_hash="motion") as writer:
        for key, gif in keys.items():
            t = 3
            writer.write(key, rng.standard_normal((t, 7, 7, spec.channels)).astype(np.float32), gif_name=gif,
                         n_frames=t, indices=np.arange(t))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("recipe")
    data = root / "synth"
    assert main(["synth", "--out", str(data), "--videos", "10", "--seed", "2", "--no-gifs"]) == 0
    words = sorted({w for r in tgifqa.load(data, "frameqa", "train") for w in tgifqa.tokenize(r.question)})
    glove = root / "glove.txt"
    rng = np.random.default_rng(1)
    glove.write_text("".join(f"{w} {' '.join(f'{v:.3f}' for v in rng.standard_normal(300))}\n" for w in words))
    return {"root": root, "data": data, "glove": glove, "store": _store(root / "paper.h5", data, PAPER)}


def _train(small: dict, out: Path, *extra: str) -> int:
    return main(["train", "--preset", recipe.NAME, "--data", str(small["data"]), "--glove", str(small["glove"]),
                 "--out", str(out), *extra])


def test_preset_runs_on_a_small_store_and_reports_the_frameqa_answer_set(small, capsys) -> None:
    run = small["root"] / "run"
    assert _train(small, run, "--task", "frameqa", "--features", str(small["store"]), "--epochs", "1",
                  "--attention-impl", "reference") == 0
    err = capsys.readouterr().err
    assert "tgifqa-stvqa: note: Tp/Concat would read C3D fc6" in err
    config = json.loads((run / "config.json").read_text())
    for key, value in recipe.VALUES.items():
        if key != "epochs":
            assert config[key] == value, key
    assert config["task"] == "frameqa" and config["epochs"] == 1
    model = read_config(run / "best")["model"]
    assert (model["variant"], model["hidden_dim"], model["feature_dim"], model["freeze_embeddings"]) == \
        ("sptp", 512, 2560, True)

    results = small["root"] / "eval"
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(small["data"]), "--features",
                 str(small["store"]), "--out", str(results)]) == 0
    printed = capsys.readouterr().out
    numbers = json.loads((results / "metrics.json").read_text())["frameqa"]
    answer_set = numbers["answer_set"]
    # recompute from the files: the share of test answers the training answers lack
    train_answers = {str(r.answer) for r in tgifqa.load(small["data"], "frameqa", "train")}
    test = tgifqa.load(small["data"], "frameqa", "test")
    unseen = sum(str(r.answer) not in train_answers for r in test)
    assert answer_set["n_unseen_answer"] <= unseen  # validation GIFs' answers are not training answers either
    assert answer_set["unseen_answer_share"] == pytest.approx(answer_set["n_unseen_answer"] / len(test))
    assert answer_set["official_answer_set_accuracy"] == pytest.approx(numbers["accuracy"])
    if answer_set["accuracy_on_seen_answers"] is not None:
        assert answer_set["accuracy_on_seen_answers"] == pytest.approx(
            numbers["accuracy"] / answer_set["ceiling"])
    assert "have an answer never seen in training" in printed
    assert "accuracy on the questions whose answer was seen in training" in printed
    assert "official answer-set protocol" in printed


def test_preset_refuses_a_store_without_motion_and_says_what_is_missing(small, capsys) -> None:
    appearance_only = FeatureSpec(backbone="resnet152", channels=2048, num_frames=20, policy="uniform",
                                  image_size=224)
    store = _store(small["root"] / "appearance.h5", small["data"], appearance_only)
    assert _train(small, small["root"] / "refused", "--task", "frameqa", "--features", str(store)) == 2
    err = capsys.readouterr().err
    assert "lacks a motion stream (stqa extract --motion c3d" in err and "T = 35 frames (the store has 20" in err
    assert recipe.missing_from_store(PAPER) == []


@pytest.mark.parametrize("argv, message", [
    (["--task", "all"], "trains one model per task"),
    (["--task", "count,action"], "trains one model per task"),
])
def test_preset_refuses_multi_task_runs(small, capsys, argv, message) -> None:
    assert _train(small, small["root"] / "x", *argv, "--features", str(small["store"])) == 2
    assert message in capsys.readouterr().err


def test_preset_needs_glove_and_features(small, capsys) -> None:
    out = small["root"] / "y"
    assert main(["train", "--preset", recipe.NAME, "--data", str(small["data"]), "--task", "count", "--features",
                 str(small["store"]), "--out", str(out)]) == 2
    assert "give --glove FILE" in capsys.readouterr().err
    assert _train(small, out, "--task", "count", "--videos", str(small["data"]), "--backbone", "tiny") == 2
    assert "reads a feature store" in capsys.readouterr().err
