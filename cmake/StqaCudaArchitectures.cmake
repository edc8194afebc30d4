# Which GPU architectures the CUDA kernels are compiled for, and the TORCH_CUDA_ARCH_LIST handed to torch.
#
# find_package(Torch) with a CUDA torch (Caffe2/public/cuda.cmake) ignores CMAKE_CUDA_ARCHITECTURES and
# appends its own -gencode flags computed from TORCH_CUDA_ARCH_LIST. Unset, torch detects the visible GPUs
# and, with none visible (a CI runner, a container build, a login node), falls back to a list that starts
# at compute 5.0, which nvcc 13 rejects. So the project picks the list and passes it on to torch.

# Ampere (80: A100, 86: RTX 30xx / A10), Ada (89: L4, L40, RTX 40xx) and Hopper (90: H100, H200), the last
# also as PTX so that newer GPUs JIT-compile it. nvcc 12.0 to 13.x accept all four.
set(STQA_DEFAULT_CUDA_ARCHITECTURES "80-real;86-real;89-real;90")

# stqa_torch_cuda_arch_list(<out-var> <archs>): CMake architecture names -> torch's: 80-real -> 8.0,
# 90 (code and PTX, as CMake means it) -> 9.0+PTX, 90a-real -> 9.0a, 100-real -> 10.0.
function(stqa_torch_cuda_arch_list out archs)
  set(result "")
  foreach(arch IN LISTS archs)
    if(NOT arch MATCHES "^([0-9]+)([0-9])([af]?)(-real)?$")
      message(FATAL_ERROR
        "stqa: CUDA architecture '${arch}' is not supported: list numbers such as 80-real;90 in "
        "CMAKE_CUDA_ARCHITECTURES (or CUDAARCHS), or set TORCH_CUDA_ARCH_LIST (e.g. '8.0;9.0+PTX') instead")
    endif()
    set(version "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}${CMAKE_MATCH_3}")
    if(CMAKE_MATCH_4)
      list(APPEND result "${version}")
    else()
      list(APPEND result "${version}+PTX")
    endif()
  endforeach()
  if(NOT result)
    message(FATAL_ERROR "stqa: the CUDA architecture list is empty")
  endif()
  set(${out} "${result}" PARENT_SCOPE)
endfunction()

# stqa_select_cuda_architectures(): call before enable_language(CUDA) and find_package(Torch). The list
# comes from, in this order: CMAKE_CUDA_ARCHITECTURES (-D) or the CUDAARCHS environment variable; else
# TORCH_CUDA_ARCH_LIST (-D or environment), used as it is; else STQA_DEFAULT_CUDA_ARCHITECTURES. Sets
# TORCH_CUDA_ARCH_LIST (what torch's flags are made from) and CMAKE_CUDA_ARCHITECTURES (for CMake's own
# compiler checks only: the target itself gets torch's flags) in the caller's scope.
function(stqa_select_cuda_architectures)
  if(DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(archs "${CMAKE_CUDA_ARCHITECTURES}")
    set(source "CMAKE_CUDA_ARCHITECTURES")
  elseif(NOT "$ENV{CUDAARCHS}" STREQUAL "")
    set(archs "$ENV{CUDAARCHS}")
    set(source "CUDAARCHS")
  elseif(NOT "${TORCH_CUDA_ARCH_LIST}" STREQUAL "" OR NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
    if("${TORCH_CUDA_ARCH_LIST}" STREQUAL "")
      set(TORCH_CUDA_ARCH_LIST "$ENV{TORCH_CUDA_ARCH_LIST}")
    endif()
    message(STATUS "stqa: CUDA architectures from TORCH_CUDA_ARCH_LIST: ${TORCH_CUDA_ARCH_LIST}")
    set(TORCH_CUDA_ARCH_LIST "${TORCH_CUDA_ARCH_LIST}" PARENT_SCOPE)
    return()
  else()
    set(archs "${STQA_DEFAULT_CUDA_ARCHITECTURES}")
    set(source "the default")
  endif()
  stqa_torch_cuda_arch_list(torch_list "${archs}")
  if(NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "" AND NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "${torch_list}")
    message(STATUS "stqa: ${source} overrides TORCH_CUDA_ARCH_LIST='$ENV{TORCH_CUDA_ARCH_LIST}' from the environment")
  endif()
  message(STATUS "stqa: CUDA architectures ${archs} (${source}) -> TORCH_CUDA_ARCH_LIST=${torch_list}")
  set(TORCH_CUDA_ARCH_LIST "${torch_list}" PARENT_SCOPE)
  set(CMAKE_CUDA_ARCHITECTURES "${archs}" PARENT_SCOPE)
endfunction()
