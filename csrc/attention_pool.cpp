// Schemas of the fused attention-pooling ops and their dispatcher entry points (torchvision style):
// the kernels live in cpu/ and cuda/, fake kernels and autograd in stqa/ops/_meta.py.
#include "attention_pool.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace stqa::ops {

ScoreMode parse_score_mode(std::string_view score) {
  if (score == "additive") return ScoreMode::kAdditive;
  if (score == "dot") return ScoreMode::kDot;
  if (score == "cosine") return ScoreMode::kCosine;
  TORCH_CHECK_VALUE(false, "score must be one of 'additive', 'dot', 'cosine', got '", score, "'");
}

std::tuple<at::Tensor, at::Tensor> attention_pool(
    const at::Tensor& values,
    const at::Tensor& keys,
    const at::Tensor& query,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask,
    c10::string_view score,
    double scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("stqa::attention_pool", "")
                       .typed<decltype(attention_pool)>();
  return op.call(values, keys, query, weight, mask, score, scale);
}

namespace detail {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_pool_backward(
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
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("stqa::attention_pool_backward", "")
                       .typed<decltype(attention_pool_backward)>();
  return op.call(grad_pooled, grad_weights, values, keys, query, weight, mask, score, scale, output_mask);
}

void check_inputs(
    const at::Tensor& values,
    const at::Tensor& keys,
    const at::Tensor& query,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask,
    ScoreMode mode) {
  TORCH_CHECK_VALUE(values.dim() == 4, "values must be [B, R, L, C], got ", values.sizes());
  TORCH_CHECK_VALUE(keys.dim() == 4, "keys must be [B, R, L, K], got ", keys.sizes());
  TORCH_CHECK_VALUE(query.dim() == 2, "query must be [B, K], got ", query.sizes());
  const auto B = values.size(0), R = values.size(1), L = values.size(2), K = keys.size(3);
  TORCH_CHECK_VALUE(keys.size(0) == B && keys.size(1) == R && keys.size(2) == L,
                    "keys must be [B, R, L, K] like values ", values.sizes(), ", got ", keys.sizes());
  TORCH_CHECK_VALUE(query.size(0) == B && query.size(1) == K, "query must be [B, K] = [", B, ", ", K,
                    "], got ", query.sizes());
  TORCH_CHECK_VALUE(keys.scalar_type() == values.scalar_type() && query.scalar_type() == values.scalar_type(),
                    "dtype mismatch: values ", values.scalar_type(), ", keys ", keys.scalar_type(), ", query ",
                    query.scalar_type());
  TORCH_CHECK_VALUE(keys.device() == values.device() && query.device() == values.device(),
                    "device mismatch: values on ", values.device(), ", keys on ", keys.device(), ", query on ",
                    query.device());
  if (mode == ScoreMode::kAdditive) {
    TORCH_CHECK_VALUE(weight.has_value(), "score='additive' needs weight [K]");
  } else {
    TORCH_CHECK_VALUE(!weight.has_value(), "weight is only used by score='additive'");
  }
  if (weight.has_value()) {
    TORCH_CHECK_VALUE(weight->dim() == 1 && weight->size(0) == K, "weight must be [K] = [", K, "], got ",
                      weight->sizes());
    TORCH_CHECK_VALUE(weight->scalar_type() == values.scalar_type(), "dtype mismatch: values ",
                      values.scalar_type(), ", weight ", weight->scalar_type());
    TORCH_CHECK_VALUE(weight->device() == values.device(), "device mismatch: values on ", values.device(),
                      ", weight on ", weight->device());
  }
  if (mask.has_value()) {
    TORCH_CHECK_VALUE(mask->scalar_type() == at::kBool, "mask must be bool, got ", mask->scalar_type());
    TORCH_CHECK_VALUE(mask->dim() == 3 && mask->size(0) == B && mask->size(1) == R && mask->size(2) == L,
                      "mask must be [B, R, L] = [", B, ", ", R, ", ", L, "], got ", mask->sizes());
    TORCH_CHECK_VALUE(mask->device() == values.device(), "device mismatch: values on ", values.device(),
                      ", mask on ", mask->device());
  }
}

void check_backward_inputs(
    const at::Tensor& grad_pooled,
    const at::Tensor& grad_weights,
    const at::Tensor& values,
    const at::Tensor& keys,
    const at::Tensor& query,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask,
    ScoreMode mode) {
  check_inputs(values, keys, query, weight, mask, mode);
  const int64_t B = values.size(0), R = values.size(1), L = values.size(2), C = values.size(3);
  TORCH_CHECK_VALUE(grad_pooled.sizes() == at::IntArrayRef({B, R, C}), "grad_pooled must be [B, R, C] = [",
                    B, ", ", R, ", ", C, "], got ", grad_pooled.sizes());
  TORCH_CHECK_VALUE(grad_weights.sizes() == at::IntArrayRef({B, R, L}), "grad_weights must be [B, R, L] = [",
                    B, ", ", R, ", ", L, "], got ", grad_weights.sizes());
  TORCH_CHECK_VALUE(grad_pooled.scalar_type() == values.scalar_type() &&
                        grad_weights.scalar_type() == values.scalar_type(),
                    "grad_pooled and grad_weights must have the dtype of values (", values.scalar_type(), ")");
  TORCH_CHECK_VALUE(grad_pooled.device() == values.device() && grad_weights.device() == values.device(),
                    "grad_pooled and grad_weights must be on the device of values");
}

}  // namespace detail

TORCH_LIBRARY(stqa, m) {
  m.def(
      "attention_pool(Tensor values, Tensor keys, Tensor query, Tensor? weight, Tensor? mask, "
      "str score, float scale) -> (Tensor pooled, Tensor weights)");
  m.def(
      "attention_pool_backward(Tensor grad_pooled, Tensor grad_weights, Tensor values, Tensor keys, "
      "Tensor query, Tensor? weight, Tensor? mask, str score, float scale, bool[4] output_mask) "
      "-> (Tensor grad_values, Tensor grad_keys, Tensor grad_query, Tensor grad_weight)");
}

}  // namespace stqa::ops
