// The elementwise functions of the array API beyond arithmetic: trigonometric and hyperbolic
// functions and their inverses, expm1, log1p, erf, erfc, and the rounding functions. Each is
// f(x) with a diagonal Jacobian, so its JVP and VJP are the same product, t * f'(x): one
// derivative function per primitive (`d_<name>`), written with differentiable ops so that
// second derivatives work. The composites below (softplus, gelu, ...) are exact in terms of them.
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <type_traits>
#include <utility>

#include "chainrule/ops/array_api.h"
#include "kernels/kernels.h"
#include "kernels/vecmath.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

using kernels::unary_forward;
using cases::Domain;

namespace {

Tensor constant(double v, const Tensor& like) { return scalar_tensor(v, like.dtype()); }

// The JVP and VJP rule of a unary elementwise primitive with derivative D.
template <Tensor (*D)(const Ctx&)>
Tensor times_derivative(int, const Tensor& t, const Ctx& c) { return mul(t, D(c)); }

Tensor d_sin(const Ctx& c) { return cos(c.x[0]); }
Tensor d_cos(const Ctx& c) { return neg(sin(c.x[0])); }
Tensor d_tan(const Ctx& c) { return add(constant(1.0, c.out), mul(c.out, c.out)); }  // 1 + tan²
Tensor one_minus_square(const Tensor& x) { return sub(constant(1.0, x), mul(x, x)); }
Tensor d_asin(const Ctx& c) { return div(constant(1.0, c.x[0]), sqrt(one_minus_square(c.x[0]))); }
Tensor d_acos(const Ctx& c) { return div(constant(-1.0, c.x[0]), sqrt(one_minus_square(c.x[0]))); }
Tensor d_atan(const Ctx& c) { return div(constant(1.0, c.x[0]), add(constant(1.0, c.x[0]), mul(c.x[0], c.x[0]))); }
Tensor d_sinh(const Ctx& c) { return cosh(c.x[0]); }
Tensor d_cosh(const Ctx& c) { return sinh(c.x[0]); }
Tensor d_asinh(const Ctx& c) { return div(constant(1.0, c.x[0]), sqrt(add(mul(c.x[0], c.x[0]), constant(1.0, c.x[0])))); }
Tensor d_acosh(const Ctx& c) { return div(constant(1.0, c.x[0]), sqrt(sub(mul(c.x[0], c.x[0]), constant(1.0, c.x[0])))); }
Tensor d_atanh(const Ctx& c) { return div(constant(1.0, c.x[0]), one_minus_square(c.x[0])); }
Tensor d_expm1(const Ctx& c) { return add(c.out, constant(1.0, c.out)); }  // exp(x) = expm1(x) + 1
Tensor d_log1p(const Ctx& c) { return div(constant(1.0, c.x[0]), add(c.x[0], constant(1.0, c.x[0]))); }
Tensor d_erf(const Ctx& c) {
  return mul(constant(2.0 / std::sqrt(std::numbers::pi), c.x[0]), exp(neg(mul(c.x[0], c.x[0]))));
}
Tensor d_erfc(const Ctx& c) { return neg(d_erf(c)); }

}  // namespace

