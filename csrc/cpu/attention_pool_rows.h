// CPU row kernels of the fused attention-pooling op, free of torch includes.
//
// This header is compiled once per instruction set (cpu/isa/attention_pool_rows.cc with -mavx512*,
// -mavx2 or the baseline ISA) and the best variant is picked at run time (attention_pool_kernel.cpp),
// the way ATen builds its own CPU kernels. The inner loops run over contiguous K or C and are
// written as plain `#pragma omp simd` loops that gcc -O3 vectorises for the target ISA.
//
// Work unit: one row (b, r) = L positions. Per row the forward pass reads keys once (scores),
// does the softmax on L scalars, and reads values once (weighted sum). The backward pass recomputes
// the scores (additive: keeps tanh(keys + query) of the row in a per-thread buffer), reads values
// once while writing grad_values, and writes grad_keys once. Reductions over rows (grad_query,
// grad_weight) go to per-row partial sums that the caller adds up: no races, and results that do
// not depend on the number of threads.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "attention_pool_params.h"

#define STQA_INLINE inline __attribute__((always_inline))

namespace stqa::cpu {

// Layout-compatible with c10::BFloat16 (a uint16_t holding the upper half of a float).
struct bf16 {
  uint16_t bits;
};

using ops::acc_t;
using ops::BackwardParams;
using ops::ForwardParams;
using ops::kCosineEps;
using ops::ScoreMode;

// Everything below is compiled per ISA: it lives in a per-ISA namespace so that the variants
// never merge at link time (one definition per ISA, no ODR clash).
#if defined(STQA_ISA_NS)
namespace STQA_ISA_NS {

STQA_INLINE float to_acc(float x) { return x; }
STQA_INLINE double to_acc(double x) { return x; }
STQA_INLINE float to_acc(bf16 x) { return std::bit_cast<float>(static_cast<uint32_t>(x.bits) << 16); }

template <typename T>
STQA_INLINE T from_acc(acc_t<T> x);
template <>
STQA_INLINE float from_acc<float>(float x) {
  return x;
}
template <>
STQA_INLINE double from_acc<double>(double x) {
  return x;
}
template <>
STQA_INLINE bf16 from_acc<bf16>(float x) {
  // Round to nearest even, NaN stays a (quiet) NaN: the same rule as c10::BFloat16.
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t rounded = (u + (((u >> 16) & 1u) + 0x7FFFu)) >> 16;
  return bf16{static_cast<uint16_t>(x != x ? 0x7FC0u : rounded)};
}

// exp(y) for 0 <= y <= 20: Cody-Waite range reduction to |r| <= ln2/2 and a degree-7 Taylor
// polynomial (truncation error < 1e-8 relative, below float rounding). Branch-free, vectorisable.
STQA_INLINE float exp_small_nonneg(float y) {
  const int n = static_cast<int>(y * 1.44269504088896341f + 0.5f);
  const float nf = static_cast<float>(n);
  const float r = (y - nf * 0.693359375f) + nf * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>(static_cast<uint32_t>(n + 127) << 23);
}

// tanh for float, vectorisable (std::tanh is a scalar libm call): sign(x)·(1 - 2/(exp(2|x|) + 1)) with
// |x| clamped at 9 (tanh(9) rounds to 1 in float). Absolute error <= 1.2e-7 everywhere (relative
// <= 2e-7 for |x| > 0.5; near 0 the relative error grows, as 1 - 2/(e + 1) cancels). The kernels only
// use tanh inside sums (w·tanh, d(weight) = Σ ds·tanh) and as 1 - tanh², where the absolute error is
// what counts: it is at the level of fp32 rounding of those sums. A small-|x| polynomial branch would
// fix the relative error but measured ~1.5-2x slower here, and the scores are tanh-bound on CPU.
// NaN propagates (min(NaN, 9) is NaN).
STQA_INLINE float tanh_fast(float x) {
  const float z = std::min(std::fabs(x), 9.0f);
  return std::copysign(1.0f - 2.0f / (exp_small_nonneg(2.0f * z) + 1.0f), x);
}

STQA_INLINE float tanh_acc(float x) { return tanh_fast(x); }
STQA_INLINE double tanh_acc(double x) { return std::tanh(x); }

namespace detail {

// Per-thread scratch, sized once per call of a row range.
template <typename A>
struct Scratch {
  std::vector<A> query, weight, scores, aux0, aux1, grad, tanh_keys, row_c, row_k0, row_k1;
};

// Loads query[b] (and the weight) in the accumulation type; returns |query| for cosine scores.
template <typename T>
STQA_INLINE acc_t<T> load_query(const T* __restrict q_in, const T* __restrict w_in, acc_t<T>* __restrict q, acc_t<T>* __restrict w,
                         int64_t K) {
  using A = acc_t<T>;
  A norm2 = 0;
#pragma omp simd reduction(+ : norm2)
  for (int64_t k = 0; k < K; ++k) {
    q[k] = to_acc(q_in[k]);
    norm2 += q[k] * q[k];
  }
  if (w_in != nullptr) {
#pragma omp simd
    for (int64_t k = 0; k < K; ++k) w[k] = to_acc(w_in[k]);
  }
  return std::sqrt(norm2);
}

// Scores of one row. Additive scores store tanh(keys + query) in `tanh_keys` when it is not null
// (the backward pass reuses it); cosine scores store the key norms in `key_norm` and the cosines
// (before `scale`) in `cosine`. Invalid positions are skipped.
template <typename T>
void row_scores(const T* __restrict keys, const bool* __restrict mask, const acc_t<T>* __restrict q,
                const acc_t<T>* __restrict w, acc_t<T> q_norm, ScoreMode score, acc_t<T> scale, int64_t L, int64_t K, acc_t<T>* __restrict s,
                acc_t<T>* __restrict tanh_keys, acc_t<T>* __restrict key_norm, acc_t<T>* __restrict cosine) {
  using A = acc_t<T>;
  for (int64_t l = 0; l < L; ++l) {
    if (mask != nullptr && !mask[l]) continue;
    const T* __restrict key = keys + l * K;
    if (score == ScoreMode::kAdditive) {
      A acc = 0;
      if (tanh_keys != nullptr) {
        A* __restrict t = tanh_keys + l * K;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < K; ++k) {
          t[k] = tanh_acc(to_acc(key[k]) + q[k]);
          acc += w[k] * t[k];
        }
      } else {
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < K; ++k) acc += w[k] * tanh_acc(to_acc(key[k]) + q[k]);
      }
      s[l] = acc;
    } else if (score == ScoreMode::kDot) {
      A acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < K; ++k) acc += to_acc(key[k]) * q[k];
      s[l] = scale * acc;
    } else {
      A dot = 0, norm2 = 0;
#pragma omp simd reduction(+ : dot, norm2)
      for (int64_t k = 0; k < K; ++k) {
        const A kv = to_acc(key[k]);
        dot += kv * q[k];
        norm2 += kv * kv;
      }
      const A kn = std::sqrt(norm2);
      const A eps = static_cast<A>(kCosineEps);
      const A c = dot / (std::max(kn, eps) * std::max(q_norm, eps));
      if (key_norm != nullptr) key_norm[l] = kn;
      if (cosine != nullptr) cosine[l] = c;
      s[l] = scale * c;
    }
  }
}

