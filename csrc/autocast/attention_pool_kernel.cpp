// Autocast rule of stqa::attention_pool (torchvision registers one per op the same way): under
// torch.autocast the op runs in the widest floating dtype of values, keys, query and weight. Autocast
// hands an op mixed dtypes (a projection's output in fp16/bf16, features and parameters in fp32), which
// the kernels refuse; promoting keeps what the caller passed at full precision, and is the rule the
// stqa.nn modules already apply. The kernels accumulate in fp32 whatever the input dtype, so there is
// nothing to gain from casting down. The backward op needs no rule: it sees the forward's saved inputs.
#include "attention_pool.h"

#include <c10/core/DispatchKey.h>
#include <c10/core/ScalarType.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace stqa::ops {
namespace {

template <c10::DispatchKey autocast_key>
std::tuple<at::Tensor, at::Tensor> attention_pool_autocast(
    const at::Tensor& values,
    const at::Tensor& keys,
    const at::Tensor& query,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& mask,
    c10::string_view score,
    double scale) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key);
  auto dtype = values.scalar_type();
  for (const at::Tensor* t : {&keys, &query, weight.has_value() ? &*weight : nullptr}) {
    if (t != nullptr && at::isFloatingType(t->scalar_type()) && at::isFloatingType(dtype)) {
      dtype = c10::promoteTypes(dtype, t->scalar_type());
    }
  }
  // Non-floating inputs are passed on unchanged, for the kernels' checks to name them.
  const auto cast = [dtype](const at::Tensor& t) {
    return at::isFloatingType(t.scalar_type()) && at::isFloatingType(dtype) ? t.to(dtype) : t;
  };
  return attention_pool(cast(values), cast(keys), cast(query),
                        weight.has_value() ? std::optional<at::Tensor>(cast(*weight)) : std::nullopt, mask, score,
                        scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(stqa, AutocastCUDA, m) {
  m.impl("attention_pool", &attention_pool_autocast<c10::DispatchKey::AutocastCUDA>);
}

TORCH_LIBRARY_IMPL(stqa, AutocastCPU, m) {
  m.impl("attention_pool", &attention_pool_autocast<c10::DispatchKey::AutocastCPU>);
}

}  // namespace stqa::ops
