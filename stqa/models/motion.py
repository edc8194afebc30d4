"""Motion-stream backbones: 16-frame clips ``[N, 3, 16, 112, 112]`` -> channel-last maps ``[N, 7, 7, C]``.

ST-VQA (TGIF-QA, CVPR 2017) feeds its video encoder appearance *and* motion features: ResNet ``res5c``
concatenated with C3D conv features. This module provides the motion half, self-contained:

- ``r2plus1d_18``: torchvision's ``r2plus1d_18`` (Tran et al., "A Closer Look at Spatiotemporal
  Convolutions", CVPR 2018) with torchvision's module names and shapes, so the Kinetics-400
  ``state_dict`` (``torch.save(model.state_dict())``) loads with ``strict=True``. Output: ``layer4``,
  512 x 2 x 7 x 7 for a 16 x 112 x 112 clip, time averaged (the network's own ``avgpool`` averages time).
- ``c3d``: the Sports-1M C3D (Tran et al., ICCV 2015) in the layout of the widely used PyTorch port,
  DavideA/c3d-pytorch (``C3D_model.py``, weights ``c3d.pickle``): ``conv1 conv2 conv3a conv3b conv4a
  conv4b conv5a conv5b`` (3x3x3, padding 1, with bias) and ``fc6 fc7 fc8`` (8192-4096-4096-487).
  Output: ``conv5b`` after its ReLU, 512 x 2 x 7 x 7, time max-pooled (C3D's ``pool5`` takes the max
  over those two time steps). The fc layers (~52 M parameters, 200 MB) are not part of the module: a
  full Sports-1M file is accepted, its fc tensors are shape-checked and dropped.

Weights come from a local file only (``torch.load(weights_only=True)``, or ``.safetensors``); nothing is
downloaded. :func:`motion_clip_indices` is the clip rule (docs/data.md, "Motion stream") and
:func:`extract_motion` runs the whole per-video path (clips, normalisation, backbone).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from stqa.models.weights import FeatureExtractor, load_state_strict, read_state_dict_file
from stqa.video.transforms import IMAGENET_MEAN, IMAGENET_STD, frames_to_tensor

CLIP_LENGTH = 16
INPUT_SIZE = 112

# torchvision's video classification preset (VideoClassification: resize (128, 171), crop 112, these
# statistics on [0, 1] RGB), which the Kinetics-400 weights were trained with.
KINETICS_MEAN: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
KINETICS_STD: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)


class MotionBackbone(FeatureExtractor):
    """A motion backbone: normalised clips ``[N, 3, L, S, S]`` -> time-pooled channel-last maps
    ``[N, h, w, C]``. Beyond the common interface: ``clip_length`` and the input normalisation
    (``mean``/``std`` applied to RGB values in ``[0, value_scale]``)."""

    out_channels: int = 512
    input_rank: int = 5
    input_layout: str = "clips [N, 3, L, H, W]"
    clip_length: int = CLIP_LENGTH
    input_size: int = INPUT_SIZE
    value_scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: How the last block's time axis is pooled: "mean" or "max" (see the subclasses).
    time_pool: str = "mean"
    #: Clips per forward when no gradient is needed on the CPU (one clip's early activations are
    #: already ~50 MB; bigger chunks only thrash the caches).
    cpu_inference_chunk: int = 4

    def feature_volume(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block, channel-first ``[N, C, t, h, w]``; subclasses implement it."""
        raise NotImplementedError

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last block pooled over time, channel-first ``[N, C, h, w]``."""
        volume = self.feature_volume(x)
        return volume.amax(dim=2) if self.time_pool == "max" else volume.mean(dim=2)

    def state_from_file(self, state: dict[str, torch.Tensor], path: str | os.PathLike) -> dict[str, torch.Tensor]:
        """The part of a weights file this module holds (identity here; C3D drops its fc layers)."""
        return state


# --- R(2+1)D-18 (torchvision layout) -----------------------------------------------------------------


def _midplanes(inplanes: int, planes: int) -> int:
    """Width of the (2+1)D factorisation: as many parameters as the full 3x3x3 conv it replaces
    (R(2+1)D paper, eq. in section 3.5), computed per block from the block's input/output widths."""
    return (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)


