"""Video decoding (PyAV), the shared frame-sampling rule and frame transforms.

The decoder and the sampling rule need no torch (decode worker processes import only them); the
tensor transforms load torch on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from stqa.video.decode import (
    AspectRatioTooLarge,
    CorruptVideo,
    DecodeBudgetExceeded,
    DecodeCancelled,
    DecodedVideo,
    DecodeTimeout,
    EmptyVideo,
    FrameTooLarge,
    TooManyFrames,
    VideoError,
    VideoLimits,
    VideoTooLarge,
    VideoTooLong,
    decode_video,
)
from stqa.video.geometry import resized_shape
from stqa.video.sampling import POLICIES, sample_indices

_FROM_TRANSFORMS = ("IMAGENET_MEAN", "IMAGENET_STD", "frames_to_tensor", "pad_clip")

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "POLICIES", "AspectRatioTooLarge", "CorruptVideo", "DecodeBudgetExceeded",
    "DecodeCancelled", "DecodeTimeout", "DecodedVideo", "EmptyVideo", "FrameTooLarge", "TooManyFrames",
    "VideoError", "VideoLimits", "VideoTooLarge", "VideoTooLong", "decode_video", "frames_to_tensor",
    "pad_clip", "resized_shape", "sample_indices",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_TRANSFORMS:
        return getattr(importlib.import_module("stqa.video.transforms"), name)
    raise AttributeError(f"module 'stqa.video' has no attribute {name!r}")
