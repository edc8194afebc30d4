"""Backbones: torchvision-compatible ResNets loaded from local files, the tiny CNN."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from stqa.models.backbone import BACKBONES, Backbone, ResNetBackbone, TinyBackbone, build_backbone


@pytest.mark.parametrize("name, params", [
    # torchvision's documented parameter counts (ResNet50/101/152_Weights.IMAGENET1K_V1 "num_params")
    ("resnet50", 25_557_032), ("resnet101", 44_549_160), ("resnet152", 60_192_808),
])
def test_resnet_architecture_matches_torchvision(name: str, params: int) -> None:
    model = BACKBONES[name]()
    assert sum(p.numel() for p in model.parameters()) == params
    keys = set(model.state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.running_var", "layer2.0.conv2.weight", "layer4.2.bn3.bias",
                "fc.weight", "fc.bias"):
        assert key in keys
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)  # v1.5
    assert (model.name, model.out_channels, model.input_size) == (name, 2048, 224)


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    torch.manual_seed(0)
    reference = BACKBONES["resnet50"]()
    with torch.no_grad():  # non-default BN statistics, so a failed load would show
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_resnet50_loads_state_dict_strictly_and_runs(resnet50_file, tmp_path) -> None:
    reference, path = resnet50_file
    model = build_backbone("resnet50", path).eval()
    assert model.weights_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224))  # one forward at full size: res5c is 7 x 7 x 2048
    assert maps.shape == (1, 7, 7, 2048) and torch.isfinite(maps).all()
    assert maps.min() >= 0  # after the final ReLU of layer4
    pooled = Backbone.pooled(maps)
    assert pooled.shape == (1, 2048)
    torch.testing.assert_close(pooled[0], maps[0].permute(2, 0, 1).mean(dim=(1, 2)))
    # the same weights as safetensors
    st = tmp_path / "resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(st))
    again = build_backbone("resnet50", st)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in reference.state_dict().items())
    assert again.weights_hash == hashlib.sha256(st.read_bytes()).hexdigest()


def test_wrong_weights_are_refused(resnet50_file, tmp_path) -> None:
    _, path = resnet50_file
    with pytest.raises(ValueError, match=r"not a resnet101 state_dict: missing keys \(\d+\)"):
        build_backbone("resnet101", path)
    partial = tmp_path / "partial.pth"
    state = torch.load(path, weights_only=True)
    del state["fc.bias"]
    torch.save(state, partial)
    with pytest.raises(ValueError, match="fc.bias"):
        build_backbone("resnet50", partial)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        build_backbone("resnet50", garbage)
    with pytest.raises(FileNotFoundError):
        build_backbone("resnet50", tmp_path / "missing.pth")


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "resnet152"])
def test_resnets_refuse_to_run_without_weights(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} needs --weights PATH .*nothing is downloaded"):
        build_backbone(name)


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        build_backbone("vgg16")


def test_tiny_shapes_gradients_and_weights(tmp_path) -> None:
    torch.manual_seed(0)
    tiny = build_backbone("tiny")
    assert isinstance(tiny, TinyBackbone) and tiny.weights_hash is None
    assert (tiny.name, tiny.out_channels, tiny.input_size) == ("tiny", 128, 112)
    assert 100_000 <= sum(p.numel() for p in tiny.parameters()) <= 300_000
    x = torch.randn(3, 3, 112, 112)
    maps = tiny(x)
    assert maps.shape == (3, 7, 7, 128)
    maps.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tiny.parameters())
    assert tiny.features[0].weight.grad.abs().sum() > 0
    path = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), path)
    loaded = build_backbone("tiny", path).eval()
    tiny.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tiny(x))
    assert loaded.weights_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=r"expected frames \[N, 3, H, W\]"):
        tiny(torch.randn(3, 112, 112))


def test_registry() -> None:
    assert set(BACKBONES) == {"resnet50", "resnet101", "resnet152", "tiny"}
    assert isinstance(BACKBONES["resnet101"](), ResNetBackbone)


def test_fold_batchnorm_and_chunked_inference_keep_the_maps(resnet50_file) -> None:
    """Inference speed-ups must not change the features: BatchNorm folded into the convolutions (tiny and
    the torchvision pairs), and CPU no-grad forwards in cache-sized chunks."""
    import copy

    reference, _ = resnet50_file
    torch.manual_seed(1)
    tiny = build_backbone("tiny")
    with torch.no_grad():
        for m in tiny.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    for model, size, n in ((tiny, 112, 70), (reference, 64, 3)):  # 70 > cpu_inference_chunk: 3 chunks
        model.eval()
        x = torch.randn(n, 3, size, size)
        with torch.no_grad():
            expected = torch.cat([model(part) for part in x.split(1)])  # one frame at a time
            chunked = model(x)
            folded = copy.deepcopy(model).fold_batchnorm()
            got = folded(x)
        tol = 1e-4 * float(expected.abs().max())  # float rounding differs between conv algorithms
        torch.testing.assert_close(chunked, expected, rtol=1e-3, atol=tol)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=tol)
    with pytest.raises(RuntimeError, match="eval mode"):
        build_backbone("tiny").train().fold_batchnorm()
    # with gradients the whole batch goes through at once (autograd needs every activation anyway)
    tiny.train()
    out = tiny(torch.randn(40, 3, 112, 112, requires_grad=True))
    assert out.shape == (40, 7, 7, 128) and out.requires_grad
