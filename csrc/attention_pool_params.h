// What every implementation of the fused attention-pooling op agrees on: the score modes, the cosine
// epsilon, the accumulation type and the raw-pointer parameters of one call. No torch includes: the
// per-ISA CPU row kernels (cpu/attention_pool_rows.h) and the CUDA kernels
// (cuda/attention_pool_kernels.cuh) are compiled without torch, and nvcc compiles this header alone.
#pragma once

#include <cstdint>

namespace stqa::ops {

// Score modes of the `str score` schema argument (parsed by parse_score_mode in attention_pool.cpp).
enum class ScoreMode : int { kAdditive = 0, kDot = 1, kCosine = 2 };

// Norms below this are clamped in cosine scores (as torch.nn.functional.cosine_similarity does);
// stqa/ops/_checks.py COSINE_EPS is the same number for the reference.
inline constexpr double kCosineEps = 1e-8;

// Accumulation type: fp32 for float, half and bfloat16 (whatever their device representation), fp64
// for double.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

// One forward call on contiguous tensors; T is the element type the kernels see (float, double, or a
// device's 16-bit type). Rows are the B * R rows of L positions; row r of batch item b uses query[b].
template <typename T>
struct ForwardParams {
  const T* values;   // [rows, L, C]
  const T* keys;     // [rows, L, K]
  const T* query;    // [B, K]
  const T* weight;   // [K] (additive) or nullptr
  const bool* mask;  // [rows, L] or nullptr (all valid)
  T* pooled;         // [rows, C]
  T* weights;        // [rows, L]
  int64_t rows, R, L, C, K;
  ScoreMode score;
  double scale;
};

// One backward call. Gradients nobody asked for have a nullptr output. d(query) and d(weight) are
// per-row partial sums in the accumulation type that the launcher reduces afterwards (deterministic,
// no atomics).
template <typename T>
struct BackwardParams {
  const T* grad_pooled;   // [rows, C]
  const T* grad_weights;  // [rows, L]
  const T* values;
  const T* keys;
  const T* query;
  const T* weight;
  const bool* mask;
  T* grad_values;            // [rows, L, C] or nullptr
  T* grad_keys;              // [rows, L, K] or nullptr
  acc_t<T>* query_partial;   // [rows, K] or nullptr
  acc_t<T>* weight_partial;  // [rows, K] or nullptr
  int64_t rows, R, L, C, K;
  ScoreMode score;
  double scale;
};

}  // namespace stqa::ops
