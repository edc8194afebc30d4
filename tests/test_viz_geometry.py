"""The attention picture draws a cell's heat where the model looked (issue 22): inside the centre crop
the model saw, at the cell's measured centre, on square and non-square frames."""

from __future__ import annotations

import numpy as np
import pytest

from stqa.video.geometry import cell_centres, crop_box, has_measured_centres, resized_shape
from stqa.video.transforms import frames_to_tensor
from stqa.viz import attention_figure, heatmap_in_frame


def _hot(i: int, j: int, g: int = 7) -> np.ndarray:
    grid = np.full((g, g), 0.1)
    grid[i, j] = 1.0
    return grid


def _peak(heat: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    return int(row), int(col)


@pytest.mark.parametrize(("height", "width", "size"), [(112, 224, 112), (300, 200, 112), (240, 320, 224),
                                                       (112, 112, 112), (57, 131, 112)])
def test_crop_box_is_where_the_transform_takes_its_pixels(height, width, size):
    box = crop_box(height, width, size)
    # A bright 1-pixel-wide cross at a frame point inside the box must come out of frames_to_tensor at the
    # input point the box maps it to (up to the resize's smoothing: within one input pixel).
    frame_x, frame_y = box.to_frame(0.3 * size, 0.7 * size, size)
    frame = np.zeros((1, height, width, 3), np.uint8)
    frame[0, int(frame_y), :, :] = 255
    frame[0, :, int(frame_x), :] = 255
    x = frames_to_tensor(frame, size)[0, 0].numpy()
    row = int(np.argmax(x[:, 0]))  # the horizontal line, seen in the first column
    col = int(np.argmax(x[0, :]))
    assert abs(row + 0.5 - 0.7 * size) <= 1.0 + size / height and abs(col + 0.5 - 0.3 * size) <= 1.0 + size / width
    new_h, new_w = resized_shape(height, width, size)
    assert box.height == pytest.approx(size * height / new_h) and box.width == pytest.approx(size * width / new_w)


def test_the_issues_224x112_example():
    box = crop_box(112, 224, 112)
    assert (box.top, box.left, box.height, box.width) == (0, 56, 112, 112)


def test_bundled_backbone_cells_are_measured_and_not_uniform():
    assert has_measured_centres("tiny", 112, 7) and not has_measured_centres("resnet152", 224, 7)
    centres = cell_centres("tiny", 112, 7)
    assert centres.x[6] < 100 and centres.y[6] < 100  # the uniform stretch said 104: measured well inside
    assert cell_centres("resnet152", 224, 7).x == tuple(32 * i + 16.0 for i in range(7))


@pytest.mark.parametrize(("height", "width"), [(112, 112), (112, 224), (224, 112), (300, 200), (90, 90)])
@pytest.mark.parametrize(("i", "j"), [(0, 0), (6, 6), (2, 5), (6, 0)])
def test_a_hot_cell_lands_on_its_measured_centre(height, width, i, j):
    size = 112
    centres = cell_centres("tiny", size, 7)
    heat, contrast, box = heatmap_in_frame(_hot(i, j), height, width, size=size, centres=centres)
    assert heat.shape == (height, width) and contrast > 0.5
    want_x, want_y = box.to_frame(centres.x[j], centres.y[i], size)
    # The peak is the pixel holding the cell's centre: within one frame pixel (plus one input pixel scaled).
    row, col = _peak(heat)
    assert abs(col + 0.5 - want_x) <= 1.0 + box.width / size and abs(row + 0.5 - want_y) <= 1.0 + box.height / size
    # Nothing is drawn where the model never looked.
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    outside = ((cols < box.left) | (cols > box.left + box.width))[None, :] | \
        ((rows < box.top) | (rows > box.top + box.height))[:, None]
    assert heat[outside].max(initial=0.0) == 0.0


def test_uniform_centres_reproduce_the_even_grid_on_a_square_frame():
    heat, _, _ = heatmap_in_frame(_hot(6, 6), 112, 112)
    assert _peak(heat) in {(103, 103), (104, 104), (103, 104), (104, 103)}  # centre 104 = 16 * 6.5


def test_wide_frame_heat_stays_in_the_crop_not_the_margins():
    # The issue: on a 224 x 112 clip, column 0 was drawn at x ~ 0 and column 6 at x ~ 208.
    centres = cell_centres("tiny", 112, 7)
    left, _, _ = heatmap_in_frame(_hot(3, 0), 112, 224, size=112, centres=centres)
    right, _, _ = heatmap_in_frame(_hot(3, 6), 112, 224, size=112, centres=centres)
    assert abs(_peak(left)[1] + 0.5 - (56 + centres.x[0])) <= 2 and abs(_peak(right)[1] + 0.5 - (56 + centres.x[6])) <= 2
    assert right[:, 56 + 112:].max() == 0 and right[:, :56].max() == 0 and right[:, 56 + 110].max() < 0.2  # faded out


def test_heatmap_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        heatmap_in_frame(np.ones((3, 4)), 8, 8)
    with pytest.raises(ValueError, match="non-negative"):
        heatmap_in_frame(-np.ones((7, 7)), 8, 8)
    with pytest.raises(ValueError, match="increasing"):
        heatmap_in_frame(np.ones((7, 7)), 8, 8, centres=cell_centres(None, 8, 6))
    flat, contrast, _ = heatmap_in_frame(np.full((7, 7), 1 / 49), 56, 40)
    assert contrast == pytest.approx(0.0, abs=1e-6) and flat.max() == 0.0


def test_figure_marks_the_crop_on_a_wide_frame():
    from matplotlib.patches import Rectangle

    frames = [np.full((112, 224, 3), 40, np.uint8)] * 2
    fig = attention_figure(frames, np.array([0.5, 0.5]), np.stack([_hot(3, 3)] * 2), question="q", answer="a",
                           image_size=112, backbone="tiny")
    dashed = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle) and p.get_linestyle() == "--"]
    assert len(dashed) == 2 and dashed[0].get_x() == pytest.approx(55.5) and dashed[0].get_width() == 112
    square = attention_figure([np.full((112, 112, 3), 40, np.uint8)], np.array([1.0]), _hot(3, 3)[None],
                              question="q", answer="a", image_size=112, backbone="tiny")
    assert not [p for ax in square.axes for p in ax.patches if p.get_linestyle() == "--"]
