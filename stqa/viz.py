"""The attention picture: what the model looked at, and when.

One panel per sampled frame, in order: the frame with the model's 7x7 spatial attention drawn over it as
a smooth, semi-transparent heat map (opacity grows with the weight, so unattended areas stay clear),
and under it a bar with the frame's temporal attention weight. The frame the model leaned on most is
outlined. The title carries the question and the answer (and the ground truth when known).

Rendering uses matplotlib's object API with the Agg canvas (no pyplot, no global backend change), so it
is safe in servers, threads and headless CI.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

_HEAT_CMAP = "turbo"
_ACCENT = "#2b8cbe"
_BEST = "#e6550d"
_MAX_COLUMNS = 9


def upsample_heatmap(grid: np.ndarray, height: int, width: int) -> tuple[np.ndarray, float]:
    """A square attention grid (7x7 usually) resized smoothly (bicubic) to ``height x width``.

    Returns the map stretched to [0, 1] between its minimum and maximum, and its contrast in [0, 1]:
    0 for a uniform grid (the model looked everywhere alike), near 1 for a single peaked cell. The picture
    scales the overlay's opacity by the contrast so that a flat map is not drawn as a confident one.
    """
    grid = np.asarray(grid, dtype=np.float32)
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1] or grid.shape[0] < 1:
        raise ValueError(f"spatial attention must be a square grid, got shape {grid.shape}")
    if not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError("spatial attention must be finite and non-negative")
    low, peak = float(grid.min()), float(grid.max())
    contrast = 1.0 - float(grid.mean()) / peak if peak > 0 else 0.0
    scaled = (grid - low) / (peak - low) if peak > low else np.zeros_like(grid)
    image = Image.fromarray(scaled, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0), contrast


def frames_for_indices(source: str | Path | bytes, frame_indices: Sequence[int], limits=None) -> np.ndarray:
    """Decode ``source`` locally and return the RGB frames at ``frame_indices`` (uint8 [t, H, W, 3]).

    The server samples with the project's one rule (stqa.video.sampling); decoding with the same rule
    gives the same frames without keeping the whole clip in memory. Only if no sampling policy reproduces
    the indices (a model with another T) is every frame decoded and the indices picked.
    """
    from stqa.video.decode import VideoLimits, decode_video
    from stqa.video.sampling import POLICIES

    wanted = np.asarray(list(frame_indices), dtype=np.int64)
    if wanted.size == 0:
        raise ValueError("no frame indices to draw")
    limits = limits or VideoLimits()
    for policy in POLICIES:
        decoded = decode_video(source, int(wanted.size), limits=limits, policy=policy)
        if np.array_equal(decoded.indices, wanted):
            return decoded.frames
    decoded = decode_video(source, None, limits=limits)
    if wanted.max() >= decoded.n_frames or wanted.min() < 0:
        raise ValueError(f"frame indices {wanted.tolist()} are outside the video's {decoded.n_frames} frames")
    return decoded.frames[wanted]


def attention_figure(
    frames: np.ndarray | Sequence[np.ndarray],
    temporal: Sequence[float],
    spatial: np.ndarray,
    *,
    question: str,
    answer: str,
    frame_indices: Sequence[int] | None = None,
    truth: str | None = None,
    subtitle: str | None = None,
):
    """Build the attention picture as a matplotlib Figure (caller saves or shows it).

    ``frames``: t RGB uint8 images; ``temporal``: t weights; ``spatial``: [t, G, G] weights (G = 7 usually).
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    frames = [np.asarray(f) for f in frames]
    temporal = np.asarray(temporal, dtype=np.float32).reshape(-1)
    spatial = np.asarray(spatial, dtype=np.float32)
    t = len(frames)
    if t == 0:
        raise ValueError("no frames to draw")
    if temporal.shape != (t,) or spatial.ndim != 3 or spatial.shape[0] != t or spatial.shape[1] != spatial.shape[2]:
        raise ValueError(f"attention shapes temporal {temporal.shape}, spatial {spatial.shape} do not match "
                         f"{t} frames (expected ({t},) and ({t}, G, G))")
    indices = list(frame_indices) if frame_indices is not None else list(range(t))

    # As few rows as fit _MAX_COLUMNS, then the columns spread evenly over them (25 frames: 3 x 9, not 4 x 8).
    rows = -(-t // _MAX_COLUMNS)
    columns = -(-t // rows)
    height, width = frames[0].shape[:2]
    aspect = height / max(width, 1)
    panel_w = 1.9
    fig_w = max(columns * panel_w + 0.4, 6.5)
    header_in = 1.2 if subtitle else 0.95
    fig_h = header_in + rows * (panel_w * aspect + 0.62) + 0.35
    fig = Figure(figsize=(fig_w, fig_h), dpi=110, facecolor="white")
    FigureCanvasAgg(fig)

    title_lines = textwrap.wrap(f"Q: {question}", width=int(fig_w * 11)) or ["Q:"]
    fig.text(0.5, 1 - 0.18 / fig_h, "\n".join(title_lines[:2]), ha="center", va="top", fontsize=12,
             fontweight="bold", color="#222222")
    verdict = ""
    if truth is not None:
        verdict = "   (correct)" if str(truth).strip().lower() == str(answer).strip().lower() else f"   (truth: {truth})"
    answer_y = 1 - (0.3 + 0.21 * min(len(title_lines), 2)) / fig_h
    fig.text(0.5, answer_y, f"A: {answer}{verdict}", ha="center", va="top", fontsize=12, color=_BEST
             if truth is not None and verdict != "   (correct)" else _ACCENT, fontweight="bold")
    if subtitle:
        fig.text(0.5, answer_y - 0.26 / fig_h, subtitle, ha="center", va="top", fontsize=8.5, color="#555555")

    top = 1 - header_in / fig_h
    bottom = 0.62 / fig_h
    grid = fig.add_gridspec(rows, columns, left=0.015, right=0.985, top=top, bottom=bottom,
                            hspace=0.62 / (panel_w * aspect), wspace=0.05)
    best = int(np.argmax(temporal))
    heat_cmap = colormaps[_HEAT_CMAP]
    # Bars are scaled to the largest weight, but never below twice the uniform weight: a flat temporal
    # distribution then shows as half-length bars rather than as every frame being "the" frame.
    peak_weight = max(float(temporal.max()), 2.0 / t)
    for i in range(t):
        r, c = divmod(i, columns)
        frame = frames[i]
        h, w = frame.shape[:2]
        ax = fig.add_subplot(grid[r, c])
        ax.imshow(frame, interpolation="bilinear")
        heat, contrast = upsample_heatmap(spatial[i], h, w)
        overlay = heat_cmap(heat)
        # Opacity follows attention (clear below 10% of the range, so unattended areas stay visible) and the
        # map's contrast (a nearly uniform map fades out instead of posing as a sharp one).
        overlay[..., 3] = 0.65 * min(1.0, 1.5 * contrast) * np.clip((heat - 0.1) / 0.9, 0.0, 1.0) ** 0.7
        ax.imshow(overlay, interpolation="bilinear")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(i == best)
            spine.set_edgecolor(_BEST)
            spine.set_linewidth(3)
        ax.set_title(f"frame {indices[i]}", fontsize=8, color=_BEST if i == best else "#444444", pad=2,
                     fontweight="bold" if i == best else "normal")

        # The temporal weight as a bar right under the frame (length relative to the largest weight).
        bar = ax.inset_axes((0.0, -0.2, 1.0, 0.13))
        bar.add_patch(Rectangle((0, 0), 1, 1, color="#ececec"))
        bar.add_patch(Rectangle((0, 0), float(temporal[i]) / peak_weight, 1,
                                color=_BEST if i == best else _ACCENT))
        bar.text(0.98, 0.5, f"{temporal[i]:.2f}", ha="right", va="center", fontsize=7.5, color="#222222")
        bar.set_xlim(0, 1)
        bar.set_ylim(0, 1)
        bar.axis("off")
    fig.text(0.5, 0.12 / fig_h, "heat: spatial attention within each frame (relative)   |   "
             "bars: temporal attention across frames (sums to 1; longest bar outlined above)",
             ha="center", va="bottom", fontsize=7.5, color="#666666")
    return fig


def save_attention_picture(path: str | Path, frames, temporal, spatial, **kwargs) -> Path:
    """Render :func:`attention_figure` to ``path`` (PNG by default; format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = attention_figure(frames, temporal, spatial, **kwargs)
    fig.savefig(path, dpi=110, facecolor="white")
    return path
