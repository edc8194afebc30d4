"""The raw CUDA kernels (csrc/cuda/attention_pool_kernels.cuh) compile alone with nvcc, and their host-side
launch limits behave, without a GPU.

This machine's torch is a CPU build, so the extension itself is built without CUDA; these tests keep the
kernels compiling (every kernel for float, half, bfloat16 and double, both the 16-byte vector and the
scalar variant) for every architecture of the default build list wherever nvcc exists, run the
launch-limit arithmetic (rows per grid, L per shared memory) as a host program, and run the CMake
configure step the way a CUDA torch sees it on a machine without a GPU. tests/test_ops_cuda.py runs the
kernels on a GPU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def find_cuda_home() -> Path | None:
    """The CUDA toolkit: $CUDA_HOME or $CUDA_PATH, else /usr/local/cuda, else nvcc's real location."""
    for candidate in (os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"):
        if candidate and (Path(candidate) / "bin" / "nvcc").is_file():
            return Path(candidate)
    nvcc = shutil.which("nvcc")
    return Path(nvcc).resolve().parent.parent if nvcc else None


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


# --- The CMake configure step as a CUDA torch sees it ------------------------------------------------
#
# A CUDA torch's CMake config (Caffe2/public/cuda.cmake) appends -gencode flags computed from
# TORCH_CUDA_ARCH_LIST; unset and with no GPU visible it used to fall back to a list starting at compute 5.0,
# which nvcc 13 rejects. The test simulates a CUDA torch as far as this machine allows: ``torch.version.cuda``
# reports 13.0 (a sitecustomize module) and a copy of torch's CMake files has the CUDA part of
# Caffe2Config.cmake switched on, as a CUDA wheel ships it. The real nvcc and CUDA toolkit are used.
# Set STQA_TEST_CUDA_BUILD=1 to also compile the CUDA launcher against torch's headers with those flags
# (about two minutes on two cores).


def _cmake() -> str:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    return cmake


def _overlay(src: Path, dst: Path, path: list[str]) -> None:
    """dst mirrors src with symlinks, except along `path`, which becomes real directories."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if path and entry.name == path[0]:
            _overlay(entry, dst / entry.name, path[1:])
        else:
            os.symlink(entry, dst / entry.name)


def simulated_cuda_torch(root: Path) -> dict[str, str]:
    """A torch install tree whose CMake config and Python module say "CUDA 13.0"; returns the environment."""
    real = Path(torch.__file__).parent
    sim = root / "torch"
    sim.mkdir(parents=True)
    os.symlink(real / "lib", sim / "lib")
    shutil.copytree(real / "share" / "cmake", sim / "share" / "cmake")
    config = sim / "share" / "cmake" / "Caffe2" / "Caffe2Config.cmake"
    text = config.read_text()
    # the CUDA block of a CUDA wheel's Caffe2Config.cmake: if(1), CAFFE2_USE_CUDA 1
    cuda_block = "if(0)\n  # The file public/cuda.cmake"
    assert cuda_block in text, "torch's Caffe2Config.cmake changed: update the simulation"
    text = text.replace(cuda_block, "if(1)\n  # The file public/cuda.cmake")
    text = text.replace("set(CAFFE2_USE_CUDA 0)", "set(CAFFE2_USE_CUDA 1)")
    text = text.replace("if( AND NOT CAFFE2_USE_CUDA)", "if(1 AND NOT CAFFE2_USE_CUDA)")
    config.write_text(text)
    # the one generated header a CUDA wheel has and the CPU wheel lacks (needed only to compile)
    _overlay(real / "include", sim / "include", ["c10", "cuda", "impl"])
    (sim / "include" / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text(
        "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n"
    )
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import torch, torch.utils\n"
        "torch.version.cuda = '13.0'\n"
        f"torch.utils.cmake_prefix_path = {str(sim / 'share' / 'cmake')!r}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_CUDA_ARCH_LIST", "CUDAARCHS", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = str(site)
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU visible at configure time, even on a GPU machine
    toolkit = find_cuda_home()
    if toolkit is not None:
        # nvcc from the toolkit itself: torch's FindCUDA locates the toolkit from nvcc's directory, and the
        # nvcc on PATH may be a wrapper script elsewhere
        env["PATH"] = f"{toolkit / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    ninja_dir = Path(sys.executable).parent
    if (ninja_dir / "ninja").exists():
        env["PATH"] = f"{ninja_dir}{os.pathsep}{env['PATH']}"
    return env


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    cmake = _cmake()
    if torch.version.cuda:
        pytest.skip("torch is a CUDA build here: the real build (benchmarks/gpu_run.sh) covers this")
    if find_cuda_home() is None:
        pytest.skip("no CUDA toolkit found: the CUDA configure path needs one")
    if shutil.which("ninja", path=str(Path(sys.executable).parent)) is None and shutil.which("ninja") is None:
        pytest.skip("ninja not found")
    import pybind11

    root = tmp_path_factory.mktemp("cuda-configure")
    env = simulated_cuda_torch(root)
    build = root / "build"
    cmd = [cmake, "-S", str(REPO), "-B", str(build), "-G", "Ninja", "-DSKBUILD_PROJECT_NAME=stqa",
           "-DSKBUILD_PROJECT_VERSION=0.0.0", f"-DPython_EXECUTABLE={sys.executable}",
           f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return build, result.stdout + result.stderr, env


def test_configure_without_gpu_uses_the_default_architectures(configured):
    _, log, _ = configured
    assert "building CUDA kernels: ON" in log
    # what torch's cuda.cmake made of TORCH_CUDA_ARCH_LIST
    added = re.search(r"Added CUDA NVCC flags for: (\S*)", log)
    assert added, log[-3000:]
    flags = added.group(1).split(";")
    codes = {flags[i + 1] for i in range(0, len(flags) - 1, 2) if flags[i] == "-gencode"}
    want = set()
    for arch in default_architectures():
        number = arch.removesuffix("-real")
        want.add(f"arch=compute_{number},code=sm_{number}")
        if not arch.endswith("-real"):
            want.add(f"arch=compute_{number},code=compute_{number}")
    assert codes == want
    assert "compute_5" not in log and "Autodetected CUDA architecture" not in log
    # the list travels as TORCH_CUDA_ARCH_LIST only: torch has nothing to warn about
    assert "not compatible with `CMAKE_CUDA_ARCHITECTURES`" not in log


def test_configure_links_the_shared_cuda_runtime_and_compiles_cuda_as_cxx20(configured):
    build, _, _ = configured
    ninja = (build / "build.ninja").read_text()
    assert "cudart_static" not in ninja
    assert re.search(r"(-lcudart\b|libcudart\.so)", ninja)
    assert any(line.startswith("build ") and "attention_pool_kernel.cu" in line for line in ninja.splitlines())
    assert "-std=c++20" in ninja
    # CMake adds no architecture flags of its own next to torch's
    assert "--generate-code" not in ninja


@pytest.mark.skipif(os.environ.get("STQA_TEST_CUDA_BUILD") != "1", reason="set STQA_TEST_CUDA_BUILD=1 (~2 min)")
def test_cuda_launcher_compiles_with_torchs_flags(configured):
    build, _, env = configured
    target = "CMakeFiles/_C.dir/csrc/cuda/attention_pool_kernel.cu.o"
    result = subprocess.run(["ninja", "-C", str(build), target], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:]


def _arch_list(archs: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "arch.cmake"
    script.write_text(
        f'include("{ARCH_CMAKE.as_posix()}")\n'
        f'stqa_torch_cuda_arch_list(out "{archs}")\n'
        'message(STATUS "RESULT=${out}")\n'
    )
    return subprocess.run([_cmake(), "-P", str(script)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("archs,want", [
    ("80-real;86-real;89-real;90", "8.0;8.6;8.9;9.0+PTX"),
    ("90", "9.0+PTX"),
    ("90a-real", "9.0a"),
    ("100-real;120", "10.0;12.0+PTX"),
])
def test_cmake_architectures_become_torch_arch_list(archs, want, tmp_path):
    result = _arch_list(archs, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"RESULT={want}" in result.stdout


@pytest.mark.parametrize("archs", ["native", "all-major", "90-virtual", "sm_90"])
def test_cmake_architectures_that_torch_cannot_take_are_refused(archs, tmp_path):
    result = _arch_list(archs, tmp_path)
    assert result.returncode != 0
    assert f"CUDA architecture '{archs.split(';')[0]}' is not supported" in result.stderr
