"""stqa train: config resolution, schedules, determinism, resume, and a short run that beats text-only.

The data here is a small TGIF-format benchmark whose answers are written into HDF5 features (a count
flag per frame, a colour channel, an action channel), so a model must read the video to beat the
text-only baseline while a training run takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import SMALL, train_args, write_feature_benchmark


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_feature_benchmark(tmp_path_factory.mktemp("bench"))


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_short_training_run_beats_the_text_only_baseline(bench, tmp_path):
    from stqa.checkpoint import load_checkpoint
    from stqa.data import tgifqa
    from stqa.data.baselines import fit_baseline
    from stqa.data.dataset import FeatureClips, QADataset
    from stqa.data.features import FeatureStore
    from stqa.engine import trainer as train
    from stqa.evaluation.evaluator import evaluate_datasets
    from stqa.inference import model_from_checkpoint
    from stqa.metrics import score_task

    data, feats = bench
    out = tmp_path / "run"
    assert train.run(train_args(data=data, features=feats, out=out, variant="sptp", epochs=12, **SMALL)) == 0
    model, words, answers, _ = model_from_checkpoint(load_checkpoint(out))
    clips = FeatureClips(FeatureStore(feats))
    test_sets = {t: QADataset(tgifqa.load(data, t, "test"), t, words, answers, clips) for t in ("count", "frameqa")}
    metrics = evaluate_datasets(model, test_sets, answers, 32, "cpu")["metrics"]
    blind = {t: score_task(t, ds.records, fit_baseline("text-only", tgifqa.load(data, t, "train")).predict(ds.records),
                           answer_vocab=answers) for t, ds in test_sets.items()}
    assert metrics["frameqa"]["accuracy"] >= blind["frameqa"]["accuracy"] + 0.25, (metrics, blind)
    assert metrics["count"]["mse"] < 0.6 * blind["count"]["mse"], (metrics, blind)
    # run directory contents
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "split.json", "log.jsonl", "best", "last"} <= names
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["variant"] == "sptp" and resolved["epochs"] == 12 and resolved["hidden_dim"] == 16
    # best is chosen on validation only
    log = _log(out)
    best_epoch = max(log, key=lambda e: e["val_score"])["epoch"]
    assert json.loads((out / "best" / "config.json").read_text())["training"]["epoch"] == best_epoch


def test_same_seed_same_losses_and_resume_continues(bench, tmp_path):
    from stqa.engine import trainer as train

    data, feats = bench
    kw = dict(data=data, features=feats, variant="tp", task="count", seed=3, **SMALL)
    train.run(train_args(out=tmp_path / "a", epochs=3, **kw))
    train.run(train_args(out=tmp_path / "b", epochs=3, **kw))
    a, b = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert [e["train_loss"] for e in a] == [e["train_loss"] for e in b]
    # Interrupt after 2 epochs, resume to 3: same losses as the uninterrupted run.
    train.run(train_args(out=tmp_path / "c", epochs=2, **kw))
    train.run(train_args(out=tmp_path / "c", epochs=3, resume=True, **kw))
    c = _log(tmp_path / "c")
    assert [e["epoch"] for e in c] == [0, 1, 2]
    assert [e["train_loss"] for e in c] == [e["train_loss"] for e in a]
    with pytest.raises(SystemExit, match="already holds a run"):
        train.run(train_args(out=tmp_path / "c", epochs=3, **kw))


def test_synthetic_preset_generates_its_set_and_refuses_other_formats(tmp_path):
    from stqa.data import synth
    from stqa.engine import stages as train
    from stqa.engine.config import TrainConfig

    cfg = TrainConfig(data=str(tmp_path / "s"), synth_videos=4, synth_seed=0)
    train.ensure_synthetic(cfg, generate_missing=True)
    meta = json.loads((tmp_path / "s" / "synth.json").read_text())
    assert meta["format_version"] == synth.FORMAT_VERSION and meta["n_videos"] == 4
    train.ensure_synthetic(cfg)  # present and current: used as it is
    train.ensure_synthetic(cfg, generate_missing=True)  # and not generated again
    (tmp_path / "s" / "synth.json").write_text(json.dumps(dict(meta, format_version=1)))
    with pytest.raises(SystemExit, match=f"holds synthetic format 1 but this stqa generates format {synth.FORMAT_VERSION}"):
        train.ensure_synthetic(cfg)
    (tmp_path / "s" / "synth.json").unlink()
    with pytest.raises(SystemExit, match="has no synth.json"):
        train.ensure_synthetic(cfg)


def test_config_file_and_cli_precedence(bench, tmp_path):
    from stqa.engine import trainer as train

    data, feats = bench
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(f'data = "{data}"\nfeatures = "{feats}"\nhidden-dim = 24\nepochs = 7\nvariant = "sp"\n')
    args = train_args(config=cfg_path, out=tmp_path / "x", epochs=2)
    cfg = train.resolve_config(args)
    assert cfg.hidden_dim == 24 and cfg.epochs == 2 and cfg.variant == "sp" and cfg.lr == 1e-3
    preset = train.resolve_config(train_args(preset="synthetic", out=tmp_path / "y", hidden_dim=32))
    assert preset.backbone == "tiny" and preset.hidden_dim == 32 and preset.task == "all"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hiden_dim": 3}))
    with pytest.raises(SystemExit, match="unknown option.*hiden_dim"):
        train.resolve_config(train_args(config=bad, out=tmp_path / "z"))
    with pytest.raises(SystemExit, match="exactly one of --features"):
        train.resolve_config(train_args(data=data, out=tmp_path / "z"))
    with pytest.raises(SystemExit, match="--attended-position needs spatial attention"):
        train.resolve_config(train_args(data=data, features=feats, out=tmp_path / "z", variant="concat",
                                        attended_position=True))
    with pytest.raises(SystemExit, match="--question-gate needs spatial attention"):
        train.resolve_config(train_args(data=data, features=feats, out=tmp_path / "z", variant="tp",
                                        question_gate=True))


def test_training_schedule_groups_videos_and_is_deterministic():
    from stqa.data.dataset import training_schedule

    groups = {k: [("count", k)] + [("frameqa", 10 * k + j) for j in range(k % 3)] for k in range(1, 41)}
    s1 = training_schedule(groups, 10, seed=1, epoch=0)
    assert s1 == training_schedule(groups, 10, seed=1, epoch=0)
    assert s1 != training_schedule(groups, 10, seed=1, epoch=1)
    flat = [k for step in s1 for k in step]
    assert sorted(flat) == list(range(1, 41))  # every video once per epoch
    assert all(sum(len(groups[k]) for k in step) >= 10 for step in s1[:-1])
    # with 3 ranks a last step of fewer than 3 videos is dropped, so no rank gets an empty share
    s3 = training_schedule(groups, 10, seed=1, epoch=0, world_size=3)
    assert all(len(step) >= 3 for step in s3)


def test_tensorboard_without_the_package_is_a_clear_error(bench, tmp_path, monkeypatch):
    import builtins

    from stqa.engine import trainer as train

    real_import = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard") or name == "tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    data, feats = bench
    with pytest.raises(SystemExit, match="tensorboard package"):
        train.run(train_args(data=data, features=feats, out=tmp_path / "tb", epochs=1, task="count",
                             tensorboard=tmp_path / "tblog", **SMALL))


def test_torchrun_two_gloo_processes_train(bench, tmp_path):
    """DistributedDataParallel training under torchrun (gloo on CPU) runs and writes one checkpoint set."""
    import os
    import socket
    import subprocess
    import sys

    data, feats = bench
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(port), "-m", "stqa", "train", "--data", str(data), "--features", str(feats),
         "--out", str(out), "--epochs", "2", "--hidden-dim", "16", "--embed-dim", "8", "--att-hidden-dim", "8",
         "--batch-size", "16", "--attention-impl", "reference"],
        env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on cpu x2" in proc.stderr
    log = _log(out)
    assert [e["epoch"] for e in log] == [0, 1]
    assert json.loads((out / "last" / "config.json").read_text())["training"]["world_size"] == 2


def test_glove_vectors_are_aligned_and_frozen(bench, tmp_path):
    """--glove: row i of the embedding is the file's vector for vocabulary word i (no off-by-two), frozen."""
    from stqa.checkpoint import load_checkpoint
    from stqa.data.tgifqa import Vocab
    from stqa.engine import trainer as train

    data, feats = bench
    vectors = {"how": [0.5, -1.0, 2.0, 0.25], "many": [1.0, 1.0, 1.0, 1.0], "flash": [-3.0, 0.0, 0.5, 7.0]}
    glove = tmp_path / "glove.txt"
    glove.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items()))
    small = dict(SMALL, embed_dim=4)
    assert train.run(train_args(data=data, features=feats, out=tmp_path / "g", epochs=1, task="count",
                                glove=glove, **small)) == 0
    ck = load_checkpoint(tmp_path / "g" / "last")
    words = Vocab.from_dict(ck.config["word_vocab"])
    emb = ck.state_dict["embedding.weight"]
    for w, v in vectors.items():
        assert emb[words.stoi[w]].tolist() == v
    assert float(emb[0].abs().sum()) == 0.0  # <pad>
    assert ck.config["model"]["freeze_embeddings"] is True
    with pytest.raises(SystemExit, match="vector has 4 dims, --embed-dim is 8"):
        train.run(train_args(data=data, features=feats, out=tmp_path / "g2", epochs=1, task="count",
                             glove=glove, **dict(SMALL, embed_dim=8)))


