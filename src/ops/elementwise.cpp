// Elementwise primitives. Each definition holds its forward kernel, JVP rule, VJP rule, what it
// saves for the backward pass, and its test cases. Broadcast cotangents are summed back to the
// input's shape by the engine, not here.
#include <cmath>

#include "kernels/convert.h"
#include "kernels/kernels.h"
#include "kernels/vecmath.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

using kernels::dispatch_float;
using kernels::map_binary;
using kernels::unary_forward;

namespace {

// Integer operands (add, sub, mul, maximum, minimum) run in int64; div and pow promote integers
// to the default float type before they get here.
template <class Op>
Tensor binary_forward(std::string_view name, std::span<const Tensor> x, Op op) {
  check_same_dtype(name.data(), x[0], x[1]);
  return kernels::dispatch_numeric(x[0].dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    return map_binary<T>(name, x[0], x[1], [&](T a, T b) -> T { return op(a, b); });
  });
}
Tensor zero_like_scalar(const Tensor& x) { return scalar_tensor(0.0, x.dtype()); }
// 1 where the condition holds, else 0, in the dtype of `like`.
Tensor indicator(const Tensor& cond, const Tensor& like) { return cast(cond, like.dtype()); }

using cases::Domain;

}  // namespace

// ---- binary -------------------------------------------------------------------------------

const Primitive add_p{
    .name = "add",
    .forward = [](auto x, auto&) { return binary_forward("add", x, [](auto a, auto b) { return a + b; }); },
    .jvp = [](int, const Tensor& t, const Ctx&) { return t; },
    .vjp = [](int, const Tensor& ct, const Ctx&) { return ct; },
    .saves = kSaveNone,
    .cases = [] { return cases::binary([](auto x) { return add(x[0], x[1]); }); },
};

const Primitive sub_p{
    .name = "sub",
    .forward = [](auto x, auto&) { return binary_forward("sub", x, [](auto a, auto b) { return a - b; }); },
    .jvp = [](int i, const Tensor& t, const Ctx&) { return i == 0 ? t : neg(t); },
    .vjp = [](int i, const Tensor& ct, const Ctx&) { return i == 0 ? ct : neg(ct); },
    .saves = kSaveNone,
    .cases = [] { return cases::binary([](auto x) { return sub(x[0], x[1]); }); },
};

const Primitive mul_p{
    .name = "mul",
    .forward = [](auto x, auto&) { return binary_forward("mul", x, [](auto a, auto b) { return a * b; }); },
    .jvp = [](int i, const Tensor& t, const Ctx& c) { return i == 0 ? mul(t, c.x[1]) : mul(c.x[0], t); },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) { return i == 0 ? mul(ct, c.x[1]) : mul(c.x[0], ct); },
    .cases = [] { return cases::binary([](auto x) { return mul(x[0], x[1]); }); },
};

const Primitive div_p{
    .name = "div",
    .forward = [](auto x, auto&) { return binary_forward("div", x, [](auto a, auto b) { return a / b; }); },
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      return i == 0 ? div(t, c.x[1]) : neg(div(mul(t, c.x[0]), mul(c.x[1], c.x[1])));
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      return i == 0 ? div(ct, c.x[1]) : neg(div(mul(ct, c.x[0]), mul(c.x[1], c.x[1])));
    },
    .cases = [] { return cases::binary([](auto x) { return div(x[0], x[1]); }, Domain::Real, Domain::Positive); },
};

// d/db a^b = a^b log a, taken as 0 where a <= 0 (at a = 0, b > 0 that is the true limit).
Tensor pow_log_base(const Ctx& c) {
  Tensor pos = greater(c.x[0], zero_like_scalar(c.x[0]));
  Tensor safe = where(pos, c.x[0], scalar_tensor(1.0, c.x[0].dtype()));
  return where(pos, mul(c.out, log(safe)), zero_like_scalar(c.out));
}
const Primitive pow_p{
    .name = "pow",
    .forward = [](auto x, auto&) { return binary_forward("pow", x, [](auto a, auto b) { return std::pow(a, b); }); },
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      return i == 0 ? mul(t, mul(c.x[1], pow(c.x[0], sub(c.x[1], scalar_tensor(1.0, c.x[1].dtype())))))
                    : mul(t, pow_log_base(c));
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      return i == 0 ? mul(ct, mul(c.x[1], pow(c.x[0], sub(c.x[1], scalar_tensor(1.0, c.x[1].dtype())))))
                    : mul(ct, pow_log_base(c));
    },
    .saves = kSaveInputs | kSaveOutput,
    .cases = [] { return cases::binary([](auto x) { return pow(x[0], x[1]); }, Domain::Positive, Domain::Real); },
    .kinks = "d/db a^b is taken as 0 where a <= 0",
};

