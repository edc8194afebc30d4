// CUDA launchers of stqa::attention_pool and stqa::attention_pool_backward (TORCH_LIBRARY_IMPL CUDA):
// checks, device guard, current stream, dtype dispatch; the kernels are in attention_pool_kernels.cuh.
#include "attention_pool.h"
#include "cuda/attention_pool_kernels.cuh"

#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

namespace stqa::cuda {
namespace {

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

template <typename T>
auto* ptr(const at::Tensor& t) {
  return reinterpret_cast<const typename DeviceType<T>::type*>(t.const_data_ptr<T>());
}
template <typename T>
auto* mut_ptr(at::Tensor& t) {
  return reinterpret_cast<typename DeviceType<T>::type*>(t.mutable_data_ptr<T>());
}
template <typename T>
auto* opt_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? ptr<T>(*t) : static_cast<const typename DeviceType<T>::type*>(nullptr);
}

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

std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

void check_cuda(const at::Tensor& values, int64_t L, std::string_view what) {
  TORCH_CHECK(values.is_cuda(), what, ": expected CUDA tensors, got ", values.device());
  const auto dt = values.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble, what,
                    ": the CUDA kernel supports float32, float16, bfloat16 and float64, got ", dt);
  TORCH_CHECK_VALUE(L <= kMaxPositions, what, ": the CUDA kernel supports L <= ", kMaxPositions, ", got ", L);
}

std::tuple<at::Tensor, at::Tensor> attention_pool_cuda(
    const at::Tensor& values_in,
    const at::Tensor& keys_in,
    const at::Tensor& query_in,
    const std::optional<at::Tensor>& weight_in,
    const std::optional<at::Tensor>& mask_in,
    c10::string_view score,
    double scale) {
  const auto mode = ops::parse_score_mode(score);
  ops::detail::check_inputs(values_in, keys_in, query_in, weight_in, mask_in, mode);
  check_cuda(values_in, values_in.size(2), "stqa::attention_pool");
  const c10::cuda::CUDAGuard guard(values_in.device());
  const auto values = values_in.contiguous(), keys = keys_in.contiguous(), query = query_in.contiguous();
  const auto weight = contiguous(weight_in), mask = contiguous(mask_in);
  const int64_t B = values.size(0), R = values.size(1), L = values.size(2), C = values.size(3), K = keys.size(3);
  auto pooled = at::empty({B, R, C}, values.options());
  auto weights = at::empty({B, R, L}, values.options());
  if (B * R == 0) return {pooled, weights};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_cuda_types(values.scalar_type(), [&]<typename scalar_t>() {
    using T = typename DeviceType<scalar_t>::type;
    ForwardParams<T> prm{ptr<scalar_t>(values), ptr<scalar_t>(keys), ptr<scalar_t>(query), opt_ptr<scalar_t>(weight),
                         mask.has_value() ? mask->const_data_ptr<bool>() : nullptr,
                         mut_ptr<scalar_t>(pooled), mut_ptr<scalar_t>(weights),
                         B * R, R, L, C, K, static_cast<int>(mode), scale};
    launch_forward<T>(prm, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {pooled, weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_pool_backward_cuda(
    const at::Tensor& grad_pooled_in,
    const at::Tensor& grad_weights_in,
    const at::Tensor& values_in,
    const at::Tensor& keys_in,
    const at::Tensor& query_in,
    const std::optional<at::Tensor>& weight_in,
    const std::optional<at::Tensor>& mask_in,
    c10::string_view score,
    double scale,
    std::array<bool, 4> output_mask) {
  const auto mode = ops::parse_score_mode(score);
  ops::detail::check_backward_inputs(grad_pooled_in, grad_weights_in, values_in, keys_in, query_in, weight_in,
                                     mask_in, mode);
  check_cuda(values_in, values_in.size(2), "stqa::attention_pool_backward");
  const int64_t B = values_in.size(0), R = values_in.size(1), L = values_in.size(2), C = values_in.size(3),
                K = keys_in.size(3);
  const c10::cuda::CUDAGuard guard(values_in.device());
  const auto values = values_in.contiguous(), keys = keys_in.contiguous(), query = query_in.contiguous();
  const auto grad_pooled = grad_pooled_in.contiguous(), grad_weights = grad_weights_in.contiguous();
  const auto weight = contiguous(weight_in), mask = contiguous(mask_in);
  const bool want_weight = output_mask[3] && weight.has_value();
  const auto opts = values.options();
  const int64_t rows = B * R;
  auto grad_values = output_mask[0] ? at::empty(values.sizes(), opts) : at::empty({0}, opts);
  auto grad_keys = output_mask[1] ? at::empty(keys.sizes(), opts) : at::empty({0}, opts);
  const auto acc_opts = opts.dtype(values.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  at::Tensor query_partial = output_mask[2] ? at::empty({rows, K}, acc_opts) : at::Tensor();
  at::Tensor weight_partial = want_weight ? at::empty({rows, K}, acc_opts) : at::Tensor();
  if (rows > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    dispatch_cuda_types(values.scalar_type(), [&]<typename scalar_t>() {
      using T = typename DeviceType<scalar_t>::type;
      BackwardParams<T> prm{ptr<scalar_t>(grad_pooled), ptr<scalar_t>(grad_weights), ptr<scalar_t>(values),
                            ptr<scalar_t>(keys), ptr<scalar_t>(query), opt_ptr<scalar_t>(weight),
                            mask.has_value() ? mask->const_data_ptr<bool>() : nullptr,
                            output_mask[0] ? mut_ptr<scalar_t>(grad_values) : nullptr,
                            output_mask[1] ? mut_ptr<scalar_t>(grad_keys) : nullptr,
                            query_partial.defined() ? query_partial.mutable_data_ptr<acc_t<T>>() : nullptr,
                            weight_partial.defined() ? weight_partial.mutable_data_ptr<acc_t<T>>() : nullptr,
                            rows, R, L, C, K, static_cast<int>(mode), scale};
      launch_backward<T>(prm, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  at::Tensor grad_query = output_mask[2] ? query_partial.view({B, R, K}).sum(1).to(values.scalar_type())
                                         : at::empty({0}, opts);
  at::Tensor grad_weight = want_weight ? weight_partial.sum(0).to(values.scalar_type()) : at::empty({0}, opts);
  return {grad_values, grad_keys, grad_query, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(stqa, CUDA, m) {
  m.impl("attention_pool", &attention_pool_cuda);
  m.impl("attention_pool_backward", &attention_pool_backward_cuda);
}

}  // namespace stqa::cuda