// In-place masked softmax of s[0:L]; invalid positions become 0. Returns false for a row without
// any valid position (then all of s is 0).
template <typename A>
bool masked_softmax(A* s, const bool* mask, int64_t L) {
  A max_s = -std::numeric_limits<A>::infinity();
  bool any = false;
  for (int64_t l = 0; l < L; ++l) {
    if (mask != nullptr && !mask[l]) continue;
    any = true;
    max_s = std::max(max_s, s[l]);
  }
  if (!any) {
    std::fill(s, s + L, A(0));
    return false;
  }
  A sum = 0;
  for (int64_t l = 0; l < L; ++l) {
    if (mask != nullptr && !mask[l]) {
      s[l] = 0;
      continue;
    }
    s[l] = std::exp(s[l] - max_s);
    sum += s[l];
  }
  const A inv = A(1) / sum;
  for (int64_t l = 0; l < L; ++l) s[l] *= inv;
  return true;
}

template <typename T, typename A>
STQA_INLINE void store_row(T* __restrict out, const A* __restrict in, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = from_acc<T>(in[i]);
}

template <typename T>
STQA_INLINE void zero_row(T* out, int64_t n) {
  std::memset(static_cast<void*>(out), 0, sizeof(T) * static_cast<size_t>(n));
}

}  // namespace detail

