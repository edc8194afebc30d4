"""Decode GIF / MP4 / WebM / AVI with PyAV under explicit resource limits.

Used by ``stqa extract`` (trusted-ish files) and the server (untrusted uploads), so every limit is
checked as early as the information is available: the byte size before opening, the frame size
from the stream header before decoding, the frame count, duration and wall time while decoding.
Zero-frame, truncated or non-video input raises :class:`CorruptVideo` / :class:`EmptyVideo`;
nothing is ever returned as an empty or zero-filled clip.

Memory and time are bounded by design, before FFmpeg allocates anything large:
  - a GIF's logical screen (every decoded GIF frame is a full canvas) and image count are read from its
    block structure before the file is handed to FFmpeg, so a tiny file declaring a huge canvas or
    thousands of frames is refused without decoding a pixel;
  - the frame area (``max_pixels``), the aspect ratio (``max_aspect_ratio``) and the total decoded pixels,
    canvas x frames (``max_decoded_pixels``), are checked from headers where they declare them and again
    while decoding;
  - with ``shrink_to=S``, kept frames are shrunk by swscale to the model's input scale (shorter side S)
    straight from the decoder's pixel format, so no full-resolution RGB or float copy ever exists.

The number of frames of a GIF is only known after decoding it (GIF seeking restarts from
the first frame), so the sampled indices are not known up front either. The first pass keeps the
decoded ``av.VideoFrame`` objects (not RGB copies) while their total size stays under
``_KEEP_BUDGET_BYTES``; short clips (all of TGIF, typically) therefore decode once and only the
sampled frames are converted to RGB. Once a clip outgrows the budget, the kept frames are dropped,
the first pass only counts, and a second pass decodes again and converts just the sampled frames.
Peak memory is thus bounded by the budget plus ``num_frames`` RGB frames, whatever the length.

Thread safety: each call opens its own container on its own copy of the bytes and shares no state,
so calls may run concurrently. The wall-time limit and ``should_stop`` are checked between frames; a
single frame that hangs inside FFmpeg cannot be interrupted in-process, which is why the server decodes
in killable worker processes (:mod:`stqa.video.pool`).

Corruption: frames FFmpeg flags as corrupt, and decoder errors it logs while concealing damage (e.g.
"LZW decode failed" for garbled GIF data, which it otherwise turns silently into wrong pixels), are
:class:`CorruptVideo`.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import av.error
import av.logging
import numpy as np

# The decoder's public names, re-exported as they are by ``stqa.video``.
__all__ = [
    "AspectRatioTooLarge", "CorruptVideo", "DecodeBudgetExceeded", "DecodeCancelled", "DecodeTimeout",
    "DecodedVideo", "EmptyVideo", "FrameTooLarge", "TooManyFrames", "VideoError", "VideoLimits",
    "VideoTooLarge", "VideoTooLong", "decode_video", "to_rgb24",
]

from stqa.video.geometry import resized_shape
from stqa.video.sampling import POLICIES, sample_indices

# Decoded frames kept during the first pass before switching to count-then-decode-again.
_KEEP_BUDGET_BYTES = 64 * 1024 * 1024
_GIF_SIGNATURES = (b"GIF87a", b"GIF89a")


@dataclass(frozen=True)
class VideoLimits:
    """Resource limits for one decode; every field is configurable.

    ``max_pixels`` bounds width x height of a frame (for a GIF, of its logical screen: every frame is
    decoded onto it); ``max_aspect_ratio`` the longer side over the shorter; ``max_decoded_pixels``
    the work of the whole decode, frame area x frames decoded. ``allowed_formats`` are FFmpeg demuxer
    names; anything else (still images, audio, subtitles, ...) is rejected. The defaults suit trusted
    files (``stqa extract``); the server sets tighter ones (``server.config.ServerConfig``).
    """

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_aspect_ratio: float = 8.0
    max_decoded_pixels: int = 4096 * 4096 * 128
    max_frames: int = 10_000
    max_duration_s: float = 600.0
    decode_timeout_s: float = 30.0
    allowed_formats: tuple[str, ...] = ("gif", "mp4", "mov", "webm", "matroska", "avi")

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_aspect_ratio", "max_decoded_pixels", "max_frames",
                     "max_duration_s", "decode_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"VideoLimits.{name} must be a positive number, got {value!r}")
        if self.max_aspect_ratio < 1:
            raise ValueError(f"VideoLimits.max_aspect_ratio must be >= 1, got {self.max_aspect_ratio!r}")


class VideoError(ValueError):
    """Base class: the input cannot be turned into frames (the caller's input is at fault)."""


class VideoTooLarge(VideoError):
    """The encoded input has more bytes than ``VideoLimits.max_bytes``."""


class FrameTooLarge(VideoError):
    """Frames have more pixels than ``VideoLimits.max_pixels``."""


class AspectRatioTooLarge(VideoError):
    """Frames are more elongated than ``VideoLimits.max_aspect_ratio``."""


class DecodeBudgetExceeded(VideoError):
    """Decoding would produce more pixels (frame area x frames) than ``VideoLimits.max_decoded_pixels``."""


class TooManyFrames(VideoError):
    """The video has more frames than ``VideoLimits.max_frames``."""


class VideoTooLong(VideoError):
    """The video lasts longer than ``VideoLimits.max_duration_s``."""


class DecodeTimeout(VideoError):
    """Decoding took longer than ``VideoLimits.decode_timeout_s``."""


class EmptyVideo(VideoError):
    """A readable video stream with zero decodable frames."""


class CorruptVideo(VideoError):
    """Truncated, garbage, non-video input, no video stream, or frames the decoder flags as damaged."""


class DecodeCancelled(Exception):
    """``should_stop()`` returned True: the caller gave up on this decode (not the input's fault)."""


@dataclass(frozen=True, eq=False)
class DecodedVideo:
    """Sampled RGB frames of one video and what was learned while decoding it."""

    frames: np.ndarray  # uint8 [t, H, W, 3], t = len(indices)
    indices: np.ndarray  # int64 [t], positions of the kept frames among all decoded frames
    n_frames: int  # frames decoded in total
    width: int  # as shown (upright), like `frames`
    height: int
    fps: float | None = field(default=None)


def decode_video(
    source: str | os.PathLike | bytes | bytearray | memoryview,
    num_frames: int | None = None,
    *,
    limits: VideoLimits = VideoLimits(),  # noqa: B008  (frozen, immutable default)
    policy: str = "uniform",
    shrink_to: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DecodedVideo:
    """Decode a video from a path or from bytes and keep the frames chosen by the sampling rule.

    With ``num_frames=T`` the kept frames are ``sample_indices(n_frames, T, policy)`` (all frames
    when ``n_frames <= T``); with ``num_frames=None`` every frame is kept (small clips only: memory
    grows with the clip). With ``shrink_to=S``, a frame whose shorter side exceeds S comes back
    resized so that it is S (the geometry of :func:`stqa.video.geometry.resized_shape`, so the
    transform then only crops); smaller frames come back as they are. ``should_stop`` is polled
    between frames and raises :class:`DecodeCancelled` once it returns True.

    Raises a :class:`VideoError` subclass naming the violated limit or the defect,
    ``FileNotFoundError`` for a missing path.
    """
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int)
                                   or num_frames < 1):
        raise ValueError(f"num_frames must be a positive integer or None, got {num_frames!r}")
    if shrink_to is not None and (isinstance(shrink_to, bool) or not isinstance(shrink_to, int) or shrink_to < 1):
        raise ValueError(f"shrink_to must be a positive integer or None, got {shrink_to!r}")
    if policy not in POLICIES:
        raise ValueError(f"unknown sampling policy {policy!r}; expected one of {', '.join(POLICIES)}")
    deadline = time.monotonic() + limits.decode_timeout_s
    data, label = _read_source(source, limits)
    # A GIF's block structure is walked once, here; the decode passes reuse its image count.
    gif_images = _check_gif_before_decoding(data, label, limits) if data[:6] in _GIF_SIGNATURES else None
    run = _Run(data, label, limits, deadline, shrink_to, should_stop, gif_images)
    if gif_images is not None:
        _check_gif_lzw(run)

    first = _decode_pass(run, keep="all" if num_frames is None else "budget")
    n = first.n_frames
    if num_frames is None:
        indices = np.arange(n, dtype=np.int64)
        frames = np.stack(first.rgb) if first.rgb else None
    else:
        indices = sample_indices(n, num_frames, policy)
        if first.kept is not None:
            frames = np.stack([_rgb(first.kept[i], first, run) for i in indices])
        else:
            second = _decode_pass(run, keep=indices)
            if second.n_frames != n:
                raise CorruptVideo(f"{label}: decoding is not repeatable ({n} frames on the first pass, "
                                   f"{second.n_frames} on the second)")
            frames = np.stack(second.rgb)
    if frames is None or len(frames) != len(indices):  # defensive: would mean a bookkeeping bug
        raise CorruptVideo(f"{label}: could not collect the sampled frames")
    # The size as shown: a quarter-turned (portrait phone) video reports its upright width and height.
    width, height = (first.height, first.width) if first.upright_swapped else (first.width, first.height)
    return DecodedVideo(frames=frames, indices=indices, n_frames=n, width=width, height=height, fps=first.fps)


