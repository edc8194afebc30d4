// Raw CUDA kernels of the fused attention-pooling op. No torch includes: nvcc compiles this header
// alone (tests/test_ops_nvcc.py); csrc/cuda/attention_pool_kernel.cu wraps it for the dispatcher.
//
// One thread block per row (b, r) of L positions:
//   forward:  scores (one warp per position, lanes over K, 16-byte loads, __shfl_xor_sync
//             reduction) -> masked softmax in warp 0 (fp32) -> weighted sum over L with the threads
//             spread over C (16-byte loads), so values is read once; with few rows C is also split
//             across blocks (grid.y) to fill the GPU;
//   backward: the same scores + softmax (recomputed, nothing [B,R,L,K]-sized is kept) -> one warp
//             per position computes <grad_pooled, v_l> and writes grad_values_l = p_l grad_pooled in
//             the same sweep -> softmax backward in warp 0 -> the threads spread over K write
//             grad_keys and sum d(query), d(weight) over L into per-row partials [rows, K] (fp32)
//             that the launcher reduces with a deterministic sum (no atomics).
// Arithmetic is fp32 for float, half and bfloat16 inputs (fp64 for double, kept for gradcheck).
// Rows without a valid position give zeros and zero gradients. L is bounded by the row scratch in
// shared memory (max_positions: ~2,890 positions in fp32 within the default 48 KiB, ~13,670 on a GPU
// that lets a block opt in to 227 KiB); the CPU kernel has no such bound.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "attention_pool_params.h"

namespace stqa::cuda {

using ops::acc_t;
using ops::BackwardParams;
using ops::ForwardParams;
using ops::kCosineEps;
using ops::ScoreMode;

constexpr int kWarpSize = 32;
constexpr int kThreads = 256;  // 8 warps per row

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ double from_acc<double>(double x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// VEC elements of T in one aligned load/store: VEC * sizeof(T) == 16 gives 128-bit transactions;
// VEC == 1 is the scalar fallback for unaligned pointers or sizes that are not multiples of VEC.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ void load(const T* __restrict__ p, acc_t<T> (&out)[VEC]) {
  const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int j = 0; j < VEC; ++j) out[j] = to_acc(pk.v[j]);
}

