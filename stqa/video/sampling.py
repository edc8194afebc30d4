"""The one frame-sampling rule, shared by feature extraction, training and serving.

ST-VQA (``data_util.pad_video`` in the official TGIF-QA code) keeps every frame of a clip with at
most ``T`` frames and otherwise picks ``floor(linspace(0, n, T, endpoint=False))``: index-uniform,
not time-uniform (GIF frame delays vary, so the two differ; we follow the reference).
"""

from __future__ import annotations

import numpy as np

POLICIES: tuple[str, ...] = ("uniform", "center")


def sample_indices(n_frames: int, num_frames: int, policy: str = "uniform") -> np.ndarray:
    """Which of ``n_frames`` decoded frames to keep for a clip of at most ``num_frames`` steps.

    Returns sorted, distinct int64 indices of length ``min(n_frames, num_frames)``. For
    ``n_frames <= num_frames`` that is every frame; the consumer right-pads and keeps a validity mask.

    Policies for ``n_frames > num_frames`` (split the clip into ``num_frames`` equal segments):
      - ``"uniform"``: the first frame of each segment, ``floor(linspace(0, n, T, endpoint=False))``
        (the official rule, evaluated in float64 exactly as the reference does);
      - ``"center"``: the middle frame of each segment, ``floor((i + 0.5) * n / T)``.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown sampling policy {policy!r}; expected one of {', '.join(POLICIES)}")
    n = _positive_int(n_frames, "n_frames")
    t = _positive_int(num_frames, "num_frames")
    if n <= t:
        return np.arange(n, dtype=np.int64)
    if policy == "uniform":
        # Bit-for-bit the reference expression, float artefacts included: linspace sometimes lands a
        # hair below an integer (n=85, T=35 gives 50 where exact arithmetic gives 51). Features must
        # match the reference sampling, so the float version is kept on purpose.
        return np.linspace(0, n, t, endpoint=False).astype(np.int64)
    steps = np.arange(t, dtype=np.int64)
    return (2 * steps * n + n) // (2 * t)


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)
