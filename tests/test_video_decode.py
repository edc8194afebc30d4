"""decode_video on generated GIF / MP4 / WebM / AVI files: sampling, limits, corrupt input, threads."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import stqa.video.decode as decode_module
from stqa.video import (
    CorruptVideo,
    DecodeTimeout,
    EmptyVideo,
    FrameTooLarge,
    TooManyFrames,
    VideoError,
    VideoLimits,
    VideoTooLarge,
    VideoTooLong,
    decode_video,
    sample_indices,
)

W, H = 48, 32


def gif_bytes(n: int, delay_ms: int = 40, size: tuple[int, int] = (W, H)) -> bytes:
    """n frames; frame i is a solid colour with red = 4 i, so a decoded frame tells its index."""
    frames = [Image.new("RGB", size, (4 * i, 255 - 4 * i, 60)) for i in range(n)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=delay_ms, loop=0)
    return buf.getvalue()


def encoded_video(path: Path, fmt: str, codec: str, n: int, rate: int = 10, options=None) -> Path:
    """n frames; frame i has grey level 8 i (lossy codecs keep it within a few levels)."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        container.start_encoding()
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), 8 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    gif = root / "clip.gif"
    gif.write_bytes(gif_bytes(48))
    return {
        "gif": gif,
        "mp4": encoded_video(root / "clip.mp4", "mp4", "libx264", 30),
        "webm": encoded_video(root / "clip.webm", "webm", "libvpx", 30),
        "avi": encoded_video(root / "clip.avi", "avi", "mjpeg", 30),
    }


# --- decoding and sampling ------------------------------------------------------------------------


def test_gif_sampled_frames_are_the_right_ones(videos) -> None:
    video = decode_video(videos["gif"], 35)
    assert video.n_frames == 48 and (video.width, video.height) == (W, H)
    np.testing.assert_array_equal(video.indices, sample_indices(48, 35))
    assert video.frames.shape == (35, H, W, 3) and video.frames.dtype == np.uint8
    np.testing.assert_array_equal(video.frames[:, 0, 0, 0], 4 * video.indices)  # lossless: exact
    np.testing.assert_array_equal(video.frames[:, H - 1, W - 1, 1], 255 - 4 * video.indices)
    assert video.fps == pytest.approx(25.0)


@pytest.mark.parametrize("kind", ["mp4", "webm", "avi"])
def test_encoded_videos_from_path_and_bytes(videos, kind: str) -> None:
    from_path = decode_video(videos[kind], 8)
    from_bytes = decode_video(videos[kind].read_bytes(), 8)
    assert from_path.n_frames == from_bytes.n_frames == 30
    np.testing.assert_array_equal(from_path.indices, sample_indices(30, 8))
    np.testing.assert_array_equal(from_path.frames, from_bytes.frames)
    grey = from_path.frames.reshape(8, -1).mean(axis=1)
    np.testing.assert_allclose(grey, 8 * from_path.indices, atol=4)  # the sampled frames, in order
    assert from_path.fps == pytest.approx(10.0)


def test_all_frames_and_short_clips(videos) -> None:
    every = decode_video(videos["gif"])
    assert every.frames.shape[0] == every.n_frames == 48
    np.testing.assert_array_equal(every.indices, np.arange(48))
    np.testing.assert_array_equal(every.frames[:, 0, 0, 0], 4 * np.arange(48))
    short = decode_video(gif_bytes(5), 35)  # n <= T: every frame, the consumer pads
    assert short.frames.shape[0] == 5 and short.indices.tolist() == [0, 1, 2, 3, 4]
    single = decode_video(gif_bytes(1), 35)  # a GIF that became a still image is a 1-frame clip
    assert single.n_frames == 1 and single.frames.shape == (1, H, W, 3)


def test_center_policy(videos) -> None:
    video = decode_video(videos["gif"], 6, policy="center")
    np.testing.assert_array_equal(video.indices, sample_indices(48, 6, "center"))
    np.testing.assert_array_equal(video.frames[:, 0, 0, 0], 4 * video.indices)
    with pytest.raises(ValueError, match="unknown sampling policy"):
        decode_video(videos["gif"], 6, policy="random")
    with pytest.raises(ValueError, match="num_frames"):
        decode_video(videos["gif"], 0)


