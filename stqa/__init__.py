"""stqa: spatio-temporal question answering over video.

Importing the package loads the compiled extension (``torch.ops.stqa.*``) and exposes the fused
attention ops (:mod:`stqa.ops`) and their ``torch.nn`` modules (:mod:`stqa.nn`).
"""

from __future__ import annotations

import torch  # noqa: F401  (the extension links against torch; it must be loaded first)

from stqa import _C, nn, ops  # noqa: E402,F401  (registers the op's fake kernels and autograd)

# One version, written once: [project] version in pyproject.toml. scikit-build-core puts it in the package
# metadata and hands it to CMake (SKBUILD_PROJECT_VERSION_FULL), which compiles it into the extension; the
# server reports this __version__. tests/test_version.py and scripts/check_install.py check they agree.
__version__: str = _C.build_info()["version"]


def build_info() -> dict:
    """How the compiled extension was built: version, the torch it was built against, compilers, CUDA
    on/off, OpenMP, the CPU kernel ISA in use. Check this after an install to see what you got."""
    return dict(_C.build_info())
