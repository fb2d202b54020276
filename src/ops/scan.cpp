// Cumulative operations along one axis: cumsum, logcumsumexp and linear_scan, the first-order
// linear recurrence h_i = a_i h_{i-1} + b_i that carries the other derivatives. Its JVP and VJP
// are linear scans again (the VJP runs the other way), so cumprod (a composite of it) and prod's
// rules (reduce.cpp) are exact where elements are zero, to every order, with no division.
// Axes are stored negative, so extra leading (batch) dimensions pass through.
#include <cmath>
#include <limits>

#include "chainrule/ops/array_api.h"
#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

using kernels::dispatch_float;
using kernels::axis_of;
using kernels::Lanes;
using kernels::norm_axis;
using cases::Domain;

namespace {


std::int64_t length(const Shape& s, std::int64_t neg_axis) { return s[static_cast<std::size_t>(static_cast<std::int64_t>(s.size()) + neg_axis)]; }

// Calls f(lane_offset, stride, n) for every lane; each lane is visited in order (or reversed).
template <class F>
void for_each_lane(const Lanes& L, F f) {
  for (std::int64_t o = 0; o < L.outer; ++o)
    for (std::int64_t i = 0; i < L.inner; ++i) f(o * L.n * L.inner + i, L.inner, L.n);
}

// h_i = a_i h_{i-1} + b_i (reverse: h_i = a_i h_{i+1} + b_i), h = 0 before the first; a null `a`
// means a_i = 1 (a cumulative sum).
template <class T>
void scan_lanes(const T* a, const T* b, T* h, const Lanes& L, bool reverse) {
  for_each_lane(L, [&](std::int64_t off, std::int64_t st, std::int64_t n) {
    double acc = 0;
    for (std::int64_t k = 0; k < n; ++k) {
      const std::int64_t j = off + (reverse ? n - 1 - k : k) * st;
      acc = (a ? static_cast<double>(a[j]) * acc : acc) + static_cast<double>(b[j]);
      h[j] = static_cast<T>(acc);
    }
  });
}

// The neighbours along an axis, zero past the end: prev(x)_i = x_{i-1}, next(x)_i = x_{i+1}.
Tensor prev0(const Tensor& x, std::int64_t axis) {
  const auto n = length(x.shape(), axis);
  return n == 0 ? x : pad(slice(x, axis, 0, n - 1), axis, 1, 0);
}
Tensor next0(const Tensor& x, std::int64_t axis) {
  const auto n = length(x.shape(), axis);
  return n == 0 ? x : pad(slice(x, axis, 1, n), axis, 0, 1);
}
// The same with the edge value repeated instead of zero (for exponents that must stay finite).
Tensor prev_edge(const Tensor& x, std::int64_t axis) {
  const auto n = length(x.shape(), axis);
  return n == 0 ? x : concat({slice(x, axis, 0, 1), slice(x, axis, 0, n - 1)}, axis);
}
Tensor next_edge(const Tensor& x, std::int64_t axis) {
  const auto n = length(x.shape(), axis);
  return n == 0 ? x : concat({slice(x, axis, 1, n), slice(x, axis, n - 1, n)}, axis);
}

Params axis_params(std::string_view op, const Tensor& x, std::int64_t axis, bool reverse) {
  Params p;
  p.axis = norm_axis(op, axis, x.shape().size()) - x.dim();
  p.code = reverse ? 1 : 0;
  return p;
}

Tensor cumsum_dir(const Tensor& x, std::int64_t axis, bool reverse);


}  // namespace

const Primitive cumsum_p{
    .name = "cumsum",
    .forward = [](auto x, auto& p) {
      Tensor o = empty(x[0].shape(), x[0].dtype());
      if (x[0].dtype() == DType::i64) {  // exact, wrapping on overflow as NumPy (no double accumulator)
        const std::int64_t* b = kernels::in<std::int64_t>(x[0]);
        std::int64_t* h = kernels::out<std::int64_t>(o);
        const bool reverse = p.code == 1;
        for_each_lane(Lanes(x[0].shape(), axis_of("cumsum", x[0], p)), [&](std::int64_t off, std::int64_t st, std::int64_t n) {
          std::uint64_t acc = 0;
          for (std::int64_t k = 0; k < n; ++k) {
            const std::int64_t j = off + (reverse ? n - 1 - k : k) * st;
            h[j] = static_cast<std::int64_t>(acc += static_cast<std::uint64_t>(b[j]));
          }
        });
        return o;
      }
      dispatch_float(x[0].dtype(), "cumsum", [&](auto tag) {
        using T = decltype(tag);
        scan_lanes<T>(nullptr, kernels::in<T>(x[0]), kernels::out<T>(o), Lanes(x[0].shape(), axis_of("cumsum", x[0], p)), p.code == 1);
        return 0;
      });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return cumsum_dir(t, c.p.axis, c.p.code == 1); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return cumsum_dir(ct, c.p.axis, c.p.code != 1); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      auto cs = cases::along_axis([](const Tensor& x, std::int64_t a) { return cumsum(x, a); }, Domain::Real);
      cs.push_back(cases::single("[4,3] axis0 reversed", {cases::sample({4, 3}, Domain::Real, 8)},
                                 [](auto x) { return cumsum_dir(x[0], 0, true); }));
      return cs;
    },
};