// Ties split the derivative evenly between the two inputs, as in PyTorch and JAX.
Tensor choose_weight(const Tensor& mine, const Tensor& other, bool take_larger) {
  Tensor wins = take_larger ? greater(mine, other) : less(mine, other);
  return add(indicator(wins, mine), mul(indicator(equal(mine, other), mine), scalar_tensor(0.5, mine.dtype())));
}
const Primitive maximum_p{
    .name = "maximum",
    .forward = [](auto x, auto&) {
      return binary_forward("maximum", x, [](auto a, auto b) { return a != a ? a : (a > b ? a : b); });
    },
    .jvp = [](int i, const Tensor& t, const Ctx& c) { return mul(t, choose_weight(c.x[i], c.x[1 - i], true)); },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) { return mul(ct, choose_weight(c.x[i], c.x[1 - i], true)); },
    .cases = [] { return cases::binary([](auto x) { return maximum(x[0], x[1]); }, Domain::Quarter, Domain::ThreeQuarter); },
    .kinks = "ties split the derivative 0.5 / 0.5",
};

const Primitive minimum_p{
    .name = "minimum",
    .forward = [](auto x, auto&) {
      return binary_forward("minimum", x, [](auto a, auto b) { return a != a ? a : (a < b ? a : b); });
    },
    .jvp = [](int i, const Tensor& t, const Ctx& c) { return mul(t, choose_weight(c.x[i], c.x[1 - i], false)); },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) { return mul(ct, choose_weight(c.x[i], c.x[1 - i], false)); },
    .cases = [] { return cases::binary([](auto x) { return minimum(x[0], x[1]); }, Domain::Quarter, Domain::ThreeQuarter); },
    .kinks = "ties split the derivative 0.5 / 0.5",
};

// ---- unary --------------------------------------------------------------------------------

const Primitive neg_p{
    .name = "neg",
    .forward = [](auto x, auto&) { return kernels::numeric_unary_forward("neg", x[0], [](auto a) { return kernels::wrapping_neg(a); }); },
    .jvp = [](int, const Tensor& t, const Ctx&) { return neg(t); },
    .vjp = [](int, const Tensor& ct, const Ctx&) { return neg(ct); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] { return cases::unary([](auto x) { return neg(x[0]); }); },
};

const Primitive exp_p{
    .name = "exp",
    .forward = [](auto x, auto&) { return kernels::vec_unary_forward("exp", x[0], kernels::VecFn::exp); },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return mul(t, c.out); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return mul(ct, c.out); },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] { return cases::unary([](auto x) { return exp(x[0]); }); },
};

const Primitive log_p{
    .name = "log",
    .forward = [](auto x, auto&) { return kernels::vec_unary_forward("log", x[0], kernels::VecFn::log); },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return div(t, c.x[0]); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return div(ct, c.x[0]); },
    .batching = Batching::Leading,
    .cases = [] { return cases::unary([](auto x) { return log(x[0]); }, Domain::Positive); },
};

const Primitive sqrt_p{
    .name = "sqrt",
    .forward = [](auto x, auto&) { return unary_forward("sqrt", x[0], [](auto a) { return std::sqrt(a); }); },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return div(t, mul(c.out, scalar_tensor(2.0, c.out.dtype()))); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return div(ct, mul(c.out, scalar_tensor(2.0, c.out.dtype()))); },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] { return cases::unary([](auto x) { return sqrt(x[0]); }, Domain::Positive); },
};

const Primitive abs_p{
    .name = "abs",
    .forward = [](auto x, auto&) {
      return kernels::numeric_unary_forward("abs", x[0], [](auto a) { return kernels::wrapping_abs(a); });
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return mul(t, sign(c.x[0])); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return mul(ct, sign(c.x[0])); },
    .batching = Batching::Leading,
    .cases = [] { return cases::unary([](auto x) { return abs(x[0]); }, Domain::AwayFromZero); },
    .kinks = "abs'(0) = 0",
};

const Primitive tanh_p{
    .name = "tanh",
    .forward = [](auto x, auto&) { return kernels::vec_unary_forward("tanh", x[0], kernels::VecFn::tanh); },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return mul(t, sub(scalar_tensor(1.0, c.out.dtype()), mul(c.out, c.out))); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return mul(ct, sub(scalar_tensor(1.0, c.out.dtype()), mul(c.out, c.out))); },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] { return cases::unary([](auto x) { return tanh(x[0]); }); },
};

