"""The one frame-sampling rule (stqa.video.sampling.sample_indices)."""

from __future__ import annotations

import numpy as np
import pytest

from stqa.video.sampling import POLICIES, sample_indices


def official(n: int, t: int) -> np.ndarray:
    """data_util.pad_video in the official TGIF-QA code, for n > T."""
    return np.linspace(0, n, num=t, endpoint=False, dtype=np.int32)


@pytest.mark.parametrize("n", [36, 40, 70, 85, 100, 217, 1000, 9999])
def test_uniform_matches_official_for_long_clips(n: int) -> None:
    got = sample_indices(n, 35)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, official(n, 35))


def test_uniform_matches_official_exhaustively() -> None:
    for t in (1, 2, 7, 16, 35):
        for n in range(t + 1, 400):
            np.testing.assert_array_equal(sample_indices(n, t), official(n, t))


def test_known_values() -> None:
    np.testing.assert_array_equal(sample_indices(10, 4), [0, 2, 5, 7])
    np.testing.assert_array_equal(sample_indices(70, 35), np.arange(0, 70, 2))
    # float artefact of the reference kept on purpose: exact arithmetic would give 51 at position 21
    assert sample_indices(85, 35)[21] == 50
    np.testing.assert_array_equal(sample_indices(10, 4, "center"), [1, 3, 6, 8])


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("n, t", [(1, 35), (5, 35), (34, 35), (35, 35), (1, 1)])
def test_short_clips_keep_every_frame(policy: str, n: int, t: int) -> None:
    np.testing.assert_array_equal(sample_indices(n, t, policy), np.arange(n))


@pytest.mark.parametrize("policy", POLICIES)
def test_properties_long_clips(policy: str) -> None:
    for n in (36, 50, 123, 1000, 10_000, 10**7):
        for t in (1, 8, 35):
            idx = sample_indices(n, t, policy)
            assert len(idx) == t
            assert idx[0] >= 0 and idx[-1] < n
            assert np.all(np.diff(idx) > 0)  # strictly increasing, no duplicates
            # segment property: the i-th index lies in the i-th of T equal segments
            seg = np.arange(t)
            assert np.all(idx >= np.floor(seg * n / t) - 1) and np.all(idx < np.ceil((seg + 1) * n / t))


def test_center_is_mid_segment() -> None:
    idx = sample_indices(1000, 10, "center")
    np.testing.assert_array_equal(idx, np.arange(10) * 100 + 50)


@pytest.mark.parametrize("n, t, policy, message", [
    (0, 35, "uniform", "n_frames must be >= 1"),
    (-3, 35, "uniform", "n_frames must be >= 1"),
    (10, 0, "uniform", "num_frames must be >= 1"),
    (10, 5, "random", "unknown sampling policy 'random'"),
    (10.5, 5, "uniform", "n_frames must be an integer"),
    (True, 5, "uniform", "n_frames must be an integer"),
])
def test_errors(n, t, policy, message) -> None:
    with pytest.raises(ValueError, match=message):
        sample_indices(n, t, policy)


def test_numpy_integer_inputs() -> None:
    np.testing.assert_array_equal(sample_indices(np.int64(70), np.int32(35)), np.arange(0, 70, 2))