template <typename T>
void forward_rows(const ForwardParams<T>& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t L = a.L, C = a.C, K = a.K;
  detail::Scratch<A> sc;
  sc.query.resize(K);
  sc.weight.resize(K);
  sc.scores.resize(L);
  sc.row_c.resize(C);
  A* __restrict q = sc.query.data();
  A* __restrict w = sc.weight.data();
  A* __restrict s = sc.scores.data();
  A* __restrict acc = sc.row_c.data();
  const A scale = static_cast<A>(a.scale);
  int64_t loaded_b = -1;
  A q_norm = 0;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / a.R;
    if (b != loaded_b) {
      q_norm = detail::load_query<T>(a.query + b * K, loaded_b < 0 ? a.weight : nullptr, q, w, K);
      loaded_b = b;
    }
    const bool* mask = a.mask != nullptr ? a.mask + row * L : nullptr;
    detail::row_scores<T>(a.keys + row * L * K, mask, q, w, q_norm, a.score, scale, L, K, s, nullptr, nullptr,
                          nullptr);
    const bool any = detail::masked_softmax(s, mask, L);
    detail::store_row(a.weights + row * L, s, L);
    T* __restrict out = a.pooled + row * C;
    if (!any) {
      detail::zero_row(out, C);
      continue;
    }
    // Weighted sum, two positions per sweep over the C accumulators (halves their load/store
    // traffic); masked positions are never read.
    std::fill(acc, acc + C, A(0));
    const T* __restrict values = a.values + row * L * C;
    int64_t pending = -1;
    for (int64_t l = 0; l < L; ++l) {
      if (mask != nullptr && !mask[l]) continue;
      if (pending < 0) {
        pending = l;
        continue;
      }
      const A w0 = s[pending], w1 = s[l];
      const T* __restrict v0 = values + pending * C;
      const T* __restrict v1 = values + l * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) acc[c] += w0 * to_acc(v0[c]) + w1 * to_acc(v1[c]);
      pending = -1;
    }
    if (pending >= 0) {
      const A w0 = s[pending];
      const T* __restrict v0 = values + pending * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) acc[c] += w0 * to_acc(v0[c]);
    }
    detail::store_row(out, acc, C);
  }
}