def _one_error_line(capsys, command: str = "train") -> str:
    """stderr of a command that failed on its input: exactly one ``stqa <command>: error:`` line, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"stqa {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_missing_annotation_files_are_named_in_one_line(bench, tmp_path, capsys):
    import shutil

    from stqa.cli import main

    data, feats = bench
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    for f in data.glob("Test_*_question.csv"):
        shutil.copy(f, only_test)
    common = ["train", "--features", str(feats), "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert main([*common, "--data", str(only_test), "--task", "count,action"]) == 2
    line = _one_error_line(capsys)
    assert str(only_test) in line and "Train_count_question.csv" in line and "Train_action_question.csv" in line
    assert main([*common, "--data", str(only_test)]) == 2  # --task all: no Train file at all
    line = _one_error_line(capsys)
    assert str(only_test) in line and all(f"Train_{t}_question.csv" in line for t in ("count", "frameqa"))
    assert main([*common, "--data", str(tmp_path / "typo")]) == 2
    assert _one_error_line(capsys).endswith(f"--data {tmp_path / 'typo'} does not exist")
    assert not (tmp_path / "run").exists()


def test_a_feature_store_lacking_clips_is_refused_before_training(bench, tmp_path, capsys):
    import shutil

    import h5py

    from stqa.cli import main

    data, feats = bench
    partial = tmp_path / "partial.h5"
    shutil.copy(feats, partial)
    with h5py.File(partial, "a") as f:
        for key in range(1, 11):  # ten training GIFs: unit_0001 .. unit_0010
            del f[str(key)]
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--features", str(partial), "--out", str(out), "--epochs", "1"]) == 2
    line = _one_error_line(capsys)
    assert f"feature store {partial} lacks 10 of the 60 GIFs" in line and "unit_0001 (key 1)" in line
    # refused before the model was built: no config, no checkpoint (only the split is recorded)
    assert not (out / "config.json").exists() and not (out / "last").exists()


def test_synthetic_preset_generates_only_when_asked_and_says_what_first(tmp_path, capsys, monkeypatch):
    """A mistyped --data must not silently start generating 24,000 videos: without --generate it is one line
    naming the stqa synth command; with it, what will be generated is printed before generation starts."""
    import stqa.data.synth
    from stqa.cli import main

    def no_generation(*args, **kwargs):
        raise AssertionError("generation started without --generate")

    typo = tmp_path / "synht24000"
    monkeypatch.setattr(stqa.data.synth, "generate", no_generation)
    assert main(["train", "--preset", "synthetic", "--data", str(typo), "--out", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys)
    assert f"--data {typo} does not exist" in line and f"`stqa synth --out {typo} --videos 24000 --seed 0`" in line
    assert "--generate" in line and not typo.exists()
    monkeypatch.undo()

    # --generate: the plan (videos, folder, time) comes before the generation; a 30-video set for the test
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"synth_videos": 30, "synth_seed": 5}))
    argv = ["train", "--preset", "synthetic", "--config", str(small), "--data", str(typo), "--generate", "--dry-run"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    first = captured.err.splitlines()[0]
    assert first == f"stqa train: generating 30 videos (seed 5) in {typo}, under 2 min", captured.err
    assert json.loads((typo / "synth.json").read_text())["n_videos"] == 30 and "dry run over" in captured.out
    assert main(["train", "--data", str(typo), "--dry-run", "--generate"]) == 2  # nothing to generate
    assert "--generate" in _one_error_line(capsys)


def test_a_preset_s_videos_folder_follows_another_data_folder(tmp_path):
    """`--preset synthetic --data OTHER` reads OTHER's videos, never the preset's own set's."""
    from stqa.engine.config import resolve_config

    other, mine = tmp_path / "synth-other", tmp_path / "my-gifs"
    config = resolve_config(train_args(preset="synthetic", data=other, dry_run=True))
    assert Path(config.videos) == other / "gifs"
    default = resolve_config(train_args(preset="synthetic", dry_run=True))
    assert (default.data, default.videos) == ("data/synth24000", "data/synth24000/gifs")
    given = resolve_config(train_args(preset="synthetic", data=other, videos=mine, dry_run=True))
    assert Path(given.videos) == mine
