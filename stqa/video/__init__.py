"""Video decoding (PyAV), the shared frame-sampling rule and frame transforms.

The decoder and the sampling rule need no torch (decode worker processes import only them); the
tensor transforms load torch on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from stqa.video import decode as _decode
from stqa.video.decode import *  # noqa: F403 (its __all__: the decoder's errors, limits and decode_video)
from stqa.video.geometry import resized_shape
from stqa.video.sampling import POLICIES, sample_indices

_FROM_TRANSFORMS = ("IMAGENET_MEAN", "IMAGENET_STD", "frames_to_tensor", "pad_clip")

__all__ = [
    *_decode.__all__, *_FROM_TRANSFORMS, "POLICIES", "resized_shape", "sample_indices",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_TRANSFORMS:
        return getattr(importlib.import_module("stqa.video.transforms"), name)
    raise AttributeError(f"module 'stqa.video' has no attribute {name!r}")