// The running product of an int64 tensor along an axis, exact in int64 and wrapping on overflow
// (modulo 2^64) as NumPy's. No derivative: its input is an integer.
const Primitive integer_cumprod_p{
    .name = "integer_cumprod",
    .forward = [](auto x, auto& p) {
      if (x[0].dtype() != DType::i64)
        throw DTypeError(fmt::format("cumprod: expected float32, float64, int64 or bool, got {}", dtype_name(x[0].dtype())));
      Tensor o = empty(x[0].shape(), DType::i64);
      const std::int64_t* b = kernels::in<std::int64_t>(x[0]);
      std::int64_t* h = kernels::out<std::int64_t>(o);
      for_each_lane(Lanes(x[0].shape(), axis_of("cumprod", x[0], p)), [&](std::int64_t off, std::int64_t st, std::int64_t n) {
        std::uint64_t acc = 1;  // unsigned: wraps without undefined behaviour
        for (std::int64_t k = 0; k < n; ++k) h[off + k * st] = static_cast<std::int64_t>(acc *= static_cast<std::uint64_t>(b[off + k * st]));
      });
      return o;
    },
    .batching = Batching::Leading,
};

const Primitive linear_scan_p{
    .name = "linear_scan",
    .forward = [](auto x, auto& p) {
      check_same_dtype("linear_scan", x[0], x[1]);
      if (x[0].shape() != x[1].shape())
        throw ShapeError(fmt::format("linear_scan: a {} and b {} must have the same shape", x[0].shape().str(), x[1].shape().str()));
      Tensor o = empty(x[0].shape(), x[0].dtype());
      dispatch_float(x[0].dtype(), "linear_scan", [&](auto tag) {
        using T = decltype(tag);
        scan_lanes<T>(kernels::in<T>(x[0]), kernels::in<T>(x[1]), kernels::out<T>(o),
                      Lanes(x[0].shape(), axis_of("linear_scan", x[0], p)), p.code == 1);
        return 0;
      });
      return o;
    },
    // dh = scan(a, da ⊙ h_prev + db), h_prev the previous h in the scan's direction.
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      const bool rev = c.p.code == 1;
      Tensor drive = i == 1 ? t : mul(t, rev ? next0(c.out, c.p.axis) : prev0(c.out, c.p.axis));
      return linear_scan(c.x[0], drive, c.p.axis, rev);
    },
    // λ_i = ct_i + a_{i+1} λ_{i+1} (the scan run backwards); ∂/∂b = λ, ∂/∂a = λ ⊙ h_prev.
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      const bool rev = c.p.code == 1;
      Tensor lambda = linear_scan(rev ? prev0(c.x[0], c.p.axis) : next0(c.x[0], c.p.axis), ct, c.p.axis, !rev);
      return i == 1 ? lambda : mul(lambda, rev ? next0(c.out, c.p.axis) : prev0(c.out, c.p.axis));
    },
    .batching = Batching::Materialize,
    .saves = kSaveInputs | kSaveOutput,
    .cases = [] {
      using cases::sample;
      auto f = [](std::int64_t axis, bool rev) {
        return [axis, rev](std::span<const Tensor> x) { return linear_scan(x[0], x[1], axis, rev); };
      };
      return std::vector<OpCase>{
          cases::single("[5] axis0", {sample({5}, Domain::Unit, 1), sample({5}, Domain::Real, 2)}, f(0, false)),
          cases::single("[3,4] axis-1", {sample({3, 4}, Domain::Unit, 3), sample({3, 4}, Domain::Real, 4)}, f(-1, false)),
          cases::single("[3,4] axis0 reversed", {sample({3, 4}, Domain::Unit, 5), sample({3, 4}, Domain::Real, 6)}, f(0, true)),
          cases::single("[0,3] axis-1", {sample({0, 3}, Domain::Unit, 7), sample({0, 3}, Domain::Real, 8)}, f(-1, false)),
          cases::single("[1,1] axis-1", {sample({1, 1}, Domain::Unit, 9), sample({1, 1}, Domain::Real, 10)}, f(-1, false)),
          cases::single("[8,10] axis-1 reversed", {sample({8, 10}, Domain::Unit, 11), sample({8, 10}, Domain::Real, 12)}, f(-1, true)),
      };
    },
};

