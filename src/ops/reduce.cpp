// Reductions and the softmax family. Axes are stored negative so that extra leading (batch)
// dimensions pass through; the VJPs broadcast the cotangent back over the reduced axes.
#include <cmath>
#include <limits>

#include "chainrule/ops/array_api.h"
#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

using kernels::dispatch_float;
using kernels::Lanes;
using kernels::norm_axis;

namespace {

// The input shape with the reduced axes set to 1 (the keepdims shape).
Shape keep_shape(const Shape& in, const Shape& neg_axes) {
  Shape s = in;
  for (auto a : neg_axes) s[static_cast<std::size_t>(a + static_cast<std::int64_t>(in.size()))] = 1;
  return s;
}
// Brings a reduction's cotangent (or output) back to the keepdims shape so it broadcasts.
Tensor to_keep(const Tensor& t, const Ctx& c) { return reshape(t, keep_shape(c.shape(0), c.p.axes)); }
std::int64_t reduced_count(const Ctx& c) {
  std::int64_t n = 1;
  for (auto a : c.p.axes) n *= c.shape(0)[static_cast<std::size_t>(a + static_cast<std::int64_t>(c.shape(0).size()))];
  return n;
}
Tensor drop_if_needed(const Tensor& kept, const Shape& axes, bool keepdims) {
  if (keepdims) return kept;
  return reshape(kept, kernels::drop_axes(kept.shape(), axes));
}

template <class Op>
Tensor reduce_forward(std::string_view name, const Tensor& x, const Params& p, double init, Op op) {
  Shape axes = kernels::resolve_axes(name, p.axes, x.shape().size());
  Tensor kept = dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    return kernels::reduce_keepdims<T>(x, axes, init, op);
  });
  return drop_if_needed(kept, axes, p.keepdims);
}

Params reduce_params(std::string_view op, const Tensor& x, const Axes& axes, bool keepdims) {
  Params p;
  const auto r = x.shape().size();
  Shape norm;
  if (axes.empty())
    for (std::size_t i = 0; i < r; ++i) norm.push_back(static_cast<std::int64_t>(i));
  else
    for (auto a : axes) norm.push_back(norm_axis(op, a, r));
  std::sort(norm.begin(), norm.end());
  for (std::size_t i = 1; i < norm.size(); ++i)
    if (norm[i] == norm[i - 1]) throw ShapeError(fmt::format("{}: axis {} repeated for shape {}", op, norm[i], x.shape().str()));
  for (auto a : norm) p.axes.push_back(a - static_cast<std::int64_t>(r));
  p.keepdims = keepdims;
  p.rank = static_cast<std::int64_t>(r);
  return p;
}
Axes axes_vec(const Params& p) { return Axes(std::span<const std::int64_t>(p.axes.data(), p.axes.size())); }

std::vector<OpCase> reduction_cases(Tensor (*fn)(const Tensor&, const Axes&, bool), cases::Domain d) {
  using cases::sample;
  return {
      cases::single("[] all", {sample({}, d, 1)}, [fn](auto x) { return fn(x[0], {}, false); }),
      cases::single("[5] all", {sample({5}, d, 2)}, [fn](auto x) { return fn(x[0], {}, false); }),
      cases::single("[3,4] axis1", {sample({3, 4}, d, 3)}, [fn](auto x) { return fn(x[0], {1}, false); }),
      cases::single("[3,4] axis0 keepdims", {sample({3, 4}, d, 4)}, [fn](auto x) { return fn(x[0], {0}, true); }),
      cases::single("[2,1,3] axes0,2", {sample({2, 1, 3}, d, 5)}, [fn](auto x) { return fn(x[0], {0, 2}, false); }),
      cases::single("[0,3] axis1", {sample({0, 3}, d, 6)}, [fn](auto x) { return fn(x[0], {1}, false); }),
      cases::single("[12,16] axis-1", {sample({12, 16}, d, 7)}, [fn](auto x) { return fn(x[0], {-1}, false); }),
  };
}


