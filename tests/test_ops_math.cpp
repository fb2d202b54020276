// The array API's elementwise functions (src/ops/math.cpp): values against <cmath>, and the
// composite activations against their definitions and finite differences. The primitives'
// derivative rules are checked with every other primitive (test_core_primitives.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "chainrule/autodiff/check.h"
#include "chainrule/chainrule.h"

using namespace chainrule;

namespace {

Tensor f64s(std::vector<double> v) { return from_vector(v, Shape{static_cast<std::int64_t>(v.size())}); }

TEST(OpsMath, PrimitivesMatchTheStandardLibrary) {
  std::vector<double> xs = {-0.7, -0.2, 0.0, 0.3, 0.85};
  Tensor x = f64s(xs);
  // The transcendental kernels are SLEEF's (test_vecmath.cpp bounds them in ULPs against long
  // double); here, within a few ULPs of glibc (each within 1-2 of exact). Rounding is exact.
  struct Case { Tensor (*op)(const Tensor&); double (*ref)(double); bool exact; };
  const Case cs[] = {{sin, std::sin, false},     {cos, std::cos, false},     {tan, std::tan, false},
                     {asin, std::asin, false},   {acos, std::acos, false},   {atan, std::atan, false},
                     {sinh, std::sinh, false},   {cosh, std::cosh, false},   {asinh, std::asinh, false},
                     {atanh, std::atanh, false}, {expm1, std::expm1, false}, {log1p, std::log1p, false},
                     {erf, std::erf, false},     {erfc, std::erfc, false},   {floor, std::floor, true},
                     {ceil, std::ceil, true},    {trunc, std::trunc, true}};
  const double eps = std::numeric_limits<double>::epsilon();
  for (const auto& c : cs) {
    auto got = c.op(x).to_vector<double>();
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double want = c.ref(xs[i]);
      if (c.exact) EXPECT_EQ(got[i], want) << "at " << xs[i];
      else EXPECT_NEAR(got[i], want, 4 * eps * std::abs(want)) << "at " << xs[i];
    }
  }
  EXPECT_NEAR(acosh(f64s({1.5})).item(), std::acosh(1.5), 4 * eps);
  // round is half to even, as NumPy, JAX and PyTorch round.
  EXPECT_EQ(round(f64s({-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.6})).to_vector<double>(),
            (std::vector<double>{-2, -2, -0, 0, 2, 2, 3}));
  // float32 runs the float32 kernel
  Tensor x32 = cast(x, DType::f32);
  EXPECT_EQ(sin(x32).dtype(), DType::f32);
  EXPECT_NEAR(sin(x32).to_vector<float>()[4], std::sin(0.85f), 1e-7);
}

TEST(OpsMath, RoundingHasZeroDerivative) {
  Tensor x = f64s({-1.3, 0.4, 2.7});
  using Op = Tensor (*)(const Tensor&);  // chainrule's overloads, not <cmath>'s
  for (Op op : {Op{floor}, Op{ceil}, Op{round}, Op{trunc}}) {
    Tensor g = grad([&](const Tensor& v) { return sum(mul(op(v), v)); })(x);
    // d/dv sum(op(v) v) = op(v): the rounding itself contributes nothing
    EXPECT_EQ(g.to_vector<double>(), op(x).to_vector<double>());
  }
}

TEST(OpsMath, ActivationsMatchTheirDefinitions) {
  std::vector<double> xs = {-30, -3, -0.5, 0.25, 2, 40};
  Tensor x = f64s(xs);
  auto sp = softplus(x).to_vector<double>(), ls = log_sigmoid(x).to_vector<double>();
  auto si = silu(x).to_vector<double>(), ge = gelu(x).to_vector<double>(), gt = gelu(x, true).to_vector<double>();
  auto el = elu(x, 1.5).to_vector<double>(), lr = leaky_relu(x, 0.1).to_vector<double>();
  auto cl = clip(x, -1, 1).to_vector<double>(), ca = clamp(x, -1, 1).to_vector<double>();
  for (std::size_t i = 0; i < xs.size(); ++i) {
    double v = xs[i];
    EXPECT_NEAR(sp[i], std::log1p(std::exp(v)), 1e-15 * std::max(1.0, std::abs(v)));
    EXPECT_NEAR(ls[i], -std::log1p(std::exp(-v)), 1e-15 * std::max(1.0, std::abs(v)));
    EXPECT_NEAR(si[i], v / (1 + std::exp(-v)), 1e-14);
    EXPECT_NEAR(ge[i], 0.5 * v * (1 + std::erf(v / std::numbers::sqrt2)), 1e-14);
    double inner = std::sqrt(2 / std::numbers::pi) * (v + 0.044715 * v * v * v);
    EXPECT_NEAR(gt[i], 0.5 * v * (1 + std::tanh(inner)), 1e-14);
    EXPECT_NEAR(el[i], v > 0 ? v : 1.5 * std::expm1(v), 1e-15);
    EXPECT_EQ(lr[i], v > 0 ? v : 0.1 * v);
    EXPECT_EQ(cl[i], std::min(1.0, std::max(-1.0, v)));
    EXPECT_EQ(ca[i], cl[i]);
  }
}

TEST(OpsMath, ActivationDerivativesMatchFiniteDifferences) {
  // points away from the kinks of elu, leaky_relu and clip
  Tensor x = f64s({-2.1, -0.6, 0.35, 1.7, 0.8});
  const std::vector<std::pair<const char*, CheckFn>> fns = {
      {"softplus", [](std::span<const Tensor> v) { return softplus(v[0]); }},
      {"log_sigmoid", [](std::span<const Tensor> v) { return log_sigmoid(v[0]); }},
      {"silu", [](std::span<const Tensor> v) { return silu(v[0]); }},
      {"gelu", [](std::span<const Tensor> v) { return gelu(v[0]); }},
      {"gelu_tanh", [](std::span<const Tensor> v) { return gelu(v[0], true); }},
      {"elu", [](std::span<const Tensor> v) { return elu(v[0], 1.5); }},
      {"leaky_relu", [](std::span<const Tensor> v) { return leaky_relu(v[0], 0.1); }},
      {"clip", [](std::span<const Tensor> v) { return clip(v[0], -1.0, 1.0); }},
  };
  for (const auto& [name, fn] : fns) {
    auto r = check_grads(fn, {x});
    EXPECT_TRUE(r.pass) << name << ": " << r.failure;
  }
  // elu's discarded branch never turns a large input's gradient into NaN
  Tensor g = grad([](const Tensor& v) { return sum(elu(v)); })(f64s({800.0}));
  EXPECT_EQ(g.item(), 1.0);
}

}  // namespace
