"""The raw CUDA kernels (csrc/cuda/attention_pool_kernels.cuh) compile alone with nvcc, and their host-side
launch limits behave, without a GPU.

This machine's torch is a CPU build, so the extension itself is built without CUDA; these tests keep the
kernels compiling (every kernel for float, half, bfloat16 and double, both the 16-byte vector and the
scalar variant) for every architecture of the default build list wherever nvcc exists, and run the
launch-limit arithmetic (rows per grid, L per shared memory) as a host program. tests/test_ops_cuda.py
runs the kernels on a GPU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEADER = REPO / "csrc" / "cuda" / "attention_pool_kernels.cuh"
PARAMS_HEADER = REPO / "csrc" / "attention_pool_params.h"
ARCH_CMAKE = REPO / "cmake" / "StqaCudaArchitectures.cmake"

INSTANTIATE = """
#include "cuda/attention_pool_kernels.cuh"

namespace stqa::cuda {
#define STQA_INSTANTIATE(T)                                                                              \\
  template cudaError_t launch_forward<T>(const ForwardParams<T>&, const DeviceLimits&, cudaStream_t);   \\
  template cudaError_t launch_backward<T>(const BackwardParams<T>&, const DeviceLimits&, cudaStream_t);
STQA_INSTANTIATE(float)
STQA_INSTANTIATE(__half)
STQA_INSTANTIATE(__nv_bfloat16)
STQA_INSTANTIATE(double)
}  // namespace stqa::cuda
"""

KERNELS = ["attention_pool_forward_kernel", "attention_pool_backward_kernel"]
# (dtype, elements per access): the 16-byte vector variant and the scalar fallback of each dtype
VARIANTS = [("float", 4), ("float", 1), ("__half", 8), ("__half", 1), ("__nv_bfloat16", 8), ("__nv_bfloat16", 1),
            ("double", 2), ("double", 1)]
# Itanium mangling of the kernels' first template argument
MANGLED = {"float": "f", "double": "d", "__half": "6__half", "__nv_bfloat16": "13__nv_bfloat16"}


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        path = Path(candidate) / "bin" / "nvcc"
        if candidate and path.is_file():
            return str(path)
    return None


def require_nvcc() -> str:
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found on PATH, $CUDA_HOME/bin or /usr/local/cuda/bin")
    return nvcc


def default_architectures() -> list[str]:
    """STQA_DEFAULT_CUDA_ARCHITECTURES of the CMake build (one definition, read from there)."""
    match = re.search(r'set\(STQA_DEFAULT_CUDA_ARCHITECTURES "([^"]+)"\)', ARCH_CMAKE.read_text())
    assert match, f"STQA_DEFAULT_CUDA_ARCHITECTURES not found in {ARCH_CMAKE}"
    return match.group(1).split(";")


def gencode_flags(archs: list[str]) -> list[str]:
    """nvcc flags for CMake-style architectures: 80-real -> SASS only; 90 -> SASS and PTX."""
    flags = []
    for arch in archs:
        number = arch.removesuffix("-real")
        code = f"sm_{number}" if arch.endswith("-real") else f"[sm_{number},compute_{number}]"
        flags += ["-gencode", f"arch=compute_{number},code={code}"]
    return flags


def compile_instantiation(tmp_path: Path, arch_flags: list[str], extra: list[str]) -> tuple[Path, str]:
    nvcc = require_nvcc()
    source = tmp_path / "instantiate.cu"
    source.write_text(INSTANTIATE)
    obj = tmp_path / "instantiate.o"
    cmd = [nvcc, "-std=c++20", *arch_flags, "-O3", "-Werror=all-warnings", *extra,
           f"-I{REPO / 'csrc'}", "-c", str(source), "-o", str(obj)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    assert obj.stat().st_size > 0
    return obj, result.stdout + result.stderr


def test_cuda_kernels_compile_for_sm90_without_spills(tmp_path):
    # sm_90 is the GPU the kernels are tuned and benchmarked on: no register spills there
    obj, _ = compile_instantiation(tmp_path, ["-arch=sm_90"], ["-Xptxas=-warn-spills"])
    # every kernel variant made it into the object (host-side launch stubs, demangled by nm)
    nm = shutil.which("nm")
    if nm is None:
        return
    symbols = subprocess.run([nm, "-C", str(obj)], capture_output=True, text=True, check=True).stdout
    for kernel in KERNELS:
        for dtype, vec in VARIANTS:
            assert f"{kernel}<{dtype}, {vec}>(" in symbols, f"{kernel}<{dtype}, {vec}> missing"


def test_cuda_kernels_compile_for_every_default_architecture(tmp_path):
    archs = default_architectures()
    assert "90" in archs or "90-real" in archs
    # ptxas -v names every entry function it compiles and the architecture it compiles it for
    _, log = compile_instantiation(tmp_path, gencode_flags(archs), ["--threads", "2", "-Xptxas=-v"])
    compiled = set(re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+a?)'", log))
    for arch in archs:
        sm = "sm_" + arch.removesuffix("-real")
        for kernel in KERNELS:
            for dtype, vec in VARIANTS:
                pattern = re.compile(rf"{kernel}I{MANGLED[dtype]}Li{vec}E")
                assert any(pattern.search(name) and got == sm for name, got in compiled), (kernel, dtype, vec, sm)


LIMITS_PROGRAM = r"""
#include "cuda/attention_pool_kernels.cuh"
#include <cstdio>

