"""frames_to_tensor (resize, crop, ImageNet normalisation) and pad_clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stqa.video.transforms import IMAGENET_MEAN, IMAGENET_STD, frames_to_tensor, pad_clip, resized_shape

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def test_normalisation_values() -> None:
    frames = np.zeros((3, 20, 30, 3), np.uint8)
    frames[1] = 255
    frames[2] = (255, 0, 128)
    x = frames_to_tensor(frames, 16)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], (-MEAN / STD).expand(3, 16, 16))
    torch.testing.assert_close(x[1], ((1 - MEAN) / STD).expand(3, 16, 16))
    expected = ((torch.tensor([1.0, 0.0, 128 / 255]).view(3, 1, 1) - MEAN) / STD).expand(3, 16, 16)
    torch.testing.assert_close(x[2], expected)
    assert x[1, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, abs=1e-5)
    assert x[0, 2, 0, 0].item() == pytest.approx(-0.406 / 0.225, abs=1e-5)


@pytest.mark.parametrize("h, w", [(100, 300), (300, 100)])
def test_aspect_kept_and_center_crop(h: int, w: int) -> None:
    """Only the centre square survives: white centre, black sides (or top/bottom)."""
    frame = np.zeros((1, h, w, 3), np.uint8)
    if w > h:
        frame[0, :, 100:200] = 255
    else:
        frame[0, 100:200, :] = 255
    x = frames_to_tensor(frame, 50)
    assert x.shape == (1, 3, 50, 50)
    white = ((1 - MEAN) / STD).expand(3, 50, 50)
    # a squashing resize would have put black into the picture; the crop keeps only the white centre
    torch.testing.assert_close(x[0, :, 2:-2, 2:-2], white[:, 2:-2, 2:-2], atol=1e-4, rtol=0)


def test_resized_shape_rounding() -> None:
    assert resized_shape(240, 320, 224) == (224, 298)
    assert resized_shape(320, 240, 224) == (298, 224)
    assert resized_shape(224, 224, 224) == (224, 224)
    assert resized_shape(10, 1000, 112) == (112, 11200)


def test_antialiased_downscale_averages() -> None:
    """A fine checkerboard shrunk 8x becomes uniform grey (aliasing would keep stripes)."""
    board = ((np.indices((256, 256)).sum(axis=0) % 2) * 255).astype(np.uint8)
    frames = np.repeat(board[None, :, :, None], 3, axis=3)
    x = frames_to_tensor(frames, 32)
    grey = ((torch.full((3, 1, 1), 127.5 / 255) - MEAN) / STD).expand(3, 32, 32)
    torch.testing.assert_close(x[0, :, 1:-1, 1:-1], grey[:, 1:-1, 1:-1], atol=0.05, rtol=0)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8, 3), np.uint8), r"\[t, H, W, 3\]"),
    (np.zeros((2, 8, 8, 4), np.uint8), r"\[t, H, W, 3\]"),
    (np.zeros((0, 8, 8, 3), np.uint8), "non-empty"),
])
def test_frames_to_tensor_errors(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        frames_to_tensor(bad, 16)


def test_pad_clip_torch_and_numpy() -> None:
    x = torch.arange(2 * 3, dtype=torch.float32).view(2, 3) + 1
    padded, mask = pad_clip(x, 4)
    assert padded.shape == (4, 3) and padded.dtype == torch.float32
    torch.testing.assert_close(padded[:2], x)
    assert torch.all(padded[2:] == 0)
    assert mask.tolist() == [True, True, False, False] and mask.dtype == torch.bool
    arr = np.ones((3, 7, 7, 5), np.float16)
    padded_np, mask_np = pad_clip(arr, 3)
    assert padded_np.dtype == np.float16 and padded_np.shape == (3, 7, 7, 5) and mask_np.all()
    with pytest.raises(ValueError, match="more than num_frames"):
        pad_clip(np.ones((5, 2)), 4)
    with pytest.raises(ValueError, match="empty clip"):
        pad_clip(np.ones((0, 2)), 4)
    with pytest.raises(TypeError):
        pad_clip([1, 2], 4)  # type: ignore[arg-type]
