"""Fused attention-pooling ops (``torch.ops.stqa.attention_pool``) and their pure-PyTorch reference.

Importing this package registers the fake (meta) kernels and the autograd formula of the C++ ops.
"""

from stqa import _C  # noqa: F401  (defines torch.ops.stqa.* before the Python registrations below)
from stqa.ops import _meta, reference  # noqa: F401
from stqa.ops._checks import COSINE_EPS, SCORE_MODES
from stqa.ops.attention_pool import attention_pool, lengths_to_mask, spatial_attention, temporal_attention

__all__ = [
    "COSINE_EPS",
    "SCORE_MODES",
    "attention_pool",
    "lengths_to_mask",
    "reference",
    "spatial_attention",
    "temporal_attention",
]
