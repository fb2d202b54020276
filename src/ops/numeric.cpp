#include <cmath>
#include <fmt/format.h>

#include "chainrule/ops/ops.h"

namespace chainrule {

double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    throw ShapeError(fmt::format("max_abs_diff: shapes differ: {} and {}", a.shape().str(), b.shape().str()));
  auto x = cast(a.detach(), DType::f64).to_vector<double>();
  auto y = cast(b.detach(), DType::f64).to_vector<double>();
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    double d = std::abs(x[i] - y[i]);
    if (std::isnan(d)) return d;
    m = std::max(m, d);
  }
  return m;
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.shape() != b.shape()) return false;
  auto x = cast(a.detach(), DType::f64).to_vector<double>();
  auto y = cast(b.detach(), DType::f64).to_vector<double>();
  for (std::size_t i = 0; i < x.size(); ++i)
    if (!(std::abs(x[i] - y[i]) <= atol + rtol * std::abs(y[i]))) return false;
  return true;
}

}  // namespace chainrule