// NOTE: sigmoid is computed from exp(-|a|) so that neither branch overflows (kernels/vecmath.cpp).
const Primitive sigmoid_p{
    .name = "sigmoid",
    .forward = [](auto x, auto&) { return kernels::vec_unary_forward("sigmoid", x[0], kernels::VecFn::sigmoid); },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return mul(t, mul(c.out, sub(scalar_tensor(1.0, c.out.dtype()), c.out))); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return mul(ct, mul(c.out, sub(scalar_tensor(1.0, c.out.dtype()), c.out))); },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] { return cases::unary([](auto x) { return sigmoid(x[0]); }); },
};

// relu saves only its output: the mask 1[out > 0] equals 1[x > 0].
const Primitive relu_p{
    .name = "relu",
    .forward = [](auto x, auto&) {
      return unary_forward("relu", x[0], [](auto a) { return !(a <= 0) ? a : decltype(a)(0); });  // NaN passes; no branch
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return relu_backward(t, c.out); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return relu_backward(ct, c.out); },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] { return cases::unary([](auto x) { return relu(x[0]); }, Domain::AwayFromZero); },
    .kinks = "relu'(0) = 0",
};

// g ⊙ 1[out > 0], relu's derivative rule, in one pass (PyTorch's threshold_backward) instead of a
// comparison, a cast and a product. Linear in g; a step function of out, whose derivative is zero.
const Primitive relu_backward_p{
    .name = "relu_backward",
    .forward = [](auto x, auto&) {
      return binary_forward("relu_backward", x, [](auto g, auto out) { return out > 0 ? g : decltype(g)(0); });  // a select: vectorises
    },
    .jvp = [](int i, const Tensor& t, const Ctx& c) { return i == 0 ? relu_backward(t, c.x[1]) : Tensor(); },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) { return i == 0 ? relu_backward(ct, c.x[1]) : Tensor(); },
    .saves = kSaveInputs,
    .cases = [] { return cases::binary([](auto x) { return relu_backward(x[0], x[1]); }, Domain::Real, Domain::AwayFromZero); },
    .kinks = "d/d out = 0 everywhere (a step at out = 0)",
};

// Piecewise constant: no derivative rule, so its output is a constant to every transform.
const Primitive sign_p{
    .name = "sign",
    .forward = [](auto x, auto&) {
      return kernels::numeric_unary_forward("sign", x[0], [](auto a) { return decltype(a)((a > 0) - (a < 0)); });
    },
    .batching = Batching::Leading,
};

// ---- selection and conversion ---------------------------------------------------------------

const Primitive where_p{
    .name = "where",
    .forward = [](auto x, auto&) {
      if (x[0].dtype() != DType::b8)
        throw DTypeError(fmt::format("where: condition must be bool, got {} {}", dtype_name(x[0].dtype()), x[0].shape().str()));
      check_same_dtype("where", x[1], x[2]);
      Shape s = kernels::broadcast_shapes("where", kernels::broadcast_shapes("where", x[0].shape(), x[1].shape()), x[2].shape());
      Tensor o = empty(s, x[1].dtype());
      Shape sc = kernels::broadcast_strides(x[0].shape(), s), sa = kernels::broadcast_strides(x[1].shape(), s),
            sb = kernels::broadcast_strides(x[2].shape(), s), so = kernels::contiguous_strides(s);
      kernels::dispatch_all(o.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const bool* c = kernels::in<bool>(x[0]);
        const T* a = kernels::in<T>(x[1]);
        const T* b = kernels::in<T>(x[2]);
        T* d = kernels::out<T>(o);
        kernels::for_each_row<4>(s, {&sc, &sa, &sb, &so}, [&](const auto& off, std::int64_t n, const auto& st) {
          for (std::int64_t i = 0; i < n; ++i)
            d[off[3] + i] = c[off[0] + i * st[0]] ? a[off[1] + i * st[1]] : b[off[2] + i * st[2]];
        });
        return 0;
      });
      return o;
    },
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      return i == 1 ? where(c.x[0], t, zero_like_scalar(t)) : where(c.x[0], zero_like_scalar(t), t);
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      return i == 1 ? where(c.x[0], ct, zero_like_scalar(ct)) : where(c.x[0], zero_like_scalar(ct), ct);
    },
    .cases = [] {
      std::vector<OpCase> cs;
      auto fn = [](std::span<const Tensor> x) { return where(x[0] > 0.0, x[1], x[2]); };
      const Shape shapes[][3] = {{{}, {}, {}}, {{4}, {4}, {4}}, {{2, 3}, {3}, {2, 3}}, {{2, 1}, {1, 3}, {}}, {{0, 2}, {2}, {2}}, {{12, 10}, {12, 10}, {10}}};
      std::uint64_t seed = 300;
      for (const auto& s : shapes) {
        // The first input is the condition's source; it is not differentiated (see below).
        cs.push_back({"c" + s[0].str() + " a" + s[1].str() + " b" + s[2].str(),
                      {cases::sample(s[0], Domain::Real, seed), cases::sample(s[1], Domain::Real, seed + 1),
                       cases::sample(s[2], Domain::Real, seed + 2)},
                      fn});
        seed += 3;
      }
      return cs;
    },
};