// The kernel is SLEEF's vectorised function of the same name (kernels/vecmath.h).
#define CHAINRULE_UNARY(NAME, SAVES, DOMAIN, KINKS)                                                      \
  const Primitive NAME##_p{                                                                              \
      .name = #NAME,                                                                                     \
      .forward = [](auto x, auto&) { return kernels::vec_unary_forward(#NAME, x[0], kernels::VecFn::NAME); }, \
      .jvp = times_derivative<d_##NAME>,                                                                 \
      .vjp = times_derivative<d_##NAME>,                                                                 \
      .batching = Batching::Leading,                                                                     \
      .saves = SAVES,                                                                                    \
      .cases = [] { return cases::unary([](auto x) { return NAME(x[0]); }, DOMAIN); },                  \
      .kinks = KINKS,                                                                                    \
  };                                                                                                     \
  Tensor NAME(const Tensor& x) { return bind(NAME##_p, {x}); }

// name, what the rule reads, test domain, where the derivative does not exist
CHAINRULE_UNARY(sin, kSaveInputs, Domain::Real, "")
CHAINRULE_UNARY(cos, kSaveInputs, Domain::Real, "")
CHAINRULE_UNARY(tan, kSaveOutput, Domain::Unit, "poles at pi/2 + k pi (IEEE: large values)")
CHAINRULE_UNARY(asin, kSaveInputs, Domain::Unit, "|x| = 1: infinite derivative; |x| > 1: NaN")
CHAINRULE_UNARY(acos, kSaveInputs, Domain::Unit, "|x| = 1: infinite derivative; |x| > 1: NaN")
CHAINRULE_UNARY(atan, kSaveInputs, Domain::Real, "")
CHAINRULE_UNARY(sinh, kSaveInputs, Domain::Real, "")
CHAINRULE_UNARY(cosh, kSaveInputs, Domain::Real, "")
CHAINRULE_UNARY(asinh, kSaveInputs, Domain::Real, "")
CHAINRULE_UNARY(acosh, kSaveInputs, Domain::AboveOne, "x = 1: infinite derivative; x < 1: NaN")
CHAINRULE_UNARY(atanh, kSaveInputs, Domain::Unit, "|x| = 1: infinite; |x| > 1: NaN")
CHAINRULE_UNARY(expm1, kSaveOutput, Domain::Real, "")
CHAINRULE_UNARY(log1p, kSaveInputs, Domain::Positive, "x = -1: infinite derivative; x < -1: NaN")
CHAINRULE_UNARY(erf, kSaveInputs, Domain::Real, "")
CHAINRULE_UNARY(erfc, kSaveInputs, Domain::Real, "")
#undef CHAINRULE_UNARY

// Rounding: piecewise constant, no derivative rule, so a constant to every transform (as sign).
// round is half to even, as NumPy, JAX and PyTorch round.
#define CHAINRULE_ROUNDING(NAME, STD_FN)                                                                    \
  const Primitive NAME##_p{                                                                                 \
      .name = #NAME,                                                                                        \
      .forward = [](auto x, auto&) { return unary_forward(#NAME, x[0], [](auto a) { return STD_FN(a); }); }, \
      .batching = Batching::Leading,                                                                        \
  };                                                                                                        \
  Tensor NAME(const Tensor& x) { return bind(NAME##_p, {x}); }

CHAINRULE_ROUNDING(floor, std::floor)
CHAINRULE_ROUNDING(ceil, std::ceil)
CHAINRULE_ROUNDING(round, std::nearbyint)
CHAINRULE_ROUNDING(trunc, std::trunc)
#undef CHAINRULE_ROUNDING

// ---- integer division and bitwise operations ---------------------------------------------------

namespace {

// Python's divmod: the quotient rounded down and the remainder with the divisor's sign. Floats as
// NumPy's npy_divmod (fmod, then the quotient of the exact a - mod, so 1 // 0.1 is 9 as in
// Python); b = 0 gives IEEE's a / b and NaN.
template <class T>
T floor_div(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (b == 0) return a / b;
    T mod = std::fmod(a, b);
    T div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= T(1);
    if (div == 0) return std::copysign(T(0), a / b);
    T fl = std::floor(div);
    return div - fl > T(0.5) ? fl + T(1) : fl;
  } else {
    if (b == -1) return a == std::numeric_limits<T>::min() ? a : -a;  // wraps, as NumPy, never UB
    T q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
  }
}
template <class T>
T floor_mod(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (b == 0) return std::numeric_limits<T>::quiet_NaN();
    T mod = std::fmod(a, b);
    if (mod != 0) return (b < 0) != (mod < 0) ? mod + b : mod;
    return std::copysign(T(0), b);
  } else {
    if (b == -1) return 0;
    T r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
  }
}

// Integer division by zero has no value: a ValueError before any work (an exception cannot leave
// the parallel loop).
void check_nonzero_divisor(const char* op, const Tensor& b) {
  if (b.dtype() != DType::i64) return;
  const std::int64_t* d = kernels::in<std::int64_t>(b);
  for (std::int64_t i = 0; i < b.numel(); ++i)
    if (d[i] == 0) throw ValueError(fmt::format("{}: integer division by zero (divisor element {})", op, i));
}

template <template <class> class F>
Tensor divmod_forward(const char* op, std::span<const Tensor> x) {
  check_same_dtype(op, x[0], x[1]);
  check_nonzero_divisor(op, x[1]);
  return kernels::dispatch_numeric(x[0].dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    return kernels::map_binary<T>(op, x[0], x[1], [](T a, T b) { return F<T>{}(a, b); });
  });
}
template <class T> struct FloorDiv { T operator()(T a, T b) const { return floor_div(a, b); } };
template <class T> struct FloorMod { T operator()(T a, T b) const { return floor_mod(a, b); } };

// Both operands in their promoted dtype (as add and the comparisons, elementwise.cpp).
std::pair<Tensor, Tensor> promoted_pair(const Tensor& a, const Tensor& b) {
  const DType t = promote_types(a.dtype(), b.dtype());
  return {a.dtype() == t ? a : cast(a, t), b.dtype() == t ? b : cast(b, t)};
}

// int64 or bool, for the bitwise operations.
template <class Fn>
decltype(auto) dispatch_integer(DType t, const char* op, Fn&& fn) {
  if (t == DType::i64) return fn(std::int64_t{});
  if (t == DType::b8) return fn(bool{});
  throw DTypeError(fmt::format("{}: expected an integer or bool tensor, got {}", op, dtype_name(t)));
}

enum class Bitwise { And, Or, Xor };

}  // namespace

// Piecewise constant: no derivative rule, so its output is a constant to every transform.
const Primitive floor_divide_p{
    .name = "floor_divide",
    .forward = [](auto x, auto&) { return divmod_forward<FloorDiv>("floor_divide", x); },
};

const Primitive remainder_p{
    .name = "remainder",
    .forward = [](auto x, auto&) { return divmod_forward<FloorMod>("remainder", x); },
    .jvp = [](int i, const Tensor& t, const Ctx& c) { return i == 0 ? t : mul(t, neg(floor_divide(c.x[0], c.x[1]))); },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) { return i == 0 ? ct : mul(ct, neg(floor_divide(c.x[0], c.x[1]))); },
    .cases = [] { return cases::binary([](auto x) { return remainder(x[0], x[1]); }, Domain::Real, Domain::AwayFromZero); },
    .kinks = "jumps by b where a / b is an integer; there the derivative of the piece to the right (floor)",
};

const Primitive bitwise_p{
    .name = "bitwise",
    .forward = [](auto x, auto& p) {
      const char* names[] = {"bitwise_and", "bitwise_or", "bitwise_xor"};
      const char* op = names[p.code];
      check_same_dtype(op, x[0], x[1]);
      return dispatch_integer(x[0].dtype(), op, [&](auto tag) {
        using T = decltype(tag);
        switch (static_cast<Bitwise>(p.code)) {
          case Bitwise::And: return kernels::map_binary<T>(op, x[0], x[1], [](T a, T b) -> T { return a & b; });
          case Bitwise::Or: return kernels::map_binary<T>(op, x[0], x[1], [](T a, T b) -> T { return a | b; });
          case Bitwise::Xor: break;
        }
        return kernels::map_binary<T>(op, x[0], x[1], [](T a, T b) -> T { return a ^ b; });
      });
    },
};

const Primitive bitwise_not_p{
    .name = "bitwise_not",
    .forward = [](auto x, auto&) {
      return dispatch_integer(x[0].dtype(), "bitwise_not", [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, bool>) return kernels::map_unary<T>(x[0], [](T a) -> T { return !a; });
        else return kernels::map_unary<T>(x[0], [](T a) -> T { return ~a; });
      });
    },
    .batching = Batching::Leading,
};

Tensor floor_divide(const Tensor& a, const Tensor& b) {
  auto [x, y] = promoted_pair(a, b);
  return bind(floor_divide_p, {x, y});
}
Tensor remainder(const Tensor& a, const Tensor& b) {
  auto [x, y] = promoted_pair(a, b);
  return bind(remainder_p, {x, y});
}
namespace {
Tensor bitwise(const Tensor& a, const Tensor& b, Bitwise op) {
  auto [x, y] = promoted_pair(a, b);
  Params p;
  p.code = static_cast<int>(op);
  return bind(bitwise_p, {x, y}, p);
}
}  // namespace
Tensor bitwise_and(const Tensor& a, const Tensor& b) { return bitwise(a, b, Bitwise::And); }
Tensor bitwise_or(const Tensor& a, const Tensor& b) { return bitwise(a, b, Bitwise::Or); }
Tensor bitwise_xor(const Tensor& a, const Tensor& b) { return bitwise(a, b, Bitwise::Xor); }
Tensor bitwise_not(const Tensor& x) { return bind(bitwise_not_p, {x}); }
Tensor bitwise_invert(const Tensor& x) { return bitwise_not(x); }

// ---- composites, exact in terms of the primitives --------------------------------------------

// log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large |x|.
Tensor softplus(const Tensor& x) { return add(relu(x), log1p(exp(neg(abs(x))))); }
Tensor log_sigmoid(const Tensor& x) { return neg(softplus(neg(x))); }
Tensor silu(const Tensor& x) { return mul(x, sigmoid(x)); }

// ---- gelu: primitives on fused vector kernels (kernels/vecmath.h), rules written with ops -------

namespace {
// Φ(x) + x φ(x) = erfc(-x / sqrt 2) / 2 + x e^{-x²/2} / sqrt(2 pi)
Tensor d_gelu(const Ctx& c) {
  const Tensor& x = c.x[0];
  Tensor cdf = mul(constant(0.5, x), erfc(mul(x, constant(-1.0 / std::numbers::sqrt2, x))));
  Tensor pdf = mul(exp(mul(constant(-0.5, x), mul(x, x))), constant(0.5 * std::numbers::inv_sqrtpi * std::numbers::sqrt2, x));
  return add(cdf, mul(x, pdf));
}
// gelu_tanh = x s with s = sigmoid(w), w = 2 sqrt(2/pi) (x + 0.044715 x³):
// s + x s (1 - s) w', w' = 2 sqrt(2/pi) (1 + 3 · 0.044715 x²)
Tensor d_gelu_tanh(const Ctx& c) {
  const Tensor& x = c.x[0];
  const double k = 2.0 * std::sqrt(2.0 / std::numbers::pi);
  Tensor x2 = mul(x, x);
  Tensor s = sigmoid(mul(constant(k, x), add(x, mul(constant(0.044715, x), mul(x2, x)))));
  Tensor dw = mul(constant(k, x), add(constant(1.0, x), mul(constant(3 * 0.044715, x), x2)));
  return add(s, mul(mul(x, mul(s, sub(constant(1.0, x), s))), dw));
}
}  // namespace

const Primitive gelu_p{
    .name = "gelu",
    .forward = [](auto x, auto&) { return kernels::vec_unary_forward("gelu", x[0], kernels::VecFn::gelu); },
    .jvp = times_derivative<d_gelu>,
    .vjp = times_derivative<d_gelu>,
    .batching = Batching::Leading,
    .saves = kSaveInputs,
    .cases = [] { return cases::unary([](auto x) { return gelu(x[0]); }); },
};
const Primitive gelu_tanh_p{
    .name = "gelu_tanh",
    .forward = [](auto x, auto&) { return kernels::vec_unary_forward("gelu_tanh", x[0], kernels::VecFn::gelu_tanh); },
    .jvp = times_derivative<d_gelu_tanh>,
    .vjp = times_derivative<d_gelu_tanh>,
    .batching = Batching::Leading,
    .saves = kSaveInputs,
    .cases = [] { return cases::unary([](auto x) { return gelu(x[0], true); }); },
};
Tensor gelu(const Tensor& x, bool tanh_approximation) { return bind(tanh_approximation ? gelu_tanh_p : gelu_p, {x}); }
// The negative branch sees min(x, 0), so the branch where() discards never overflows into NaN.
Tensor elu(const Tensor& x, double alpha) {
  return where(greater(x, constant(0.0, x)), x, mul(constant(alpha, x), expm1(minimum(x, constant(0.0, x)))));
}
Tensor leaky_relu(const Tensor& x, double negative_slope) {
  return where(greater(x, constant(0.0, x)), x, mul(constant(negative_slope, x), x));
}
Tensor clip(const Tensor& x, double min, double max) {
  return minimum(maximum(x, constant(min, x)), constant(max, x));
}
Tensor clamp(const Tensor& x, double min, double max) { return clip(x, min, max); }

const Primitive* const kMathPrimitives[] = {&sin_p,   &cos_p,   &tan_p,   &asin_p,  &acos_p, &atan_p,
                                            &sinh_p,  &cosh_p,  &asinh_p, &acosh_p, &atanh_p, &expm1_p,
                                            &log1p_p, &erf_p,   &erfc_p,  &floor_p, &ceil_p, &round_p,
                                            &trunc_p, &floor_divide_p, &remainder_p, &bitwise_p, &bitwise_not_p, &gelu_p, &gelu_tanh_p};
std::span<const Primitive* const> math_primitives() { return kMathPrimitives; }

}  // namespace chainrule
