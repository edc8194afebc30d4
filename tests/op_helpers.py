"""Helpers of the attention-pool op tests (test_ops.py on every device, test_ops_cuda.py on a GPU)."""

from __future__ import annotations

import pytest
import torch


def make_inputs(B, R, L, C, K, score, dtype=torch.float32, mask="random", seed=0, device="cpu"):
    """Fresh random inputs (never zeros); mask: None | "random" | "holes" (random + fully masked rows).

    Every row has a valid position except the "holes": at most a third of the rows (none below 3 rows),
    so that a comparison always sees real outputs and gradients in most rows (asserted). The same seed
    gives the same values on every device (drawn on the CPU, then moved).
    """
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(B, R, L, C, generator=g, dtype=torch.float64)
    keys = torch.randn(B, R, L, K, generator=g, dtype=torch.float64)
    query = torch.randn(B, K, generator=g, dtype=torch.float64)
    weight = torch.randn(K, generator=g, dtype=torch.float64) if score == "additive" else None
    m = None
    if mask is not None:
        m = torch.rand(B, R, L, generator=g) > 0.35
        if L > 0:
            m[..., 0] |= torch.rand(B, R, generator=g) > 0.5  # vary where the first valid position is
            # a row the draw left empty gets one valid position, at a random place
            flat = m.view(B * R, L)
            empty = (~flat.any(-1)).nonzero().flatten()
            flat[empty, torch.randint(L, (len(empty),), generator=g)] = True
        if mask == "holes":
            for b, r in [(0, 0), (B - 1, R - 1)][: (B * R) // 3]:
                m[b, r] = False
        if B * R > 0 and L > 0:
            assert 2 * int(m.any(-1).sum()) > B * R, "most rows must have a valid position"
    cast = [t.to(device=device, dtype=dtype) if t is not None else None for t in (values, keys, query, weight)]
    return (*cast, None if m is None else m.to(device))


def needs_cuda() -> list[pytest.MarkDecorator]:
    """The marks of a test (or parameter) that needs a GPU: ``cuda``, and skipped without one.

    conftest.py fails such a test instead when a GPU is present but the extension was built without its
    CUDA kernels (that would silently test nothing)."""
    return [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def cpu_and_cuda() -> tuple:
    """The devices an op test runs on (torchvision's ``cpu_and_cuda()``): "cpu", and "cuda" where there is one."""
    return ("cpu", pytest.param("cuda", marks=needs_cuda()))


def scale_for(score: str) -> float:
    """The scale each score is tested at (additive takes none: 1.0)."""
    return 1.0 if score == "additive" else 0.75


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute error relative to the largest expected magnitude, in float64."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()