// Softmax or log-softmax along one axis, shifted by the lane maximum for stability. A lane of
// all -inf gives NaN softmax (as in PyTorch) and -inf log-softmax.
template <class T>
void softmax_lanes(const T* x, T* y, const Lanes& L, bool log_space) {
  for (std::int64_t o = 0; o < L.outer; ++o)
    for (std::int64_t i = 0; i < L.inner; ++i) {
      const T* px = x + o * L.n * L.inner + i;
      T* py = y + o * L.n * L.inner + i;
      T m = -std::numeric_limits<T>::infinity();
      for (std::int64_t j = 0; j < L.n; ++j) m = std::max(m, px[j * L.inner]);
      if (std::isinf(m)) m = m > 0 ? m : T(0);
      double s = 0;
      for (std::int64_t j = 0; j < L.n; ++j) s += std::exp(static_cast<double>(px[j * L.inner] - m));
      if (log_space) {
        T ls = static_cast<T>(std::log(s)) + m;
        for (std::int64_t j = 0; j < L.n; ++j) py[j * L.inner] = px[j * L.inner] - ls;
      } else {
        for (std::int64_t j = 0; j < L.n; ++j) py[j * L.inner] = static_cast<T>(std::exp(static_cast<double>(px[j * L.inner] - m)) / s);
      }
    }
}

Tensor softmax_forward(std::string_view name, const Tensor& x, const Params& p, bool log_space) {
  auto a = static_cast<std::size_t>(norm_axis(name, p.axis, x.shape().size()));
  Tensor o = empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    softmax_lanes<T>(kernels::in<T>(x), kernels::out<T>(o), Lanes(x.shape(), a), log_space);
    return 0;
  });
  return o;
}

}  // namespace

const Primitive sum_p{
    .name = "sum",
    .forward = [](auto x, auto& p) { return reduce_forward("sum", x[0], p, 0.0, kernels::Plus{}); },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return sum(t, axes_vec(c.p), c.p.keepdims); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return broadcast_to(to_keep(ct, c), c.shape(0)); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] { return reduction_cases([](const Tensor& x, const Axes& a, bool k) { return sum(x, a, k); }, cases::Domain::Real); },
};

const Primitive mean_p{
    .name = "mean",
    .forward = [](auto x, auto& p) {
      Tensor s = reduce_forward("mean", x[0], p, 0.0, kernels::Plus{});
      std::int64_t n = 1;
      for (auto a : kernels::resolve_axes("mean", p.axes, x[0].shape().size())) n *= x[0].shape()[static_cast<std::size_t>(a)];
      return dispatch_float(s.dtype(), "mean", [&](auto tag) {
        using T = decltype(tag);
        return kernels::map_unary<T>(s, [n](T v) { return v / static_cast<T>(n); });
      });
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return mean(t, axes_vec(c.p), c.p.keepdims); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      return broadcast_to(div(to_keep(ct, c), scalar_tensor(static_cast<double>(reduced_count(c)), ct.dtype())), c.shape(0));
    },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] { return reduction_cases([](const Tensor& x, const Axes& a, bool k) { return mean(x, a, k); }, cases::Domain::Real); },
};

// Where several elements attain the maximum, the derivative is split evenly between them.
Tensor max_weights(const Ctx& c) {
  Tensor hit = cast(equal(c.x[0], to_keep(c.out, c)), c.x[0].dtype());
  return div(hit, sum(hit, axes_vec(c.p), true));
}
const Primitive max_p{
    .name = "max",
    .forward = [](auto x, auto& p) {
      return reduce_forward("max", x[0], p, -std::numeric_limits<double>::infinity(),
                            [](double a, double b) { return b > a || b != b ? b : a; });
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return sum(mul(t, max_weights(c)), axes_vec(c.p), c.p.keepdims); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return mul(to_keep(ct, c), max_weights(c)); },
    .batching = Batching::Leading,
    .saves = kSaveInputs | kSaveOutput,
    .cases = [] {
      auto cs = reduction_cases([](const Tensor& x, const Axes& a, bool k) { return max(x, a, k); }, cases::Domain::Real);
      cs.erase(cs.begin() + 5);  // the maximum of an empty set is -inf: no derivative to check
      cs.push_back(cases::single("ties [4]", {from_vector<double>({1.0, 3.0, 3.0, -2.0})},
                                 [](auto x) { return max(x[0], {}, false); }, false));
      return cs;
    },
    .kinks = "ties split the derivative evenly among the maximal elements",
};

