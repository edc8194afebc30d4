// Module entry point: the ops themselves are registered with TORCH_LIBRARY in their own files;
// this only makes `stqa._C` importable and reports how it was built.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cpu/capability.h"

#include <map>
#include <string>

namespace py = pybind11;

namespace {

std::map<std::string, py::object> build_info() {
  std::map<std::string, py::object> info;
  info["version"] = py::str(STQA_VERSION);
  info["torch_version"] = py::str(STQA_TORCH_VERSION);
  info["cxx_compiler"] = py::str(STQA_CXX_COMPILER);
  info["cxx_standard"] = py::int_(__cplusplus);
  try {
    info["cpu_capability"] = py::str(stqa::cpu::capability());
  } catch (const std::exception& e) {  // e.g. STQA_CPU_CAPABILITY names an ISA this CPU lacks
    info["cpu_capability"] = py::str(std::string("unavailable: ") + e.what());
  }
#ifdef _OPENMP
  info["openmp"] = py::bool_(true);
#else
  info["openmp"] = py::bool_(false);
#endif
#ifdef STQA_WITH_CUDA
  info["cuda"] = py::bool_(true);
  info["cuda_compiler"] = py::str(STQA_CUDA_COMPILER);
#else
  info["cuda"] = py::bool_(false);
  info["cuda_compiler"] = py::none();
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "stqa compiled extension: fused attention pooling ops (registered as torch.ops.stqa.*)";
  m.def("build_info", &build_info, "How this extension was built: version, compilers, CUDA on/off, OpenMP, CPU kernel ISA in use.");
}
