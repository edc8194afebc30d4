"""Motion-stream backbones: strict loading of the real key layouts, output shapes, the clip rule."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from motion_helpers import (
    CONV_ONLY,
    LAYOUTS,
    c3d_sports1m_layout,
    random_state,
    torchvision_r2plus1d_18_layout,
)

from stqa.models.motion import (
    C3D,
    KINETICS_MEAN,
    KINETICS_STD,
    MOTION_BACKBONES,
    MotionBackbone,
    R2Plus1D18,
    build_motion_backbone,
    extract_motion,
    motion_clip_indices,
    motion_clips_to_tensor,
)
from stqa.video.sampling import sample_indices


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict[str, tuple[dict[str, torch.Tensor], Path]]:
    """One file per architecture in its real format: torchvision's zip ``torch.save`` for R(2+1)D, the
    legacy (pre-1.6, non-zip) ``torch.save`` of the 2017 ``c3d.pickle`` for C3D."""
    root = tmp_path_factory.mktemp("motion_weights")
    files = {}
    for name, layout in LAYOUTS.items():
        state = random_state(layout(), seed=len(name))
        path = root / ("r2plus1d_18-kinetics.pth" if name == "r2plus1d_18" else "c3d.pickle")
        torch.save(state, path, _use_new_zipfile_serialization=name != "c3d")
        files[name] = (state, path)
    return files


# --- architecture and strict loading ------------------------------------------------------------------


def test_r2plus1d_18_matches_torchvision_layout() -> None:
    model = R2Plus1D18()
    # torchvision's documented size: R2Plus1D_18_Weights.KINETICS400_V1 meta["num_params"]
    assert sum(p.numel() for p in model.parameters()) == 31_505_325
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == torchvision_r2plus1d_18_layout()
    assert (model.name, model.out_channels, model.input_size, model.clip_length) == ("r2plus1d_18", 512, 112, 16)


def test_c3d_holds_the_sports1m_conv_layers_only() -> None:
    model = C3D()
    conv = {k: v for k, v in c3d_sports1m_layout().items() if not k.startswith("fc")}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == conv
    assert sum(p.numel() for p in model.parameters()) == 27_655_936  # conv1..conv5b, weights + biases
    assert (model.name, model.out_channels, model.input_size, model.clip_length) == ("c3d", 512, 112, 16)


@pytest.mark.parametrize("name", ["r2plus1d_18", "c3d"])
def test_real_layout_loads_strictly_and_gives_7x7_maps(name: str, weight_files) -> None:
    state, path = weight_files[name]
    model = build_motion_backbone(name, path).eval()
    assert model.weights_path == str(path)
    assert model.weights_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = model.state_dict()
    kept = {k: v for k, v in state.items() if CONV_ONLY[name](k)}
    assert set(loaded) == set(kept)
    for key, value in kept.items():
        assert torch.equal(loaded[key], value), key

    # One forward on a 16 x 112 x 112 clip (they are ~40 GFLOPs each); the last block is captured to
    # check the time pooling: R(2+1)D averages its two steps, C3D takes their max, like pool5.
    captured: list[torch.Tensor] = []
    last = model.layer4 if name == "r2plus1d_18" else model.conv5b
    hook = last.register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
    torch.manual_seed(0)
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 16, 112, 112))
    hook.remove()
    assert maps.shape == (1, 7, 7, 512) and torch.isfinite(maps).all()
    volume = captured[0]
    assert volume.shape == (1, 512, 2, 7, 7)
    if name == "c3d":
        volume = torch.relu(volume)  # conv5b's ReLU is part of the feature
        expected = volume.amax(dim=2)
    else:
        expected = volume.mean(dim=2)
    assert maps.min() >= 0  # both end in a ReLU
    assert not torch.equal(volume[:, :, 0], volume[:, :, 1])  # the pooling choice is visible
    torch.testing.assert_close(maps, expected.permute(0, 2, 3, 1))


def test_c3d_accepts_a_conv_only_file_and_refuses_another_fc_layout(weight_files, tmp_path) -> None:
    state, _ = weight_files["c3d"]
    conv_only = tmp_path / "c3d_conv.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc")}, conv_only)
    assert build_motion_backbone("c3d", conv_only).weights_path == str(conv_only)
    # The C3D variant whose pool5 has no padding has a 4608-wide fc6: not the Sports-1M file. (Stride-0
    # zeros: the names and shapes are what is checked, and 200 MB of fc7 would only cost time.)
    small_fc = {k: torch.zeros(1).expand(v.shape) for k, v in state.items() if k.startswith(("fc6", "fc7"))}
    other = {**state, **small_fc, "fc6.weight": torch.zeros(1).expand(4096, 4608)}
    path = tmp_path / "c3d_4608.pth"
    torch.save(other, path)
    with pytest.raises(ValueError, match=r"c3d_4608\.pth.*fc6\.weight has shape \[4096, 4608\], expected "
                                         r"\[4096, 8192\]"):
        build_motion_backbone("c3d", path)
    ucf = {k: v for k, v in state.items() if not k.startswith("fc")}
    ucf["fc9.weight"] = torch.zeros(2)
    path = tmp_path / "c3d_extra.pth"
    torch.save(ucf, path)
    with pytest.raises(ValueError, match=r"c3d_extra\.pth.*unexpected keys \(1\): fc9\.weight"):
        build_motion_backbone("c3d", path)


@pytest.mark.parametrize("name, drop, extra, reshape", [
    ("r2plus1d_18", "layer3.1.conv2.0.1.running_var", "layer5.0.conv1.0.0.weight", "layer2.0.conv1.0.3.weight"),
    ("c3d", "conv4b.bias", "conv6.weight", "conv3a.weight"),
])
def test_wrong_files_fail_naming_path_keys_and_shapes(name: str, drop: str, extra: str, reshape: str,
                                                      weight_files, tmp_path) -> None:
    state, _ = weight_files[name]
    bad = {k: v for k, v in state.items() if k != drop}
    bad[extra] = torch.zeros(3)
    bad[reshape] = torch.zeros(5, 5)
    path = tmp_path / f"bad_{name}.pth"
    torch.save(bad, path)
    with pytest.raises(ValueError) as info:
        build_motion_backbone(name, path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a {name} state_dict")
    assert f"missing keys (1): {drop}" in message
    assert f"unexpected keys (1): {extra}" in message
    expected_shape = list(LAYOUTS[name]()[reshape])
    assert f"shape mismatches (1): {reshape} [5, 5] (expected {expected_shape})" in message


class _Payload:
    """Unpickling this would run ``Path.touch`` on ``target``: what an arbitrary pickle can do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_pickles_that_are_not_state_dicts_are_refused(tmp_path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"evil\.pth: cannot read as a torch state_dict with weights_only=True"):
        build_motion_backbone("c3d", path)
    assert not marker.exists()  # never unpickled as an object

    whole_module = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), whole_module)  # a pickled nn.Module, not a state_dict
    with pytest.raises(ValueError, match=r"module\.pth: cannot read as a torch state_dict"):
        build_motion_backbone("r2plus1d_18", whole_module)

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match=r"list\.pth: expected a state_dict .* got list"):
        build_motion_backbone("r2plus1d_18", not_a_dict)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_motion_backbone("c3d", tmp_path / "missing.pth")


