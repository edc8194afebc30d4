"""Frames -> features: the one stage where a backbone turns frames into feature maps.

Every path that meets raw frames goes through here: the model's forward on frames
(:meth:`stqa.models.stvqa.STVQA.forward`, ``forward_tasks``), the Predictor, training with a frozen
backbone (its maps computed once per video) and batch evaluation of an end-to-end model. The data layer
(:mod:`stqa.data.dataset`) only holds what comes out: :class:`~stqa.data.dataset.EncodedClips`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stqa.data.dataset import EncodedClips, FrameClips
from stqa.data.tgifqa import QARecord
from stqa.progress import progress


def backbone_maps(backbone: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """``frames`` [N, 3, S, S] -> maps [N, 7, 7, C]. Channels-last input: the CPU (oneDNN) convolutions
    run ~4x faster on it, the GPU ones no slower."""
    return backbone(frames.contiguous(memory_format=torch.channels_last))


def encode_frames(backbone: nn.Module | None, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """The backbone over the real frames only: [B, T, 3, S, S] -> [B, T, 7, 7, C] (zeros where padded)."""
    if backbone is None:
        raise ValueError("this model has no backbone; give it features, not frames")
    b, t = frames.shape[:2]
    feats = backbone_maps(backbone, frames[frame_mask])
    out = feats.new_zeros((b, t, *feats.shape[1:]))
    out[frame_mask] = feats
    return out


def encode_clips(
    backbone: nn.Module,
    frames: FrameClips,
    records: Sequence[QARecord],
    device: torch.device | str = "cpu",
    cache_dtype: torch.dtype = torch.float32,
    desc: str | None = None,
) -> EncodedClips:
    """The maps of every distinct video of ``records``, computed once each (eval mode, no gradients) and
    kept in memory as ``cache_dtype``.

    Training with a frozen backbone keeps them in float16 (~0.3 MB per clip at T=25, C=128, instead of
    ~1.9 MB of decoded frames; steps then run on features, several times faster than through the
    backbone); evaluation keeps float32, so its answers equal the Predictor's. With ``desc``, shows a
    progress bar so named.
    """
    device = torch.device(device)
    videos: dict[str, QARecord] = {}
    for record in records:
        videos.setdefault(str(record.gif_name), record)
    maps: dict[str, torch.Tensor] = {}
    was_training = backbone.training
    backbone.eval()
    try:
        # no_grad, not inference_mode: the cached maps feed training steps, where inference tensors are refused.
        with torch.no_grad():
            items = list(videos.items())
            for name, record in (items if desc is None else progress(items, desc=desc, unit="video", leave=False)):
                x = frames.load(frames.path_for(record))  # not frames.clip: its frame cache is not needed
                maps[name] = backbone_maps(backbone, x.to(device)).cpu().to(cache_dtype)
    finally:
        backbone.train(was_training)
    return EncodedClips(frames.spec, maps)