const Primitive logsumexp_p{
    .name = "logsumexp",
    .forward = [](auto x, auto& p) {
      Shape axes = kernels::resolve_axes("logsumexp", p.axes, x[0].shape().size());
      Tensor kept = dispatch_float(x[0].dtype(), "logsumexp", [&](auto tag) {
        using T = decltype(tag);
        Tensor m = kernels::reduce_keepdims<T>(x[0], axes, -std::numeric_limits<double>::infinity(),
                                               [](double a, double b) { return b > a ? b : a; });
        // Shift by the maximum; an infinite maximum (all -inf, or a +inf) is not subtracted.
        Tensor ms = kernels::map_unary<T>(m, [](T v) { return std::isinf(v) ? T(0) : v; });
        Tensor e = kernels::map_binary<T>("logsumexp", x[0], ms, [](T a, T b) { return std::exp(a - b); });
        Tensor s = kernels::reduce_keepdims<T>(e, axes, 0.0, [](double a, double b) { return a + b; });
        return kernels::map_binary<T>("logsumexp", s, ms, [](T a, T b) { return std::log(a) + b; });
      });
      return drop_if_needed(kept, axes, p.keepdims);
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      return sum(mul(t, exp(sub(c.x[0], to_keep(c.out, c)))), axes_vec(c.p), c.p.keepdims);
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return mul(to_keep(ct, c), exp(sub(c.x[0], to_keep(c.out, c)))); },
    .batching = Batching::Leading,
    .saves = kSaveInputs | kSaveOutput,
    .cases = [] {
      auto cs = reduction_cases([](const Tensor& x, const Axes& a, bool k) { return logsumexp(x, a, k); }, cases::Domain::Logits);
      cs.erase(cs.begin() + 5);  // log of an empty sum is -inf
      return cs;
    },
};

const Primitive softmax_p{
    .name = "softmax",
    .forward = [](auto x, auto& p) { return softmax_forward("softmax", x[0], p, false); },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return mul(c.out, sub(t, sum(mul(c.out, t), {c.p.axis}, true))); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return mul(c.out, sub(ct, sum(mul(ct, c.out), {c.p.axis}, true))); },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] { return cases::along_axis([](const Tensor& x, std::int64_t a) { return softmax(x, a); }, cases::Domain::Logits); },
};

const Primitive log_softmax_p{
    .name = "log_softmax",
    .forward = [](auto x, auto& p) { return softmax_forward("log_softmax", x[0], p, true); },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return sub(t, sum(mul(exp(c.out), t), {c.p.axis}, true)); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return sub(ct, mul(exp(c.out), sum(ct, {c.p.axis}, true))); },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] { return cases::along_axis([](const Tensor& x, std::int64_t a) { return log_softmax(x, a); }, cases::Domain::Logits); },
};

const Primitive argmax_p{
    .name = "argmax",
    .forward = [](auto x, auto& p) {
      auto a = static_cast<std::size_t>(norm_axis("argmax", p.axis, x[0].shape().size()));
      Lanes L(x[0].shape(), a);
      if (L.n == 0) throw ShapeError(fmt::format("argmax: axis {} of shape {} is empty", p.axis, x[0].shape().str()));
      Shape oshape = x[0].shape();
      oshape.erase(a);
      Tensor o = empty(oshape, DType::i64);
      auto* d = kernels::out<std::int64_t>(o);
      kernels::dispatch_numeric(x[0].dtype(), "argmax", [&](auto tag) {
        using T = decltype(tag);
        const T* s = kernels::in<T>(x[0]);
        for (std::int64_t o2 = 0; o2 < L.outer; ++o2)
          for (std::int64_t i = 0; i < L.inner; ++i) {
            const T* lane = s + o2 * L.n * L.inner + i;
            std::int64_t best = 0;
            for (std::int64_t j = 1; j < L.n; ++j)
              if (lane[j * L.inner] > lane[best * L.inner]) best = j;
            d[o2 * L.inner + i] = best;
          }
        return 0;
      });
      return o;
    },
    .batching = Batching::Leading,
};

