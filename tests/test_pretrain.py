"""Perception pretraining (stqa.pretrain) and training with a pretrained, frozen backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stqa.data import synth, tgifqa


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_pretrain")
    synth.generate(out, 12, seed=3, size=64, max_frames=40, max_count=4)
    return out


def _train_names(root: Path) -> list[str]:
    return [r.gif_name for r in tgifqa.load(root, "count", "train")]


def test_pretraining_learns_colours_and_shapes(synth_set, tmp_path):
    from stqa.models.backbone import build_backbone
    from stqa.pretrain import PerceptionHead, SceneFrames, perception_loss, pretrain_backbone

    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    names = _train_names(synth_set)
    source = SceneFrames(synth_set, names, image_size=64, grid=4)
    x, y = source.batch(__import__("numpy").random.default_rng(0), 8)
    assert x.shape == (8, 3, 64, 64) and y["color"].shape == (8, 4, 4) and y["geometry"].shape == (8, 4, 4, 3)
    with torch.no_grad():
        _, before = perception_loss(PerceptionHead(128)(backbone.eval()(x)), y)
    stats = pretrain_backbone(backbone, synth_set, names, 150, image_size=64, batch_size=16, lr=3e-3,
                              log_path=tmp_path / "log.jsonl")
    # chance for the colour of an occupied cell is 1/7; an untrained head is near it
    assert before["color_acc"] < 0.5
    assert stats["color_acc"] > 0.9 and stats["empty_acc"] > 0.95, stats
    assert stats["shape_acc"] > 0.6, stats
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [100, 150]
    # only synthetic, same-seed training videos are accepted
    with pytest.raises(ValueError, match="not a synthetic gif_name"):
        SceneFrames(synth_set, ["tumblr_x"], 64, 4)
    with pytest.raises(ValueError, match="seed"):
        SceneFrames(synth_set, [synth.gif_name_for(99, 0)], 64, 4)
    with pytest.raises(FileNotFoundError, match="synth.json"):
        SceneFrames(tmp_path, names, 64, 4)
    # a set from another generator format has other scenes: rendering them would teach the wrong labels
    old = tmp_path / "old"
    old.mkdir()
    meta = json.loads((Path(synth_set) / "synth.json").read_text())
    (old / "synth.json").write_text(json.dumps(dict(meta, format_version=synth.FORMAT_VERSION - 1)))
    with pytest.raises(ValueError, match=f"holds synthetic format {synth.FORMAT_VERSION - 1} but"):
        SceneFrames(old, names, 64, 4)
    (old / "synth.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SceneFrames(old, names, 64, 4)


def test_training_with_a_pretrained_frozen_backbone(synth_set, tmp_path):
    """--pretrain-steps + --freeze-backbone: the backbone is pretrained once, then fixed (identical in
    every checkpoint), QA steps run on its cached maps, and the checkpoint still answers from raw video."""
    from train_helpers import train_args

    from stqa.checkpoint import load_checkpoint
    from stqa.data.dataset import FrameClips
    from stqa.engine import trainer as train
    from stqa.inference import Predictor, Query, model_from_checkpoint
    from stqa.models.encode import encode_clips
    from stqa.models.stvqa import STVQA, ModelConfig

    out = tmp_path / "run"
    args = train_args(data=synth_set, videos=synth_set / "gifs", backbone="tiny", out=out, epochs=2, num_frames=21,
                      image_size=64, pretrain_steps=40, freeze_backbone=True, embed_dim=8, hidden_dim=16,
                      att_hidden_dim=8, batch_size=8, attention_impl="reference")
    assert train.run(args) == 0
    assert len((out / "pretrain.jsonl").read_text().splitlines()) == 1  # step 40
    last, best = load_checkpoint(out / "last"), load_checkpoint(out / "best")
    assert last.config["backbone_pretraining"]["steps"] == 40
    assert 0.0 <= last.config["backbone_pretraining"]["color_acc"] <= 1.0
    bb = {k: v for k, v in last.state_dict.items() if k.startswith("backbone.")}
    assert bb and all(torch.equal(v, best.state_dict[k]) for k, v in bb.items())
    fresh = STVQA(ModelConfig.from_dict(last.config["model"])).state_dict()
    assert not torch.equal(bb["backbone.features.0.weight"], fresh["backbone.features.0.weight"])
    # the cached maps are the backbone's maps of the decoded frames
    model, *_, spec = model_from_checkpoint(last)
    frames = FrameClips(synth_set / "gifs", spec, cache=False)
    record = tgifqa.load(synth_set, "count", "test")[0]
    cached = encode_clips(model.backbone, frames, [record]).clip(record)
    with torch.no_grad():
        direct = model.backbone.eval()(frames.clip(record))
    torch.testing.assert_close(cached, direct)
    # served from raw video like any end-to-end model
    predictor = Predictor.load(out / "best")
    video = predictor.prepare_video(frames.path_for(record))
    (pred,) = predictor.predict([Query(task="count", question=record.question, candidates=[], video=video)])
    assert 1 <= int(pred.answer) <= 10
    # resume keeps the backbone fixed and does not pretrain again
    args.epochs, args.resume = 3, True
    assert train.run(args) == 0
    again = load_checkpoint(out / "last")
    assert all(torch.equal(v, again.state_dict[k]) for k, v in bb.items())
    assert len((out / "pretrain.jsonl").read_text().splitlines()) == 1


def test_pretraining_options_need_a_backbone(tmp_path):
    from train_helpers import train_args

    from stqa.engine import trainer as train

    args = train_args(data=tmp_path, features=tmp_path / "f.h5", out=tmp_path / "r", pretrain_steps=10)
    with pytest.raises(SystemExit, match="need a backbone"):
        train.resolve_config(args)
    args = train_args(data=tmp_path, videos=tmp_path, backbone="tiny", out=tmp_path / "r", pretrain_steps=-1)
    with pytest.raises(SystemExit, match=">= 0"):
        train.resolve_config(args)
