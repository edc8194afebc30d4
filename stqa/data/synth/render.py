"""Drawing a scene: the frames as palette images, the GIF file, and what is where in each frame (the
perception labels of :mod:`stqa.pretrain`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stqa.data.synth.scenes import (
    ACTIVE_FRAMES,
    COLORS,
    GLIDE_FRAMES,
    REP_FRAMES,
    SHAPES,
    ZONES,
    Scene,
    SceneObject,
)

BACKGROUND_RGB = (28, 28, 28)
FLASH_RGB = (255, 255, 255)
BAR_RGB = (120, 120, 120)
FRAME_DURATION_MS = 80
BASE_RADIUS = 0.10  # shape radius as a fraction of the frame size

# Per action, the per-active-frame change: (dx, dy) in fractions of the size, scale, visible, flash.
_ACTION_FRAMES: dict[str, tuple[tuple[float, float, float, bool, bool], ...]] = {
    "jump": ((0.0, -0.09, 1.0, True, False), (0.0, -0.15, 1.0, True, False)),
    "blink": ((0.0, 0.0, 1.0, False, False), (0.0, 0.0, 1.0, False, False)),
    "grow": ((0.0, 0.0, 1.35, True, False), (0.0, 0.0, 1.6, True, False)),
    "shrink": ((0.0, 0.0, 0.65, True, False), (0.0, 0.0, 0.4, True, False)),
    "shake": ((0.08, 0.0, 1.0, True, False), (-0.08, 0.0, 1.0, True, False)),
    "flash": ((0.0, 0.0, 1.0, True, True), (0.0, 0.0, 1.0, True, True)),
}

# Palette indices: 0 background, 1 bar, 2 flash white, then the object colours.
_PALETTE_RGB: list[tuple[int, int, int]] = [BACKGROUND_RGB, BAR_RGB, FLASH_RGB, *COLORS.values()]
_COLOR_INDEX: dict[str, int] = {name: 3 + i for i, name in enumerate(COLORS)}
_PALETTE_BYTES: list[int] = [c for rgb in _PALETTE_RGB for c in rgb] + [0] * (3 * (256 - len(_PALETTE_RGB)))


def active_action(obj: SceneObject, t: int) -> tuple[str, int] | None:
    """(action, active frame 0..ACTIVE_FRAMES-1) when frame ``t`` is mid-repetition for ``obj``, else None."""
    for seg in obj.segments:
        if seg.start <= t < seg.end:
            phase = (t - seg.start) % REP_FRAMES
            return (seg.action, phase) if phase < ACTIVE_FRAMES else None
    return None


def object_state(obj: SceneObject, t: int) -> tuple[float, float, float, bool, bool]:
    """(x, y, scale, visible, flash) of ``obj`` at frame ``t``; x, y in fractions of the size."""
    x, y = ZONES[obj.zone]
    if obj.end_zone is not None and obj.glide_start is not None and t >= obj.glide_start:
        ex, ey = ZONES[obj.end_zone]
        frac = min(1.0, (t - obj.glide_start + 1) / (GLIDE_FRAMES + 1))
        x, y = x + (ex - x) * frac, y + (ey - y) * frac
    active = active_action(obj, t)
    if active is None:
        return x, y, 1.0, True, False
    action, phase = active
    dx, dy, scale, visible, flash = _ACTION_FRAMES[action][phase]
    return x + dx, y + dy, scale, visible, flash


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: int) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = r * 0.88  # same area as the circle
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - 1.15 * r), (cx - 1.15 * r, cy + 0.85 * r), (cx + 1.15 * r, cy + 0.85 * r)], fill=fill)
    elif shape == "cross":
        w = r * 0.38
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_frame(scene: Scene, t: int, size: int) -> Image.Image:
    """Draw frame ``t`` of ``scene`` as a palette image of ``size`` x ``size`` pixels."""
    if not 0 <= t < scene.n_frames:
        raise ValueError(f"frame {t} is outside the scene's {scene.n_frames} frames")
    im = Image.new("P", (size, size), 0)
    im.putpalette(_PALETTE_BYTES)
    draw = ImageDraw.Draw(im)
    for obj in scene.objects:
        x, y, scale, visible, flash = object_state(obj, t)
        if visible:
            fill = 2 if flash else _COLOR_INDEX[obj.color]
            _draw_shape(draw, obj.shape, x * size, y * size, BASE_RADIUS * size * scale, fill)
    bar = round((t + 1) * size / scene.n_frames)
    draw.rectangle((0, size - 2, bar - 1, size - 1), fill=1)
    return im


def render_frames(scene: Scene, size: int) -> list[Image.Image]:
    """Draw every frame of ``scene`` as a palette image of ``size`` x ``size`` pixels."""
    return [render_frame(scene, t, size) for t in range(scene.n_frames)]


#: Classes of :func:`frame_labels`: index 0 is an empty cell; "white" is a flashing shape.
LABEL_COLORS: tuple[str, ...] = ("none", *COLORS, "white")
LABEL_SHAPES: tuple[str, ...] = ("none", *SHAPES)


def frame_labels(scene: Scene, t: int, grid: int = 7) -> dict[str, np.ndarray]:
    """What is where in frame ``t``, per cell of a ``grid`` x ``grid`` partition of the frame.

    A visible shape labels the cell holding its centre: ``color`` (index into :data:`LABEL_COLORS`),
    ``shape`` (:data:`LABEL_SHAPES`), and ``geometry`` = (x, y of the centre within the cell in [0, 1),
    log of the size factor); every other cell is ``none`` with zero geometry. ``occupied`` marks the
    labelled cells. These are the perception targets of :mod:`stqa.pretrain`.
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    color = np.zeros((grid, grid), dtype=np.int64)
    shape = np.zeros((grid, grid), dtype=np.int64)
    geometry = np.zeros((grid, grid, 3), dtype=np.float32)
    for obj in scene.objects:
        x, y, scale, visible, flash = object_state(obj, t)
        if not visible:
            continue
        gx, gy = min(grid - 1, max(0, int(x * grid))), min(grid - 1, max(0, int(y * grid)))
        color[gy, gx] = LABEL_COLORS.index("white" if flash else obj.color)
        shape[gy, gx] = LABEL_SHAPES.index(obj.shape)
        geometry[gy, gx] = (x * grid - gx, y * grid - gy, np.log(scale))
    return {"color": color, "shape": shape, "geometry": geometry, "occupied": color > 0}


def write_gif(frames: list[Image.Image], path: Path) -> None:
    """Save palette frames as a looping GIF (lossless: the palette holds every colour used).

    ``optimize=True`` shrinks the palette to the colours present and writes unchanged pixels as transparent:
    3-4x smaller files, still decoded to exactly the drawn frames (tested)."""
    frames[0].save(
        path, save_all=True, append_images=frames[1:], duration=FRAME_DURATION_MS, loop=0, optimize=True
    )