template <typename T>
void backward_rows(const BackwardParams<T>& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t L = a.L, C = a.C, K = a.K;
  const bool need_score_grad = a.grad_keys != nullptr || a.query_partial != nullptr || a.weight_partial != nullptr;
  detail::Scratch<A> sc;
  sc.query.resize(K);
  sc.weight.resize(K);
  sc.scores.resize(L);
  sc.aux0.resize(L);
  sc.aux1.resize(L);
  sc.grad.resize(L);
  sc.row_c.resize(C);
  sc.row_k0.resize(K);
  sc.row_k1.resize(K);
  if (a.score == ScoreMode::kAdditive && need_score_grad) sc.tanh_keys.resize(L * K);
  A* __restrict q = sc.query.data();
  A* __restrict w = sc.weight.data();
  A* __restrict p = sc.scores.data();     // scores, then softmax weights
  A* __restrict key_norm = sc.aux0.data();
  A* __restrict cosine = sc.aux1.data();
  A* __restrict g = sc.grad.data();       // d(loss)/d(weight_l), then d(loss)/d(score_l)
  A* __restrict gp = sc.row_c.data();
  A* __restrict dq = sc.row_k0.data();
  A* __restrict dw = sc.row_k1.data();
  A* __restrict tk = sc.tanh_keys.empty() ? nullptr : sc.tanh_keys.data();
  const A scale = static_cast<A>(a.scale);
  const A eps = static_cast<A>(kCosineEps);
  int64_t loaded_b = -1;
  A q_norm = 0;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / a.R;
    if (b != loaded_b) {
      q_norm = detail::load_query<T>(a.query + b * K, loaded_b < 0 ? a.weight : nullptr, q, w, K);
      loaded_b = b;
    }
    const bool* mask = a.mask != nullptr ? a.mask + row * L : nullptr;
    const T* __restrict keys = a.keys + row * L * K;
    const T* __restrict values = a.values + row * L * C;
    detail::row_scores<T>(keys, mask, q, w, q_norm, a.score, scale, L, K, p, tk, key_norm, cosine);
    const bool any = detail::masked_softmax(p, mask, L);

    const T* __restrict grad_pooled = a.grad_pooled + row * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) gp[c] = to_acc(grad_pooled[c]);
    const T* __restrict grad_weights = a.grad_weights + row * L;

    // One pass over values: g_l = <grad_pooled, v_l> + grad_weights_l and grad_values_l = p_l·grad_pooled.
    for (int64_t l = 0; l < L; ++l) {
      const bool valid = any && (mask == nullptr || mask[l]);
      T* __restrict dv = a.grad_values != nullptr ? a.grad_values + (row * L + l) * C : nullptr;
      if (!valid) {
        if (dv != nullptr) detail::zero_row(dv, C);
        g[l] = 0;
        continue;
      }
      const A pl = p[l];
      const T* __restrict v = values + l * C;
      A dot = 0;
      if (need_score_grad && dv != nullptr) {
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; ++c) {
          dot += gp[c] * to_acc(v[c]);
          dv[c] = from_acc<T>(pl * gp[c]);
        }
      } else if (need_score_grad) {
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; ++c) dot += gp[c] * to_acc(v[c]);
      } else if (dv != nullptr) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dv[c] = from_acc<T>(pl * gp[c]);
      }
      g[l] = dot + to_acc(grad_weights[l]);
    }
    if (!need_score_grad) continue;

    // Softmax backward: ds_l = p_l (g_l - Σ_j p_j g_j); zero at invalid positions (p_l = 0).
    A mean = 0;
    for (int64_t l = 0; l < L; ++l) mean += p[l] * g[l];
    for (int64_t l = 0; l < L; ++l) g[l] = p[l] * (g[l] - mean);

    std::fill(dq, dq + K, A(0));
    std::fill(dw, dw + K, A(0));
    A cos_coef = 0;  // cosine: Σ_l ds_l·scale·cos_l, the |query| part of d(query)
    for (int64_t l = 0; l < L; ++l) {
      const bool valid = any && (mask == nullptr || mask[l]);
      T* __restrict dk = a.grad_keys != nullptr ? a.grad_keys + (row * L + l) * K : nullptr;
      if (!valid) {
        if (dk != nullptr) detail::zero_row(dk, K);
        continue;
      }
      const A ds = g[l];
      const T* __restrict key = keys + l * K;
      if (a.score == ScoreMode::kAdditive) {
        const A* __restrict t = tk + l * K;
        if (dk != nullptr) {
#pragma omp simd
          for (int64_t k = 0; k < K; ++k) {
            const A d = ds * w[k] * (A(1) - t[k] * t[k]);
            dk[k] = from_acc<T>(d);
            dq[k] += d;
            dw[k] += ds * t[k];
          }
        } else {
#pragma omp simd
          for (int64_t k = 0; k < K; ++k) {
            dq[k] += ds * w[k] * (A(1) - t[k] * t[k]);
            dw[k] += ds * t[k];
          }
        }
      } else if (a.score == ScoreMode::kDot) {
        const A f = ds * scale;
        if (dk != nullptr) {
#pragma omp simd
          for (int64_t k = 0; k < K; ++k) dk[k] = from_acc<T>(f * q[k]);
        }
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) dq[k] += f * to_acc(key[k]);
      } else {
        // cos = <k, q> / (max(|k|, eps) max(|q|, eps)); the norm terms only where the norm is not clamped.
        const A kn = key_norm[l];
        const A inv = A(1) / (std::max(kn, eps) * std::max(q_norm, eps));
        const A f = ds * scale;
        const A fk = kn > eps ? f * cosine[l] / (kn * kn) : A(0);
        if (dk != nullptr) {
#pragma omp simd
          for (int64_t k = 0; k < K; ++k) dk[k] = from_acc<T>(f * inv * q[k] - fk * to_acc(key[k]));
        }
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) dq[k] += f * inv * to_acc(key[k]);
        cos_coef += f * cosine[l];
      }
    }
    if (a.score == ScoreMode::kCosine && q_norm > eps) {
      const A fq = cos_coef / (q_norm * q_norm);
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) dq[k] -= fq * q[k];
    }
    if (a.query_partial != nullptr) std::copy(dq, dq + K, a.query_partial + row * K);
    if (a.weight_partial != nullptr) std::copy(dw, dw + K, a.weight_partial + row * K);
  }
}

}  // namespace STQA_ISA_NS
#endif  // STQA_ISA_NS

// The entry points of one ISA variant (see cpu/isa/attention_pool_rows.cc).
struct KernelTable {
  const char* isa;
  void (*forward_f32)(const ForwardParams<float>&, int64_t, int64_t);
  void (*forward_f64)(const ForwardParams<double>&, int64_t, int64_t);
  void (*forward_bf16)(const ForwardParams<bf16>&, int64_t, int64_t);
  void (*backward_f32)(const BackwardParams<float>&, int64_t, int64_t);
  void (*backward_f64)(const BackwardParams<double>&, int64_t, int64_t);
  void (*backward_bf16)(const BackwardParams<bf16>&, int64_t, int64_t);
};

namespace generic {
KernelTable kernel_table();
}
namespace avx2 {
KernelTable kernel_table();
}
namespace avx512 {
KernelTable kernel_table();
}

}  // namespace stqa::cpu
