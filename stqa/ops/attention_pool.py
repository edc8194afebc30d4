"""Public attention-pooling API: the fused op and its spatial / temporal wrappers."""

from __future__ import annotations

import torch

from stqa.ops import reference
from stqa.ops._checks import autocast_enabled, check_attention_pool_args, check_impl

__all__ = ["attention_pool", "spatial_attention", "temporal_attention", "lengths_to_mask"]


def attention_pool(
    values: torch.Tensor, keys: torch.Tensor, query: torch.Tensor, weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None, score: str = "additive", scale: float = 1.0, impl: str = "fused",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention pooling over the L axis of ``values``, one query per batch item.

    Args:
        values: ``[B, R, L, C]`` what is pooled (R rows of L positions each).
        keys: ``[B, R, L, K]`` what the query is scored against (already projected).
        query: ``[B, K]``, shared by the R rows of a batch item (broadcast, never copied).
        weight: ``[K]`` scoring vector, required by ``"additive"`` and rejected otherwise.
        mask: ``[B, R, L]`` bool, True = valid. Invalid positions get weight 0.
        score: ``"additive"``: ``s = weight · tanh(keys + query)`` (Bahdanau);
            ``"dot"``: ``s = scale · keys·query`` (Luong; "general" = dot with a projected query);
            ``"cosine"``: ``s = scale · keys·query / (max(|keys|, 1e-8) · max(|query|, 1e-8))``.
        scale: score multiplier for ``"dot"``/``"cosine"`` (must stay 1.0 for ``"additive"``).
        impl: ``"fused"`` (the C++/CUDA kernels, ``torch.ops.stqa.attention_pool``) or
            ``"reference"`` (:func:`stqa.ops.reference.attention_pool`).

    Returns:
        ``(pooled [B, R, C], weights [B, R, L])`` with ``weights = softmax_L(s)`` over the valid
        positions and ``pooled = Σ_L weights · values``. A row without valid positions gives zeros
        in both (and zero gradients). Gradients flow to values, keys, query and weight.

    Under ``torch.autocast`` the floating inputs may differ in dtype: the op's autocast rule casts them
    to the widest of their dtypes (``"reference"`` casts the same way, then runs as eager autocast code).
    """
    check_impl(impl)
    if impl == "reference":
        return reference.attention_pool(values, keys, query, weight, mask, score, scale)
    mixed_ok = isinstance(values, torch.Tensor) and autocast_enabled(values)
    check_attention_pool_args(values, keys, query, weight, mask, score, scale, same_dtype=not mixed_ok)
    return torch.ops.stqa.attention_pool(
        values.contiguous(),
        keys.contiguous(),
        query.contiguous(),
        None if weight is None else weight.contiguous(),
        None if mask is None else mask.contiguous(),
        score,
        float(scale),
    )


def spatial_attention(
    features: torch.Tensor, keys: torch.Tensor, query: torch.Tensor, weight: torch.Tensor | None = None,
    frame_mask: torch.Tensor | None = None, score: str = "additive", scale: float = 1.0, impl: str = "fused",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the spatial grid of every frame, with one query per video.

    Args:
        features: ``[B, T, H, W, C]`` (channel-last maps, e.g. 7×7) or ``[B, T, N, C]``.
        keys: the projected features, ``[B, T, H, W, K]`` or ``[B, T, N, K]`` (same grid).
        query: ``[B, K]``. weight / score / scale / impl: as in :func:`attention_pool`.
        frame_mask: ``[B, T]`` bool, True = real frame; padded frames pool to zeros.

    Returns:
        ``(attended [B, T, C], weights [B, T, N])`` with ``N = H·W``.
    """
    if features.dim() not in (4, 5):
        raise ValueError(f"features must be [B, T, H, W, C] or [B, T, N, C], got shape {list(features.shape)}")
    if keys.dim() != features.dim() or tuple(keys.shape[:-1]) != tuple(features.shape[:-1]):
        raise ValueError(
            f"keys must have the grid of features {list(features.shape[:-1])} + [K], got {list(keys.shape)}"
        )
    B, T = features.shape[:2]
    values = features.flatten(2, -2) if features.dim() == 5 else features
    keys = keys.flatten(2, -2) if keys.dim() == 5 else keys
    mask = None
    if frame_mask is not None:
        if not isinstance(frame_mask, torch.Tensor) or frame_mask.dtype != torch.bool:
            raise ValueError("frame_mask must be a bool tensor [B, T] (True = real frame)")
        if tuple(frame_mask.shape) != (B, T):
            raise ValueError(f"frame_mask must be [B, T] = [{B}, {T}], got {list(frame_mask.shape)}")
        mask = frame_mask[:, :, None].expand(B, T, values.shape[2])
    return attention_pool(values, keys, query, weight, mask, score, scale, impl)


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[B]`` integer lengths -> ``[B, max_len]`` bool mask (True for positions < length)."""
    if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1:
        raise ValueError("lengths must be a 1-D integer tensor [B]")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must have an integer dtype, got {lengths.dtype}")
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > max_len):
        raise ValueError(f"lengths must lie in [0, {max_len}], got min {int(lengths.min())} max {int(lengths.max())}")
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


def temporal_attention(
    memory: torch.Tensor, keys: torch.Tensor, query: torch.Tensor, weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None, lengths: torch.Tensor | None = None, score: str = "additive",
    scale: float = 1.0, impl: str = "fused",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the T time steps of ``memory`` (R = 1 row of L = T positions per item).

    Args:
        memory: ``[B, T, D]``. keys: ``[B, T, K]`` (projected memory). query: ``[B, K]``.
        mask: ``[B, T]`` bool, True = valid step. lengths: ``[B]`` valid steps per item
            (positions ``>= length`` are padding). Given both, a step must be valid in both.
        weight / score / scale / impl: as in :func:`attention_pool`.

    Returns:
        ``(context [B, D], weights [B, T])``.
    """
    if memory.dim() != 3:
        raise ValueError(f"memory must be [B, T, D], got shape {list(memory.shape)}")
    if keys.dim() != 3 or tuple(keys.shape[:2]) != tuple(memory.shape[:2]):
        raise ValueError(f"keys must be [B, T, K] = {list(memory.shape[:2])} + [K], got {list(keys.shape)}")
    B, T = memory.shape[:2]
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError("mask must be a bool tensor [B, T] (True = valid step)")
        if tuple(mask.shape) != (B, T):
            raise ValueError(f"mask must be [B, T] = [{B}, {T}], got {list(mask.shape)}")
    if lengths is not None:
        if lengths.shape != (B,):
            raise ValueError(f"lengths must be [B] = [{B}], got {list(lengths.shape)}")
        by_length = lengths_to_mask(lengths.to(memory.device), T)
        mask = by_length if mask is None else mask & by_length
    context, weights = attention_pool(
        memory[:, None],
        keys[:, None],
        query,
        weight,
        None if mask is None else mask[:, None],
        score,
        scale,
        impl,
    )
    return context[:, 0], weights[:, 0]