namespace {
// int64 (and bool) reductions, exact in int64: below, with the statistics.
Tensor integer_reduce(const Tensor& x, Params p, int code);
}  // namespace
Tensor sum(const Tensor& x, const Axes& axes, bool keepdims) {
  Params p = reduce_params("sum", x, axes, keepdims);
  if (!is_floating(x.dtype())) return integer_reduce(x, p, 0);
  if (p.axes.empty()) return x;
  return bind(sum_p, {x}, p);
}
Tensor mean(const Tensor& x, const Axes& axes, bool keepdims) {
  Params p = reduce_params("mean", x, axes, keepdims);
  if (p.axes.empty()) return x;
  return bind(mean_p, {x}, p);
}
Tensor max(const Tensor& x, const Axes& axes, bool keepdims) {
  Params p = reduce_params("max", x, axes, keepdims);
  if (!is_floating(x.dtype())) return integer_reduce(x, p, 1);
  if (p.axes.empty()) return x;
  return bind(max_p, {x}, p);
}
Tensor logsumexp(const Tensor& x, const Axes& axes, bool keepdims) {
  Params p = reduce_params("logsumexp", x, axes, keepdims);
  if (p.axes.empty()) return x;
  return bind(logsumexp_p, {x}, p);
}
Tensor softmax(const Tensor& x, std::int64_t axis) {
  Params p;
  p.axis = norm_axis("softmax", axis, x.shape().size()) - x.dim();
  return bind(softmax_p, {x}, p);
}
Tensor log_softmax(const Tensor& x, std::int64_t axis) {
  Params p;
  p.axis = norm_axis("log_softmax", axis, x.shape().size()) - x.dim();
  return bind(log_softmax_p, {x}, p);
}
Tensor argmax(const Tensor& x, std::int64_t axis) {
  Params p;
  p.axis = norm_axis("argmax", axis, x.shape().size()) - x.dim();
  return bind(argmax_p, {x}, p);
}

// ---- statistics (issue 21): prod, all, any and the composites min, argmin, var, std ----------

namespace {
// Π_{j≠i} x_j over the reduced axes, for every element i, with no division: the reduced axes are
// moved last and flattened into lanes of n, and the product of the elements before i (a scan
// from the front) is multiplied by the product of those after it (a scan from the back). The
// scans' own rules are scans, so every order of derivative is exact where elements are zero.
Tensor leave_one_out_products(const Tensor& x, const Shape& neg_axes) {
  const auto r = x.dim();
  std::vector<bool> reduced(static_cast<std::size_t>(r), false);
  for (auto a : neg_axes) reduced[static_cast<std::size_t>(a + r)] = true;
  Axes perm, inverse(static_cast<std::size_t>(r));
  for (std::int64_t i = 0; i < r; ++i)
    if (!reduced[static_cast<std::size_t>(i)]) perm.push_back(i);
  for (std::int64_t i = 0; i < r; ++i)
    if (reduced[static_cast<std::size_t>(i)]) perm.push_back(i);
  for (std::size_t i = 0; i < perm.size(); ++i) inverse[static_cast<std::size_t>(perm[i])] = static_cast<std::int64_t>(i);
  Tensor xp = permute(x, perm);
  const Shape lead = xp.shape().slice(0, xp.shape().size() - neg_axes.size());
  const std::int64_t n = xp.shape().slice(lead.size()).numel();
  if (n == 0) return zeros(x.shape(), x.dtype());
  Tensor lane = reshape(xp, lead + Shape{n});
  Tensor one = full(lead + Shape{1}, 1.0, x.dtype());
  Tensor before = linear_scan(pad(slice(lane, -1, 0, n - 1), -1, 1, 0), pad(one, -1, 0, n - 1), -1, false);
  Tensor after = linear_scan(pad(slice(lane, -1, 1, n), -1, 0, 1), pad(one, -1, n - 1, 0), -1, true);
  return permute(reshape(mul(before, after), xp.shape()), inverse);
}

// all / any over the axes: nonzero elements are true; a bool result, no derivative.
Tensor truth_reduce(std::string_view name, const Tensor& x, const Params& p, bool all) {
  Shape axes = kernels::resolve_axes(name, p.axes, x.shape().size());
  Tensor truth = empty(x.shape(), DType::f64);
  double* t = kernels::out<double>(truth);
  kernels::dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* s = kernels::in<T>(x);
    for (std::int64_t i = 0; i < x.numel(); ++i) t[i] = s[i] != T(0) ? 1.0 : 0.0;
    return 0;
  });
  Tensor kept = kernels::reduce_keepdims<double>(truth, axes, all ? 1.0 : 0.0,
                                                 [all](double a, double b) { return all ? std::min(a, b) : std::max(a, b); });
  return drop_if_needed(kernels::map_unary<double, bool>(kept, [](double v) { return v != 0.0; }), axes, p.keepdims);
}

