#include "chainrule/autodiff/anomaly.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "autodiff/anomaly_internal.h"
#include "chainrule/tensor/tensor.h"
#include "kernels/convert.h"

namespace chainrule {

namespace {
thread_local bool t_anomaly = false;
thread_local std::vector<std::string> t_scopes;
thread_local std::string t_backward_context;
}  // namespace

bool AnomalyMode::is_enabled() { return t_anomaly; }
void AnomalyMode::set_enabled(bool on) { t_anomaly = on; }

NameScope::NameScope(const std::string& name) : active_(t_anomaly) {
  if (active_) t_scopes.push_back(name);
}
NameScope::~NameScope() {
  if (active_) t_scopes.pop_back();
}
std::string current_name_scope() {
  std::string s;
  for (const auto& n : t_scopes) s += (s.empty() ? "" : ".") + n;
  return s;
}

namespace detail {

BackwardContext::BackwardContext(const std::string& what) : prev_(std::move(t_backward_context)) { t_backward_context = what; }
BackwardContext::~BackwardContext() { t_backward_context = std::move(prev_); }

std::string describe_site() {
  std::string s;
  auto scope = current_name_scope();
  if (!scope.empty()) s += " in module " + scope;
  if (!t_backward_context.empty()) s += ", " + t_backward_context;
  return s;
}

// Index of the first NaN or Inf of a concrete float tensor, or -1.
std::int64_t first_non_finite(const Tensor& t) {
  auto scan = [&](auto* p) -> std::int64_t {
    for (std::int64_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(p[i])) return i;
    return -1;
  };
  if (t.dtype() == DType::f32) return scan(t.data<float>());
  if (t.dtype() == DType::f64) return scan(t.data<double>());
  return -1;
}

void check_output(std::string_view op, std::span<const Tensor> inputs, const Tensor& out_) {
  // A half tensor is scanned as its (exact) float32 values.
  auto wide = [](const Tensor& t) { return is_half(t.dtype()) ? kernels::convert(t, DType::f32) : t; };
  const Tensor out = wide(out_);
  auto i = first_non_finite(out);
  if (i < 0) return;
  // An output that merely passes a NaN or Inf through from an input is not the culprit; but a
  // NaN made from infinities (softmax of a row of -inf: -inf - -inf) is new, and reported.
  auto has_nan = [](const Tensor& t) {
    auto scan = [&](auto* p) { return std::any_of(p, p + t.numel(), [](auto v) { return std::isnan(v); }); };
    return t.dtype() == DType::f32 ? scan(t.data<float>()) : scan(t.data<double>());
  };
  const bool out_nan = has_nan(out);
  for (const auto& x : inputs) {
    if (!is_floating(x.dtype())) continue;
    Tensor c = wide(x.detach());
    if (first_non_finite(c) >= 0 && (!out_nan || has_nan(c))) return;
  }
  if (out_nan)
    for (std::int64_t k = 0; k < out.numel(); ++k)
      if (out.dtype() == DType::f32 ? std::isnan(out.data<float>()[k]) : std::isnan(out.data<double>()[k])) {
        i = k;
        break;
      }
  std::string shapes;
  for (const auto& x : inputs) shapes += (shapes.empty() ? "" : ", ") + std::string(dtype_name(x.dtype())) + " " + x.shape().str();
  double v = out.dtype() == DType::f32 ? out.data<float>()[i] : out.data<double>()[i];
  throw NumericalError(fmt::format("anomaly: '{}' produced {} at element {} of its output {} (inputs: {}){}", op, v, i,
                                   out.shape().str(), shapes, describe_site()));
}

}  // namespace detail
}  // namespace chainrule
