"""The attention picture: heat-map upsampling, shape checks, local frame decoding, a rendered PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stqa.viz import attention_figure, frames_for_indices, save_attention_picture


def _gif(n_frames: int, size: int = 24) -> bytes:
    frames = [Image.new("RGB", (size, size), (10 * i % 255, 20, 30)) for i in range(n_frames)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return buf.getvalue()


def test_figure_checks_shapes():
    frames = [np.zeros((16, 16, 3), np.uint8)] * 3
    with pytest.raises(ValueError, match="do not match 3 frames"):
        attention_figure(frames, np.ones(2) / 2, np.ones((3, 7, 7)) / 49, question="q", answer="a")
    with pytest.raises(ValueError, match="do not match"):
        attention_figure(frames, np.ones(3) / 3, np.ones((3, 7, 6)) / 42, question="q", answer="a")


def test_frames_for_indices_matches_the_sampling_rule_and_arbitrary_indices():
    from stqa.video.decode import decode_video

    gif = _gif(30)
    sampled = decode_video(gif, 8)
    np.testing.assert_array_equal(frames_for_indices(gif, sampled.indices.tolist()), sampled.frames)
    everything = decode_video(gif, None)
    np.testing.assert_array_equal(frames_for_indices(gif, [0, 2, 29]), everything.frames[[0, 2, 29]])
    with pytest.raises(ValueError, match="outside"):
        frames_for_indices(gif, [0, 30, 31])


def test_picture_is_written(tmp_path):
    rng = np.random.default_rng(0)
    t = 10
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(t)]
    temporal = rng.random(t)
    temporal /= temporal.sum()
    spatial = rng.random((t, 7, 7))
    spatial /= spatial.sum(axis=(1, 2), keepdims=True)
    path = save_attention_picture(tmp_path / "sub" / "p.png", frames, temporal, spatial, question="what?",
                                  answer="this", frame_indices=list(range(0, 40, 4)), truth="that", subtitle="x")
    image = Image.open(path)
    assert image.format == "PNG" and image.width > 600 and image.height > 300  # two rows of panels
