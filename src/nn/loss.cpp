#include "chainrule/nn/loss.h"

#include <fmt/format.h>

namespace chainrule::nn {

namespace {
Tensor reduce(const Tensor& per_element, Reduction r) {
  switch (r) {
    case Reduction::Mean: return mean(per_element);
    case Reduction::Sum: return sum(per_element);
    case Reduction::None: return per_element;
  }
  return per_element;
}
void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    throw ShapeError(fmt::format("{}: input {} and target {} must have the same shape", op, a.shape().str(), b.shape().str()));
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

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  check_same_shape("mse_loss", input, target);
  return reduce(square(sub(input, target)), reduction);
}

// NOTE: written as max(z, 0) - z y + log(1 + exp(-|z|)) rather than with log σ(z): the exponent is
// never positive, so nothing overflows for logits of ±1e4, and the result is exact up to the
// rounding of log(1 + e) (e <= 1). The kinks of max and |·| cancel: the derivative is σ(z) - y.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets, Reduction reduction) {
  check_same_shape("binary_cross_entropy_with_logits", logits, targets);
  const Tensor zero = scalar_tensor(0.0, logits.dtype());
  const Tensor one = scalar_tensor(1.0, logits.dtype());
  Tensor per = add(sub(maximum(logits, zero), mul(logits, targets)), log(add(one, exp(neg(abs(logits))))));
  return reduce(per, reduction);
}

}  // namespace chainrule::nn
