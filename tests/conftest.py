"""Shared test set-up. Helpers live in helpers.py (server, data) and op_helpers.py (the fused op); test
modules import those, never each other."""

from __future__ import annotations

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``cuda`` test on a machine with a GPU fails, rather than passing vacuously or falling back, when
    the extension was built without its CUDA kernels (a CPU torch, or no nvcc at build time)."""
    if item.get_closest_marker("cuda") is None:
        return
    import torch  # only for the few cuda-marked tests: most test modules never need torch

    if not torch.cuda.is_available():
        return  # the test's own skipif says why
    import stqa

    if not stqa.build_info()["cuda"]:
        pytest.fail("a GPU is present but stqa._C was built without CUDA kernels "
                    "(CPU torch or no nvcc at build time)")
