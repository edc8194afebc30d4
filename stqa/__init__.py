"""stqa: spatio-temporal question answering over video.

Importing the package loads the compiled extension (``torch.ops.stqa.*``) and exposes the fused
attention ops (:mod:`stqa.ops`) and their ``torch.nn`` modules (:mod:`stqa.nn`).
"""

from __future__ import annotations

import torch  # noqa: F401  (the extension links against torch; it must be loaded first)

from stqa import _C, nn, ops  # noqa: E402,F401  (registers the op's fake kernels and autograd)

__version__: str = _C.build_info()["version"]


def build_info() -> dict:
    """How the compiled extension was built (version, compilers, CUDA on/off, OpenMP)."""
    return dict(_C.build_info())
