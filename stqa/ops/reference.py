"""Pure-PyTorch reference of the attention-pooling op.

Same signature and semantics as :func:`stqa.ops.attention_pool` (without ``impl``). It is the ground
truth of the tests and the ``impl="reference"`` path of the wrappers and modules, and the eager /
``torch.compile`` baseline of ``benchmarks/bench_ops.py``. It computes in the input dtype, like any
eager PyTorch code would.
"""

from __future__ import annotations

import torch

from stqa.ops._checks import COSINE_EPS, autocast_enabled, autocast_promote, check_attention_pool_args

__all__ = ["attention_pool", "scores"]


def scores(
    keys: torch.Tensor, query: torch.Tensor, weight: torch.Tensor | None = None, score: str = "additive",
    scale: float = 1.0,
) -> torch.Tensor:
    """Unnormalised scores ``[B, R, L]`` for keys ``[B, R, L, K]`` and query ``[B, K]``."""
    q = query[:, None, None, :]
    if score == "additive":
        return torch.tanh(keys + q) @ weight
    if score == "dot":
        return scale * (keys @ query[:, None, :, None]).squeeze(-1)
    if score == "cosine":
        dots = (keys @ query[:, None, :, None]).squeeze(-1)
        key_norm = torch.linalg.vector_norm(keys, dim=-1).clamp_min(COSINE_EPS)
        query_norm = torch.linalg.vector_norm(query, dim=-1).clamp_min(COSINE_EPS)[:, None, None]
        return scale * dots / (key_norm * query_norm)
    raise ValueError(f"unknown score mode {score!r}")


def attention_pool(
    values: torch.Tensor, keys: torch.Tensor, query: torch.Tensor, weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None, score: str = "additive", scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention pooling: ``(pooled [B, R, C], weights [B, R, L])``.

    Rows without any valid position give zeros (and zero gradients), never NaN. Under ``torch.autocast``
    mixed floating dtypes are first promoted, as the fused op's autocast rule does.
    """
    if isinstance(values, torch.Tensor) and autocast_enabled(values):
        check_attention_pool_args(values, keys, query, weight, mask, score, scale, same_dtype=False)
        values, keys, query, weight = autocast_promote(values, keys, query, weight)
    check_attention_pool_args(values, keys, query, weight, mask, score, scale)
    s = scores(keys, query, weight, score, scale)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
        # A fully masked row would be softmax(-inf, ..., -inf) = NaN: give it finite scores, then
        # zero its weights below, so that neither the outputs nor the gradients see a NaN.
        s = s.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    w = torch.softmax(s, dim=-1)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
    pooled = (w.unsqueeze(-2) @ values).squeeze(-2)
    return pooled, w
