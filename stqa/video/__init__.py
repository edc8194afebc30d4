"""Video decoding (PyAV), the shared frame-sampling rule and frame transforms."""

from stqa.video.decode import (
    CorruptVideo,
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
from stqa.video.sampling import POLICIES, sample_indices
from stqa.video.transforms import IMAGENET_MEAN, IMAGENET_STD, frames_to_tensor, pad_clip

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "POLICIES", "CorruptVideo", "DecodeTimeout", "DecodedVideo",
    "EmptyVideo", "FrameTooLarge", "TooManyFrames", "VideoError", "VideoLimits", "VideoTooLarge",
    "VideoTooLong", "decode_video", "frames_to_tensor", "pad_clip", "sample_indices",
]
