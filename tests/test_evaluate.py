"""stqa evaluate: hand-computed metrics, every item scored exactly once, the CLI, and torchrun/gloo equality."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from stqa import tasks
from stqa.data.dataset import QADataset, evaluation_batches
from stqa.data.tgifqa import QARecord, Vocab
from stqa.evaluation.evaluator import evaluate_datasets, gather_shards
from stqa.models.stvqa import ModelOutput


class TableModel(torch.nn.Module):
    """A stand-in model whose scores are looked up by the question's first word (``q<i>``)."""

    def __init__(self, words: Vocab, table: dict[str, dict[int, list[float] | float]]):
        super().__init__()
        self.words, self.table = words, table

    def forward(self, task, tokens, token_lengths, frame_mask, features=None, frames=None):
        assert features is not None and features.shape[:2] == frame_mask.shape
        first = tokens[:, 0, 0] if tokens.dim() == 3 else tokens[:, 0]
        rows = [self.table[task][int(self.words.itos[int(i)][1:])] for i in first]
        return ModelOutput(scores=torch.tensor(rows, dtype=torch.float32))


class ZeroClips:
    kind = "features"
    num_frames = 3

    def clip(self, record):
        return torch.zeros(2, 7, 7, 4)


def _records(task, answers, **kw):
    out = []
    for i, a in enumerate(answers):
        cands = tuple(f"c{j}" for j in range(5)) if task in ("action", "transition") else ()
        out.append(QARecord(task=task, qid=f"{task}{i}", key=i + 1, gif_name=f"g{i}", question=f"q{i} what",
                            answer=a, candidates=cands, answer_type=kw.get("types", [None] * len(answers))[i]))
    return out


WORDS = Vocab(["<pad>", "<unk>", "what", *[f"q{i}" for i in range(10)], *[f"c{j}" for j in range(5)]])
ANSWERS = Vocab(["<pad>", "<unk>", "red", "blue", "two"])


def _fixture():
    count = _records("count", [0, 2, 3, 10, 4])
    action = _records("action", [0, 1, 2, 3])
    frameqa = _records("frameqa", ["red", "blue", "purple", "two"], types=["color", "color", "color", "number"])
    table = {
        # raw 2.5 -> 2 (half to even) vs max(0,1)=1: 1; 3.5 -> 4 vs 2: 4; -1 -> 1 vs 3: 4; 12 -> 10 vs 10: 0;
        # 4.49 -> 4 vs 4: 0  => mse = 9/5; raw mse = (1.5^2 + 1.5^2 + 4^2 + 2^2 + 0.49^2)/5
        "count": {0: 2.5, 1: 3.5, 2: -1.0, 3: 12.0, 4: 4.49},
        # ties go to the lowest index: item 1 -> 1 (correct); items 0, 2 correct; item 3 -> 2 (wrong)
        "action": {0: [5, 1, 1, 1, 1], 1: [0, 3, 3, 0, 0], 2: [0, 0, 1, 0, 0], 3: [0, 0, 9, 1, 0]},
        # <pad>/<unk> columns never win: item 0 -> red; item 2's gold "purple" is not a train answer -> wrong
        # whatever is predicted; item 3 -> two
        "frameqa": {0: [9, 9, 1, 0, 0], 1: [0, 0, 1, 0, 0], 2: [0, 0, 0, 5, 0], 3: [0, 0, 0, 0, 1]},
    }
    sets = {t: QADataset(r, t, WORDS, ANSWERS, ZeroClips()) for t, r in
            (("count", count), ("action", action), ("frameqa", frameqa))}
    return TableModel(WORDS, table), sets


def test_metrics_match_hand_computed_values():
    model, sets = _fixture()
    res = evaluate_datasets(model, sets, ANSWERS, batch_size=2, device="cpu")
    m = res["metrics"]
    assert m["count"]["n"] == 5
    assert m["count"]["mse"] == pytest.approx(9 / 5)
    assert m["count"]["mse_raw"] == pytest.approx((1.5**2 + 1.5**2 + 4**2 + 2**2 + 0.49**2) / 5)
    assert m["action"] == {"accuracy": pytest.approx(3 / 4), "n": 4}
    assert res["predictions"]["action"] == [0, 1, 2, 2]
    assert res["predictions"]["frameqa"] == ["red", "red", "blue", "two"]
    assert m["frameqa"]["accuracy"] == pytest.approx(2 / 4)
    assert m["frameqa"]["by_type"] == {"object": None, "number": 1.0, "color": pytest.approx(1 / 3), "location": None}


def decide(task: str, raw: dict, answer_vocab):
    """The prediction stqa evaluate scores: the task's decision (stqa.tasks, shared with the Predictor)."""
    words = answer_vocab.itos if answer_vocab is not None else None
    return tasks.get(task).decide(raw["scores"], answer_words=words).prediction


def test_decide_rules():
    assert decide("transition", {"scores": [1.0, 2.0, 2.0, 0.0, 2.0]}, None) == 1
    assert decide("count", {"scores": 3.7}, None) == pytest.approx(3.7)
    assert decide("frameqa", {"scores": [10.0, 10.0, -1.0, -2.0, -1.0]}, ANSWERS) == "red"


@pytest.mark.parametrize("size", [0, 1, 5, 64, 65, 131])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_item_exactly_once(size, world):
    seen = [i for rank in range(world) for batch in evaluation_batches(size, 7, rank, world) for i in batch]
    assert sorted(seen) == list(range(size))