def test_weights_are_required_and_names_checked() -> None:
    with pytest.raises(ValueError, match="needs a weights file"):
        build_motion_backbone("r2plus1d_18")
    with pytest.raises(ValueError, match="unknown motion backbone 'i3d'"):
        build_motion_backbone("i3d", random_init=True)
    assert set(MOTION_BACKBONES) == {"r2plus1d_18", "c3d"}


def test_output_shape_for_a_batch_on_the_meta_device() -> None:
    # Shapes for N > 1 without the compute: meta tensors carry shapes only.
    for name in MOTION_BACKBONES:
        model = build_motion_backbone(name, random_init=True).to("meta").eval()
        with torch.no_grad():
            assert model.feature_volume(torch.empty(3, 3, 16, 112, 112, device="meta")).shape == (3, 512, 2, 7, 7)
    with pytest.raises(ValueError, match=r"expected clips \[N, 3, L, H, W\]"):
        C3D()(torch.zeros(1, 3, 112, 112))


# --- the clip rule ------------------------------------------------------------------------------------------


def test_clips_are_centred_on_the_sampled_frames() -> None:
    centres = sample_indices(100, 35)
    clips = motion_clip_indices(100, centres)
    assert clips.shape == (35, 16) and clips.dtype == np.int64
    np.testing.assert_array_equal(clips[:, 8], centres)  # the centre frame sits at position 8
    interior = (centres >= 8) & (centres <= 100 - 8)
    np.testing.assert_array_equal(clips[interior], centres[interior, None] + np.arange(-8, 8))
    # edges repeat the first / last frame
    assert centres[0] == 0 and centres[-1] == 97
    np.testing.assert_array_equal(clips[0], [0] * 9 + list(range(1, 8)))
    np.testing.assert_array_equal(clips[-1], list(range(89, 100)) + [99] * 5)


