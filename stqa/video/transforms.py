"""Decoded frames -> normalised float tensors for a backbone, and the one clip-padding helper."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from stqa.video.geometry import resized_shape

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


def frames_to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 RGB frames ``[t, H, W, 3]`` -> float32 ``[t, 3, size, size]``, ImageNet-normalised.

    Resize keeping the aspect ratio so the shorter side is ``size`` (bilinear, antialiased), center
    crop ``size x size``, scale to [0, 1], subtract the ImageNet mean and divide by its std.
    """
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(f"frames must be a uint8 numpy array, got {type(frames).__name__} "
                         f"{getattr(frames, 'dtype', '')}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [t, H, W, 3], got {list(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"frames must be non-empty, got shape {list(frames.shape)}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    h, w = frames.shape[1], frames.shape[2]
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32)  # [t, H, W, 3]
    new_h, new_w = resized_shape(h, w, size)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x.permute(0, 3, 1, 2), size=(new_h, new_w), mode="bilinear", align_corners=False,
                          antialias=True).permute(0, 2, 3, 1)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    x = x[:, top:top + size, left:left + size]
    # (x/255 - mean)/std == x * 1/(255 std) - mean/std, applied channel-last in one pass before the single
    # transpose to [t, 3, S, S] (twice as fast as normalising the transposed tensor). The interpolation may
    # overshoot [0, 255] a little (antialiasing), which is what torchvision's float pipeline does too, so no
    # clamp.
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)
    x = torch.addcmul(-mean / std, x, 1.0 / (255.0 * std))
    return x.permute(0, 3, 1, 2).contiguous()


def pad_clip(x: ArrayOrTensor, num_frames: int) -> tuple[ArrayOrTensor, ArrayOrTensor]:
    """Right-pad a clip ``[t, ...]`` with zeros to ``[num_frames, ...]``; return it and its mask.

    ``mask[i]`` is True for real frames (``i < t``). Works on numpy arrays and torch tensors (the
    result has the input's type, dtype and device). A clip longer than ``num_frames`` is an error:
    sampling (:func:`stqa.video.sampling.sample_indices`) happens before padding, never truncation.
    """
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"pad_clip expects a numpy array or torch tensor, got {type(x).__name__}")
    t = int(x.shape[0]) if x.ndim > 0 else 0
    if t < 1:
        raise ValueError("cannot pad an empty clip: a clip needs at least one real frame")
    if t > num_frames:
        raise ValueError(f"clip has {t} frames, more than num_frames={num_frames}; sample it first")
    if isinstance(x, torch.Tensor):
        padded = x.new_zeros((num_frames, *x.shape[1:]))
        padded[:t] = x
        mask = torch.zeros(num_frames, dtype=torch.bool, device=x.device)
        mask[:t] = True
        return padded, mask
    padded_np = np.zeros((num_frames, *x.shape[1:]), dtype=x.dtype)
    padded_np[:t] = x
    mask_np = np.zeros(num_frames, dtype=bool)
    mask_np[:t] = True
    return padded_np, mask_np