# --------------------------------------------------------------------------------------------------


@dataclass
class _Pass:
    n_frames: int = 0
    width: int = 0
    height: int = 0
    fps: float | None = None
    kept: list | None = None  # av.VideoFrame objects (first pass, while under budget)
    upright_swapped: bool = False  # the display matrix turns frames by 90 or 270 degrees
    rgb: list = field(default_factory=list)  # converted frames (all, or the requested indices)


def _read_source(source, limits: VideoLimits) -> tuple[bytes, str]:
    """The whole encoded input as bytes, size-checked before anything is parsed."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = memoryview(source).nbytes
        label = "<bytes>"
        if size > limits.max_bytes:
            raise VideoTooLarge(f"{label}: video is {size} bytes, over the limit max_bytes={limits.max_bytes}")
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        size = os.stat(label).st_size  # FileNotFoundError names the path
        if size > limits.max_bytes:
            raise VideoTooLarge(f"{label}: video is {size} bytes, over the limit max_bytes={limits.max_bytes}")
        with open(label, "rb") as fh:
            data = fh.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:  # grew since stat
            raise VideoTooLarge(f"{label}: video is over {limits.max_bytes} bytes (max_bytes)")
    else:
        raise TypeError(f"source must be a path or bytes, got {type(source).__name__}")
    if not data:
        raise CorruptVideo(f"{label}: empty input (0 bytes)")
    return data, label


@dataclass(frozen=True)
class _Run:
    """What every pass of one decode shares."""

    data: bytes
    label: str
    limits: VideoLimits
    deadline: float
    shrink_to: int | None
    should_stop: Callable[[], bool] | None
    gif_images: int | None = None  # complete images of a GIF input, counted from its blocks


def _decode_pass(run: _Run, keep) -> _Pass:
    """One front-to-back decode. ``keep``: "all" (convert every frame), "budget" (keep frame
    objects while under budget) or an index array (convert those frames only)."""
    label, limits = run.label, run.limits
    result = _Pass()
    wanted = None
    keep_all = isinstance(keep, str) and keep == "all"
    if isinstance(keep, np.ndarray):
        wanted = {int(i): pos for pos, i in enumerate(keep)}
        result.rgb = [None] * len(keep)
    elif keep == "budget":
        result.kept = []
    kept_bytes = 0
    decoded_pixels = 0
    _enable_error_logs()
    try:
        # Capture(local=True): only this thread's FFmpeg messages, so concurrent decodes don't mix.
        with av.logging.Capture(True) as logs, av.open(io.BytesIO(run.data), mode="r") as container:
            fmt = container.format.name
            if not set(fmt.split(",")) & set(limits.allowed_formats):
                raise CorruptVideo(f"{label}: not a supported video container (FFmpeg detected {fmt!r}; "
                                   f"allowed: {', '.join(limits.allowed_formats)})")
            if not container.streams.video:
                raise CorruptVideo(f"{label}: no video stream (container {fmt!r})")
            stream = container.streams.video[0]
            declared_frames = int(stream.frames or 0)
            if run.gif_images is not None:  # FFmpeg's GIF demuxer needs the signature decode_video checked
                declared_frames = max(declared_frames, run.gif_images)
            if declared_frames > limits.max_frames:
                raise TooManyFrames(f"{label}: video has {declared_frames} frames, over the limit "
                                    f"max_frames={limits.max_frames}")
            if container.duration is not None and container.duration > 0:
                seconds = container.duration / av.time_base
                if seconds > limits.max_duration_s:
                    raise VideoTooLong(f"{label}: video lasts {seconds:.1f} s, over the limit "
                                       f"max_duration_s={limits.max_duration_s:g}")
            ctx = stream.codec_context
            result.width, result.height = int(ctx.width or 0), int(ctx.height or 0)
            _check_geometry(result.width, result.height, label, limits)
            _check_budget(result.width * result.height, declared_frames, label, limits, declared=True)
            rate = stream.average_rate or stream.guessed_rate
            result.fps = float(rate) if rate else None

            for frame in container.decode(stream):
                index = result.n_frames
                result.n_frames += 1
                if result.n_frames > limits.max_frames:
                    raise TooManyFrames(f"{label}: video has more than {limits.max_frames} frames "
                                        f"(max_frames)")
                _check_interrupts(run, index)
                if (frame.width, frame.height) != (result.width, result.height):
                    _check_geometry(frame.width, frame.height, label, limits)
                    if index == 0:
                        result.width, result.height = frame.width, frame.height
                if index == 0:
                    result.upright_swapped = _quarter_turns(frame) % 2 == 1
                decoded_pixels += frame.width * frame.height
                _check_budget(decoded_pixels, 1, label, limits, declared=False)
                if frame.is_corrupt:
                    raise CorruptVideo(f"{label}: frame {index} is damaged (the decoder flags it corrupt)")
                _raise_on_decoder_error(logs, label, index)
                if frame.time is not None and frame.time > limits.max_duration_s:
                    raise VideoTooLong(f"{label}: video runs past {frame.time:.2f} s, over the limit "
                                       f"max_duration_s={limits.max_duration_s:g}")
                if keep_all:
                    result.rgb.append(_rgb(frame, result, run))
                elif wanted is not None:
                    pos = wanted.get(index)
                    if pos is not None:
                        result.rgb[pos] = _rgb(frame, result, run)
                elif result.kept is not None:
                    kept_bytes += sum(plane.buffer_size for plane in frame.planes)
                    if kept_bytes <= _KEEP_BUDGET_BYTES:
                        result.kept.append(frame)
                    else:
                        result.kept = None  # too long to keep: count now, decode again later
            _raise_on_decoder_error(logs, label, result.n_frames)
    except (VideoError, DecodeCancelled):
        raise
    except MemoryError:  # av.error.MemoryError is also an FFmpegError: out of memory is no corrupt input
        raise
    except EOFError as exc:  # some demuxers (WebM) report an empty stream as an early end of file
        if result.n_frames == 0:
            raise EmptyVideo(f"{label}: the video stream has no decodable frames") from exc
        raise CorruptVideo(f"{label}: unexpected end of data after {result.n_frames} frames") from exc
    except av.error.FFmpegError as exc:
        raise CorruptVideo(f"{label}: cannot decode ({_ffmpeg_message(exc)}) after "
                           f"{result.n_frames} frames") from exc

    if result.n_frames == 0:
        raise EmptyVideo(f"{label}: the video stream has no decodable frames")
    if declared_frames and result.n_frames < declared_frames:
        raise CorruptVideo(f"{label}: truncated: the container declares {declared_frames} frames, "
                           f"only {result.n_frames} could be decoded")
    if wanted is not None and any(f is None for f in result.rgb):
        raise CorruptVideo(f"{label}: decoding is not repeatable (sampled frames missing on the second pass)")
    return result


def _rgb(frame, result: _Pass, run: _Run) -> np.ndarray:
    """RGB copy of a frame in the clip's size (a differently sized frame is an error), shrunk by swscale
    to ``run.shrink_to`` when its shorter side is larger (one resampling, from the decoder's format)."""
    if (frame.width, frame.height) != (result.width, result.height):
        raise CorruptVideo(f"{run.label}: frame size changes mid-stream ({result.width}x{result.height} -> "
                           f"{frame.width}x{frame.height})")
    turns = _quarter_turns(frame)
    size = run.shrink_to
    if size is not None and min(frame.width, frame.height) > size:
        # The geometry of the upright picture, then the same size in the stored orientation.
        upright = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
        height, width = resized_shape(*upright, size)
        if turns % 2:
            height, width = width, height
        # AREA averages every source pixel into its target: the antialiased shrink torchvision's
        # Resize(antialias=True) does, where a plain bilinear tap would alias fine detail.
        rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA",
                             threads=1).to_ndarray()  # one frame is tiny work; threads only cost memory
    else:
        rgb = to_rgb24(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that make a frame upright: phones store portrait video as
    landscape frames plus a display matrix (MP4/MOV rotation metadata), which players honour."""
    rotation = getattr(frame, "rotation", 0) or 0
    return int(round(rotation / 90.0)) % 4


# Packed 4-byte formats whose RGB bytes can be picked out directly: FFmpeg's GIF decoder gives bgra, and
# swscale's bgra -> rgb24 (which drops alpha the same way) costs ~0.2-1.7 ms per 112 x 112 frame against
# ~0.03 ms for a numpy channel selection: a third of the decode time of a synthetic clip.
_RGB_CHANNELS = {"bgra": [2, 1, 0], "rgba": [0, 1, 2], "bgr0": [2, 1, 0], "rgb0": [0, 1, 2]}


def to_rgb24(frame) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of a PyAV video frame (alpha dropped, as FFmpeg's rgb24 conversion does)."""
    channels = _RGB_CHANNELS.get(frame.format.name)
    if channels is None:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray()[..., channels]


def _check_geometry(width: int, height: int, label: str, limits: VideoLimits) -> None:
    if width * height > limits.max_pixels:
        raise FrameTooLarge(f"{label}: frames are {width}x{height} = {width * height} pixels, over the "
                            f"limit max_pixels={limits.max_pixels}")
    if width > 0 and height > 0 and max(width, height) > limits.max_aspect_ratio * min(width, height):
        raise AspectRatioTooLarge(f"{label}: frames are {width}x{height}, an aspect ratio of "
                                  f"{max(width, height) / min(width, height):.1f}:1, over the limit "
                                  f"max_aspect_ratio={limits.max_aspect_ratio:g}")


def _check_budget(frame_pixels: int, frames: int, label: str, limits: VideoLimits, *, declared: bool) -> None:
    total = frame_pixels * frames
    if total > limits.max_decoded_pixels:
        what = (f"{frames} frames of {frame_pixels} pixels would decode to {total} pixels" if declared
                else f"decoding produced over {limits.max_decoded_pixels} pixels")
        raise DecodeBudgetExceeded(f"{label}: {what}, over the limit max_decoded_pixels="
                                   f"{limits.max_decoded_pixels}")


def _check_gif_before_decoding(data: bytes, label: str, limits: VideoLimits) -> int:
    """Refuse a GIF from its header and block structure alone, before FFmpeg sees it: FFmpeg decodes
    every GIF frame onto the full logical screen, so a 43-byte file declaring a 65535x1 screen, or a
    few kilobytes of one-pixel images on a 4096x4096 screen, would otherwise allocate gigabytes.
    Returns the GIF's image count."""
    if len(data) < 13:
        raise CorruptVideo(f"{label}: truncated GIF (no logical screen descriptor)")
    width, height = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if width == 0 or height == 0:
        raise CorruptVideo(f"{label}: GIF logical screen is {width}x{height}")
    _check_geometry(width, height, label, limits)
    images = _gif_image_count(data, label)
    if images == 0:
        raise EmptyVideo(f"{label}: the video stream has no decodable frames (a GIF without images)")
    if images > limits.max_frames:
        raise TooManyFrames(f"{label}: video has {images} frames, over the limit max_frames={limits.max_frames}")
    _check_budget(width * height, images, label, limits, declared=True)
    return images


def _check_gif_lzw(run: _Run) -> None:
    """Refuse a GIF whose LZW data is damaged. FFmpeg's decoder is lenient: an image whose garbled data
    ends early, or decodes to codes it can use, becomes wrong pixels without an error. Pillow's decoder
    checks every image's code stream to its end in C (a fraction of FFmpeg's decode time); it runs only
    after the canvas and frame budgets have passed, so its memory is bounded the same way."""
    from PIL import Image  # imported here: only GIFs need it

    label = run.label
    index = -1
    try:
        with Image.open(io.BytesIO(run.data), formats=["GIF"]) as image:
            for index in range(image.n_frames):
                _check_interrupts(run, index)
                image.seek(index)
                image.load()
    except (VideoError, DecodeCancelled):
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # what Pillow raises for damaged data
        where = f"image {index + 1}" if index >= 0 else "its header"
        raise CorruptVideo(f"{label}: damaged GIF data in {where} ({exc})") from None


def _check_interrupts(run: _Run, frame: int) -> None:
    """Between frames: the caller's stop request, then the time budget."""
    if run.should_stop is not None and run.should_stop():
        raise DecodeCancelled(f"{run.label}: decoding was cancelled at frame {frame + 1}")
    if time.monotonic() > run.deadline:
        raise DecodeTimeout(f"{run.label}: decoding took longer than decode_timeout_s="
                            f"{run.limits.decode_timeout_s:g} s (stopped at frame {frame + 1})")


def _enable_error_logs() -> None:
    """Let FFmpeg's error messages through to PyAV (off by default), so that a Capture sees them."""
    level = av.logging.get_level()
    if level is None or level < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)


