// Special functions: lgamma and the polygamma family ψ⁽ⁿ⁾ (digamma is n = 0). One primitive
// carries every order, since d/dx ψ⁽ⁿ⁾ = ψ⁽ⁿ⁺¹⁾: lgamma' = digamma, digamma' = trigamma, and so on,
// so derivatives of every order exist.
#include <cmath>
#include <numbers>

#include "chainrule/ops/array_api.h"
#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

using cases::Domain;

namespace {

// ψ⁽ⁿ⁾(x) by the recurrence ψ⁽ⁿ⁾(x) = ψ⁽ⁿ⁾(x+1) + (-1)ⁿ⁺¹ n! / xⁿ⁺¹ up to x >= 10 + n, then the
// asymptotic series (Abramowitz & Stegun 6.3.18, 6.4.11) to the B₁₄ term: relative error below
// 1e-14 there. Poles (x = 0, -1, -2, ...) give NaN, as SciPy's digamma and polygamma do for x<=0
// integers. A negative x costs |x| steps of the recurrence.
double polygamma_value(int n, double x) {
  if (std::isnan(x)) return x;
  if (x <= 0 && x == std::floor(x)) return std::numeric_limits<double>::quiet_NaN();
  if (std::isinf(x)) return n == 0 ? x : 0.0;
  const double fact_n = std::tgamma(n + 1.0);
  const double sign = n % 2 == 1 ? 1.0 : -1.0;  // (-1)^(n+1)
  double acc = 0;
  const double threshold = 10.0 + n;
  while (x < threshold) {
    acc += n == 0 ? -1.0 / x : sign * fact_n / std::pow(x, n + 1);
    x += 1;
  }
  static constexpr double kB[] = {1.0 / 6, -1.0 / 30, 1.0 / 42, -1.0 / 30, 5.0 / 66, -691.0 / 2730, 7.0 / 6};
  if (n == 0) {
    double s = std::log(x) - 0.5 / x, x2k = 1;
    for (int k = 1; k <= 7; ++k) {
      x2k *= x * x;
      s -= kB[k - 1] / (2 * k * x2k);
    }
    return acc + s;
  }
  double s = std::tgamma(n) / std::pow(x, n) + fact_n / (2 * std::pow(x, n + 1));
  for (int k = 1; k <= 7; ++k)
    s += kB[k - 1] * std::tgamma(2 * k + n) / (std::tgamma(2 * k + 1) * std::pow(x, 2 * k + n));
  return acc + sign * s;
}

}  // namespace

const Primitive lgamma_p{
    .name = "lgamma",
    .forward = [](auto x, auto&) {
      // lgamma_r: the reentrant form (std::lgamma writes the global signgam from every thread).
      return kernels::unary_forward("lgamma", x[0], [](auto a) {
        int sign = 0;
        return static_cast<decltype(a)>(::lgamma_r(static_cast<double>(a), &sign));
      });
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return mul(t, digamma(c.x[0])); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return mul(ct, digamma(c.x[0])); },
    .batching = Batching::Leading,
    .cases = [] {
      auto cs = cases::unary([](auto x) { return lgamma(x[0]); }, Domain::Positive);
      cs.push_back(cases::single("negative non-integers", {from_vector<double>({-0.5, -1.3, -2.7, 3.5})},
                                 [](auto x) { return lgamma(x[0]); }));
      return cs;
    },
    .kinks = "poles at 0, -1, -2, ... (infinite value and derivative); for x < 0 it is log|Γ(x)|",
};

const Primitive polygamma_p{
    .name = "polygamma",
    .forward = [](auto x, auto& p) {
      const int n = p.code;
      return kernels::unary_forward("polygamma", x[0], [n](auto a) { return static_cast<decltype(a)>(polygamma_value(n, static_cast<double>(a))); });
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return mul(t, polygamma(c.p.code + 1, c.x[0])); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return mul(ct, polygamma(c.p.code + 1, c.x[0])); },
    .batching = Batching::Leading,
    .cases = [] {
      auto cs = cases::unary([](auto x) { return digamma(x[0]); }, Domain::Positive);
      auto more = cases::unary([](auto x) { return polygamma(1, x[0]); }, Domain::AboveOne);
      cs.insert(cs.end(), more.begin(), more.end());
      cs.push_back(cases::single("digamma, negative non-integers", {from_vector<double>({-0.5, -1.3, -2.7, 12.5})},
                                 [](auto x) { return digamma(x[0]); }));
      cs.push_back(cases::single("polygamma(3)", {from_vector<double>({0.7, 2.0, 15.0})}, [](auto x) { return polygamma(3, x[0]); }));
      return cs;
    },
    .kinks = "poles at 0, -1, -2, ... (NaN there, as SciPy); x < 0 costs |x| steps of the recurrence",
};

Tensor lgamma(const Tensor& x) { return bind(lgamma_p, {x}); }
Tensor polygamma(std::int64_t n, const Tensor& x) {
  if (n < 0 || n > 50) throw ValueError(fmt::format("polygamma: order n must be in [0, 50], got {}", n));
  Params p;
  p.code = static_cast<int>(n);
  return bind(polygamma_p, {x}, p);
}
Tensor digamma(const Tensor& x) { return polygamma(0, x); }

const Primitive* const kSpecialPrimitives[] = {&lgamma_p, &polygamma_p};
std::span<const Primitive* const> special_primitives() { return kSpecialPrimitives; }

}  // namespace chainrule
