// Schemas of the fused attention-pooling ops and their dispatcher entry points (torchvision style):
// the kernels live in cpu/ and cuda/, fake kernels and autograd in stqa/ops/_meta.py.
#include "attention_pool.h"
#include "attention_pool_launch.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
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

namespace {
std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}
}  // namespace

ForwardLaunch::ForwardLaunch(const at::Tensor& values_in, const at::Tensor& keys_in, const at::Tensor& query_in,
                             const std::optional<at::Tensor>& weight_in, const std::optional<at::Tensor>& mask_in,
                             c10::string_view score, double scale_in)
    : mode(parse_score_mode(score)), scale(scale_in) {
  check_inputs(values_in, keys_in, query_in, weight_in, mask_in, mode);
  B = values_in.size(0), R = values_in.size(1), L = values_in.size(2), C = values_in.size(3);
  K = keys_in.size(3);
  rows = B * R;
  values = values_in, keys = keys_in, query = query_in, weight = weight_in, mask = mask_in;
}

void ForwardLaunch::allocate() {
  values = values.contiguous(), keys = keys.contiguous(), query = query.contiguous();
  weight = contiguous(weight), mask = contiguous(mask);
  pooled = at::empty({B, R, C}, values.options());
  weights = at::empty({B, R, L}, values.options());
}

BackwardLaunch::BackwardLaunch(const at::Tensor& grad_pooled_in, const at::Tensor& grad_weights_in,
                               const at::Tensor& values_in, const at::Tensor& keys_in, const at::Tensor& query_in,
                               const std::optional<at::Tensor>& weight_in, const std::optional<at::Tensor>& mask_in,
                               c10::string_view score, double scale_in, std::array<bool, 4> output_mask)
    : mode(parse_score_mode(score)), scale(scale_in), want(output_mask) {
  check_backward_inputs(grad_pooled_in, grad_weights_in, values_in, keys_in, query_in, weight_in, mask_in, mode);
  want[3] = want[3] && weight_in.has_value();
  B = values_in.size(0), R = values_in.size(1), L = values_in.size(2), C = values_in.size(3);
  K = keys_in.size(3);
  rows = B * R;
  grad_pooled = grad_pooled_in, grad_weights = grad_weights_in;
  values = values_in, keys = keys_in, query = query_in, weight = weight_in, mask = mask_in;
}

void BackwardLaunch::allocate() {
  values = values.contiguous(), keys = keys.contiguous(), query = query.contiguous();
  grad_pooled = grad_pooled.contiguous(), grad_weights = grad_weights.contiguous();
  weight = contiguous(weight), mask = contiguous(mask);
  const auto opts = values.options();
  const auto acc_opts = opts.dtype(values.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  grad_values = want[0] ? at::empty(values.sizes(), opts) : at::empty({0}, opts);
  grad_keys = want[1] ? at::empty(keys.sizes(), opts) : at::empty({0}, opts);
  query_partial = want[2] ? at::empty({rows, K}, acc_opts) : at::Tensor();
  weight_partial = want[3] ? at::empty({rows, K}, acc_opts) : at::Tensor();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> BackwardLaunch::finish() const {
  // Per-row partials -> per-batch-item / global sums (tiny: [rows, K]).
  const auto opts = values.options();
  at::Tensor grad_query =
      want[2] ? query_partial.view({B, R, K}).sum(1).to(values.scalar_type()) : at::empty({0}, opts);
  at::Tensor grad_weight = want[3] ? weight_partial.sum(0).to(values.scalar_type()) : at::empty({0}, opts);
  return {grad_values, grad_keys, grad_query, grad_weight};
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