def _raise_on_decoder_error(logs: list, label: str, index: int) -> None:
    """FFmpeg conceals some damage (garbled GIF LZW data becomes wrong pixels) and only logs it."""
    for level, name, message in logs:
        if level <= av.logging.ERROR:
            raise CorruptVideo(f"{label}: damaged data near frame {index} (FFmpeg {name}: {message.strip()})")


def _ffmpeg_message(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _gif_image_count(data: bytes, label: str) -> int:
    """Count the complete images of a GIF by walking its block structure (no pixel decoding).

    FFmpeg silently decodes a GIF cut off inside an image as a shorter (or half-grey) clip, so
    truncation is detected here: a data sub-block chain that runs past the end of the input is a
    :class:`CorruptVideo`. A missing trailer byte after complete images, or unknown bytes after the
    last image, are tolerated (browsers and FFmpeg accept both; real GIFs have them).
    """
    n = len(data)
    if n < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise CorruptVideo(f"{label}: not a GIF file (bad signature)")
    pos = 13
    packed = data[10]
    if packed & 0x80:
        pos += 3 * (2 << (packed & 0x07))
    images = 0

    def skip_sub_blocks(p: int) -> int:
        while True:
            if p >= n:
                raise CorruptVideo(f"{label}: truncated GIF (data ends inside image {images + 1}'s blocks)")
            size = data[p]
            p += 1
            if size == 0:
                return p
            p += size

    while pos < n:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: introducer, label, sub-blocks
            pos = skip_sub_blocks(pos + 2)
        elif block == 0x2C:  # image descriptor (10 bytes), optional local colour table, LZW data
            if pos + 11 > n:
                raise CorruptVideo(f"{label}: truncated GIF (data ends inside image {images + 1}'s header)")
            local = data[pos + 9]
            pos += 10
            if local & 0x80:
                pos += 3 * (2 << (local & 0x07))
            pos = skip_sub_blocks(pos + 1)  # +1: LZW minimum code size
            images += 1
        else:
            break  # junk after the last block: tolerated, like FFmpeg does
    return images
