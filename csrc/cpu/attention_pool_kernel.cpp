// CPU kernels of stqa::attention_pool and stqa::attention_pool_backward: checks, allocation, dtype
// dispatch, at::parallel_for over rows, and the choice of the ISA variant of the row kernels.
#include "attention_pool.h"
#include "cpu/attention_pool_rows.h"
#include "cpu/capability.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace stqa::cpu {
namespace {

bool supports(const std::string& isa) {
#if defined(STQA_CPU_X86_DISPATCH)
  __builtin_cpu_init();
  if (isa == "avx512") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return isa == "generic";
}

KernelTable table_for(const std::string& isa) {
#if defined(STQA_CPU_X86_DISPATCH)
  if (isa == "avx512") return avx512::kernel_table();
  if (isa == "avx2") return avx2::kernel_table();
#endif
  return generic::kernel_table();
}

// The best ISA this CPU runs, or the one named by STQA_CPU_CAPABILITY (generic | avx2 | avx512),
// which tests use to cover every variant.
KernelTable select_kernels() {
  if (const char* forced = std::getenv("STQA_CPU_CAPABILITY"); forced != nullptr && *forced != '\0') {
    const std::string isa(forced);
    TORCH_CHECK(isa == "generic" || isa == "avx2" || isa == "avx512",
                "STQA_CPU_CAPABILITY must be generic, avx2 or avx512, got '", isa, "'");
    TORCH_CHECK(supports(isa), "STQA_CPU_CAPABILITY=", isa, " is not supported by this CPU/build");
    return table_for(isa);
  }
  for (const char* isa : {"avx512", "avx2"}) {
    if (supports(isa)) return table_for(isa);
  }
  return table_for("generic");
}

const KernelTable& kernels() {
  static const KernelTable table = select_kernels();
  return table;
}

template <typename T>
struct KernelType {
  using type = T;
};
template <>
struct KernelType<c10::BFloat16> {
  using type = bf16;
};
static_assert(sizeof(bf16) == sizeof(c10::BFloat16) && alignof(bf16) == alignof(c10::BFloat16));

template <typename T>
auto* ptr(const at::Tensor& t) {
  using K = typename KernelType<T>::type;
  return reinterpret_cast<const K*>(t.const_data_ptr<T>());
}
template <typename T>
auto* mut_ptr(at::Tensor& t) {
  using K = typename KernelType<T>::type;
  return reinterpret_cast<K*>(t.mutable_data_ptr<T>());
}
template <typename T>
auto* opt_ptr(const std::optional<at::Tensor>& t) {
  using K = typename KernelType<T>::type;
  return t.has_value() ? ptr<T>(*t) : static_cast<const K*>(nullptr);
}

template <typename K>
auto forward_fn() {
  if constexpr (std::is_same_v<K, float>) return kernels().forward_f32;
  else if constexpr (std::is_same_v<K, double>) return kernels().forward_f64;
  else return kernels().forward_bf16;
}
template <typename K>
auto backward_fn() {
  if constexpr (std::is_same_v<K, float>) return kernels().backward_f32;
  else if constexpr (std::is_same_v<K, double>) return kernels().backward_f64;
  else return kernels().backward_bf16;
}

// Rows per task: at least kMinTaskElements elements (~0.5 ms of work) per task, so that small calls
// (temporal attention: 16 x 35 x 1536 elements) stay on the calling thread. A fork/join costs
// microseconds on an idle machine, but on a loaded one the sleeping OpenMP worker waits for a core:
// measured here, a scheduler tick (~4 ms) per call, ten times the work itself.
constexpr int64_t kMinTaskElements = 64 * at::internal::GRAIN_SIZE;
int64_t grain(int64_t L, int64_t C, int64_t K) {
  return std::max<int64_t>(1, kMinTaskElements / std::max<int64_t>(1, L * (C + K)));
}

void check_cpu(const at::Tensor& values, std::string_view what) {
  TORCH_CHECK(values.device().is_cpu(), what, ": expected CPU tensors, got ", values.device());
  const auto dt = values.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16, what,
                    ": the CPU kernel supports float32, float64 and bfloat16, got ", dt);
}

// Large outputs are written once, right after allocation: with 4 KiB pages the first-touch page
// faults cost more than the kernel itself (measured: a 337 MB grad_values took ~250 ms of faults
// vs ~50 ms of writing). Ask for transparent huge pages on the freshly allocated range; purely
// advisory (no effect where THP is off, or on memory that is already backed).
void advise_huge_pages(const at::Tensor& t) {
#if defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (t.nbytes() < 2 * kHuge) return;
  const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + t.nbytes()) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

