"""The decode worker pool: results as in-process decoding, stop requests honoured between frames, a stuck
worker killed and replaced, the memory limit enforced by the kernel, a crashed worker reported."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from stqa.server.testing import screen_gif

from stqa.video import DecodeCancelled, DecodeTimeout, TooManyFrames, VideoLimits, decode_video
from stqa.video.pool import DecodeJob, DecodePool, DecodePoolClosed, DecoderCrashed, DecoderMemoryExceeded

# A decode that takes seconds but is within these limits: 4,000 full-screen 1024x1024 GIF frames.
SLOW = VideoLimits(max_pixels=1024 * 1024, max_decoded_pixels=1 << 40, decode_timeout_s=120)


@pytest.fixture(scope="module")
def pool():
    with DecodePool(2, memory_limit_bytes=512 << 20) as p:
        yield p


def test_a_worker_decodes_exactly_what_the_caller_would(pool):
    data = screen_gif(64, 48, 40)
    job = DecodeJob(data, 8, policy="center", shrink_to=32)
    here = decode_video(data, 8, policy="center", shrink_to=32)
    there = pool.decode(job)
    assert np.array_equal(here.frames, there.frames) and np.array_equal(here.indices, there.indices)
    assert there.n_frames == 40
    # Input errors come back as the decoder's own exception types and messages.
    with pytest.raises(TooManyFrames, match="40 frames, over the limit max_frames=10"):
        pool.decode(DecodeJob(data, 8, limits=VideoLimits(max_frames=10)))


def test_a_cancelled_decode_stops_between_frames_and_the_worker_is_reused(pool):
    before = set(pool.pids())
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(DecodeCancelled):
        pool.decode(DecodeJob(screen_gif(1024, 1024, 4000), 8, limits=SLOW), cancel=cancel)
    assert time.monotonic() - started < 0.5 + 2.0
    assert set(pool.pids()) == before, "a cooperative stop must not cost a worker"


def test_a_stuck_worker_is_killed_at_the_deadline_and_replaced():
    with DecodePool(1) as p:
        [pid] = p.pids()
        os.kill(pid, signal.SIGSTOP)  # stands in for a frame that hangs inside FFmpeg
        started = time.monotonic()
        with pytest.raises(DecodeTimeout, match="the worker was stopped"):
            p.decode(DecodeJob(screen_gif(64, 64, 4), 4), timeout_s=0.5)
        assert time.monotonic() - started < 0.5 + 2.0
        assert p.restarts == 1
        deadline = time.monotonic() + 30
        while not p.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.pids() and p.pids() != [pid]
        assert p.decode(DecodeJob(screen_gif(64, 64, 4), 4)).n_frames == 4


def test_the_memory_limit_is_the_kernels_and_costs_only_that_decode():
    big = VideoLimits(max_pixels=4096 * 4096, max_decoded_pixels=1 << 40, decode_timeout_s=60)
    with DecodePool(1, memory_limit_bytes=256 << 20) as p:
        with pytest.raises(DecoderMemoryExceeded, match="256 MiB"):
            p.decode(DecodeJob(screen_gif(4096, 4096, 30), 8, limits=big))
        assert p.decode(DecodeJob(screen_gif(64, 64, 4), 4)).n_frames == 4


def test_a_worker_that_dies_mid_decode_is_reported_and_replaced():
    with DecodePool(1) as p:
        [pid] = p.pids()
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        with pytest.raises(DecoderCrashed, match="SIGKILL"):
            p.decode(DecodeJob(screen_gif(1024, 1024, 4000), 8, limits=SLOW))
        deadline = time.monotonic() + 30
        while not p.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.decode(DecodeJob(screen_gif(64, 64, 4), 4)).n_frames == 4


def test_closing_ends_decodes_in_progress():
    p = DecodePool(1)
    threading.Timer(0.5, p.close).start()
    with pytest.raises((DecodePoolClosed, DecoderCrashed)):
        p.decode(DecodeJob(screen_gif(1024, 1024, 4000), 8, limits=SLOW))
    with pytest.raises(DecodePoolClosed):
        p.decode(DecodeJob(screen_gif(64, 64, 4), 4))
