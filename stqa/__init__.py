"""stqa: spatio-temporal question answering over video.

Importing the package is light: the compiled extension (``torch.ops.stqa.*``), the fused ops
(:mod:`stqa.ops`) and their ``torch.nn`` modules (:mod:`stqa.nn`) load on first use, so that torch-free
parts (video decoding and its worker processes, the synthetic benchmark) start without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_SUBMODULES = ("ops", "nn")


def build_info() -> dict:
    """How the compiled extension was built: version, the torch it was built against, compilers, CUDA
    on/off, OpenMP, the CPU kernel ISA in use. Check this after an install to see what you got."""
    from stqa import _C

    return dict(_C.build_info())


def __getattr__(name: str) -> Any:
    if name == "_C":
        import torch  # noqa: F401  (the extension links against torch; it must be loaded first)

        return importlib.import_module("stqa._C")
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"stqa.{name}")
    if name == "__version__":
        # One version, written once: [project] version in pyproject.toml. scikit-build-core puts it in the
        # package metadata and hands it to CMake (SKBUILD_PROJECT_VERSION_FULL), which compiles it into the
        # extension; the server reports this __version__. tests/test_version.py and
        # scripts/check_install.py check they agree.
        return build_info()["version"]
    raise AttributeError(f"module 'stqa' has no attribute {name!r}")
