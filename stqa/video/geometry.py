"""Frame geometry, in one place: how a frame becomes the model's input (resize, then centre crop), and
where each cell of a backbone's feature map looks within that input.

The decoder (torch-free), the tensor transform and the attention picture all use it, so what the picture
draws is what the model saw. Coordinates are continuous pixels: a frame spans ``[0, W] x [0, H]`` and
pixel ``k`` covers ``[k, k + 1)``, so its centre is ``k + 0.5``.
"""

from __future__ import annotations

from typing import NamedTuple


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after scaling so the shorter side is ``size`` (torchvision ``Resize(int)`` rounding)."""
    if height <= width:
        return size, max(size, int(size * width / height))
    return max(size, int(size * height / width)), size


def crop_offset(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the ``size x size`` centre crop in the resized frame (:func:`resized_shape`)."""
    new_h, new_w = resized_shape(height, width, size)
    return (new_h - size) // 2, (new_w - size) // 2


class CropBox(NamedTuple):
    """The region of a frame the model sees, in the original frame's continuous pixel coordinates."""

    top: float
    left: float
    height: float
    width: float

    def to_frame(self, x: float, y: float, size: int) -> tuple[float, float]:
        """A point ``(x, y)`` of the ``size x size`` model input -> the same point in the original frame."""
        return self.left + x * self.width / size, self.top + y * self.height / size


def crop_box(height: int, width: int, size: int) -> CropBox:
    """Where the model's ``size x size`` input lies in an ``height x width`` frame.

    The frame is resized (align_corners=False, so the continuous coordinates scale by ``H / new_h``) and
    centre-cropped, exactly as :func:`stqa.video.transforms.frames_to_tensor` does; for a 224 x 112 frame
    (W x H) at 112 the box is x in [56, 168), the full height.
    """
    if height < 1 or width < 1 or size < 1:
        raise ValueError(f"frame {height}x{width} and size {size} must be positive")
    new_h, new_w = resized_shape(height, width, size)
    top, left = crop_offset(height, width, size)
    scale_y, scale_x = height / new_h, width / new_w
    return CropBox(top * scale_y, left * scale_x, size * scale_y, size * scale_x)


class CellCentres(NamedTuple):
    """Where each cell of a backbone's G x G map looks, per axis, in pixels of the ``size x size`` input:
    ``x[j]`` is column j's centre, ``y[i]`` row i's."""

    x: tuple[float, ...]
    y: tuple[float, ...]


# Measured with scripts/measure_cell_centres.py on the bundled checkpoint's backbone (the only tiny weights
# shipped): a cell's centre is the centroid of the input gradient of its features (docs/serving.md, "Where
# the heat is drawn", has all three measurements). The QA model's own attention agrees: when it peaks on
# column 6 the attended shape is at x = 86 on average, on column 4 at 58, on column 2 at 30. The tiny
# backbone's stride-2, padding-1 convolutions centre cell i's receptive field on pixel 16 i, not 16 i + 8,
# and the border clips the outer cells' 63-pixel fields, so the even stretch drew the heat ~6-14 px below
# and right of what the model attended.
MEASURED_CELL_CENTRES: dict[tuple[str, int, int], CellCentres] = {
    ("tiny", 112, 7): CellCentres(x=(14.3, 22.6, 33.9, 49.9, 66.1, 82.2, 89.8),
                                  y=(15.1, 23.3, 33.7, 49.7, 65.7, 81.9, 90.1)),
}


def cell_centres(backbone: str | None, size: int, grid: int) -> CellCentres:
    """Centres of the ``grid`` cells along each axis of the ``size``-pixel model input.

    The measured centres when this backbone at this size was measured, else the uniform assumption
    ``(i + 0.5) * size / grid`` (true for no backbone in particular; :func:`has_measured_centres` says which).
    """
    measured = MEASURED_CELL_CENTRES.get((backbone or "", int(size), int(grid)))
    if measured is not None:
        return measured
    uniform = tuple((i + 0.5) * size / grid for i in range(grid))
    return CellCentres(uniform, uniform)


def has_measured_centres(backbone: str | None, size: int, grid: int) -> bool:
    """Whether :func:`cell_centres` is a measurement (True) or the uniform assumption (False)."""
    return (backbone or "", int(size), int(grid)) in MEASURED_CELL_CENTRES
