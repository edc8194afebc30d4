// CUDA launchers of stqa::attention_pool and stqa::attention_pool_backward (TORCH_LIBRARY_IMPL CUDA):
// device checks and limits, device guard, current stream, dtype dispatch, launch error checks; the
// shared set-up is attention_pool_launch.h, the kernels attention_pool_kernels.cuh.
#include "attention_pool.h"
#include "attention_pool_launch.h"
#include "cuda/attention_pool_kernels.cuh"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <string_view>

namespace stqa::cuda {
namespace {

// The element type the kernels see for each ATen type (same bits).
template <typename T>
struct DeviceType {
  using type = T;
};
template <>
struct DeviceType<c10::Half> {
  using type = __half;
};
template <>
struct DeviceType<c10::BFloat16> {
  using type = __nv_bfloat16;
};

// The dtypes of the CUDA kernels (double is there for gradcheck, not for speed).
template <typename F>
void dispatch_cuda_types(at::ScalarType dt, F&& body) {
  switch (dt) {
    case at::kFloat: return body.template operator()<float>();
    case at::kDouble: return body.template operator()<double>();
    case at::kHalf: return body.template operator()<c10::Half>();
    case at::kBFloat16: return body.template operator()<c10::BFloat16>();
    default: TORCH_CHECK_VALUE(false, "the CUDA kernel supports float32, float16, bfloat16 and float64, got ", dt);
  }
}

void check_cuda(const at::Tensor& values, std::string_view what) {
  TORCH_CHECK(values.is_cuda(), what, ": expected CUDA tensors, got ", values.device());
  const auto dt = values.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble, what,
                    ": the CUDA kernel supports float32, float16, bfloat16 and float64, got ", dt);
}

// The current device's limits (call under the device guard).
DeviceLimits device_limits() {
  const int device = c10::cuda::current_device();
  int sms = 0, smem = 0, grid_x = 0, grid_y = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&grid_x, cudaDevAttrMaxGridDimX, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&grid_y, cudaDevAttrMaxGridDimY, device));
  return DeviceLimits{sms, smem, grid_x, grid_y};
}

// Refuses, before anything is allocated, a call this device cannot run, naming the limit.
void check_limits(int64_t rows, int64_t L, at::ScalarType dt, const DeviceLimits& limits, std::string_view what) {
  const bool wide = dt == at::kDouble;
  const auto check = wide ? check_launch<double>(rows, L, limits) : check_launch<float>(rows, L, limits);
  TORCH_CHECK_VALUE(check != LaunchCheck::kTooManyRows, what, ": B * R = ", rows,
                    " rows exceed the CUDA kernel's limit of ", limits.max_grid_x,
                    " rows (one thread block per row); split the batch");
  const int64_t max_l = wide ? max_positions<double>(limits.smem_per_block) : max_positions<float>(limits.smem_per_block);
  TORCH_CHECK_VALUE(check != LaunchCheck::kTooManyPositions, what, ": L = ", L,
                    " positions exceed the CUDA kernel's limit of ", max_l, " for ", dt, " on this GPU (",
                    limits.smem_per_block,
                    " bytes of shared memory per block hold one row's scores); the CPU kernel and "
                    "impl='reference' have no such limit");
}

std::tuple<at::Tensor, at::Tensor> attention_pool_cuda(
    const at::Tensor& values,
    const at::Tensor& keys,
    const at::Tensor& query,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask,
    c10::string_view score,
    double scale) {
  constexpr std::string_view what = "stqa::attention_pool";
  ops::detail::ForwardLaunch launch(values, keys, query, weight, mask, score, scale);
  check_cuda(launch.values, what);
  const c10::cuda::CUDAGuard guard(launch.values.device());
  const DeviceLimits limits = device_limits();
  check_limits(launch.rows, launch.L, launch.values.scalar_type(), limits, what);
  launch.allocate();
  if (launch.rows == 0) return launch.outputs();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_cuda_types(launch.values.scalar_type(), [&]<typename scalar_t>() {
    using T = typename DeviceType<scalar_t>::type;
    C10_CUDA_CHECK(launch_forward<T>(launch.params<T, scalar_t>(), limits, stream));
  });
  return launch.outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_pool_backward_cuda(
    const at::Tensor& grad_pooled,
    const at::Tensor& grad_weights,
    const at::Tensor& values,
    const at::Tensor& keys,
    const at::Tensor& query,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask,
    c10::string_view score,
    double scale,
    std::array<bool, 4> output_mask) {
  constexpr std::string_view what = "stqa::attention_pool_backward";
  ops::detail::BackwardLaunch launch(grad_pooled, grad_weights, values, keys, query, weight, mask, score, scale,
                                     output_mask);
  check_cuda(launch.values, what);
  const c10::cuda::CUDAGuard guard(launch.values.device());
  const DeviceLimits limits = device_limits();
  check_limits(launch.rows, launch.L, launch.values.scalar_type(), limits, what);
  launch.allocate();
  if (launch.rows > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    dispatch_cuda_types(launch.values.scalar_type(), [&]<typename scalar_t>() {
      using T = typename DeviceType<scalar_t>::type;
      C10_CUDA_CHECK(launch_backward<T>(launch.params<T, scalar_t>(), limits, stream));
    });
  }
  return launch.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(stqa, CUDA, m) {
  m.impl("attention_pool", &attention_pool_cuda);
  m.impl("attention_pool_backward", &attention_pool_backward_cuda);
}

}  // namespace stqa::cuda
