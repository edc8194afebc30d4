"""`stqa extract --motion`: appearance + motion channels in one store, trained and evaluated from the CLI
(issue 16 §2). The motion weights are random values saved in the real torchvision format."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from motion_helpers import LAYOUTS, random_state

from stqa.checkpoint import FeatureSpec, file_sha256, read_config
from stqa.cli import main
from stqa.models.backbone import build_backbone
from stqa.models.motion import build_motion_backbone, extract_motion
from stqa.video.decode import decode_video
from stqa.video.sampling import sample_indices

T = 4


@pytest.fixture(scope="module")
def motion_store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("motion_e2e")
    data = root / "synth"
    assert main(["synth", "--out", str(data), "--videos", "8", "--seed", "5"]) == 0
    torch.manual_seed(0)
    appearance = root / "tiny.pth"
    torch.save(build_backbone("tiny").state_dict(), appearance)
    motion = root / "r2plus1d_18-kinetics.pth"  # torchvision's zip format, its key names and shapes
    torch.save(random_state(LAYOUTS["r2plus1d_18"](), seed=3), motion)
    out = root / "feats.h5"
    assert main(["extract", "--videos", str(data / "gifs"), "--annotations", str(data), "--backbone", "tiny",
                 "--weights", str(appearance), "--motion", "r2plus1d_18", "--motion-weights", str(motion),
                 "--frames", str(T), "--out", str(out), "--workers", "1"]) == 0
    return {"root": root, "data": data, "appearance": appearance, "motion": motion, "out": out}


def test_store_holds_appearance_then_motion(motion_store) -> None:
    tiny = build_backbone("tiny", motion_store["appearance"]).eval()
    motion = build_motion_backbone("r2plus1d_18", motion_store["motion"]).eval()
    with h5py.File(motion_store["out"], "r") as f:
        attrs = dict(f.attrs)
        key = sorted(f.keys(), key=int)[0]
        stored = f[key][()]
        gif = f[key].attrs["gif_name"]
        indices = np.asarray(f[key].attrs["indices"])
    channels = tiny.out_channels + 512
    assert (attrs["backbone"], int(attrs["channels"]), attrs["motion_backbone"], int(attrs["motion_channels"])) \
        == ("tiny", channels, "r2plus1d_18", 512)
    assert attrs["motion_weights_hash"] == file_sha256(motion_store["motion"])
    spec = FeatureSpec.from_dict({k: attrs[k] for k in ("backbone", "channels", "num_frames", "policy",
                                                        "image_size", "motion_backbone", "motion_channels")})
    assert spec.appearance_channels == tiny.out_channels
    # the motion half is the documented rule run on every decoded frame, around the sampled ones
    video = decode_video(motion_store["data"] / "gifs" / f"{gif}.gif", None, shrink_to=tiny.input_size)
    assert np.array_equal(indices, sample_indices(video.n_frames, T, "uniform"))
    expected = extract_motion(motion, video.frames, indices).numpy()
    assert stored.shape == (len(indices), 7, 7, channels)
    np.testing.assert_allclose(stored[..., tiny.out_channels:], expected, rtol=1e-4, atol=1e-4)
    assert np.abs(stored[..., tiny.out_channels:]).max() > 0  # not an empty stream


def test_motion_store_trains_and_evaluates_from_the_cli(motion_store, capsys) -> None:
    data, feats = motion_store["data"], motion_store["out"]
    for variant in ("sptp", "tp"):
        run = motion_store["root"] / f"run-{variant}"
        assert main(["train", "--data", str(data), "--features", str(feats), "--out", str(run), "--variant", variant,
                     "--task", "count,frameqa", "--epochs", "1", "--embed-dim", "8", "--hidden-dim", "16",
                     "--att-hidden-dim", "8", "--batch-size", "8", "--attention-impl", "reference"]) == 0
        config = read_config(run / "best")
        assert config["feature_spec"]["motion_backbone"] == "r2plus1d_18"
        assert config["model"]["feature_dim"] == config["feature_spec"]["channels"] > 512
        results = motion_store["root"] / f"eval-{variant}"
        assert main(["evaluate", "--checkpoint", str(run), "--data", str(data), "--features", str(feats),
                     "--out", str(results)]) == 0
        metrics = json.loads((results / "metrics.json").read_text())
        assert set(metrics) >= {"count", "frameqa"} and metrics["count"]["n"] > 0


def test_motion_usage_errors(motion_store, tmp_path: Path, capsys) -> None:
    base = ["extract", "--videos", str(motion_store["data"] / "gifs"), "--annotations", str(motion_store["data"]),
            "--backbone", "tiny", "--weights", str(motion_store["appearance"]), "--frames", str(T)]
    assert main([*base, "--motion", "c3d", "--out", str(tmp_path / "a.h5")]) == 2
    assert "--motion c3d needs --motion-weights PATH" in capsys.readouterr().err
    assert main([*base, "--motion", "c3d", "--motion-weights", str(motion_store["motion"]),
                 "--out", str(tmp_path / "b.h5")]) == 2
    assert "not a c3d state_dict" in capsys.readouterr().err
    # an appearance-only run cannot append to the motion store
    assert main([*base, "--out", str(motion_store["out"])]) == 2
    assert "motion" in capsys.readouterr().err
