"""Visual backbones: frames ``[N, 3, H, W]`` -> channel-last feature maps ``[N, 7, 7, C]``.

``resnet50/101/152`` are the torchvision ResNet (v1.5: stride on the 3x3 conv) defined here with
torchvision's parameter names, so a torchvision-format ``state_dict`` loads with ``strict=True``; the
output is ``layer4`` (ST-VQA's ``res5c``), 2048 x 7 x 7 for a 224 x 224 input. Their weights come
from a local file only: nothing is downloaded. ``tiny`` is a small CNN for 112 x 112 frames that is
trained jointly with the model on the synthetic benchmark (random init unless weights are given).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from stqa.checkpoint import CONFIG_FILE, WEIGHTS_FILE, is_checkpoint
from stqa.models.weights import FeatureExtractor, load_state_strict, read_state_dict_file


class Backbone(FeatureExtractor):
    """An appearance backbone: frames ``[N, 3, S, S]`` -> channel-last maps ``[N, 7, 7, C]``."""

    #: Frames per CPU inference forward. A whole batch of clips at once (8 x 25 frames) runs ~2x slower
    #: per frame than clip-sized chunks (benchmarks/README.md, "Serving").
    cpu_inference_chunk: int = 32

    def fold_batchnorm(self) -> Backbone:
        """Fold every eval-mode BatchNorm into the convolution before it, in place (inference only).

        Covers ``nn.Sequential`` runs ``Conv2d, BatchNorm2d`` and the torchvision pairs ``convK``/``bnK``
        and ``downsample``; the folded BatchNorm becomes ``nn.Identity``. Outputs stay equal up to float
        rounding; it saves one pass over every activation. Refuses a module in training mode, whose
        BatchNorm still uses batch statistics.
        """
        if self.training:
            raise RuntimeError(f"{self.name}: fold_batchnorm() needs eval mode (call .eval() first)")
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        for module in list(self.modules()):
            if isinstance(module, nn.Sequential):
                names = list(module._modules)
                for a, b in zip(names, names[1:], strict=False):
                    conv, bn = module._modules[a], module._modules[b]
                    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                        module._modules[a] = fuse_conv_bn_eval(conv, bn)
                        module._modules[b] = nn.Identity()
            for k in range(1, 4):
                conv, bn = getattr(module, f"conv{k}", None), getattr(module, f"bn{k}", None)
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    setattr(module, f"conv{k}", fuse_conv_bn_eval(conv, bn))
                    setattr(module, f"bn{k}", nn.Identity())
        return self

    @staticmethod
    def pooled(maps: torch.Tensor) -> torch.Tensor:
        """Mean over the spatial grid: ``[N, h, w, C]`` -> ``[N, C]`` (ResNet ``pool5`` for resnets)."""
        if maps.dim() != 4:
            raise ValueError(f"expected channel-last maps [N, h, w, C], got {list(maps.shape)}")
        return maps.mean(dim=(1, 2))


# --- ResNet (torchvision layout) -------------------------------------------------------------------


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (expansion 4, stride on conv2), same attribute names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBackbone(Backbone):
    """torchvision ResNet with ``fc`` kept (so full ImageNet state_dicts load strictly) but unused."""

    input_size = 224
    out_channels = 2048

    def __init__(self, name: str, layers: tuple[int, int, int, int], num_classes: int = 1000):
        super().__init__()
        self.name = name
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        self.init_like_torchvision()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# --- tiny CNN --------------------------------------------------------------------------------------


class TinyBackbone(Backbone):
    """Five conv-BN-ReLU stages, four with stride 2: 112 x 112 -> 7 x 7 x 128 (~0.2 M parameters)."""

    name = "tiny"
    input_size = 112
    out_channels = 128

    def __init__(self, widths: tuple[int, ...] = (32, 48, 64, 96, 128), strides: tuple[int, ...] = (2, 2, 2, 2, 1)):
        super().__init__()
        stages: list[nn.Module] = []
        cin = 3
        for cout, stride in zip(widths, strides, strict=True):
            stages += [nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*stages)
        self.out_channels = cin
        self.init_like_torchvision()

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# --- registry and weights --------------------------------------------------------------------------

BACKBONES: dict[str, Callable[[], Backbone]] = {
    "resnet50": lambda: ResNetBackbone("resnet50", (3, 4, 6, 3)),
    "resnet101": lambda: ResNetBackbone("resnet101", (3, 4, 23, 3)),
    "resnet152": lambda: ResNetBackbone("resnet152", (3, 8, 36, 3)),
    "tiny": TinyBackbone,
}
# Backbones that are meaningless with random weights (frozen feature extractors).
NEEDS_WEIGHTS: frozenset[str] = frozenset({"resnet50", "resnet101", "resnet152"})



def weights_file(path: str | os.PathLike) -> Path:
    """The file that holds the weights: ``path`` itself, or a stqa checkpoint directory's model file."""
    path = Path(path)
    return path / WEIGHTS_FILE if path.is_dir() else path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors``, a torch file (``torch.load(weights_only=True)``), or the
    backbone part of a stqa checkpoint directory (a model trained end to end carries its backbone)."""
    path = Path(path)
    return _checkpoint_backbone_state(path) if path.is_dir() else read_state_dict_file(path)


def _checkpoint_backbone_state(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file  # only for this format, as in read_state_dict_file

    model_file = directory / WEIGHTS_FILE
    if not model_file.is_file() or not is_checkpoint(directory):
        raise FileNotFoundError(f"{directory}: not a stqa checkpoint directory (needs {WEIGHTS_FILE} "
                                f"and {CONFIG_FILE})")
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in load_file(str(model_file), device="cpu").items()
             if k.startswith(prefix)}
    if not state:
        raise ValueError(f"{directory}: this checkpoint has no backbone (it was trained on precomputed "
                         f"features)")
    return state


def load_weights(backbone: Backbone, path: str | os.PathLike) -> Backbone:
    """Load a state_dict (file or stqa checkpoint directory) into ``backbone`` strictly; record its
    path and the sha256 of the weights file."""
    load_state_strict(backbone, read_state_dict(path), path, weights_file(path))
    return backbone


def build_backbone(name: str, weights: str | os.PathLike | None = None) -> Backbone:
    """Construct a registered backbone, loading ``weights`` (a local state_dict file) if given."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    if weights is None and name in NEEDS_WEIGHTS:
        raise ValueError(f"{name} needs --weights PATH to a torchvision-format state_dict "
                         f"(.pth or .safetensors); nothing is downloaded")
    backbone = BACKBONES[name]()
    if weights is not None:
        load_weights(backbone, weights)
    return backbone
