"""Checkpoints: round trip, atomic replacement, spec mismatch, corrupted files, optimizer state."""

from __future__ import annotations

import json

import pytest
import torch

from stqa import checkpoint as ckpt_mod
from stqa.checkpoint import CheckpointError, check_spec, load_checkpoint, save_checkpoint
from stqa.data.features import FeatureSpec
from stqa.data.tgifqa import Vocab
from stqa.inference import model_from_checkpoint
from stqa.models.stvqa import STVQA, ModelConfig

SPEC = FeatureSpec(backbone="resnet152", channels=12, num_frames=6, policy="uniform", image_size=224)


def _model(seed: int = 0, **options: bool) -> STVQA:
    torch.manual_seed(seed)
    cfg = ModelConfig(variant="sptp", tasks=["count", "frameqa"], vocab_size=10, feature_dim=12, num_answers=5,
                      embed_dim=4, hidden_dim=8, att_hidden_dim=4, dropout=0.0, **options)
    return STVQA(cfg).eval()


def _meta(model: STVQA) -> dict:
    return {
        "name": "unit",
        "model": model.config.to_dict(),
        "word_vocab": Vocab(["<pad>", "<unk>", *[f"w{i}" for i in range(8)]]).to_dict(),
        "answer_vocab": Vocab(["<pad>", "<unk>", "a", "b", "c"]).to_dict(),
        "feature_spec": SPEC.to_dict(),
        "training": {"epoch": 0},
    }


def _inputs():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 6, 7, 7, 12, generator=g)
    mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    return torch.tensor([[2, 3, 4], [5, 6, 0]]), torch.tensor([3, 2]), mask, feats


@pytest.mark.parametrize("options", [{}, {"attended_position": True}, {"question_gate": True}])
def test_round_trip_gives_identical_outputs(tmp_path, options):
    model = _model(**options)
    save_checkpoint(tmp_path / "ck", model.state_dict(), _meta(model))
    loaded = load_checkpoint(tmp_path / "ck")
    again, words, answers, spec = model_from_checkpoint(loaded)
    tok, lens, mask, feats = _inputs()
    for task in ("count", "frameqa"):
        torch.testing.assert_close(model(task, tok, lens, mask, features=feats).scores,
                                   again(task, tok, lens, mask, features=feats).scores, rtol=0, atol=0)
    assert spec == SPEC and answers.itos[2:] == ["a", "b", "c"] and len(words) == 10
    assert loaded.model_version.startswith("unit-") and len(loaded.model_version) == len("unit-") + 12
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    first = _model(0)
    save_checkpoint(tmp_path / "ck", first.state_dict(), _meta(first))
    before = (tmp_path / "ck" / "model.safetensors").read_bytes()

    real = ckpt_mod.save_file

    def failing(tensors, path, metadata=None):
        if path.endswith("optimizer.safetensors"):
            raise OSError("disk full")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt_mod, "save_file", failing)
    second = _model(1)
    opt = torch.optim.Adam(second.parameters())
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", second.state_dict(), _meta(second), optimizer_state=opt.state_dict())
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before
    load_checkpoint(tmp_path / "ck")  # still valid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_optimizer_state_and_rng_round_trip(tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    tok, lens, mask, feats = _inputs()
    model.train()
    model("count", tok, lens, mask, features=feats).scores.sum().backward()
    opt.step()
    rng = torch.get_rng_state()
    save_checkpoint(tmp_path / "ck", model.state_dict(), _meta(model), optimizer_state=opt.state_dict(), rng_state=rng)
    loaded = load_checkpoint(tmp_path / "ck", with_optimizer=True)
    opt2 = torch.optim.Adam(_model(3).parameters(), lr=1.0)
    opt2.load_state_dict(loaded.optimizer)
    assert opt2.param_groups[0]["lr"] == 3e-4
    for pid, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(loaded.optimizer["state"][pid][name], value)
    assert torch.equal(loaded.rng_state, rng)


def test_spec_mismatch_names_the_field():
    with pytest.raises(CheckpointError, match=r"num_frames: checkpoint 35 vs the data 20"):
        check_spec({**SPEC.to_dict(), "num_frames": 35}, {**SPEC.to_dict(), "num_frames": 20})
    with pytest.raises(CheckpointError, match=r"backbone.*channels"):
        check_spec(SPEC.to_dict(), {**SPEC.to_dict(), "backbone": "tiny", "channels": 128})
    check_spec(SPEC.to_dict(), SPEC.to_dict())


def test_corrupted_and_missing_files_are_reported(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "ck", model.state_dict(), _meta(model))
    weights = tmp_path / "ck" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "ck")
    # Without the recorded hash, safetensors itself must reject a truncated file.
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    del cfg["weights_sha256"]
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    weights.write_bytes(bytes(data[:100]))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="no optimizer state"):
        save_checkpoint(tmp_path / "ck2", model.state_dict(), _meta(model))
        load_checkpoint(tmp_path / "ck2", with_optimizer=True)


def test_weights_that_do_not_fit_the_config(tmp_path):
    model = _model()
    meta = _meta(model)
    meta["model"]["hidden_dim"] = 16
    save_checkpoint(tmp_path / "ck", model.state_dict(), meta)
    with pytest.raises(CheckpointError, match="do not fit the model config"):
        model_from_checkpoint(load_checkpoint(tmp_path / "ck"))


def test_loading_never_unpickles(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "ck", model.state_dict(), _meta(model))
    import pickle

    def boom(*a, **k):
        raise AssertionError("pickle used")

    orig = pickle.loads, pickle.load
    pickle.loads, pickle.load = boom, boom
    try:
        model_from_checkpoint(load_checkpoint(tmp_path / "ck"))
    finally:
        pickle.loads, pickle.load = orig
