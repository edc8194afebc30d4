// C++ entry points of the fused attention-pooling op (schema and dispatch in attention_pool.cpp).
#pragma once

#include "attention_pool_params.h"

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <optional>
#include <string_view>
#include <tuple>

namespace stqa::ops {

// Parses "additive" | "dot" | "cosine"; throws c10::Error naming the argument otherwise.
ScoreMode parse_score_mode(std::string_view score);

// (pooled [B,R,C], weights [B,R,L]); see stqa/ops/attention_pool.py for the semantics.
std::tuple<at::Tensor, at::Tensor> attention_pool(
    const at::Tensor& values,
    const at::Tensor& keys,
    const at::Tensor& query,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask,
    c10::string_view score,
    double scale);

namespace detail {

// (d_values, d_keys, d_query, d_weight); entries whose output_mask flag is false are empty tensors.
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
    std::array<bool, 4> output_mask);

// Shape/dtype/device checks shared by the CPU and CUDA kernels (the Python wrapper checks first,
// with friendlier errors; these guard direct torch.ops calls).
void check_inputs(
    const at::Tensor& values,
    const at::Tensor& keys,
    const at::Tensor& query,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask,
    ScoreMode mode);

// check_inputs plus the incoming gradients: grad_pooled [B, R, C] and grad_weights [B, R, L], with the
// dtype and device of values.
void check_backward_inputs(
    const at::Tensor& grad_pooled,
    const at::Tensor& grad_weights,
    const at::Tensor& values,
    const at::Tensor& keys,
    const at::Tensor& query,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask,
    ScoreMode mode);

}  // namespace detail
}  // namespace stqa::ops