template <typename T, int VEC>
__device__ __forceinline__ void store(T* __restrict__ p, const acc_t<T> (&in)[VEC]) {
  Pack<T, VEC> pk;
#pragma unroll
  for (int j = 0; j < VEC; ++j) pk.v[j] = from_acc<T>(in[j]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = pk;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

template <typename A>
__device__ __forceinline__ A warp_max(A x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) x = max(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// Shared-memory scratch of one row: scores/probabilities, per-position gradients, cosine terms and
// the validity flags, in the accumulation type A. Sized by the launcher: shared_bytes<A>(L).
template <typename A>
struct RowScratch {
  A* p;         // [L] scores, then softmax weights (0 at invalid positions)
  A* g;         // [L] d/d(weight_l), then d/d(score_l)
  A* key_norm;  // [L] cosine only
  A* cosine;    // [L] cosine only
  A* scalars;   // [2]: |query| (cosine), and 1 if the row has a valid position else 0
  unsigned char* valid;  // [L]
};

template <typename A>
__host__ __device__ inline size_t shared_bytes(int64_t L) {
  return sizeof(A) * (4 * static_cast<size_t>(L) + 2) + static_cast<size_t>(L);
}

template <typename A>
__device__ __forceinline__ RowScratch<A> carve(int64_t L) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* smem = reinterpret_cast<A*>(smem_raw);
  RowScratch<A> s;
  s.p = smem;
  s.g = smem + L;
  s.key_norm = smem + 2 * L;
  s.cosine = smem + 3 * L;
  s.scalars = smem + 4 * L;
  s.valid = reinterpret_cast<unsigned char*>(smem + 4 * L + 2);
  return s;
}

// Scores of one row into s.p, softmax into s.p (in place), validity into s.valid; returns after a
// __syncthreads() with everything visible to the block. Warp w handles positions w, w + 8, ...
template <typename T, int VEC, typename A = acc_t<T>>
__device__ void row_softmax(const T* __restrict__ keys, const T* __restrict__ query, const T* __restrict__ weight,
                            const bool* __restrict__ mask, int64_t L, int64_t K, ScoreMode score, A scale,
                            RowScratch<A> s) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  const A eps = static_cast<A>(kCosineEps);

  if (score == ScoreMode::kCosine && warp == 0) {
    A q2 = 0;
    for (int64_t k = lane * VEC; k < K; k += kWarpSize * VEC) {
      A q[VEC];
      load<T, VEC>(query + k, q);
#pragma unroll
      for (int j = 0; j < VEC; ++j) q2 += q[j] * q[j];
    }
    q2 = warp_sum(q2);
    if (lane == 0) s.scalars[0] = sqrt(q2);
  } else if (score != ScoreMode::kCosine && threadIdx.x == 0) {
    s.scalars[0] = 0;
  }
  __syncthreads();
  const A q_norm = s.scalars[0];

  for (int64_t l = warp; l < L; l += warps) {
    const bool valid = mask == nullptr || mask[l];
    A acc = 0, norm2 = 0;
    if (valid) {
      const T* __restrict__ key = keys + l * K;
      for (int64_t k = lane * VEC; k < K; k += kWarpSize * VEC) {
        A kv[VEC], q[VEC];
        load<T, VEC>(key + k, kv);
        load<T, VEC>(query + k, q);
        if (score == ScoreMode::kAdditive) {
          A w[VEC];
          load<T, VEC>(weight + k, w);
#pragma unroll
          for (int j = 0; j < VEC; ++j) acc += w[j] * tanh(kv[j] + q[j]);
        } else {
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            acc += kv[j] * q[j];
            norm2 += kv[j] * kv[j];
          }
        }
      }
    }
    // every lane of the warp takes part in the shuffles (the branch above is warp-uniform anyway)
    acc = warp_sum(acc);
    if (score == ScoreMode::kCosine) norm2 = warp_sum(norm2);
    if (lane == 0) {
      s.valid[l] = valid ? 1 : 0;
      if (score == ScoreMode::kAdditive) {
        s.p[l] = acc;
      } else if (score == ScoreMode::kDot) {
        s.p[l] = scale * acc;
      } else {
        const A kn = sqrt(norm2);
        const A c = acc / (max(kn, eps) * max(q_norm, eps));
        s.key_norm[l] = kn;
        s.cosine[l] = c;
        s.p[l] = scale * c;
      }
    }
  }
  __syncthreads();

  if (warp == 0) {
    A m = -INFINITY;
    int any = 0;
    for (int64_t l = lane; l < L; l += kWarpSize) {
      if (s.valid[l]) {
        m = max(m, s.p[l]);
        any = 1;
      }
    }
    m = warp_max(m);
    any = __any_sync(0xffffffffu, any);
    A sum = 0;
    for (int64_t l = lane; l < L; l += kWarpSize) {
      const A e = s.valid[l] ? exp(s.p[l] - m) : A(0);
      s.p[l] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    const A inv = any ? A(1) / sum : A(0);
    for (int64_t l = lane; l < L; l += kWarpSize) s.p[l] *= inv;
    if (lane == 0) s.scalars[1] = any ? A(1) : A(0);
  }
  __syncthreads();
}

// Grid (rows, column chunks): blockIdx.y takes columns [y * col_chunk, (y + 1) * col_chunk) of C. With
// few rows (one video: 35) the launcher splits C so that the GPU has enough blocks; every chunk
// recomputes the row's scores (L x K, small next to L x C) and chunk 0 writes the weights.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) attention_pool_forward_kernel(ForwardParams<T> prm, int64_t col_chunk) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x;
  if (row >= prm.rows) return;
  const int64_t L = prm.L, C = prm.C, K = prm.K;
  const int64_t b = row / prm.R;
  const RowScratch<A> s = carve<A>(L);
  const bool* mask = prm.mask != nullptr ? prm.mask + row * L : nullptr;
  row_softmax<T, VEC>(prm.keys + row * L * K, prm.query + b * K, prm.weight, mask, L, K, prm.score,
                      static_cast<A>(prm.scale), s);

  if (blockIdx.y == 0) {
    for (int64_t l = threadIdx.x; l < L; l += blockDim.x) prm.weights[row * L + l] = from_acc<T>(s.p[l]);
  }

  const T* __restrict__ values = prm.values + row * L * C;
  T* __restrict__ out = prm.pooled + row * C;
  const int64_t c_end = min(C, (static_cast<int64_t>(blockIdx.y) + 1) * col_chunk);
  for (int64_t c = blockIdx.y * col_chunk + threadIdx.x * VEC; c < c_end; c += static_cast<int64_t>(blockDim.x) * VEC) {
    A acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] = 0;
    for (int64_t l = 0; l < L; ++l) {
      if (!s.valid[l]) continue;  // padding is never read
      const A pl = s.p[l];
      A v[VEC];
      load<T, VEC>(values + l * C + c, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) acc[j] += pl * v[j];
    }
    store<T, VEC>(out + c, acc);
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) attention_pool_backward_kernel(BackwardParams<T> prm) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x;
  if (row >= prm.rows) return;
  const int64_t L = prm.L, C = prm.C, K = prm.K;
  const int64_t b = row / prm.R;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  const A scale = static_cast<A>(prm.scale);
  const A eps = static_cast<A>(kCosineEps);
  const RowScratch<A> s = carve<A>(L);
  const T* __restrict__ keys = prm.keys + row * L * K;
  const T* __restrict__ query = prm.query + b * K;
  const bool* mask = prm.mask != nullptr ? prm.mask + row * L : nullptr;
  row_softmax<T, VEC>(keys, query, prm.weight, mask, L, K, prm.score, scale, s);
  const bool need_score_grad =
      prm.grad_keys != nullptr || prm.query_partial != nullptr || prm.weight_partial != nullptr;

  // g_l = <grad_pooled, v_l> + grad_weights_l, grad_values_l = p_l grad_pooled: one sweep over values.
  const T* __restrict__ gp = prm.grad_pooled + row * C;
  const T* __restrict__ values = prm.values + row * L * C;
  for (int64_t l = warp; l < L; l += warps) {
    const bool valid = s.valid[l] != 0;
    const A pl = valid ? s.p[l] : A(0);
    T* __restrict__ dv = prm.grad_values != nullptr ? prm.grad_values + (row * L + l) * C : nullptr;
    A dot = 0;
    for (int64_t c = lane * VEC; c < C; c += kWarpSize * VEC) {
      A g[VEC];
      load<T, VEC>(gp + c, g);
      if (valid && need_score_grad) {
        A v[VEC];
        load<T, VEC>(values + l * C + c, v);
#pragma unroll
        for (int j = 0; j < VEC; ++j) dot += g[j] * v[j];
      }
      if (dv != nullptr) {
        A d[VEC];
#pragma unroll
        for (int j = 0; j < VEC; ++j) d[j] = pl * g[j];
        store<T, VEC>(dv + c, d);
      }
    }
    dot = warp_sum(dot);
    if (lane == 0) s.g[l] = valid ? dot + to_acc(prm.grad_weights[row * L + l]) : A(0);
  }
  if (!need_score_grad) return;  // uniform across the block
  __syncthreads();

  // Softmax backward: ds_l = p_l (g_l - sum_j p_j g_j); 0 at invalid positions (p_l = 0).
  if (warp == 0) {
    A mean = 0;
    for (int64_t l = lane; l < L; l += kWarpSize) mean += s.p[l] * s.g[l];
    mean = warp_sum(mean);
    for (int64_t l = lane; l < L; l += kWarpSize) s.g[l] = s.p[l] * (s.g[l] - mean);
  }
  __syncthreads();

  // Threads over K (coalesced across the block), positions in sequence: grad_keys and the per-row
  // partial sums of d(query) and d(weight).
  const A q_norm = s.scalars[0];
  A cos_coef = 0;  // cosine: sum_l ds_l scale cos_l, the |query| part of d(query)
  if (prm.score == ScoreMode::kCosine) {
    for (int64_t l = 0; l < L; ++l) cos_coef += s.g[l] * scale * s.cosine[l];
  }
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const A qk = to_acc(query[k]);
    const A wk = prm.weight != nullptr ? to_acc(prm.weight[k]) : A(0);
    A dq = 0, dw = 0;
    for (int64_t l = 0; l < L; ++l) {
      T* dk_out = prm.grad_keys != nullptr ? prm.grad_keys + (row * L + l) * K + k : nullptr;
      if (!s.valid[l]) {
        if (dk_out != nullptr) *dk_out = from_acc<T>(A(0));
        continue;
      }
      const A ds = s.g[l];
      const A key = to_acc(keys[l * K + k]);
      A dk;
      if (prm.score == ScoreMode::kAdditive) {
        const A t = tanh(key + qk);
        dk = ds * wk * (A(1) - t * t);
        dq += dk;
        dw += ds * t;
      } else if (prm.score == ScoreMode::kDot) {
        dk = ds * scale * qk;
        dq += ds * scale * key;
      } else {
        // cos = <k, q> / (max(|k|, eps) max(|q|, eps)); the norm terms only where the norm is not clamped.
        const A kn = s.key_norm[l];
        const A inv = A(1) / (max(kn, eps) * max(q_norm, eps));
        const A f = ds * scale;
        const A fk = kn > eps ? f * s.cosine[l] / (kn * kn) : A(0);
        dk = f * inv * qk - fk * key;
        dq += f * inv * key;
      }
      if (dk_out != nullptr) *dk_out = from_acc<T>(dk);
    }
    if (prm.score == ScoreMode::kCosine && q_norm > eps) dq -= cos_coef * qk / (q_norm * q_norm);
    if (prm.query_partial != nullptr) prm.query_partial[row * K + k] = dq;
    if (prm.weight_partial != nullptr) prm.weight_partial[row * K + k] = dw;
  }
}