// Sum, max, min or product (Params::code: IntegerReduce) of an int64 (or, for the sum and the
// product, bool) tensor over the axes, exact in int64 as NumPy and PyTorch: bools count as 0 and
// 1, a sum or product wraps on overflow (modulo 2^64) as theirs do, and a max or min of no
// elements is an error (there is no identity).
enum IntegerReduce : int { kIntSum = 0, kIntMax = 1, kIntMin = 2, kIntProd = 3 };
const char* integer_reduce_name(int code) {
  return code == kIntSum ? "sum" : code == kIntMax ? "max" : code == kIntMin ? "min" : "prod";
}

Tensor integer_reduce_forward(const Tensor& x, const Params& p) {
  const char* name = integer_reduce_name(p.code);
  const bool bool_ok = p.code == kIntSum || p.code == kIntProd;
  if (x.dtype() != DType::i64 && !(x.dtype() == DType::b8 && bool_ok))
    throw DTypeError(fmt::format("{}: expected float32, float64 or int64{}, got {}", name, bool_ok ? " (or bool)" : "",
                                 dtype_name(x.dtype())));
  const Shape axes = kernels::resolve_axes(name, p.axes, x.shape().size());
  const Shape oshape = keep_shape(x.shape(), p.axes);
  if ((p.code == kIntMax || p.code == kIntMin) && x.numel() == 0)
    throw ValueError(fmt::format("{}: no elements to reduce in shape {} (an integer {} has no identity)", name, x.shape().str(), name));
  Tensor o = empty(oshape, DType::i64);
  std::int64_t* d = kernels::out<std::int64_t>(o);
  const std::int64_t init = p.code == kIntSum ? 0 : p.code == kIntProd ? 1 : p.code == kIntMax ? std::numeric_limits<std::int64_t>::min()
                                                                       : std::numeric_limits<std::int64_t>::max();
  std::fill(d, d + oshape.numel(), init);
  // Walk the input in order, keeping the output offset of the current index: a reduced axis
  // contributes nothing to it.
  const auto r = x.shape().size();
  std::vector<std::int64_t> idx(r, 0), ostride(r, 0);
  for (std::int64_t i = static_cast<std::int64_t>(r) - 1, st = 1; i >= 0; --i) {
    ostride[static_cast<std::size_t>(i)] = oshape[static_cast<std::size_t>(i)] == 1 ? 0 : st;
    st *= oshape[static_cast<std::size_t>(i)];
  }
  auto walk = [&](auto combine) {
    std::int64_t off = 0;
    kernels::dispatch_all(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* s = kernels::in<T>(x);
      for (std::int64_t e = 0; e < x.numel(); ++e) {
        d[off] = combine(d[off], static_cast<std::int64_t>(s[e]));
        for (std::size_t k = r; k-- > 0;) {  // next index, last axis fastest
          off += ostride[k];
          if (++idx[k] < x.shape()[k]) break;
          off -= ostride[k] * idx[k];
          idx[k] = 0;
        }
      }
      return 0;
    });
  };
  if (p.code == kIntSum)  // unsigned: wraps without undefined behaviour
    walk([](std::int64_t a, std::int64_t b) { return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b)); });
  else if (p.code == kIntProd)
    walk([](std::int64_t a, std::int64_t b) { return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b)); });
  else if (p.code == kIntMax)
    walk([](std::int64_t a, std::int64_t b) { return std::max(a, b); });
  else
    walk([](std::int64_t a, std::int64_t b) { return std::min(a, b); });
  return drop_if_needed(o, axes, p.keepdims);
}
}  // namespace

