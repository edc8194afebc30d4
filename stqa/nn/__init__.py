"""``torch.nn`` modules built on the fused attention-pooling op."""

from stqa.nn.attention import SpatialAttention, TemporalAttention

__all__ = ["SpatialAttention", "TemporalAttention"]
