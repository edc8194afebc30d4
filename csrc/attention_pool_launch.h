// The launcher set-up that the CPU and CUDA kernels of the op share: argument checks, contiguous
// inputs, output allocation, the raw-pointer parameter structs, and the reduction of the backward's
// per-row partial sums. Each device adds only its own checks (and, on CUDA, the device guard) between
// construction and allocate(), then runs its kernels on params<...>().
#pragma once

#include "attention_pool.h"
#include "attention_pool_params.h"

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace stqa::ops::detail {

// Data pointer of a tensor of scalar_t (the ATen type) as the kernels' element type KT (the same bits,
// e.g. c10::BFloat16 -> the CPU kernels' bf16 or CUDA's __nv_bfloat16).
template <typename KT, typename scalar_t>
const KT* data_as(const at::Tensor& t) {
  static_assert(sizeof(KT) == sizeof(scalar_t));
  return reinterpret_cast<const KT*>(t.const_data_ptr<scalar_t>());
}
template <typename KT, typename scalar_t>
KT* mutable_data_as(at::Tensor& t) {
  static_assert(sizeof(KT) == sizeof(scalar_t));
  return reinterpret_cast<KT*>(t.mutable_data_ptr<scalar_t>());
}
template <typename KT, typename scalar_t>
const KT* data_as(const std::optional<at::Tensor>& t) {
  return t.has_value() ? data_as<KT, scalar_t>(*t) : nullptr;
}

// One forward call: the constructor checks the arguments and records the shapes (nothing allocated);
// allocate() makes the inputs contiguous and allocates the outputs.
struct ForwardLaunch {
  ForwardLaunch(const at::Tensor& values, const at::Tensor& keys, const at::Tensor& query,
                const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& mask,
                c10::string_view score, double scale);
  void allocate();

  template <typename KT, typename scalar_t>
  ForwardParams<KT> params() {
    return ForwardParams<KT>{data_as<KT, scalar_t>(values), data_as<KT, scalar_t>(keys),
                             data_as<KT, scalar_t>(query), data_as<KT, scalar_t>(weight),
                             mask.has_value() ? mask->const_data_ptr<bool>() : nullptr,
                             mutable_data_as<KT, scalar_t>(pooled), mutable_data_as<KT, scalar_t>(weights),
                             rows, R, L, C, K, mode, scale};
  }
  std::tuple<at::Tensor, at::Tensor> outputs() const { return {pooled, weights}; }

  ScoreMode mode;
  double scale;
  int64_t B, R, L, C, K, rows;
  at::Tensor values, keys, query;
  std::optional<at::Tensor> weight, mask;
  at::Tensor pooled, weights;  // [B, R, C], [B, R, L] after allocate()
};

// One backward call, the same way; finish() reduces the per-row partials into d(query) and d(weight)
// and returns the four gradients (empty tensors for those not requested by output_mask).
struct BackwardLaunch {
  BackwardLaunch(const at::Tensor& grad_pooled, const at::Tensor& grad_weights, const at::Tensor& values,
                 const at::Tensor& keys, const at::Tensor& query, const std::optional<at::Tensor>& weight,
                 const std::optional<at::Tensor>& mask, c10::string_view score, double scale,
                 std::array<bool, 4> output_mask);
  void allocate();

  template <typename KT, typename scalar_t>
  BackwardParams<KT> params() {
    using A = acc_t<KT>;
    return BackwardParams<KT>{data_as<KT, scalar_t>(grad_pooled), data_as<KT, scalar_t>(grad_weights),
                              data_as<KT, scalar_t>(values), data_as<KT, scalar_t>(keys),
                              data_as<KT, scalar_t>(query), data_as<KT, scalar_t>(weight),
                              mask.has_value() ? mask->const_data_ptr<bool>() : nullptr,
                              want[0] ? mutable_data_as<KT, scalar_t>(grad_values) : nullptr,
                              want[1] ? mutable_data_as<KT, scalar_t>(grad_keys) : nullptr,
                              want[2] ? query_partial.mutable_data_ptr<A>() : nullptr,
                              want[3] ? weight_partial.mutable_data_ptr<A>() : nullptr,
                              rows, R, L, C, K, mode, scale};
  }
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> finish() const;

  ScoreMode mode;
  double scale;
  std::array<bool, 4> want;  // output_mask, with d(weight) only where there is a weight
  int64_t B, R, L, C, K, rows;
  at::Tensor grad_pooled, grad_weights, values, keys, query;
  std::optional<at::Tensor> weight, mask;
  at::Tensor grad_values, grad_keys, query_partial, weight_partial;  // after allocate()
};

}  // namespace stqa::ops::detail
