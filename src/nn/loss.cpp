#include "chainrule/nn/loss.h"

#include <fmt/format.h>

namespace chainrule::nn {

namespace {
Tensor reduce(const Tensor& per_element, Reduction r) {
  switch (r) {
    case Reduction::Mean: return mean(per_element);
    case Reduction::Sum: return sum(per_element);
    case Reduction::None: return per_element;
    case Reduction::BatchMean: break;
  }
  throw ValueError("cross_entropy: reduction batchmean is only for kl_div");
}
}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double eps, Reduction reduction) {
  if (!(eps >= 0 && eps <= 1)) throw ValueError(fmt::format("cross_entropy: label_smoothing must be in [0, 1], got {}", eps));
  Tensor ce = chainrule::cross_entropy(logits, labels, Reduction::None);
  if (eps == 0) return reduce(ce, reduction);
  // -Σ_c (ε/C) log softmax(z)_c = ε (logsumexp(z) - mean_c z_c); both terms are shift invariant.
  Tensor uniform = sub(logsumexp(logits, {-1}), mean(logits, {-1}));
  const DType t = logits.dtype();
  return reduce(add(mul(ce, scalar_tensor(1 - eps, t)), mul(uniform, scalar_tensor(eps, t))), reduction);
}

}  // namespace chainrule::nn
