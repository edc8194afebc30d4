"""What the appearance and motion backbones share: the frozen feature-extractor interface, and reading a
local weights file strictly (nothing is ever downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from stqa.checkpoint import file_sha256


class FeatureExtractor(nn.Module):
    """Common interface: ``name``, ``out_channels`` (C), ``input_size`` (square frame side),
    ``weights_path`` / ``weights_hash`` (sha256 of the loaded file, None for random init).

    ``forward`` takes a batch whose layout is ``input_layout`` (``input_rank`` dims, RGB on axis 1) and
    returns channel-last maps ``[N, h, w, C]`` of what ``feature_maps`` computes channel first.
    """

    name: str = ""
    out_channels: int = 0
    input_size: int = 0
    input_rank: int = 4
    input_layout: str = "frames [N, 3, H, W]"
    #: Inputs per forward when no gradient is needed on the CPU: a large batch's early activations are far
    #: larger than the caches and run slower per item than small chunks; the result is the same.
    cpu_inference_chunk: int = 32

    def __init__(self) -> None:
        super().__init__()
        self.weights_path: str | None = None
        self.weights_hash: str | None = None

    def init_like_torchvision(self) -> None:
        """torchvision's initialisation: Kaiming-normal (fan out) convolutions, unit-scale zero-shift norms."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Channel-first maps ``[N, C, h, w]``; subclasses implement it."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.input_rank or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected {self.input_layout}, got {list(x.shape)}")
        if x.device.type == "cpu" and not torch.is_grad_enabled() and x.shape[0] > self.cpu_inference_chunk:
            return torch.cat([self.forward(part) for part in x.split(self.cpu_inference_chunk)])
        return self.feature_maps(x).permute(0, 2, 3, 1).contiguous()


def read_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.safetensors`` file or a torch file (``torch.load(weights_only=True)``: tensors
    and plain containers only, never arbitrary objects; a ``{"state_dict": ...}`` wrapper is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # only for this format

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for a non-state_dict pickle; zip/EOF errors for damage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: cannot read as a torch state_dict with weights_only=True ({first[:300]})") \
            from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError(f"{path}: expected a state_dict (a non-empty dict of name -> tensor), "
                         f"got {type(obj).__name__}")
    return obj


def load_state_strict(module: FeatureExtractor, state: dict[str, torch.Tensor], path: str | os.PathLike,
                      hashed_file: str | os.PathLike) -> None:
    """Load ``state`` into ``module`` strictly and record ``path`` and the sha256 of ``hashed_file``.

    Every missing key, unexpected key and shape mismatch is named in one ``ValueError`` that starts with
    ``path``.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {list(state[k].shape)} (expected {list(own[k].shape)})"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{label} ({len(items)}): {', '.join(items[:8])}{', ...' if len(items) > 8 else ''}"
                 for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                      ("shape mismatches", shapes)) if items]
        raise ValueError(f"{path}: not a {module.name} state_dict: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)
    module.weights_path = os.fspath(path)
    module.weights_hash = file_sha256(hashed_file)