def test_gather_rejects_duplicates_and_gaps():
    with pytest.raises(RuntimeError, match="missed 1 of 3"):
        gather_shards({0: {}, 1: {}}, 3, 1)
    assert len(gather_shards({0: {}, 1: {}, 2: {}}, 3, 1)) == 3


# -- the CLI, single process and under torchrun ------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from train_helpers import SMALL, train_args, write_feature_benchmark

    from stqa.engine import trainer as train

    root = tmp_path_factory.mktemp("evalbench")
    data, feats = write_feature_benchmark(root / "data", n_train=40, n_test=31)
    assert train.run(train_args(data=data, features=feats, out=root / "run", epochs=2, **SMALL)) == 0
    return data, feats, root / "run"


def _eval_args(**kw):
    from stqa.evaluation import command as evaluate

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    argv = []
    for k, v in kw.items():
        for item in v if isinstance(v, list) else [v]:
            argv += ["--" + k.replace("_", "-"), str(item)]
    return parser.parse_args(argv)


def test_cli_writes_metrics_predictions_and_baselines(trained, tmp_path, capsys):
    from stqa.evaluation import command as evaluate

    data, feats, run = trained
    out = tmp_path / "res"
    assert evaluate.run(_eval_args(checkpoint=run, data=data, features=feats, out=out, batch_size=8,
                                   baseline=["majority", "text-only"])) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"count", "action", "frameqa", "baselines"}
    assert metrics["count"]["n"] == metrics["action"]["n"] == metrics["frameqa"]["n"] == 31
    assert set(metrics["baselines"]) == {"majority", "text-only"}
    assert set(metrics["frameqa"]["by_type"]) == {"object", "number", "color", "location"}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 93 and len({(r["task"], r["qid"]) for r in rows}) == 93
    assert {"qid", "key", "question", "prediction", "answer"} <= set(rows[0])
    count_rows = [r for r in rows if r["task"] == "count"]
    assert sum(r["error"] for r in count_rows) / 31 == pytest.approx(metrics["count"]["mse"])
    table = capsys.readouterr().out
    assert "majority" in table and "text-only" in table and "count" in table
    # --task picks one task; a spec mismatch is named
    assert evaluate.run(_eval_args(checkpoint=run, data=data, features=feats, out=tmp_path / "one", task="count")) == 0
    assert set(json.loads((tmp_path / "one" / "metrics.json").read_text())) == {"count"}
    info = json.loads((tmp_path / "one" / "info.json").read_text())
    assert info["split"] == "test" and info["tasks"] == ["count"] and info["model_version"].startswith("run-")


def test_feature_spec_mismatch_is_named(trained, tmp_path, capsys):
    import numpy as np

    from stqa.data.features import FeatureSpec, FeatureWriter
    from stqa.evaluation import command as evaluate

    data, _, run = trained
    other = tmp_path / "other.h5"
    with FeatureWriter(other, FeatureSpec("unit", 12, 8, "uniform", 32), None) as w:
        w.write(1, np.zeros((2, 7, 7, 12), np.float32), gif_name="x", n_frames=2, indices=np.arange(2))
    assert evaluate.run(_eval_args(checkpoint=run, data=data, features=other)) == 2
    assert "feature spec mismatch (num_frames: checkpoint 6 vs" in capsys.readouterr().err
    assert evaluate.run(_eval_args(checkpoint=tmp_path / "missing", data=data, features=other)) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_videos_are_one_line_naming_the_folder(tmp_path, capsys):
    """Without --features the checkpoint reads DATA/gifs (or --videos): a folder that is absent, or lacks
    videos, is refused in one line before anything is scored."""
    from stqa.cli import main
    from stqa.data import synth, tgifqa

    data = tmp_path / "data"
    synth.generate(data, 6, 7, write_gifs=False)  # annotations only: no gifs/ folder
    assert main(["evaluate", "--data", str(data)]) == 2  # the bundled model (end to end, reads videos)
    assert capsys.readouterr().err == f"stqa evaluate: error: videos directory {data / 'gifs'} does not exist\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "--data", str(data), "--videos", str(empty)]) == 2
    err = capsys.readouterr().err
    n_test = len({r.gif_name for t in tgifqa.TASKS for r in tgifqa.load(data, t, "test")})
    assert err == (f"stqa evaluate: error: videos directory {empty} lacks {n_test} of the {n_test} GIFs this run "
                   f"reads (e.g. {', '.join(synth.gif_name_for(7, i) for i in sorted(synth.test_indices(7, 6, 0.2)))})\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_gloo_processes_match_single_process(trained, tmp_path):
    data, feats, run = trained
    common = ["evaluate", "--checkpoint", str(run), "--data", str(data), "--features", str(feats), "--batch-size", "4"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, "-m", "stqa", *common, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(_free_port()), "-m", "stqa", *common, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    # Batches differ between the runs, so unrounded regression values may differ in the last float bits;
    # everything else (rounded count MSE, accuracies, n) must be identical.
    raw_one, raw_two = one["count"].pop("mse_raw"), two["count"].pop("mse_raw")
    assert raw_one == pytest.approx(raw_two, rel=1e-6)
    assert one == two
    assert two["count"]["n"] == 31
    rows_one = [json.loads(x) for x in (tmp_path / "one" / "predictions.jsonl").read_text().splitlines()]
    rows_two = [json.loads(x) for x in (tmp_path / "two" / "predictions.jsonl").read_text().splitlines()]
    for a, b in zip(rows_one, rows_two, strict=True):
        assert a.pop("raw", 0.0) == pytest.approx(b.pop("raw", 0.0), abs=2e-4)
        assert a == b
