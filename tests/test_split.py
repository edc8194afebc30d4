"""No test video in training: the run's split drops every GIF a ``Test_*`` file holds (issue 16 §1).

The real-data test needs ``STQA_TGIFQA_ROOT`` (the official annotation files); the others build small
annotation directories whose train and test files share GIFs across tasks, as TGIF-QA's do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from train_helpers import SMALL, train_args, write_feature_benchmark, write_tsv

from stqa.checkpoint import decode_key_set, encode_key_set, read_config
from stqa.cli import main
from stqa.data import tgifqa

REAL = os.environ.get("STQA_TGIFQA_ROOT")


def _keys(root: Path, task: str, split: str) -> set[int]:
    return {r.key for r in tgifqa.load(root, task, split)}


@pytest.mark.skipif(not REAL, reason="STQA_TGIFQA_ROOT (the official TGIF-QA annotation files) not set")
def test_real_count_action_split_excludes_every_test_gif(tmp_path, capsys):
    root = Path(REAL)
    out = tmp_path / "run"
    assert main(["train", "--dry-run", "--data", str(root), "--task", "count,action", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["tasks"]) == ["action", "count"]
    test_files = sorted(root.glob("Test_*_question.csv"))
    assert len(test_files) == 4 and split["test_files"] == [p.name for p in test_files]
    tests = {t: _keys(root, t, "test") for t in ("count", "action", "transition", "frameqa")}
    every_test_key = set().union(*tests.values())
    for task in ("count", "action"):
        part = split["tasks"][task]
        assert not (set(part["train"]) | set(part["val"])) & every_test_key, task
        # nothing else is lost: train + val + dropped is exactly the training file's GIFs
        assert set(part["train"]) | set(part["val"]) | set(part["dropped_test_overlap"]) == _keys(root, task, "train")
        assert set(part["dropped_test_overlap"]) <= every_test_key
    dropped = {t: set(split["tasks"][t]["dropped_test_overlap"]) for t in ("count", "action")}
    # the counts issue 16 states, measured in the official files
    assert len(dropped["action"] & tests["count"]) == 397
    assert len(dropped["action"] & tests["transition"]) == 93
    assert len(dropped["action"] & tests["frameqa"]) == 275
    assert len(dropped["count"] & tests["action"]) == 35
    assert len(dropped["count"] | dropped["action"]) == 432
    # the summary names each task's dropped GIFs; nothing was trained
    assert "count" in printed and "action" in printed and "nothing trained" in printed
    assert str(len(dropped["action"])) in printed
    assert not (out / "last").exists()
    vocab = json.loads((out / "vocab.json").read_text())
    assert len(vocab["word_vocab"]["itos"]) > 1000 and vocab["answer_vocab"] is None


def _cross_task_set(root: Path) -> Path:
    """Count and action annotation files sharing GIFs across tasks: keys 1..40 train count, 21..60
    train action; count tests 61..70 and 30, action tests 71..80 and 5 and 50 (three leaks)."""
    root.mkdir(parents=True, exist_ok=True)
    header_c = ["gif_name", "question", "answer", "vid_id", "key"]
    header_a = ["gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"]

    def count_rows(keys, prefix):
        return [[f"g{k}", "how many times does it jump ?", k % 5, f"{prefix}{k}", k] for k in keys]

    def action_rows(keys, prefix):
        return [[f"g{k}", "what does it do ?", "a", "b", "c", "d", "e", k % 5, f"{prefix}{k}", k] for k in keys]

    write_tsv(root / "Train_count_question.csv", header_c, count_rows(range(1, 41), "C"))
    write_tsv(root / "Train_action_question.csv", header_a, action_rows(range(21, 61), "A"))
    write_tsv(root / "Test_count_question.csv", header_c, count_rows([*range(61, 71), 30], "TC"))
    write_tsv(root / "Test_action_question.csv", header_a, action_rows([*range(71, 81), 5, 50], "TA"))
    return root


def test_single_task_run_drops_the_other_tasks_test_gifs(tmp_path, capsys):
    data = _cross_task_set(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--dry-run", "--data", str(data), "--task", "count", "--out", str(out)]) == 0
    split = json.loads((out / "split.json").read_text())
    assert list(split["tasks"]) == ["count"]
    part = split["tasks"]["count"]
    # key 5 is only in Test_action, key 30 in Test_count: a count-only run still drops both
    assert part["dropped_test_overlap"] == [5, 30]
    assert set(part["train"]) | set(part["val"]) == set(range(1, 41)) - {5, 30}
    assert "count" in capsys.readouterr().out


def test_task_list_and_dry_run_without_out(tmp_path, capsys):
    data = _cross_task_set(tmp_path / "data")
    assert main(["train", "--dry-run", "--data", str(data), "--task", "action,count"]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith(("count", "action"))]
    assert [line.split()[0] for line in lines] == ["count", "action"]  # canonical order
    assert lines[1].split()[3:5] == ["2", "(2)"]  # action: keys 30 and 50 dropped
    assert "nothing trained or written" in printed
    with pytest.raises(SystemExit) as stop:  # an argparse usage error
        main(["train", "--dry-run", "--data", str(data), "--task", "count,nope"])
    assert stop.value.code == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_training_run_excludes_test_gifs_records_keys_and_evaluate_checks_them(tmp_path, capsys):
    from stqa.engine import trainer as train

    data, feats = write_feature_benchmark(tmp_path / "bench", n_train=40, n_test=12)
    # Leak three test GIFs (keys 41..43, all tasks) into the action training file, as TGIF-QA does.
    test_lines = (data / "Test_action_question.csv").read_bytes().split(b"\r\n")[1:4]
    with open(data / "Train_action_question.csv", "ab") as fh:
        fh.write(b"".join(line.replace(b"ACTION", b"LEAK") + b"\r\n" for line in test_lines))
    out = tmp_path / "run"
    args = train_args(data=data, features=feats, out=out, task="count,action", epochs=1, **SMALL)
    assert train.run(args) == 0
    err = capsys.readouterr().err
    assert "action: dropped 3 of 43 training GIFs" in err and "count: dropped 0 of 40" in err
    split = json.loads((out / "split.json").read_text())
    assert split["tasks"]["action"]["dropped_test_overlap"] == [41, 42, 43]
    seen = decode_key_set(read_config(out / "best")["training_keys"])
    assert seen == set(range(1, 41))
    assert not (out / "val_split.json").exists()

    # --resume reuses split.json; a test file that changed since is refused
    assert train.run(train_args(data=data, features=feats, out=out, task="count,action", epochs=2, resume=True,
                                **SMALL)) == 0
    write_tsv(data / "Test_frameqa_question.csv", ["gif_name", "question", "answer", "type", "vid_id", "key",
                                              "description"], [["unit_0007", "what ?", "red", 2, "X7", 7, "d"]])
    with pytest.raises(SystemExit, match="differ from what the annotation files give today"):
        train.run(train_args(data=data, features=feats, out=out, task="count,action", epochs=3, resume=True,
                             **SMALL))
    (data / "Test_frameqa_question.csv").unlink()

    # evaluate on test: checked, no overlap; on train: a warning naming the overlap
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(data), "--features", str(feats),
                 "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert "none of the scored GIFs is among the checkpoint's 40 training GIFs" in err
    info = json.loads((tmp_path / "ev" / "info.json").read_text())
    assert info["training_overlap"] == {"checked": True, "overlap": {"count": 0, "action": 0}}
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(data), "--features", str(feats),
                 "--split", "train", "--task", "count"]) == 0
    assert "WARNING: the checkpoint trained or validated on GIFs it is now scored on (count 40 of 40" in \
        capsys.readouterr().err


def one_epoch_count_run(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(annotations, feature store, run directory) of a one-epoch count run on a small feature benchmark."""
    from stqa.engine import trainer as train

    data, feats = write_feature_benchmark(tmp_path / "bench", n_train=30, n_test=8)
    out = tmp_path / "run"
    assert train.run(train_args(data=data, features=feats, out=out, task="count", epochs=1, **SMALL)) == 0
    return data, feats, out


