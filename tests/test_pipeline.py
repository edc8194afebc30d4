"""The new user's path through the command line: synth -> extract -> train on features -> evaluate."""

from __future__ import annotations

import json
from pathlib import Path

from stqa.cli import main as stqa_main
from stqa.data import tgifqa
from stqa.data.features import FeatureStore


def test_synth_extract_train_evaluate(tmp_path: Path) -> None:
    syn, feats, run, res = tmp_path / "syn", tmp_path / "feats.h5", tmp_path / "run", tmp_path / "res"
    assert stqa_main(["synth", "--out", str(syn), "--videos", "10", "--seed", "3"]) == 0

    # tiny without --weights: the bundled model's trained backbone
    assert stqa_main(["extract", "--videos", str(syn / "gifs"), "--annotations", str(syn),
                      "--backbone", "tiny", "--out", str(feats), "--frames", "12"]) == 0
    store = FeatureStore(feats)
    keys = {r.key for task in tgifqa.TASKS for split in ("train", "test") for r in tgifqa.load(syn, task, split)}
    assert set(store.keys()) == keys
    assert store.spec.num_frames == 12 and store.spec.backbone == "tiny"

    assert stqa_main(["train", "--task", "all", "--variant", "sptp", "--data", str(syn), "--features", str(feats),
                      "--out", str(run), "--epochs", "1", "--hidden-dim", "8", "--embed-dim", "8",
                      "--att-hidden-dim", "8", "--batch-size", "8", "--seed", "0"]) == 0
    assert (run / "best" / "model.safetensors").is_file()

    assert stqa_main(["evaluate", "--checkpoint", str(run), "--data", str(syn), "--features", str(feats),
                      "--out", str(res)]) == 0
    metrics = json.loads((res / "metrics.json").read_text())
    for task in tgifqa.TASKS:
        assert metrics[task]["n"] == len(tgifqa.load(syn, task, "test"))
    predictions = (res / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == sum(metrics[t]["n"] for t in tgifqa.TASKS)