def test_long_clip_second_pass_gives_same_frames(videos, monkeypatch) -> None:
    """Past the keep budget the first pass only counts; the second decodes just the sampled frames."""
    single_pass = decode_video(videos["gif"], 10)
    calls = []
    original = decode_module._decode_pass
    monkeypatch.setattr(decode_module, "_KEEP_BUDGET_BYTES", 10 * W * H * 4)
    monkeypatch.setattr(decode_module, "_decode_pass", lambda *a, **k: calls.append(k["keep"]) or original(*a, **k))
    two_pass = decode_video(videos["gif"], 10)
    assert len(calls) == 2 and isinstance(calls[1], np.ndarray)
    np.testing.assert_array_equal(two_pass.frames, single_pass.frames)
    np.testing.assert_array_equal(two_pass.indices, single_pass.indices)


def test_concurrent_decoding_is_consistent(videos) -> None:
    sources = [videos["gif"], videos["mp4"], videos["gif"].read_bytes(), videos["webm"], videos["avi"]] * 3
    expected = [decode_video(s, 12).frames for s in sources[:5]] * 3
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda s: decode_video(s, 12).frames, sources))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


# --- limits ---------------------------------------------------------------------------------------


def test_byte_limit_before_opening(videos, tmp_path) -> None:
    data = videos["gif"].read_bytes()
    with pytest.raises(VideoTooLarge, match=rf"{len(data)} bytes, over the limit max_bytes=100"):
        decode_video(data, 8, limits=VideoLimits(max_bytes=100))
    with pytest.raises(VideoTooLarge, match="max_bytes=100"):
        decode_video(videos["gif"], 8, limits=VideoLimits(max_bytes=100))
    # checked before parsing: even garbage of the wrong size reports the size, not the garbage
    with pytest.raises(VideoTooLarge):
        decode_video(b"\0" * 101, 8, limits=VideoLimits(max_bytes=100))


@pytest.mark.parametrize("kind", ["gif", "mp4"])
def test_pixel_limit(videos, kind) -> None:
    with pytest.raises(FrameTooLarge, match=rf"{W}x{H} = {W * H} pixels, over the limit max_pixels=1000"):
        decode_video(videos[kind], 8, limits=VideoLimits(max_pixels=1000))
    assert decode_video(videos[kind], 8, limits=VideoLimits(max_pixels=W * H)).width == W


@pytest.mark.parametrize("kind, n", [("gif", 48), ("mp4", 30), ("avi", 30)])
def test_frame_limit_from_header(videos, kind, n) -> None:
    with pytest.raises(TooManyFrames, match=rf"has {n} frames, over the limit max_frames=10"):
        decode_video(videos[kind], 8, limits=VideoLimits(max_frames=10))
    assert decode_video(videos[kind], 8, limits=VideoLimits(max_frames=n)).n_frames == n


def test_frame_limit_while_decoding(videos) -> None:
    """WebM declares no frame count: the limit trips while decoding."""
    with pytest.raises(TooManyFrames, match="more than 10 frames"):
        decode_video(videos["webm"], 8, limits=VideoLimits(max_frames=10))


@pytest.mark.parametrize("kind, seconds", [("gif", "1.9"), ("mp4", "3.0"), ("webm", "3.0")])
def test_duration_limit(videos, kind, seconds) -> None:
    with pytest.raises(VideoTooLong, match=rf"{seconds} s, over the limit max_duration_s=1"):
        decode_video(videos[kind], 8, limits=VideoLimits(max_duration_s=1))
    decode_video(videos[kind], 8, limits=VideoLimits(max_duration_s=5))


def test_duration_limit_while_decoding(videos, monkeypatch) -> None:
    """With no usable header duration, frame timestamps are checked as they come."""
    real_open = av.open

    class NoDuration:
        def __init__(self, container):
            self._c = container

        def __getattr__(self, name):
            return None if name == "duration" else getattr(self._c, name)

        def __enter__(self):
            self._c.__enter__()
            return self

        def __exit__(self, *exc):
            return self._c.__exit__(*exc)

    monkeypatch.setattr(decode_module.av, "open", lambda *a, **k: NoDuration(real_open(*a, **k)))
    with pytest.raises(VideoTooLong, match="runs past 1.04 s, over the limit max_duration_s=1"):
        decode_video(videos["gif"], 8, limits=VideoLimits(max_duration_s=1))