// Elements per 16-byte access.
template <typename T>
constexpr int kVec = 16 / sizeof(T);

// 16-byte accesses need every row start 16-byte aligned: base pointers aligned and C, K multiples of VEC.
template <typename T>
inline bool can_vectorize(const void* const* ptrs, int n, int64_t C, int64_t K) {
  constexpr int V = kVec<T>;
  if (C % V != 0 || K % V != 0) return false;
  for (int i = 0; i < n; ++i) {
    if (ptrs[i] != nullptr && reinterpret_cast<uintptr_t>(ptrs[i]) % 16 != 0) return false;
  }
  return true;
}

// What a launch needs to know about the device; the launcher (attention_pool_kernel.cu) queries it, so
// that this header makes no CUDA runtime call besides the launches themselves and their attributes.
struct DeviceLimits {
  int sms;                 // multiprocessors
  int64_t smem_per_block;  // dynamic shared memory a block may opt in to (MaxSharedMemoryPerBlockOptin)
  int64_t max_grid_x;      // rows: one block each
  int64_t max_grid_y;      // forward column chunks
};

// Dynamic shared memory a kernel may use without opting in (cudaFuncAttributeMaxDynamicSharedMemorySize).
constexpr int64_t kDefaultSharedBytes = 48 * 1024;