def _conv2plus1d(cin: int, cout: int, mid: int, stride: int) -> nn.Sequential:
    # Indices 0, 1, 3 hold parameters: the names torchvision's Conv2Plus1D gives them.
    return nn.Sequential(
        nn.Conv3d(cin, mid, kernel_size=(1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, cout, kernel_size=(3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
    )


class _BasicBlock2Plus1D(nn.Module):
    """Residual block of two (2+1)D convs; ``conv1``/``conv2``/``downsample`` as torchvision names them."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        mid = _midplanes(inplanes, planes)  # the same width for both convs, as in torchvision
        self.conv1 = nn.Sequential(_conv2plus1d(inplanes, planes, mid, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(_conv2plus1d(planes, planes, mid, 1), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            # Strided in time as well as space (Conv2Plus1D.get_downsample_stride).
            self.downsample = nn.Sequential(
                nn.Conv3d(inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class R2Plus1D18(MotionBackbone):
    """torchvision ``r2plus1d_18``; ``fc`` kept so a full Kinetics state_dict loads strictly, unused."""

    name = "r2plus1d_18"
    out_channels = 512
    mean = KINETICS_MEAN
    std = KINETICS_STD
    time_pool = "mean"

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        # The R(2+1)D stem: a 1x7x7 spatial conv to 45 channels, then a 3x1x1 temporal conv to 64.
        self.stem = nn.Sequential(
            nn.Conv3d(3, 45, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(45), nn.ReLU(inplace=True),
            nn.Conv3d(45, 64, kernel_size=(3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(64), nn.ReLU(inplace=True),
        )
        widths = (64, 128, 256, 512)
        inplanes = 64
        for i, planes in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            layer = nn.Sequential(_BasicBlock2Plus1D(inplanes, planes, stride), _BasicBlock2Plus1D(planes, planes))
            self.add_module(f"layer{i}", layer)
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(512, num_classes)
        self.init_like_torchvision()

    def feature_volume(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# --- C3D (Sports-1M, the DavideA/c3d-pytorch layout) --------------------------------------------------

# Shapes of the fully connected layers of a Sports-1M C3D file (487 classes; fc6 reads pool5's
# 512 x 1 x 4 x 4 = 8192 values). Checked, then dropped: conv5b is all the feature extractor needs.
C3D_FC_SHAPES: dict[str, tuple[int, ...]] = {
    "fc6.weight": (4096, 8192), "fc6.bias": (4096,),
    "fc7.weight": (4096, 4096), "fc7.bias": (4096,),
    "fc8.weight": (487, 4096), "fc8.bias": (487,),
}


class C3D(MotionBackbone):
    """The conv part of Sports-1M C3D, up to ``conv5b`` (ReLU applied), with the port's parameter names.

    Input convention of the port's own demo (DavideA/c3d-pytorch ``predict.py``, which checks the
    converted weights by classifying a clip): RGB, float values in [0, 255], no mean subtraction.
    """

    name = "c3d"
    out_channels = 512
    value_scale = 255.0
    time_pool = "max"

    def __init__(self) -> None:
        super().__init__()
        widths = {"conv1": (3, 64), "conv2": (64, 128), "conv3a": (128, 256), "conv3b": (256, 256),
                  "conv4a": (256, 512), "conv4b": (512, 512), "conv5a": (512, 512), "conv5b": (512, 512)}
        for name, (cin, cout) in widths.items():
            self.add_module(name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
        self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))  # keeps time early, as C3D does
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)  # pool2..pool4 (no parameters, one module)
        self.relu = nn.ReLU(inplace=True)

    def feature_volume(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu
        x = self.pool1(r(self.conv1(x)))
        x = self.pool(r(self.conv2(x)))
        x = self.pool(r(self.conv3b(r(self.conv3a(x)))))
        x = self.pool(r(self.conv4b(r(self.conv4a(x)))))
        return r(self.conv5b(r(self.conv5a(x))))

    def state_from_file(self, state: dict[str, torch.Tensor], path: str | os.PathLike) -> dict[str, torch.Tensor]:
        """Drop ``fc6``-``fc8`` after checking their shapes (so a file of another C3D variant, e.g. one
        with a 4608-wide fc6 or 101 classes, is refused rather than silently accepted)."""
        conv = {}
        for key, value in state.items():
            if key.split(".")[0] in ("fc6", "fc7", "fc8"):
                expected = C3D_FC_SHAPES.get(key)
                if expected is None:
                    raise ValueError(f"{path}: not a c3d state_dict in the Sports-1M layout: unexpected key {key!r}")
                if tuple(value.shape) != expected:
                    raise ValueError(f"{path}: not a c3d state_dict in the Sports-1M layout: {key} has shape "
                                     f"{list(value.shape)}, expected {list(expected)}")
            else:
                conv[key] = value
        return conv


# --- registry, weights ---------------------------------------------------------------------------------

MOTION_BACKBONES: dict[str, Callable[[], MotionBackbone]] = {"r2plus1d_18": R2Plus1D18, "c3d": C3D}


def load_motion_weights(backbone: MotionBackbone, path: str | os.PathLike) -> MotionBackbone:
    """Load a local weights file into ``backbone`` strictly: every missing key, unexpected key and
    shape mismatch is named in one ``ValueError`` that starts with the file path."""
    load_state_strict(backbone, backbone.state_from_file(read_state_dict_file(path), path), path, path)
    return backbone


def build_motion_backbone(name: str, weights: str | os.PathLike | None = None, *,
                          random_init: bool = False) -> MotionBackbone:
    """Construct a motion backbone and load ``weights`` (a local file). Without weights it refuses,
    unless ``random_init=True`` (tests only: random motion features differ on every run)."""
    if name not in MOTION_BACKBONES:
        raise ValueError(f"unknown motion backbone {name!r}; expected one of {', '.join(MOTION_BACKBONES)}")
    backbone = MOTION_BACKBONES[name]()
    if weights is not None:
        return load_motion_weights(backbone, weights)
    if not random_init:
        raise ValueError(f"motion backbone {name} needs a weights file (a local state_dict: torchvision's "
                         f"Kinetics-400 r2plus1d_18, or the Sports-1M c3d.pickle); nothing is downloaded")
    return backbone


# --- the clip rule and the per-video path --------------------------------------------------------------


def motion_clip_indices(n_frames: int, centres: np.ndarray, length: int = CLIP_LENGTH) -> np.ndarray:
    """Frame indices ``[T, length]`` (int64) of the clip centred on each of the T ``centres``.

    Clip ``i`` covers frames ``c - length // 2`` .. ``c + (length - 1) // 2`` (for 16: ``c - 8`` .. ``c + 7``,
    so the centre frame sits at position 8, the later of the two middle positions), consecutive at the
    decoded frame rate. Indices outside ``[0, n_frames - 1]`` are clamped, i.e. the first/last frame is
    repeated: the clip keeps its length and its centre, and padding with real frames adds no motion.
    """
    if isinstance(n_frames, (bool, np.bool_)) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    c = np.asarray(centres)
    if c.ndim != 1 or c.size == 0 or not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"centres must be a non-empty 1-D integer array, got {c.dtype} {list(c.shape)}")
    if c.min() < 0 or c.max() >= n_frames:
        raise ValueError(f"centres must lie in [0, {n_frames - 1}], got {int(c.min())}..{int(c.max())}")
    offsets = np.arange(length, dtype=np.int64) - length // 2
    return np.clip(c.astype(np.int64)[:, None] + offsets[None, :], 0, int(n_frames) - 1)


def motion_frames_to_tensor(frames: np.ndarray, backbone: MotionBackbone) -> torch.Tensor:
    """uint8 frames ``[n, H, W, 3]`` -> float32 ``[n, 3, S, S]`` normalised for ``backbone``.

    Geometry is the appearance transform's (:func:`stqa.video.transforms.frames_to_tensor`: shorter side
    resized to S = 112, centre crop), so the motion 7x7 grid covers the same centred square as the
    appearance 7x7 grid at 224.
    """
    x = frames_to_tensor(frames, backbone.input_size)  # ImageNet-normalised
    # Undo the ImageNet statistics and apply the backbone's own as one affine map per channel,
    # x * a + b, so the resize/crop code stays shared with the appearance stream.
    in_mean, in_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    mean, std = torch.tensor(backbone.mean), torch.tensor(backbone.std)
    a = in_std * backbone.value_scale / std
    b = (in_mean * backbone.value_scale - mean) / std
    return x * a.view(1, 3, 1, 1) + b.view(1, 3, 1, 1)


def _gather_clips(x: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
    """Frames ``[u, 3, S, S]`` + positions ``[T, L]`` into them -> clips ``[T, 3, L, S, S]``."""
    return x[torch.from_numpy(positions)].permute(0, 2, 1, 3, 4).contiguous()


def motion_clips_to_tensor(frames: np.ndarray, clip_indices: np.ndarray,
                           backbone: MotionBackbone) -> torch.Tensor:
    """uint8 frames ``[n, H, W, 3]`` + clip indices ``[T, L]`` -> normalised clips ``[T, 3, L, S, S]``
    (each distinct frame is transformed once, then gathered into its clips)."""
    idx = _check_clip_indices(clip_indices, len(frames))
    used, inverse = np.unique(idx, return_inverse=True)
    return _gather_clips(motion_frames_to_tensor(frames[used], backbone), inverse.reshape(idx.shape))


def _check_clip_indices(clip_indices: np.ndarray, n_frames: int) -> np.ndarray:
    idx = np.asarray(clip_indices)
    if idx.ndim != 2 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"clip_indices must be a non-empty integer array [T, L], got {idx.dtype} "
                         f"{list(idx.shape)}")
    if idx.min() < 0 or idx.max() >= n_frames:
        raise ValueError(f"clip_indices span frames {int(idx.min())}..{int(idx.max())}, but only {n_frames} "
                         f"frames were given")
    return idx


@torch.no_grad()
def extract_motion(backbone: MotionBackbone, frames: np.ndarray, centres: np.ndarray, *,
                   batch_size: int = 8, device: str | torch.device = "cpu") -> torch.Tensor:
    """The motion features of one video: ``[T, 7, 7, C]`` float32 on the CPU, row ``i`` from the clip
    centred on ``centres[i]`` (``frames`` = every decoded frame, uint8 ``[n, H, W, 3]``; ``batch_size``
    clips per forward)."""
    if backbone.training:
        raise RuntimeError(f"{backbone.name}: extract_motion needs eval mode (call .eval() first)")
    clip_idx = motion_clip_indices(len(frames), centres, backbone.clip_length)
    # Neighbouring clips overlap (T=35 centres on a 40-frame GIF share most frames): transform every
    # distinct frame once, then gather the clips batch by batch.
    used, inverse = np.unique(clip_idx, return_inverse=True)
    x = motion_frames_to_tensor(frames[used], backbone)
    positions = inverse.reshape(clip_idx.shape)
    out = []
    for start in range(0, len(positions), batch_size):
        clips = _gather_clips(x, positions[start:start + batch_size])
        out.append(backbone(clips.to(device)).float().cpu())
    return torch.cat(out)