const Primitive prod_p{
    .name = "prod",
    .forward = [](auto x, auto& p) { return reduce_forward("prod", x[0], p, 1.0, [](double a, double b) { return a * b; }); },
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      return sum(mul(t, leave_one_out_products(c.x[0], c.p.axes)), axes_vec(c.p), c.p.keepdims);
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return mul(to_keep(ct, c), leave_one_out_products(c.x[0], c.p.axes)); },
    .batching = Batching::Leading,
    .saves = kSaveInputs,
    .cases = [] {
      auto cs = reduction_cases([](const Tensor& x, const Axes& a, bool k) { return prod(x, a, k); }, cases::Domain::AwayFromZero);
      auto p = [](auto x) { return prod(x[0], {}, false); };
      cs.push_back(cases::single("one zero [4]", {from_vector<double>({1.5, 0.0, -2.0, 0.7})}, p));
      cs.push_back(cases::single("two zeros [5]", {from_vector<double>({0.0, 1.2, 0.0, -0.8, 2.0})}, p));
      cs.push_back(cases::single("zero [2,3] axis1", {from_vector<double>({0.5, 0.0, 2.0, -1.0, 1.5, 0.8}, {2, 3})},
                                 [](auto x) { return prod(x[0], {1}, false); }));
      return cs;
    },
    .kinks = "none: the derivative is the product of the other elements, formed by scans from both ends without "
             "division, so it is exact where elements are zero (to every order)",
};

const Primitive all_p{
    .name = "all",
    .forward = [](auto x, auto& p) { return truth_reduce("all", x[0], p, true); },
    .batching = Batching::Leading,
};
const Primitive any_p{
    .name = "any",
    .forward = [](auto x, auto& p) { return truth_reduce("any", x[0], p, false); },
    .batching = Batching::Leading,
};
// No derivative: its inputs are integers.
const Primitive integer_reduce_p{
    .name = "integer_reduce",
    .forward = [](auto x, auto& p) { return integer_reduce_forward(x[0], p); },
    .batching = Batching::Leading,
};
namespace {
Tensor integer_reduce(const Tensor& x, Params p, int code) {
  p.code = code;
  return bind(integer_reduce_p, {x}, p);
}
}  // namespace

Tensor prod(const Tensor& x, const Axes& axes, bool keepdims) {
  Params p = reduce_params("prod", x, axes, keepdims);
  if (!is_floating(x.dtype())) return integer_reduce(x, p, kIntProd);  // exact, not via double
  if (p.axes.empty()) return x;
  return bind(prod_p, {x}, p);
}
Tensor all(const Tensor& x, const Axes& axes, bool keepdims) {
  return bind(all_p, {x}, reduce_params("all", x, axes, keepdims));
}
Tensor any(const Tensor& x, const Axes& axes, bool keepdims) {
  return bind(any_p, {x}, reduce_params("any", x, axes, keepdims));
}
Tensor min(const Tensor& x, const Axes& axes, bool keepdims) {
  if (!is_floating(x.dtype())) return integer_reduce(x, reduce_params("min", x, axes, keepdims), 2);
  return neg(max(neg(x), axes, keepdims));
}
// argmax takes the first maximal element, so this is the first minimal one. For int64, ~x = -x - 1
// reverses the order without the overflow of -x at the most negative value.
Tensor argmin(const Tensor& x, std::int64_t axis) { return argmax(x.dtype() == DType::i64 ? bitwise_not(x) : neg(x), axis); }

// Σ (x - mean)² / (N - correction), N the number of reduced elements (the array API's var).
Tensor var(const Tensor& x, const Axes& axes, double correction, bool keepdims) {
  Params p = reduce_params("var", x, axes, keepdims);
  std::int64_t n = 1;
  for (auto a : p.axes) n *= x.shape()[static_cast<std::size_t>(a + x.dim())];
  Tensor d = sub(x, mean(x, axes, true));
  return div(sum(mul(d, d), axes, keepdims), scalar_tensor(static_cast<double>(n) - correction, x.dtype()));
}
// NOTE: sqrt has an infinite derivative at 0, so a constant lane gives an infinite (or NaN)
// derivative, as in PyTorch and JAX.
Tensor std(const Tensor& x, const Axes& axes, double correction, bool keepdims) { return sqrt(var(x, axes, correction, keepdims)); }

// log(e^a + e^b) = max(a, b) + log1p(e^-|a - b|): no overflow. At a = b the kinks of max and |·|
// give ½ each, the true derivative.
Tensor logaddexp(const Tensor& a, const Tensor& b) {
  return add(maximum(a, b), log1p(exp(neg(abs(sub(a, b))))));
}

const Primitive* const kReducePrimitives[] = {&sum_p,         &mean_p,   &max_p, &logsumexp_p, &softmax_p,
                                              &log_softmax_p, &argmax_p, &prod_p, &all_p,      &any_p, &integer_reduce_p};
std::span<const Primitive* const> reduce_primitives() { return kReducePrimitives; }

}  // namespace chainrule