// float <-> float conversion is differentiable; to int64 or bool it is not (see convert_p).
const Primitive cast_p{
    .name = "cast",
    .forward = [](auto x, auto& p) { return kernels::convert(x[0], p.dtype); },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return cast(t, c.p.dtype); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return cast(ct, c.p.from); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      // Through float32 the finite differences need a coarse step, and tangents carry float32 rounding.
      auto cs = cases::unary([](auto x) { return cast(square(cast(x[0], DType::f32)), x[0].dtype()); });
      for (auto& c : cs) c.eps = 1e-2, c.atol = 1e-4, c.identity_rtol = 1e-6;
      return cs;
    },
    .half_kernels = true,
};

const Primitive convert_p{
    .name = "convert",
    .forward = cast_p.forward,
    .batching = Batching::Leading,
    .half_kernels = true,
};

// Comparisons: bool outputs, no derivative. `code` selects the comparison.
enum class Cmp { Greater, GreaterEqual, Less, LessEqual, Equal };
const Primitive compare_p{
    .name = "compare",
    .forward = [](auto x, auto& p) {
      check_same_dtype("compare", x[0], x[1]);
      return kernels::dispatch_all(x[0].dtype(), [&](auto tag) {
        using T = decltype(tag);
        switch (static_cast<Cmp>(p.code)) {
          case Cmp::Greater: return map_binary<T, bool>("greater", x[0], x[1], [](T a, T b) { return a > b; });
          case Cmp::GreaterEqual: return map_binary<T, bool>("greater_equal", x[0], x[1], [](T a, T b) { return a >= b; });
          case Cmp::Less: return map_binary<T, bool>("less", x[0], x[1], [](T a, T b) { return a < b; });
          case Cmp::LessEqual: return map_binary<T, bool>("less_equal", x[0], x[1], [](T a, T b) { return a <= b; });
          case Cmp::Equal: break;
        }
        return map_binary<T, bool>("equal", x[0], x[1], [](T a, T b) { return a == b; });
      });
    },
};

// ---- public functions -----------------------------------------------------------------------

