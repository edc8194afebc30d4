"""``torch.nn`` modules around the fused attention-pooling op (additive / Bahdanau attention)."""

from __future__ import annotations

import math

import torch
from torch import nn

from stqa.ops._checks import check_impl
from stqa.ops.attention_pool import spatial_attention, temporal_attention

__all__ = ["SpatialAttention", "TemporalAttention"]


class _AdditiveAttention(nn.Module):
    """Owns ``W_v`` (value -> K, bias), ``W_q`` (query -> K, bias) and ``w`` (K): ``s = w·tanh(W_v v + W_q q)``."""

    def __init__(self, value_dim: int, query_dim: int, hidden_dim: int, impl: str) -> None:
        super().__init__()
        for name, dim in (("value/feature dim", value_dim), ("query_dim", query_dim), ("hidden_dim", hidden_dim)):
            if not isinstance(dim, int) or dim <= 0:
                raise ValueError(f"{name} must be a positive int, got {dim!r}")
        self.key_proj = nn.Linear(value_dim, hidden_dim)
        self.query_proj = nn.Linear(query_dim, hidden_dim)
        self.score_weight = nn.Parameter(torch.empty(hidden_dim))
        nn.init.uniform_(self.score_weight, -1.0 / math.sqrt(hidden_dim), 1.0 / math.sqrt(hidden_dim))
        self.impl = impl

    @property
    def impl(self) -> str:
        """``"fused"`` (C++/CUDA op) or ``"reference"`` (pure PyTorch); switchable at any time."""
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        self._impl = check_impl(value)

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}"

    def _harmonise(self, values, keys, query):
        """One dtype for the op: under autocast the projections come out in low precision while the
        features (and the score vector) stay fp32; the pooling then runs in the wider dtype."""
        dtype = torch.promote_types(torch.promote_types(values.dtype, keys.dtype), query.dtype)
        dtype = torch.promote_types(dtype, self.score_weight.dtype)
        return values.to(dtype), keys.to(dtype), query.to(dtype), self.score_weight.to(dtype)

    def _project_query(self, query: torch.Tensor, batch: int) -> torch.Tensor:
        if query.dim() != 2 or query.shape[0] != batch or query.shape[1] != self.query_proj.in_features:
            raise ValueError(
                f"query must be [B, Q] = [{batch}, {self.query_proj.in_features}], got {list(query.shape)}"
            )
        return self.query_proj(query)


class SpatialAttention(_AdditiveAttention):
    """Per-frame attention over the spatial grid (TGIF-QA: 7×7 maps), one query per video."""

    def __init__(self, feature_dim: int, query_dim: int, hidden_dim: int = 512, impl: str = "fused") -> None:
        super().__init__(feature_dim, query_dim, hidden_dim, impl)

    def forward(
        self, features: torch.Tensor, query: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features ``[B, T, 7, 7, C] | [B, T, 49, C]``, query ``[B, Q]``, frame_mask ``[B, T]`` bool.

        Returns ``(attended [B, T, C], weights [B, T, 49])``; frames masked out give zeros.
        """
        if features.dim() not in (4, 5) or features.shape[-1] != self.key_proj.in_features:
            raise ValueError(
                f"features must be [B, T, H, W, {self.key_proj.in_features}] or [B, T, N, "
                f"{self.key_proj.in_features}], got {list(features.shape)}"
            )
        values = features.flatten(2, -2) if features.dim() == 5 else features
        q = self._project_query(query, values.shape[0])
        values, keys, q, weight = self._harmonise(values, self.key_proj(values), q)
        return spatial_attention(values, keys, q, weight, frame_mask, score="additive", impl=self.impl)


class TemporalAttention(_AdditiveAttention):
    """Attention over time steps with a length / validity mask."""

    def __init__(self, memory_dim: int, query_dim: int, hidden_dim: int = 512, impl: str = "fused") -> None:
        super().__init__(memory_dim, query_dim, hidden_dim, impl)

    def forward(
        self, memory: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """memory ``[B, T, D]``, query ``[B, Q]``, mask ``[B, T]`` bool and/or lengths ``[B]``.

        Returns ``(context [B, D], weights [B, T])``. Items without valid steps give zeros.
        """
        if memory.dim() != 3 or memory.shape[-1] != self.key_proj.in_features:
            raise ValueError(f"memory must be [B, T, {self.key_proj.in_features}], got {list(memory.shape)}")
        q = self._project_query(query, memory.shape[0])
        memory, keys, q, weight = self._harmonise(memory, self.key_proj(memory), q)
        return temporal_attention(memory, keys, q, weight, mask, lengths, score="additive", impl=self.impl)