// The largest L whose row scratch fits in smem_bytes: shared_bytes<A>(L) <= smem_bytes.
template <typename A>
inline int64_t max_positions(int64_t smem_bytes) {
  const auto fixed = static_cast<int64_t>(2 * sizeof(A));
  const auto per_position = static_cast<int64_t>(4 * sizeof(A) + 1);
  return smem_bytes < fixed ? 0 : (smem_bytes - fixed) / per_position;
}

enum class LaunchCheck : int { kOk = 0, kTooManyRows = 1, kTooManyPositions = 2 };

// Whether a call of `rows` rows of L positions fits the device (one block per row, the row's scratch
// in shared memory). The launcher turns a failure into an error that names the limit.
template <typename A>
inline LaunchCheck check_launch(int64_t rows, int64_t L, const DeviceLimits& limits) {
  if (rows > limits.max_grid_x) return LaunchCheck::kTooManyRows;
  if (L > max_positions<A>(limits.smem_per_block)) return LaunchCheck::kTooManyPositions;
  return LaunchCheck::kOk;
}

// Column chunks per row for the forward grid: about two blocks per SM when rows are few, chunks a
// multiple of one block's sweep (kThreads * VEC columns) so that 16-byte accesses stay aligned.
inline int64_t forward_col_chunk(int64_t rows, int64_t C, int vec, int sms) {
  const int64_t sweep = static_cast<int64_t>(kThreads) * vec;
  const int64_t sweeps = (C + sweep - 1) / sweep;
  const int64_t wanted = (2 * static_cast<int64_t>(sms > 0 ? sms : 1) + rows - 1) / rows;
  const int64_t chunks = wanted < 1 ? 1 : (wanted > sweeps ? sweeps : wanted);
  const int64_t sweeps_per_chunk = (sweeps + chunks - 1) / chunks;
  return sweeps_per_chunk * sweep;
}

