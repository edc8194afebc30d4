"""Frame geometry shared by the decoder (torch-free) and the tensor transform: resize, then centre crop."""

from __future__ import annotations


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after scaling so the shorter side is ``size`` (torchvision ``Resize(int)`` rounding)."""
    if height <= width:
        return size, max(size, int(size * width / height))
    return max(size, int(size * height / width)), size