def test_evaluate_says_when_the_check_is_impossible(tmp_path, capsys):
    from stqa.checkpoint import config_path
    data, feats, out = one_epoch_count_run(tmp_path)
    path = config_path(out / "best")
    config = json.loads(path.read_text())
    del config["training_keys"]
    path.write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "best"), "--data", str(data), "--features", str(feats)]) == 0
    assert "does not record its training GIFs; whether they overlap the scored GIFs could not be checked" in \
        capsys.readouterr().err


def test_resume_of_a_run_with_the_old_val_split_file(tmp_path, capsys):
    from stqa.engine import trainer as train

    data, feats, out = one_epoch_count_run(tmp_path)
    val = json.loads((out / "split.json").read_text())["tasks"]["count"]["val"]
    (out / "split.json").unlink()
    tgifqa.save_split(out / "val_split.json", val, seed=0, fraction=0.1, tasks=["count"])
    assert train.run(train_args(data=data, features=feats, out=out, task="count", epochs=2, resume=True,
                                **SMALL)) == 0
    assert "did not exclude test GIFs" in capsys.readouterr().err
    assert json.loads((out / "split.json").read_text())["tasks"]["count"]["val"] == val


@pytest.mark.parametrize("keys", [[], [0], [7, 3, 2**40, 128, 129, 2**63 - 1], list(range(0, 90000, 3))])
def test_key_set_round_trip(keys):
    record = json.loads(json.dumps(encode_key_set(keys)))
    assert decode_key_set(record) == set(keys) and record["count"] == len(set(keys))


def test_key_set_is_compact_and_damage_is_an_error():
    keys = np.random.default_rng(0).choice(110_000, 50_000, replace=False).tolist()
    record = encode_key_set(keys)
    assert len(record["data"]) < 60_000  # a JSON list would be ~350 KB
    with pytest.raises(ValueError, match="damaged key set"):
        decode_key_set(dict(record, count=record["count"] + 1))
    with pytest.raises(ValueError, match="not a"):
        decode_key_set({"data": record["data"]})