// Above 48 KiB of dynamic shared memory a kernel must opt in (per kernel, per device).
template <typename Kernel>
inline cudaError_t allow_shared_bytes(Kernel* kernel, size_t smem) {
  if (static_cast<int64_t>(smem) <= kDefaultSharedBytes) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
}

// The launches return the launch's error (cudaGetLastError, which also clears it): the caller must
// check it, hence [[nodiscard]]. A call that does not fit check_launch is refused with
// cudaErrorInvalidConfiguration before anything runs (the launcher reports it more clearly first).
template <typename T>
[[nodiscard]] cudaError_t launch_forward(const ForwardParams<T>& prm, const DeviceLimits& limits, cudaStream_t stream) {
  using A = acc_t<T>;
  if (prm.rows == 0) return cudaSuccess;
  if (check_launch<A>(prm.rows, prm.L, limits) != LaunchCheck::kOk) return cudaErrorInvalidConfiguration;
  const void* ptrs[] = {prm.values, prm.keys, prm.query, prm.weight, prm.pooled};
  const bool vectorize = can_vectorize<T>(ptrs, 5, prm.C, prm.K);
  const int64_t col_chunk = prm.C > 0 ? forward_col_chunk(prm.rows, prm.C, vectorize ? kVec<T> : 1, limits.sms) : 1;
  const int64_t chunks = prm.C > 0 ? (prm.C + col_chunk - 1) / col_chunk : 1;
  if (chunks > limits.max_grid_y) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(prm.rows), static_cast<unsigned>(chunks)), block(kThreads);
  const size_t smem = shared_bytes<A>(prm.L);
  auto* kernel = vectorize ? &attention_pool_forward_kernel<T, kVec<T>> : &attention_pool_forward_kernel<T, 1>;
  if (const cudaError_t err = allow_shared_bytes(kernel, smem); err != cudaSuccess) return err;
  kernel<<<grid, block, smem, stream>>>(prm, col_chunk);
  return cudaGetLastError();
}

template <typename T>
[[nodiscard]] cudaError_t launch_backward(const BackwardParams<T>& prm, const DeviceLimits& limits, cudaStream_t stream) {
  using A = acc_t<T>;
  if (prm.rows == 0) return cudaSuccess;
  if (check_launch<A>(prm.rows, prm.L, limits) != LaunchCheck::kOk) return cudaErrorInvalidConfiguration;
  const void* ptrs[] = {prm.grad_pooled, prm.values, prm.keys, prm.query, prm.weight, prm.grad_values};
  const dim3 grid(static_cast<unsigned>(prm.rows)), block(kThreads);
  const size_t smem = shared_bytes<A>(prm.L);
  auto* kernel = can_vectorize<T>(ptrs, 6, prm.C, prm.K) ? &attention_pool_backward_kernel<T, kVec<T>>
                                                          : &attention_pool_backward_kernel<T, 1>;
  if (const cudaError_t err = allow_shared_bytes(kernel, smem); err != cudaSuccess) return err;
  kernel<<<grid, block, smem, stream>>>(prm);
  return cudaGetLastError();
}

}  // namespace stqa::cuda
