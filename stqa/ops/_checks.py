"""Argument validation shared by the fused op and the reference implementation.

Every check names the offending argument, so that bad input fails in Python with a clear
``ValueError``/``TypeError`` before it reaches a kernel.
"""

from __future__ import annotations

import math

import torch

SCORE_MODES: tuple[str, ...] = ("additive", "dot", "cosine")
IMPLS: tuple[str, ...] = ("fused", "reference")
#: Norms below this are clamped in cosine scores (as in ``torch.nn.functional.cosine_similarity``).
COSINE_EPS: float = 1e-8

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return impl


def autocast_enabled(t: torch.Tensor) -> bool:
    """Whether ``torch.autocast`` is on for the device type of ``t``."""
    device_type = t.device.type
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def autocast_promote(
    values: torch.Tensor, keys: torch.Tensor, query: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The op's autocast rule (csrc/autocast/attention_pool_kernel.cpp) in Python, for the reference:
    floating inputs are cast to the widest floating dtype among them."""
    floats = [t for t in (values, keys, query, weight) if t is not None and t.is_floating_point()]
    if not floats or not values.is_floating_point():
        return values, keys, query, weight
    dtype = floats[0].dtype
    for t in floats[1:]:
        dtype = torch.promote_types(dtype, t.dtype)

    def cast(t):
        return t.to(dtype) if t is not None and t.is_floating_point() else t

    return cast(values), cast(keys), cast(query), cast(weight)


def check_attention_pool_args(
    values: torch.Tensor,
    keys: torch.Tensor,
    query: torch.Tensor,
    weight: torch.Tensor | None,
    mask: torch.Tensor | None,
    score: str,
    scale: float,
    same_dtype: bool = True,
) -> None:
    """Validate the arguments of :func:`stqa.ops.attention_pool` (see there for the shapes).

    ``same_dtype=False`` lets the floating inputs differ in dtype (under autocast, whose rule promotes them).
    """
    for name, t in (("values", values), ("keys", keys), ("query", query)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    for name, t in (("weight", weight), ("mask", mask)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if not isinstance(score, str) or score not in SCORE_MODES:
        raise ValueError(f"score must be one of {SCORE_MODES}, got {score!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    if score == "additive" and scale != 1.0:
        raise ValueError("scale only applies to 'dot' and 'cosine' scores; fold it into weight for 'additive'")

    if values.dim() != 4:
        raise ValueError(f"values must be [B, R, L, C] (4-D), got shape {_shape(values)}")
    if keys.dim() != 4:
        raise ValueError(f"keys must be [B, R, L, K] (4-D), got shape {_shape(keys)}")
    if query.dim() != 2:
        raise ValueError(f"query must be [B, K] (2-D), got shape {_shape(query)}")
    B, R, L, _ = values.shape
    if tuple(keys.shape[:3]) != (B, R, L):
        raise ValueError(f"keys must be [B, R, L, K] = [{B}, {R}, {L}, K] like values, got {_shape(keys)}")
    K = keys.shape[3]
    if tuple(query.shape) != (B, K):
        raise ValueError(f"query must be [B, K] = [{B}, {K}], got {_shape(query)}")

    if values.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"values must be a floating-point tensor, got dtype {values.dtype}")
    floats = [("keys", keys), ("query", query)]
    if weight is not None:
        floats.append(("weight", weight))
    for name, t in floats:
        if not same_dtype and not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if same_dtype and t.dtype != values.dtype:
            raise ValueError(f"dtype mismatch: values is {values.dtype} but {name} is {t.dtype}")

    if score == "additive":
        if weight is None:
            raise ValueError("score='additive' needs weight [K]")
        if tuple(weight.shape) != (K,):
            raise ValueError(f"weight must be [K] = [{K}], got {_shape(weight)}")
    elif weight is not None:
        raise ValueError(f"weight is only used by score='additive'; pass weight=None for score={score!r}")

    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True = valid), got dtype {mask.dtype}")
        if tuple(mask.shape) != (B, R, L):
            raise ValueError(f"mask must be [B, R, L] = [{B}, {R}, {L}], got {_shape(mask)}")

    device = values.device
    others = [("keys", keys), ("query", query), ("weight", weight), ("mask", mask)]
    for name, t in others:
        if t is not None and t.device != device:
            raise ValueError(f"device mismatch: values is on {device} but {name} is on {t.device}")