def test_timeout(videos) -> None:
    with pytest.raises(DecodeTimeout, match="longer than decode_timeout_s=1e-09"):
        decode_video(videos["gif"], 8, limits=VideoLimits(decode_timeout_s=1e-9))


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="max_frames"):
        VideoLimits(max_frames=0)
    with pytest.raises(ValueError, match="decode_timeout_s"):
        VideoLimits(decode_timeout_s=-1)


# --- bad input ------------------------------------------------------------------------------------


def test_errors_are_value_errors() -> None:
    for cls in (VideoTooLarge, FrameTooLarge, TooManyFrames, VideoTooLong, DecodeTimeout, EmptyVideo, CorruptVideo):
        assert issubclass(cls, VideoError) and issubclass(cls, ValueError)


@pytest.mark.parametrize("data, message", [
    (b"", "empty input"),
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "cannot decode"),
    (b"this is a text file, not a video\n" * 50, "cannot decode"),
    (b"GIF89a" + b"\x10\x00", "truncated GIF"),
])
def test_garbage_is_corrupt(data: bytes, message: str) -> None:
    with pytest.raises(CorruptVideo, match=message):
        decode_video(data, 8)


def test_truncated_gif() -> None:
    data = gif_bytes(48)
    with pytest.raises(CorruptVideo, match="truncated GIF"):
        decode_video(data[: len(data) // 2], 8)
    with pytest.raises(CorruptVideo, match="truncated GIF"):
        decode_video(data[:-3], 8)
    # only the trailer byte missing: every image is complete, accepted like browsers and FFmpeg do
    assert decode_video(data[:-1], 8).n_frames == 48


def test_truncated_mp4(videos, tmp_path) -> None:
    data = videos["mp4"].read_bytes()  # index (moov) at the end: a cut file cannot even be opened
    with pytest.raises(CorruptVideo, match="cannot decode"):
        decode_video(data[: len(data) // 2], 8)
    faststart = encoded_video(tmp_path / "fs.mp4", "mp4", "libx264", 30, options={"movflags": "faststart"})
    data = faststart.read_bytes()  # index first: the cut shows up while decoding
    for cut in (len(data) // 2, len(data) - 200):
        with pytest.raises(CorruptVideo, match="cannot decode|truncated"):
            decode_video(data[:cut], 8)


def test_truncated_avi(videos) -> None:
    """Every cut inside the frame data is an error: a broken last frame fails to decode, a cut at a
    frame boundary is caught because fewer frames decode than the header declares."""
    data = videos["avi"].read_bytes()
    messages = []
    for cut in range(1000, int(len(data) * 0.75), 97):
        with pytest.raises(CorruptVideo) as info:
            decode_video(data[:cut], 8)
        messages.append(str(info.value))
    assert any("truncated: the container declares 30 frames" in m for m in messages)
    assert any("cannot decode" in m for m in messages)


def test_zero_frames(tmp_path) -> None:
    data = gif_bytes(3)
    packed = data[10]
    header = 13 + (3 * (2 << (packed & 7)) if packed & 0x80 else 0)
    with pytest.raises(EmptyVideo, match="no decodable frames"):
        decode_video(data[:header] + b"\x3b", 8)  # header, colour table, trailer: no image
    for fmt, codec in (("avi", "mjpeg"), ("webm", "libvpx")):
        path = encoded_video(tmp_path / f"empty.{fmt}", fmt, codec, 0)
        with pytest.raises(EmptyVideo, match="no decodable frames"):
            decode_video(path, 8)
    path = encoded_video(tmp_path / "empty.mp4", "mp4", "libx264", 0)
    with pytest.raises(VideoError):  # FFmpeg drops the sample-less track: "no video stream"
        decode_video(path, 8)


def test_still_image_and_audio_are_not_videos() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, format="PNG")
    with pytest.raises(CorruptVideo, match="not a supported video container.*png_pipe"):
        decode_video(buf.getvalue(), 8)
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, format="JPEG")
    with pytest.raises(CorruptVideo, match="not a supported video container"):
        decode_video(buf.getvalue(), 8)
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    with pytest.raises(CorruptVideo, match="wav"):
        decode_video(buf.getvalue(), 8, limits=VideoLimits(allowed_formats=("gif", "wav")))
    with pytest.raises(CorruptVideo, match="not a supported video container"):
        decode_video(buf.getvalue(), 8)


def test_missing_path_and_bad_source(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_video(tmp_path / "nope.gif", 8)
    with pytest.raises(TypeError):
        decode_video(12345, 8)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["bgra", "rgba", "yuv420p"])
def test_to_rgb24_matches_ffmpeg_conversion(fmt) -> None:
    """The direct channel pick for packed 4-byte frames (the GIF decoder's bgra) gives exactly what
    FFmpeg's rgb24 conversion gives, transparent pixels included; other formats go through FFmpeg."""
    from stqa.video.decode import to_rgb24

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    rgba[::3, :, 3] = 0  # transparent rows
    if fmt == "yuv420p":
        frame = av.VideoFrame.from_ndarray(rgba[..., :3].copy(), format="rgb24").reformat(format="yuv420p")
    else:
        frame = av.VideoFrame.from_ndarray(rgba[..., [2, 1, 0, 3]].copy() if fmt == "bgra" else rgba, format=fmt)
    assert frame.format.name == fmt
    got = to_rgb24(frame)
    assert got.shape == (H, W, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, frame.to_ndarray(format="rgb24"))
    if fmt != "yuv420p":
        np.testing.assert_array_equal(got, rgba[..., :3])


# -- bounded by design: hostile geometry refused before decoding, frames shrunk as they are decoded ----------


def test_hostile_gif_screens_are_refused_from_the_header_before_ffmpeg_sees_them(monkeypatch):
    from stqa.server.testing import screen_gif

    from stqa.video import AspectRatioTooLarge, DecodeBudgetExceeded

    def no_ffmpeg(*args, **kwargs):
        raise AssertionError("FFmpeg was asked to open a file the header already disproves")

    monkeypatch.setattr(decode_module.av, "open", no_ffmpeg)
    with pytest.raises(AspectRatioTooLarge, match="65535x1.*max_aspect_ratio=8"):
        decode_video(screen_gif(65535, 1, 1), 35)
    with pytest.raises(FrameTooLarge, match="max_pixels"):
        decode_video(screen_gif(4096, 4096, 30), 35, limits=VideoLimits(max_pixels=1920 * 1088))
    with pytest.raises(DecodeBudgetExceeded, match="9999 frames of 16777216 pixels.*max_decoded_pixels"):
        decode_video(screen_gif(4096, 4096, 9999), 35)
    with pytest.raises(TooManyFrames, match="max_frames=100"):
        decode_video(screen_gif(64, 64, 101), 35, limits=VideoLimits(max_frames=100))


def test_decoded_pixels_are_counted_while_decoding_when_no_header_declares_them(tmp_path):
    from stqa.video import DecodeBudgetExceeded

    path = encoded_video(tmp_path / "clip.webm", "webm", "libvpx", 20)  # WebM declares no frame count
    with pytest.raises(DecodeBudgetExceeded, match="decoding produced over 15360 pixels"):
        decode_video(path, 8, limits=VideoLimits(max_decoded_pixels=10 * W * H))
    assert decode_video(path, 8, limits=VideoLimits(max_decoded_pixels=20 * W * H)).n_frames == 20


def test_shrink_to_gives_the_transform_geometry_from_the_decoder():
    from stqa.video.geometry import resized_shape
    from stqa.video.transforms import frames_to_tensor

    data = gif_bytes(6, size=(300, 120))
    shrunk = decode_video(data, 4, shrink_to=60)
    assert shrunk.frames.shape == (4, *resized_shape(120, 300, 60), 3) == (4, 60, 150, 3)
    assert (shrunk.width, shrunk.height) == (300, 120)  # the source size is still reported
    full = decode_video(data, 4)
    assert full.frames.shape == (4, 120, 300, 3)
    # One resampling either way: the model input differs only by the resampling filter.
    a, b = frames_to_tensor(shrunk.frames, 60), frames_to_tensor(full.frames, 60)
    assert a.shape == b.shape == (4, 3, 60, 60)
    assert float((a - b).abs().mean()) < 0.05
    small = decode_video(gif_bytes(3), 3, shrink_to=112)  # never enlarged: the transform does that
    assert small.frames.shape == (3, H, W, 3)


def test_garbled_gif_data_is_corrupt_and_a_stop_request_cancels():
    from stqa.server.testing import garbled_gif

    from stqa.video import DecodeCancelled

    noisy = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8))
             for i in range(6)]
    buf = io.BytesIO()
    noisy[0].save(buf, format="GIF", save_all=True, append_images=noisy[1:], duration=40)
    assert decode_video(buf.getvalue(), 4).n_frames == 6
    with pytest.raises(CorruptVideo, match="damaged GIF data in image 4"):
        decode_video(garbled_gif(buf.getvalue(), 3), 4)
    calls = []
    with pytest.raises(DecodeCancelled):
        decode_video(buf.getvalue(), 4, should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert len(calls) == 3


# -- videos as people have them: rotation metadata, variable frame rate ----------------------------------------


def rotated_mp4(degrees: int | None, w: int = 64, h: int = 32, n: int = 6) -> bytes:
    """Landscape frames with a white block in the top-left quarter, plus display-matrix rotation."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if degrees is not None:
            stream.set_display_rotation(degrees)
        for _ in range(n):
            a = np.zeros((h, w, 3), np.uint8)
            a[: h // 2, : w // 2] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def bright_quadrant(frame: np.ndarray) -> str:
    h, w = frame.shape[:2]
    quads = {"top-left": frame[: h // 2, : w // 2], "top-right": frame[: h // 2, w // 2:],
             "bottom-left": frame[h // 2:, : w // 2], "bottom-right": frame[h // 2:, w // 2:]}
    return max(quads, key=lambda k: float(quads[k].mean()))


@pytest.mark.parametrize(("degrees", "shape", "corner"), [
    (None, (32, 64), "top-left"),
    (90, (64, 32), "bottom-left"),    # 90 counter-clockwise: the top-left corner goes to the bottom-left
    (-90, (64, 32), "top-right"),     # a phone's "rotate=90" (clockwise)
    (180, (32, 64), "bottom-right"),
])
def test_rotation_metadata_is_honoured(degrees, shape, corner):
    video = decode_video(rotated_mp4(degrees), 3)
    assert video.frames.shape[1:3] == shape
    assert (video.height, video.width) == shape
    assert bright_quadrant(video.frames[0]) == corner
    # Shrinking happens in the stored orientation; the result is upright at the transform's geometry.
    shrunk = decode_video(rotated_mp4(degrees, 256, 128), 3, shrink_to=32)
    assert shrunk.frames.shape[1:3] == ((32, 64) if shape == (32, 64) else (64, 32))
    assert bright_quadrant(shrunk.frames[0]) == corner


def test_variable_frame_rate_samples_by_frame_index(tmp_path):
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), 6 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, stream.codec_context.time_base
            pts += 20 if i % 2 else 90  # 20 ms and 90 ms apart in turn
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    video = decode_video(path, 8)
    assert video.n_frames == 40
    assert video.indices.tolist() == sample_indices(40, 8).tolist()
    levels = [float(f.mean()) for f in video.frames]
    assert levels == sorted(levels)
    assert all(abs(level - 6 * i) < 8 for level, i in zip(levels, video.indices, strict=True))


def test_a_gif_s_blocks_are_walked_once_per_decode(monkeypatch):
    """The header check and both decode passes share one walk of the GIF's blocks."""
    walks, passes = [], []
    count, decode_pass = decode_module._gif_image_count, decode_module._decode_pass
    monkeypatch.setattr(decode_module, "_gif_image_count", lambda data, label: walks.append(label) or count(data, label))
    monkeypatch.setattr(decode_module, "_decode_pass", lambda *a, **k: passes.append(k["keep"]) or decode_pass(*a, **k))
    monkeypatch.setattr(decode_module, "_KEEP_BUDGET_BYTES", 4 * W * H * 4)  # too small to keep: two passes
    video = decode_video(gif_bytes(40), num_frames=8)
    assert video.n_frames == 40 and len(video.frames) == 8
    assert len(passes) == 2 and len(walks) == 1