std::tuple<at::Tensor, at::Tensor> attention_pool_cpu(
    const at::Tensor& values_in,
    const at::Tensor& keys_in,
    const at::Tensor& query_in,
    const std::optional<at::Tensor>& weight_in,
    const std::optional<at::Tensor>& mask_in,
    c10::string_view score,
    double scale) {
  const auto mode = ops::parse_score_mode(score);
  ops::detail::check_inputs(values_in, keys_in, query_in, weight_in, mask_in, mode);
  check_cpu(values_in, "stqa::attention_pool");
  const auto values = values_in.contiguous(), keys = keys_in.contiguous(), query = query_in.contiguous();
  const auto weight = contiguous(weight_in), mask = contiguous(mask_in);
  const int64_t B = values.size(0), R = values.size(1), L = values.size(2), C = values.size(3), K = keys.size(3);
  auto pooled = at::empty({B, R, C}, values.options());
  auto weights = at::empty({B, R, L}, values.options());
  advise_huge_pages(pooled);
  const int64_t rows = B * R;
  if (rows == 0) return {pooled, weights};

  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, values.scalar_type(), "stqa::attention_pool", [&] {
    using K_t = typename KernelType<scalar_t>::type;
    ForwardArgs<K_t> args{ptr<scalar_t>(values), ptr<scalar_t>(keys), ptr<scalar_t>(query),
                          opt_ptr<scalar_t>(weight),
                          mask.has_value() ? mask->const_data_ptr<bool>() : nullptr,
                          mut_ptr<scalar_t>(pooled), mut_ptr<scalar_t>(weights),
                          R, L, C, K, static_cast<int>(mode), scale};
    const auto fn = forward_fn<K_t>();
    at::parallel_for(0, rows, grain(L, C, K), [&](int64_t begin, int64_t end) { fn(args, begin, end); });
  });
  return {pooled, weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_pool_backward_cpu(
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
  check_cpu(values_in, "stqa::attention_pool_backward");
  const int64_t B = values_in.size(0), R = values_in.size(1), L = values_in.size(2), C = values_in.size(3),
                K = keys_in.size(3);
  const auto values = values_in.contiguous(), keys = keys_in.contiguous(), query = query_in.contiguous();
  const auto grad_pooled = grad_pooled_in.contiguous(), grad_weights = grad_weights_in.contiguous();
  const auto weight = contiguous(weight_in), mask = contiguous(mask_in);
  const bool want_weight = output_mask[3] && weight.has_value();

  const auto opts = values.options();
  const auto acc_opts = opts.dtype(values.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  const int64_t rows = B * R;
  auto grad_values = output_mask[0] ? at::empty(values.sizes(), opts) : at::empty({0}, opts);
  auto grad_keys = output_mask[1] ? at::empty(keys.sizes(), opts) : at::empty({0}, opts);
  at::Tensor query_partial = output_mask[2] ? at::empty({rows, K}, acc_opts) : at::Tensor();
  at::Tensor weight_partial = want_weight ? at::empty({rows, K}, acc_opts) : at::Tensor();
  advise_huge_pages(grad_values);
  advise_huge_pages(grad_keys);

  if (rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, values.scalar_type(), "stqa::attention_pool_backward", [&] {
      using K_t = typename KernelType<scalar_t>::type;
      using A = acc_t<K_t>;
      BackwardArgs<K_t> args{ptr<scalar_t>(grad_pooled), ptr<scalar_t>(grad_weights), ptr<scalar_t>(values),
                             ptr<scalar_t>(keys), ptr<scalar_t>(query), opt_ptr<scalar_t>(weight),
                             mask.has_value() ? mask->const_data_ptr<bool>() : nullptr,
                             output_mask[0] ? mut_ptr<scalar_t>(grad_values) : nullptr,
                             output_mask[1] ? mut_ptr<scalar_t>(grad_keys) : nullptr,
                             query_partial.defined() ? query_partial.mutable_data_ptr<A>() : nullptr,
                             weight_partial.defined() ? weight_partial.mutable_data_ptr<A>() : nullptr,
                             R, L, C, K, static_cast<int>(mode), scale};
      const auto fn = backward_fn<K_t>();
      at::parallel_for(0, rows, grain(L, C, K), [&](int64_t begin, int64_t end) { fn(args, begin, end); });
    });
  }
  // Per-row partials -> per-batch-item / global sums (tiny: [rows, K]).
  at::Tensor grad_query = output_mask[2] ? query_partial.view({B, R, K}).sum(1).to(values.scalar_type())
                                         : at::empty({0}, opts);
  at::Tensor grad_weight = want_weight ? weight_partial.sum(0).to(values.scalar_type()) : at::empty({0}, opts);
  return {grad_values, grad_keys, grad_query, grad_weight};
}

}  // namespace

std::string capability() { return kernels().isa; }

TORCH_LIBRARY_IMPL(stqa, CPU, m) {
  m.impl("attention_pool", &attention_pool_cpu);
  m.impl("attention_pool_backward", &attention_pool_backward_cpu);
}

}  // namespace stqa::cpu