// log Σ_{i<=j} e^{x_i}, one running logaddexp per lane. Its rules are linear scans with factors
// e^{out_{j-1} - out_j} <= 1 and e^{x_j - out_j} <= 1, so nothing overflows.
const Primitive logcumsumexp_p{
    .name = "logcumsumexp",
    .forward = [](auto x, auto& p) {
      Tensor o = empty(x[0].shape(), x[0].dtype());
      dispatch_float(x[0].dtype(), "logcumsumexp", [&](auto tag) {
        using T = decltype(tag);
        const T* s = kernels::in<T>(x[0]);
        T* d = kernels::out<T>(o);
        for_each_lane(Lanes(x[0].shape(), axis_of("logcumsumexp", x[0], p)), [&](std::int64_t off, std::int64_t st, std::int64_t n) {
          double acc = -std::numeric_limits<double>::infinity();
          for (std::int64_t k = 0; k < n; ++k) {
            const double v = static_cast<double>(s[off + k * st]);
            const double m = std::max(acc, v);
            acc = std::isinf(m) && m < 0 ? m : m + std::log1p(std::exp(-std::fabs(acc - v)));
            d[off + k * st] = static_cast<T>(acc);
          }
        });
        return 0;
      });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      Tensor decay = exp(sub(prev_edge(c.out, c.p.axis), c.out));
      return linear_scan(decay, mul(t, exp(sub(c.x[0], c.out))), c.p.axis, false);
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      Tensor decay = exp(sub(c.out, next_edge(c.out, c.p.axis)));
      return mul(exp(sub(c.x[0], c.out)), linear_scan(decay, ct, c.p.axis, true));
    },
    .batching = Batching::Leading,
    .saves = kSaveInputs | kSaveOutput,
    .cases = [] { return cases::along_axis([](const Tensor& x, std::int64_t a) { return logcumsumexp(x, a); }, Domain::Logits); },
    .kinks = "a lane that starts with -inf entries has a NaN derivative there (as exp(-inf - -inf))",
};

namespace {
Tensor cumsum_dir(const Tensor& x, std::int64_t axis, bool reverse) {
  if (x.dim() == 0) return x;
  return bind(cumsum_p, {x}, axis_params("cumsum", x, axis, reverse));
}
}  // namespace

// A bool tensor counts as 0 and 1 and sums to int64, as NumPy's and torch's cumsum.
Tensor cumsum(const Tensor& x, std::int64_t axis) { return cumsum_dir(x.dtype() == DType::b8 ? cast(x, DType::i64) : x, axis, false); }

Tensor linear_scan(const Tensor& a, const Tensor& b, std::int64_t axis, bool reverse) {
  return bind(linear_scan_p, {a, b}, axis_params("linear_scan", a, axis, reverse));
}

// cumprod is the scan h_i = x_i h_{i-1} started from h_0 = x_0 (b = x_0 at the first position, 0
// after it): exact where elements are zero, to every order.
// An int64 or bool tensor (bools count as 0 and 1, giving int64 as NumPy) takes the exact
// integer scan instead.
Tensor cumprod(const Tensor& x, std::int64_t axis) {
  if (!is_floating(x.dtype())) {
    const Tensor xi = x.dtype() == DType::b8 ? cast(x, DType::i64) : x;
    if (xi.dim() == 0) return xi;
    return bind(integer_cumprod_p, {xi}, axis_params("cumprod", xi, axis, false));
  }
  if (x.dim() == 0) return x;
  auto a = norm_axis("cumprod", axis, x.shape().size());
  const auto n = x.shape()[static_cast<std::size_t>(a)];
  if (n == 0) return x;
  return linear_scan(x, pad(slice(x, a, 0, 1), a, 0, n - 1), a, false);
}

Tensor logcumsumexp(const Tensor& x, std::int64_t axis) {
  if (x.dim() == 0) return x;
  return bind(logcumsumexp_p, {x}, axis_params("logcumsumexp", x, axis, false));
}

const Primitive* const kScanPrimitives[] = {&cumsum_p, &linear_scan_p, &logcumsumexp_p, &integer_cumprod_p};
std::span<const Primitive* const> scan_primitives() { return kScanPrimitives; }

}  // namespace chainrule