using namespace stqa::cuda;

int main() {
  // H100/H200: 132 SMs, 227 KiB opt-in shared memory per block, grid 2^31 - 1 by 65535
  const DeviceLimits h100{132, 232448, 2147483647, 65535};
  const DeviceLimits small{10, 48 * 1024, 2147483647, 65535};
  std::printf("max_positions float 48KiB %lld\n", (long long)max_positions<float>(48 * 1024));
  std::printf("max_positions double 48KiB %lld\n", (long long)max_positions<double>(48 * 1024));
  std::printf("max_positions float h100 %lld\n", (long long)max_positions<float>(h100.smem_per_block));
  std::printf("max_positions double h100 %lld\n", (long long)max_positions<double>(h100.smem_per_block));
  const long long lf = max_positions<float>(h100.smem_per_block);
  std::printf("fits float %d\n", (int)(shared_bytes<float>(lf) <= (size_t)h100.smem_per_block &&
                                        shared_bytes<float>(lf + 1) > (size_t)h100.smem_per_block));
  std::printf("check ok %d\n", (int)check_launch<float>(560, 49, h100));
  std::printf("check old cap %d\n", (int)check_launch<float>(16, 4000, h100));
  std::printf("check rows %d\n", (int)check_launch<float>(2147483648LL, 1, h100));
  std::printf("check positions %d\n", (int)check_launch<float>(1, 4000, small));
  std::printf("check positions double %d\n", (int)check_launch<double>(1, 7100, h100));
  std::printf("chunk 1 row %lld\n", (long long)forward_col_chunk(1, 4160, 4, 132));
  std::printf("chunk many rows %lld\n", (long long)forward_col_chunk(560, 3072, 4, 132));
  std::printf("chunk scalar %lld\n", (long long)forward_col_chunk(35, 3072, 1, 132));
  return 0;
}
"""


def test_launch_limits_on_the_host(tmp_path):
    """The launch arithmetic runs on the CPU: no CUDA call is made, so no GPU is needed."""
    nvcc = require_nvcc()
    source = tmp_path / "limits.cu"
    source.write_text(LIMITS_PROGRAM)
    exe = tmp_path / "limits"
    build = subprocess.run([nvcc, "-std=c++20", "-arch=sm_90", f"-I{REPO / 'csrc'}", str(source), "-o", str(exe)],
                           capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    got = dict(line.rsplit(" ", 1) for line in run.stdout.strip().splitlines())
    # row scratch: 4 accumulators + 1 flag byte per position, 2 accumulators per row
    assert int(got["max_positions float 48KiB"]) == (48 * 1024 - 8) // 17 == 2890
    assert int(got["max_positions double 48KiB"]) == (48 * 1024 - 16) // 33
    assert int(got["max_positions float h100"]) == (232448 - 8) // 17
    assert int(got["max_positions double h100"]) == (232448 - 16) // 33
    assert got["fits float"] == "1"
    assert got["check ok"] == "0"
    assert got["check old cap"] == "0"  # L = 4000 > the old cap of 1024 fits once the block opts in
    assert got["check rows"] == "1"  # B * R above the grid's x limit
    assert got["check positions"] == "2"  # L above what 48 KiB hold
    assert got["check positions double"] == "2"
    # one row, C = 4160: split into chunks of whole 256 x 4 sweeps; many rows: one chunk covers C
    assert int(got["chunk 1 row"]) == 1024
    assert int(got["chunk many rows"]) == 3072
    assert int(got["chunk scalar"]) % 256 == 0


@pytest.mark.parametrize("header", [HEADER, PARAMS_HEADER])
def test_kernel_headers_do_not_include_torch(header):
    text = header.read_text()
    for forbidden in ("torch/", "ATen/", "c10/"):
        assert forbidden not in text, f"{header.name} must stay torch-free (found {forbidden!r})"
