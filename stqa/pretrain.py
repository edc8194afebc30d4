"""Perception pretraining of a backbone on the synthetic benchmark's scene labels.

The synthetic analogue of ImageNet pretraining for the real TGIF-QA: before question answering, the
tiny backbone learns *what is where* in single frames, from targets the generator knows exactly
(:func:`stqa.data.synth.frame_labels`: per 7 x 7 cell the colour and shape of the shape centred there,
its position within the cell and its size). Learning this only through the QA losses, behind two
attention softmaxes and three LSTMs, is the slow part of training the bundled model from scratch
(docs/training.md). Frames are rendered on the fly from the scenes of the given training videos only,
through the same :func:`stqa.video.frames_to_tensor` as decoded videos, so no test or validation
video is ever seen.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stqa.data import synth
from stqa.progress import progress
from stqa.video.transforms import frames_to_tensor

N_GEOMETRY = 3  # x, y within the cell, log size
OCCUPIED_WEIGHT = 10.0


class PerceptionHead(nn.Module):
    """1x1 convolution from backbone maps to per-cell colour / shape logits and geometry."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.n_colors, self.n_shapes = len(synth.LABEL_COLORS), len(synth.LABEL_SHAPES)
        self.proj = nn.Linear(channels, self.n_colors + self.n_shapes + N_GEOMETRY)

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Channel-last maps ``[N, g, g, C]`` -> colour logits, shape logits, geometry (each per cell)."""
        out = self.proj(maps)
        return out.split([self.n_colors, self.n_shapes, N_GEOMETRY], dim=-1)


class SceneFrames:
    """Random (frame, labels) batches from the scenes of synthetic videos, rendered on demand."""

    def __init__(self, data_root: str | Path, gif_names: Sequence[str], image_size: int, grid: int) -> None:
        meta = synth.read_meta(data_root)
        self.config = synth.config_from_meta(meta)
        names = sorted(set(gif_names))
        if not names:
            raise ValueError("perception pretraining needs at least one training video")
        self.scenes = []
        for name in names:
            seed, index = synth.parse_gif_name(name)
            if seed != int(meta["seed"]):
                raise ValueError(f"{name} was not generated with the seed of {data_root}'s synth.json ({meta['seed']})")
            self.scenes.append(synth.sample_video(seed, index, self.config)[0])
        self.image_size, self.grid = int(image_size), int(grid)

    def batch(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``n`` random frames ``[n, 3, S, S]`` (normalised) and their stacked :func:`frame_labels`."""
        frames, labels = [], []
        for v in rng.integers(len(self.scenes), size=n):
            scene = self.scenes[int(v)]
            t = int(rng.integers(scene.n_frames))
            im = synth.render_frame(scene, t, self.config.size).convert("RGB")
            frames.append(np.asarray(im))
            labels.append(synth.frame_labels(scene, t, self.grid))
        x = frames_to_tensor(np.stack(frames), self.image_size)
        y = {k: torch.from_numpy(np.stack([lab[k] for lab in labels])) for k in labels[0]}
        return x, y


def perception_loss(head_out, labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy over every cell for colour and shape + smooth L1 geometry on occupied cells."""
    color_logits, shape_logits, geometry = head_out
    occ = labels["occupied"]
    # At most 3 of 49 cells hold a shape: weigh them up so "everything is empty" is not a good answer.
    weight = (1.0 + (OCCUPIED_WEIGHT - 1.0) * occ.float()).flatten()
    weight = weight / weight.sum()
    loss_color = (F.cross_entropy(color_logits.flatten(0, 2), labels["color"].flatten(), reduction="none") * weight).sum()
    loss_shape = (F.cross_entropy(shape_logits.flatten(0, 2), labels["shape"].flatten(), reduction="none") * weight).sum()
    loss_geo = F.smooth_l1_loss(geometry[occ], labels["geometry"][occ], beta=0.1) if occ.any() else geometry.sum() * 0
    with torch.no_grad():
        n_occ = max(1, int(occ.sum()))
        stats = {
            "color_acc": float((color_logits.argmax(-1)[occ] == labels["color"][occ]).sum()) / n_occ,
            "shape_acc": float((shape_logits.argmax(-1)[occ] == labels["shape"][occ]).sum()) / n_occ,
            "empty_acc": float((color_logits.argmax(-1)[~occ] == 0).float().mean()),
            "geometry_l1": float((geometry[occ] - labels["geometry"][occ]).abs().mean()) if occ.any() else 0.0,
        }
    return loss_color + loss_shape + 4.0 * loss_geo, stats


def pretrain_backbone(
    backbone: nn.Module,
    data_root: str | Path,
    gif_names: Sequence[str],
    steps: int,
    *,
    image_size: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log_path: str | Path | None = None,
) -> dict[str, float]:
    """Train ``backbone`` in place for ``steps`` Adam steps on the scene labels of ``gif_names``.

    Returns the last 50 steps' mean loss and accuracies (colour / shape of occupied cells, empty cells
    predicted empty, mean absolute geometry error); appends per-100-step records to ``log_path``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = torch.device(device)
    backbone.to(device).eval()
    with torch.no_grad():  # map size and channels; in eval mode so BatchNorm statistics do not see it
        probe = backbone(torch.zeros(1, 3, image_size, image_size, device=device))
    backbone.train()
    grid = int(probe.shape[1])
    head = PerceptionHead(int(probe.shape[-1])).to(device)
    source = SceneFrames(data_root, gif_names, image_size, grid)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    # Cosine decay: the perception task is easy at first and the last steps refine the geometry.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5CE7E]))
    recent: list[dict[str, float]] = []
    t0 = time.time()

    bar = progress(range(steps), desc="perception pretraining", unit="step", leave=False)
    for step in bar:
        x, y = source.batch(rng, batch_size)
        x, y = x.to(device), {k: v.to(device) for k, v in y.items()}
        loss, stats = perception_loss(head(backbone(x.contiguous(memory_format=torch.channels_last))), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        schedule.step()
        recent = (recent + [dict(stats, loss=float(loss.detach()))])[-50:]
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", color=f"{stats['color_acc']:.2f}", refresh=False)
        if log_path is not None and ((step + 1) % 100 == 0 or step + 1 == steps):
            mean = {k: round(sum(r[k] for r in recent) / len(recent), 4) for k in recent[0]}
            with open(log_path, "a") as fh:
                fh.write(json.dumps({"step": step + 1, "seconds": round(time.time() - t0, 1), **mean}) + "\n")
    return {k: sum(r[k] for r in recent) / len(recent) for k in recent[0]}
