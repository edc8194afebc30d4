"""The attention picture: what the model looked at, and when.

One panel per sampled frame, in order: the frame with the model's 7x7 spatial attention drawn over it as
a smooth, semi-transparent heat map (opacity grows with the weight, so unattended areas stay clear) over
the centre crop the model saw only, each cell at its backbone's measured centre (stqa.video.geometry),
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

from stqa.video.geometry import CellCentres, CropBox, cell_centres, crop_box

_HEAT_CMAP = "turbo"
_ACCENT = "#2b8cbe"
_BEST = "#e6550d"
_MAX_COLUMNS = 9


def heatmap_in_frame(
    grid: np.ndarray,
    height: int,
    width: int,
    *,
    size: int | None = None,
    centres: CellCentres | None = None,
) -> tuple[np.ndarray, float, CropBox]:
    """A square attention grid (7x7 usually) drawn over a ``height x width`` frame where the model looked.

    The model sees only the centre crop of the frame (shorter side resized to ``size``, then ``size x
    size``: :func:`stqa.video.geometry.crop_box`), and cell ``(i, j)`` of its map looks at
    ``(centres.x[j], centres.y[i])`` in that input (:func:`stqa.video.geometry.cell_centres`; uniform when
    not given). So the heat at a frame pixel is the grid interpolated at that pixel's position among the cell
    centres (smoothstep-weighted bilinear: each cell's value is reached exactly at its centre, and the map
    is smooth between; beyond the outer centres it fades out over one grid pitch), and zero outside the
    crop. ``size`` defaults to the shorter side (the crop is then
    the centred square, as at any size up to rounding).

    Returns the map stretched to [0, 1] between the grid's minimum and maximum, its contrast in [0, 1] (0
    for a uniform grid, near 1 for a single peaked cell: the picture scales the overlay's opacity by it so
    that a flat map is not drawn as a confident one), and the crop box.
    """
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1] or grid.shape[0] < 1:
        raise ValueError(f"spatial attention must be a square grid, got shape {grid.shape}")
    if not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError("spatial attention must be finite and non-negative")
    g = grid.shape[0]
    size = int(size) if size is not None else min(height, width)
    box = crop_box(height, width, size)
    centres = centres if centres is not None else cell_centres(None, size, g)
    for along in (centres.x, centres.y):
        if len(along) != g or (g > 1 and not (np.diff(along) > 0).all()):
            raise ValueError(f"cell centres must be {g} increasing positions per axis, got {list(along)}")
    low, peak = float(grid.min()), float(grid.max())
    contrast = 1.0 - float(grid.mean()) / peak if peak > 0 else 0.0
    scaled = (grid - low) / (peak - low) if peak > low else np.zeros_like(grid)

    def axis(n: int, start: float, extent: float, along: Sequence[float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # Frame pixel centres -> model-input pixels -> fractional cell index (clamped at the outer centres)
        # -> the two cells around it and the smoothstep weight. Beyond an outer cell's centre its heat fades
        # out over one grid pitch (size / g) and is cut at the crop's edge: that cell looks at its centre,
        # so holding its value to the edge would draw a band the model did not attend to.
        u = (np.arange(n) + 0.5 - start) * size / extent
        beyond = np.maximum(along[0] - u, 0.0) + np.maximum(u - along[-1], 0.0)
        inside = ((u >= 0) & (u < size)) * np.clip(1.0 - beyond * g / size, 0.0, 1.0)
        f = np.interp(u, np.asarray(along, dtype=np.float64), np.arange(g, dtype=np.float64)) if g > 1 \
            else np.zeros(n)
        lo = np.clip(np.floor(f).astype(np.int64), 0, max(g - 2, 0))
        hi = np.minimum(lo + 1, g - 1)
        t = np.clip(f - lo, 0.0, 1.0)
        return lo, hi, t * t * (3.0 - 2.0 * t), inside

    y0, y1, wy, in_y = axis(height, box.top, box.height, centres.y)
    x0, x1, wx, in_x = axis(width, box.left, box.width, centres.x)
    top = scaled[np.ix_(y0, x0)] * (1 - wx) + scaled[np.ix_(y0, x1)] * wx
    bottom = scaled[np.ix_(y1, x0)] * (1 - wx) + scaled[np.ix_(y1, x1)] * wx
    heat = top * (1 - wy)[:, None] + bottom * wy[:, None]
    heat *= np.outer(in_y, in_x)
    return np.clip(heat, 0.0, 1.0).astype(np.float32), contrast, box


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
    image_size: int | None = None,
    backbone: str | None = None,
):
    """Build the attention picture as a matplotlib Figure (caller saves or shows it).

    ``frames``: t RGB uint8 images; ``temporal``: t weights; ``spatial``: [t, G, G] weights (G = 7 usually).
    ``image_size`` and ``backbone`` are the model's (its FeatureSpec): they place the crop the model saw
    and the cells' measured centres (:func:`heatmap_in_frame`); without them the crop is the centred square
    and the cells are assumed uniform. The area the model never saw is veiled and the crop outlined.
    """
    # matplotlib loads only when a picture is drawn (a second's start-up that `stqa ask` without --out skips)
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
    grid_side = spatial.shape[1]
    size = image_size or min(frames[0].shape[:2])
    centres = cell_centres(backbone, size, grid_side)
    for i in range(t):
        r, c = divmod(i, columns)
        frame = frames[i]
        h, w = frame.shape[:2]
        ax = fig.add_subplot(grid[r, c])
        ax.imshow(frame, interpolation="bilinear")
        heat, contrast, box = heatmap_in_frame(spatial[i], h, w, size=size, centres=centres)
        overlay = heat_cmap(heat)
        # Opacity follows attention (clear below 10% of the range, so unattended areas stay visible) and the
        # map's contrast (a nearly uniform map fades out instead of posing as a sharp one).
        overlay[..., 3] = 0.65 * min(1.0, 1.5 * contrast) * np.clip((heat - 0.1) / 0.9, 0.0, 1.0) ** 0.7
        ax.imshow(overlay, interpolation="bilinear")
        if box.height < h - 0.5 or box.width < w - 0.5:
            # What the model never saw: veiled, and the crop it did see outlined (imshow's extent puts pixel
            # k at [k - 0.5, k + 0.5], so continuous coordinate c is drawn at c - 0.5).
            veil = np.zeros((h, w, 4), dtype=np.float32)
            veil[..., :3] = 1.0
            veil[..., 3] = 0.6
            r0, c0 = int(round(box.top)), int(round(box.left))
            veil[r0:int(round(box.top + box.height)), c0:int(round(box.left + box.width)), 3] = 0.0
            ax.imshow(veil, interpolation="nearest")
            ax.add_patch(Rectangle((box.left - 0.5, box.top - 0.5), box.width, box.height, fill=False,
                                   edgecolor="white", linestyle="--", linewidth=1.2))
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
    fig.text(0.5, 0.12 / fig_h, "heat: spatial attention over the crop the model sees (relative)   |   "
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
