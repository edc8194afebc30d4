// CPU kernels of stqa::attention_pool and stqa::attention_pool_backward: checks, allocation, dtype
// dispatch, at::parallel_for over rows, and the choice of the ISA variant of the row kernels.
#include "attention_pool.h"
#include "attention_pool_launch.h"
#include "cpu/attention_pool_rows.h"
#include "cpu/capability.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>
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

std::tuple<at::Tensor, at::Tensor> attention_pool_cpu(
    const at::Tensor& values,
    const at::Tensor& keys,
    const at::Tensor& query,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask,
    c10::string_view score,
    double scale) {
  ops::detail::ForwardLaunch launch(values, keys, query, weight, mask, score, scale);
  check_cpu(launch.values, "stqa::attention_pool");
  launch.allocate();
  advise_huge_pages(launch.pooled);
  if (launch.rows == 0) return launch.outputs();

  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, launch.values.scalar_type(), "stqa::attention_pool", [&] {
    using K_t = typename KernelType<scalar_t>::type;
    const auto prm = launch.params<K_t, scalar_t>();
    const auto fn = forward_fn<K_t>();
    at::parallel_for(0, launch.rows, grain(launch.L, launch.C, launch.K),
                     [&](int64_t begin, int64_t end) { fn(prm, begin, end); });
  });
  return launch.outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_pool_backward_cpu(
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
  ops::detail::BackwardLaunch launch(grad_pooled, grad_weights, values, keys, query, weight, mask, score, scale,
                                     output_mask);
  check_cpu(launch.values, "stqa::attention_pool_backward");
  launch.allocate();
  advise_huge_pages(launch.grad_values);
  advise_huge_pages(launch.grad_keys);
  if (launch.rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, launch.values.scalar_type(), "stqa::attention_pool_backward", [&] {
      using K_t = typename KernelType<scalar_t>::type;
      const auto prm = launch.params<K_t, scalar_t>();
      const auto fn = backward_fn<K_t>();
      at::parallel_for(0, launch.rows, grain(launch.L, launch.C, launch.K),
                       [&](int64_t begin, int64_t end) { fn(prm, begin, end); });
    });
  }
  return launch.finish();
}

}  // namespace

std::string capability() { return kernels().isa; }

TORCH_LIBRARY_IMPL(stqa, CPU, m) {
  m.impl("attention_pool", &attention_pool_cpu);
  m.impl("attention_pool_backward", &attention_pool_backward_cpu);
}

}  // namespace stqa::cpu