namespace {
// Both operands cast to their promoted type (promote_types); `to_float` also lifts integers and
// bools to the default float type (true division, pow). cast is a primitive, so derivatives flow
// back to each operand in its own dtype under every transform.
Tensor as_dtype(const Tensor& x, DType t) { return x.dtype() == t ? x : cast(x, t); }
DType promoted(const Tensor& a, const Tensor& b, bool to_float = false) {
  DType t = promote_types(a.dtype(), b.dtype());
  return to_float && !is_floating(t) ? get_default_dtype() : t;
}
Tensor bind_promoted(const Primitive& p, const Tensor& a, const Tensor& b, bool to_float = false) {
  if (a.dtype() == b.dtype() && (!to_float || is_floating(a.dtype()))) return bind(p, {a, b});
  DType t = promoted(a, b, to_float);
  return bind(p, {as_dtype(a, t), as_dtype(b, t)});
}
// The dtype a double scalar takes next to x: x's own if floating, else the default float type.
DType scalar_dtype(const Tensor& x) { return is_floating(x.dtype()) ? x.dtype() : get_default_dtype(); }
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return bind_promoted(add_p, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return bind_promoted(sub_p, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return bind_promoted(mul_p, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return bind_promoted(div_p, a, b, /*to_float=*/true); }
Tensor pow(const Tensor& a, const Tensor& b) { return bind_promoted(pow_p, a, b, /*to_float=*/true); }
Tensor pow(const Tensor& a, double e) { return pow(a, scalar_tensor(e, scalar_dtype(a))); }
Tensor maximum(const Tensor& a, const Tensor& b) { return bind_promoted(maximum_p, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return bind_promoted(minimum_p, a, b); }
Tensor neg(const Tensor& x) { return bind(neg_p, {x}); }
Tensor exp(const Tensor& x) { return bind(exp_p, {x}); }
Tensor log(const Tensor& x) { return bind(log_p, {x}); }
Tensor sqrt(const Tensor& x) { return bind(sqrt_p, {x}); }
Tensor abs(const Tensor& x) { return bind(abs_p, {x}); }
Tensor tanh(const Tensor& x) { return bind(tanh_p, {x}); }
Tensor sigmoid(const Tensor& x) { return bind(sigmoid_p, {x}); }
Tensor relu(const Tensor& x) { return bind(relu_p, {x}); }
Tensor relu_backward(const Tensor& grad, const Tensor& out) { return bind(relu_backward_p, {grad, out}); }
Tensor sign(const Tensor& x) { return bind(sign_p, {x}); }
Tensor square(const Tensor& x) { return mul(x, x); }
Tensor where(const Tensor& c, const Tensor& a, const Tensor& b) {
  if (a.dtype() == b.dtype()) return bind(where_p, {c, a, b});
  DType t = promoted(a, b);
  return bind(where_p, {c, as_dtype(a, t), as_dtype(b, t)});
}

Tensor cast(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Params p;
  p.dtype = dtype;
  if (is_floating(x.dtype()) && is_floating(dtype)) {
    p.from = x.dtype();
    return bind(cast_p, {x}, p);
  }
  return bind(convert_p, {x}, p);
}

namespace {
Tensor compare(const Tensor& a, const Tensor& b, Cmp c) {
  Params p;
  p.code = static_cast<int>(c);
  if (a.dtype() == b.dtype()) return bind(compare_p, {a, b}, p);
  DType t = promoted(a, b);
  return bind(compare_p, {as_dtype(a, t), as_dtype(b, t)}, p);
}
}  // namespace
Tensor greater(const Tensor& a, const Tensor& b) { return compare(a, b, Cmp::Greater); }
Tensor greater_equal(const Tensor& a, const Tensor& b) { return compare(a, b, Cmp::GreaterEqual); }
Tensor less(const Tensor& a, const Tensor& b) { return compare(a, b, Cmp::Less); }
Tensor less_equal(const Tensor& a, const Tensor& b) { return compare(a, b, Cmp::LessEqual); }
Tensor equal(const Tensor& a, const Tensor& b) { return compare(a, b, Cmp::Equal); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, double b) { return add(a, scalar_tensor(b, scalar_dtype(a))); }
Tensor operator-(const Tensor& a, double b) { return sub(a, scalar_tensor(b, scalar_dtype(a))); }
Tensor operator*(const Tensor& a, double b) { return mul(a, scalar_tensor(b, scalar_dtype(a))); }
Tensor operator/(const Tensor& a, double b) { return div(a, scalar_tensor(b, scalar_dtype(a))); }
Tensor operator+(double a, const Tensor& b) { return add(scalar_tensor(a, scalar_dtype(b)), b); }
Tensor operator-(double a, const Tensor& b) { return sub(scalar_tensor(a, scalar_dtype(b)), b); }
Tensor operator*(double a, const Tensor& b) { return mul(scalar_tensor(a, scalar_dtype(b)), b); }
Tensor operator/(double a, const Tensor& b) { return div(scalar_tensor(a, scalar_dtype(b)), b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return greater(a, b); }
Tensor operator>(const Tensor& a, double b) { return greater(a, scalar_tensor(b, scalar_dtype(a))); }
Tensor operator<(const Tensor& a, const Tensor& b) { return less(a, b); }
Tensor operator<(const Tensor& a, double b) { return less(a, scalar_tensor(b, scalar_dtype(a))); }

const Primitive* const kElementwisePrimitives[] = {&add_p,  &sub_p,  &mul_p,   &div_p,     &pow_p,  &maximum_p,
                                                   &minimum_p, &neg_p, &exp_p, &log_p,     &sqrt_p, &abs_p,
                                                   &tanh_p, &sigmoid_p, &relu_p, &relu_backward_p, &sign_p, &where_p, &cast_p,
                                                   &convert_p, &compare_p};
std::span<const Primitive* const> elementwise_primitives() { return kElementwisePrimitives; }

}  // namespace chainrule