def test_short_videos_get_one_clip_per_frame_padded_at_both_ends() -> None:
    centres = sample_indices(10, 35)  # 10 frames <= T: every frame, then right-padding by the consumer
    clips = motion_clip_indices(10, centres)
    assert clips.shape == (10, 16)
    np.testing.assert_array_equal(clips[:, 8], np.arange(10))
    assert clips.min() == 0 and clips.max() == 9
    np.testing.assert_array_equal(clips[4], [0] * 5 + list(range(1, 10)) + [9, 9])  # frames -4..11, clamped
    assert (np.diff(clips, axis=1) >= 0).all()  # time order is kept
    single = motion_clip_indices(1, np.array([0]))
    np.testing.assert_array_equal(single, np.zeros((1, 16), dtype=np.int64))
    np.testing.assert_array_equal(motion_clip_indices(5, np.array([2]), length=3), [[1, 2, 3]])


@pytest.mark.parametrize("n, centres, match", [
    (10, np.array([10]), r"centres must lie in \[0, 9\]"),
    (10, np.array([-1]), r"centres must lie in"),
    (10, np.array([], dtype=np.int64), "non-empty 1-D integer"),
    (10, np.array([1.0]), "integer"),
    (0, np.array([0]), "n_frames must be a positive integer"),
])
def test_clip_rule_refuses_bad_input(n: int, centres: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        motion_clip_indices(n, centres)


@pytest.mark.parametrize("name", ["r2plus1d_18", "c3d"])
def test_clip_tensor_normalisation_and_order(name: str) -> None:
    # Frame k is a flat grey of level 10 k, at 112 x 112 so no resampling blurs the levels.
    frames = np.stack([np.full((112, 112, 3), 10 * k, dtype=np.uint8) for k in range(20)])
    idx = motion_clip_indices(20, np.array([0, 7, 19]))
    backbone = MOTION_BACKBONES[name]()
    clips = motion_clips_to_tensor(frames, idx, backbone)
    assert clips.shape == (3, 3, 16, 112, 112) and clips.dtype == torch.float32
    level = torch.from_numpy(10.0 * idx).float()  # [3, 16]
    for c in range(3):
        got = clips[:, c, :, 56, 56]
        if name == "c3d":  # the port's convention: RGB in [0, 255], no mean subtraction
            expected = level
        else:  # torchvision's Kinetics preset: [0, 1], Kinetics mean / std
            expected = (level / 255 - KINETICS_MEAN[c]) / KINETICS_STD[c]
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)
    assert torch.equal(clips[:, :, :, 0, 0], clips[:, :, :, 111, 111])  # flat frames stay flat


class _ProbeBackbone(MotionBackbone):
    """A parameter-free stand-in (the real nets cost ~40 GFLOPs a clip): the map is the clip's pixels
    average-pooled to 7x7, so every step of :func:`extract_motion` shows in its output."""

    name = "probe"
    out_channels = 3
    value_scale = 255.0

    def feature_volume(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool3d(x, (x.shape[2], 7, 7))


def test_extract_motion_batches_clips_in_order() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(23, 120, 160, 3), dtype=np.uint8)
    centres = sample_indices(23, 9)
    probe = _ProbeBackbone().eval()
    out = extract_motion(probe, frames, centres, batch_size=4)
    assert out.shape == (9, 7, 7, 3) and out.dtype == torch.float32
    clips = motion_clips_to_tensor(frames, motion_clip_indices(23, centres), probe)
    torch.testing.assert_close(out, probe(clips))
    # row i comes from the clip centred on centres[i]: the probe's time mean of exactly those frames
    one = motion_clips_to_tensor(frames, motion_clip_indices(23, centres[5:6]), probe)
    torch.testing.assert_close(out[5:6], probe(one))
    with pytest.raises(RuntimeError, match="eval mode"):
        extract_motion(_ProbeBackbone(), frames, centres)
