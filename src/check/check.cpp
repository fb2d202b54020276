#include "chainrule/autodiff/check.h"

#include <fmt/format.h>

#include <cmath>
#include <map>

#include "chainrule/autodiff/transforms.h"
#include "chainrule/autodiff/vmap.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/random.h"

namespace chainrule {

namespace {

// fn with only the float inputs as arguments (the others held fixed).
struct Split {
  const CheckFn& fn;
  std::vector<Tensor> all;
  std::vector<std::size_t> diff;  // indices of the float inputs

  std::vector<Tensor> diff_inputs() const {
    std::vector<Tensor> d;
    for (auto i : diff) d.push_back(all[i]);
    return d;
  }
  Tensor operator()(const std::vector<Tensor>& ds) const {
    std::vector<Tensor> xs = all;
    for (std::size_t k = 0; k < diff.size(); ++k) xs[diff[k]] = ds[k];
    return fn(xs);
  }
};

std::vector<double> flat(const Tensor& t) { return cast(t.detach(), DType::f64).to_vector<double>(); }

Tensor unit(const Tensor& like, std::int64_t j) {
  std::vector<double> e(static_cast<std::size_t>(like.numel()), 0.0);
  e[static_cast<std::size_t>(j)] = 1.0;
  return tensor(e, like.shape(), like.dtype());
}

// Dense Jacobian [m, n_total] as rows of doubles.
using Jac = std::vector<std::vector<double>>;

Jac zero_jacobian(const std::vector<Tensor>& xs, std::int64_t m) {
  std::int64_t n = 0;
  for (const auto& x : xs) n += x.numel();
  return Jac(static_cast<std::size_t>(m), std::vector<double>(static_cast<std::size_t>(n)));
}

Jac jacobian_fd(const Split& f, const std::vector<Tensor>& xs, std::int64_t m, double eps) {
  Jac J = zero_jacobian(xs, m);
  std::int64_t col = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    for (std::int64_t j = 0; j < xs[i].numel(); ++j, ++col) {
      std::vector<Tensor> plus = xs, minus = xs;
      plus[i] = xs[i].contiguous_clone();
      minus[i] = xs[i].contiguous_clone();
      plus[i].mutable_data<double>()[j] += eps;
      minus[i].mutable_data<double>()[j] -= eps;
      auto yp = flat(f(plus)), ym = flat(f(minus));
      for (std::int64_t k = 0; k < m; ++k)
        J[static_cast<std::size_t>(k)][static_cast<std::size_t>(col)] = (yp[static_cast<std::size_t>(k)] - ym[static_cast<std::size_t>(k)]) / (2 * eps);
    }
  }
  return J;
}

Jac jacobian_rev(const Split& f, const std::vector<Tensor>& xs, const Tensor& y) {
  auto [out, pullback] = vjp([&](const std::vector<Tensor>& ds) { return f(ds); }, xs);
  Jac J;
  for (std::int64_t k = 0; k < y.numel(); ++k) {
    auto g = pullback(unit(out, k));
    std::vector<double> row;
    for (const auto& gi : g) {
      auto v = flat(gi);
      row.insert(row.end(), v.begin(), v.end());
    }
    J.push_back(std::move(row));
  }
  return J;
}

Jac jacobian_fwd(const Split& f, const std::vector<Tensor>& xs, std::int64_t m) {
  Jac J = zero_jacobian(xs, m);
  std::int64_t col = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    for (std::int64_t j = 0; j < xs[i].numel(); ++j, ++col) {
      std::vector<Tensor> ts;
      for (std::size_t q = 0; q < xs.size(); ++q) ts.push_back(q == i ? unit(xs[q], j) : zeros_like(xs[q]));
      auto [y, y_t] = jvp([&](const std::vector<Tensor>& ds) { return f(ds); }, xs, ts);
      auto v = flat(y_t);
      for (std::int64_t k = 0; k < m; ++k) J[static_cast<std::size_t>(k)][static_cast<std::size_t>(col)] = v[static_cast<std::size_t>(k)];
    }
  }
  return J;
}

// Batched Jacobians (vmap) of each input separately, concatenated along columns.
Jac jacobian_batched(const Split& f, const std::vector<Tensor>& xs, std::int64_t m, bool forward) {
  Jac J = zero_jacobian(xs, m);
  std::int64_t col0 = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    auto fi = [&](const Tensor& xi) {
      std::vector<Tensor> ds = xs;
      ds[i] = xi;
      return f(ds);
    };
    Tensor Ji = forward ? jacfwd(fi)(xs[i]) : jacrev(fi)(xs[i]);
    auto v = flat(Ji);
    const std::int64_t ni = xs[i].numel();
    for (std::int64_t k = 0; k < m; ++k)
      for (std::int64_t j = 0; j < ni; ++j)
        J[static_cast<std::size_t>(k)][static_cast<std::size_t>(col0 + j)] = v[static_cast<std::size_t>(k * ni + j)];
    col0 += ni;
  }
  return J;
}

// vmap over two nearby points of the batched Jacobians (jacfwd or jacrev of each input), row b
// against the Jacobian at point b alone. A rule that reads a concrete value, or whose batching
// mixes examples, fails here: under vmap no single value exists.
Jac jacobian_vmapped(const Split& f, const std::vector<Tensor>& points, std::int64_t b, std::int64_t m, bool forward) {
  Jac J = zero_jacobian(points, m);
  for (auto& row : J) row.assign(row.size() / 2, 0.0);  // the columns of one point
  std::int64_t col0 = 0;
  for (std::size_t i = 0; i < points.size(); ++i) {
    auto g = [&](const std::vector<Tensor>& ds) {
      auto fi = [&](const Tensor& xi) {
        std::vector<Tensor> e = ds;
        e[i] = xi;
        return f(e);
      };
      return forward ? jacfwd(fi)(ds[i]) : jacrev(fi)(ds[i]);
    };
    Tensor Jb = slice(vmap(g, {InAxis{0}}, 0, Randomness::Same)(points), 0, b, b + 1);  // one function at both points
    auto v = flat(Jb);
    const std::int64_t ni = points[i].numel() / 2;
    for (std::int64_t k = 0; k < m; ++k)
      for (std::int64_t j = 0; j < ni; ++j)
        J[static_cast<std::size_t>(k)][static_cast<std::size_t>(col0 + j)] = v[static_cast<std::size_t>(k * ni + j)];
    col0 += ni;
  }
  return J;
}

struct Compare {
  CheckReport& r;
  const CheckOptions& o;
  bool record_error;
  void operator()(const std::string& what, const Jac& ad, const Jac& ref, double atol, double rtol) {
    r.checks.push_back(what);
    for (std::size_t k = 0; k < ref.size(); ++k)
      for (std::size_t j = 0; j < ref[k].size(); ++j) {
        double a = ad[k][j], b = ref[k][j], d = std::abs(a - b);
        if (record_error && std::isfinite(d)) r.max_abs_error = std::max(r.max_abs_error, d);
        if (!(d <= atol + rtol * std::abs(b)) && r.pass) {
          r.pass = false;
          r.failure = fmt::format("{}: d out[{}] / d in[{}] = {:.10g}, expected {:.10g} (|diff| {:.3g})", what, k, j, a, b, d);
        }
      }
  }
};

double dot(const std::vector<double>& a, const std::vector<double>& b, double* scale) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i], *scale += std::abs(a[i] * b[i]);
  return s;
}

}  // namespace

CheckReport check_grads(const CheckFn& fn, const std::vector<Tensor>& inputs, const CheckOptions& o) {
  CheckReport r;
  Split f{fn, inputs, {}};
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].dtype() == DType::f64) f.diff.push_back(i);
    else if (inputs[i].dtype() == DType::f32)
      throw DTypeError("check_grads: inputs must be float64 (float32 is checked against them)");
  auto xs = f.diff_inputs();
  Tensor y = f(xs);
  const std::int64_t m = y.numel();
  Compare cmp{r, o, true};

  Jac fd = jacobian_fd(f, xs, m, o.eps);
  Jac rev = jacobian_rev(f, xs, y);
  cmp("reverse vs finite differences", rev, fd, o.atol, o.rtol);
  Jac fwd = jacobian_fwd(f, xs, m);
  cmp("forward vs finite differences", fwd, fd, o.atol, o.rtol);
  cmp.record_error = false;
  cmp("jacrev (batched) vs reverse", jacobian_batched(f, xs, m, false), rev, 1e-12, 1e-10);
  cmp("jacfwd (batched) vs forward", jacobian_batched(f, xs, m, true), fwd, 1e-12, 1e-10);

  // <v, J u> = <Jᵀ v, u> for random u, v.
  Generator gen(o.seed + 7);
  bool any_empty = false;
  for (const auto& x : xs) any_empty |= x.numel() == 0;
  if (m > 0 && !xs.empty() && !any_empty) {
    // The second point: each input scaled by 1 + 1e-6 u (inside every sampling domain).
    std::vector<Tensor> second, points;
    for (const auto& x : xs) {
      second.push_back(mul(x, add(scalar_tensor(1.0, DType::f64), mul(scalar_tensor(1e-6, DType::f64), randn(x.shape(), gen, DType::f64)))));
      points.push_back(stack({x, second.back()}));
    }
    for (bool forward : {true, false}) {
      const char* name = forward ? "vmap of jacfwd vs jacfwd" : "vmap of jacrev vs jacrev";
      cmp(name, jacobian_vmapped(f, points, 0, m, forward), jacobian_batched(f, xs, m, forward), 1e-12, 1e-10);
      cmp(name, jacobian_vmapped(f, points, 1, m, forward), jacobian_batched(f, second, m, forward), 1e-12, 1e-10);
    }
  }

  std::vector<Tensor> us;
  for (const auto& x : xs) us.push_back(randn(x.shape(), gen, DType::f64));
  Tensor v = randn(y.shape(), gen, DType::f64);
  {
    r.checks.push_back("jvp/vjp identity");
    auto [y1, ju] = jvp([&](const std::vector<Tensor>& ds) { return f(ds); }, xs, us);
    auto [y2, pullback] = vjp([&](const std::vector<Tensor>& ds) { return f(ds); }, xs);
    auto jtv = pullback(v);
    double scale = 0, lhs = dot(flat(v), flat(ju), &scale), rhs = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) rhs += dot(flat(jtv[i]), flat(us[i]), &scale);
    if (!(std::abs(lhs - rhs) <= o.identity_rtol * scale + 1e-300) && r.pass) {
      r.pass = false;
      r.failure = fmt::format("jvp/vjp identity: <v, J u> = {:.17g} but <Jᵀ v, u> = {:.17g} (scale {:.3g})", lhs, rhs, scale);
    }
  }

  if (o.second_order && !xs.empty() && m > 0) {
    // h(x) = <v, J(x) u> in two ways (through the VJP and through the JVP); its gradient by
    // reverse and forward mode is checked against finite differences of h.
    auto h_rev = [&](const std::vector<Tensor>& ds) {
      auto [yy, pb] = vjp([&](const std::vector<Tensor>& e) { return f(e); }, ds);
      auto g = pb(v);
      Tensor s = scalar_tensor(0.0, DType::f64);
      for (std::size_t i = 0; i < g.size(); ++i) s = add(s, sum(mul(g[i], us[i])));
      return s;
    };
    auto h_fwd = [&](const std::vector<Tensor>& ds) {
      auto [yy, t] = jvp([&](const std::vector<Tensor>& e) { return f(e); }, ds, us);
      return sum(mul(t, v));
    };
    CheckFn hr = [&](std::span<const Tensor> a) { return h_rev(std::vector<Tensor>(a.begin(), a.end())); };
    CheckFn hf = [&](std::span<const Tensor> a) { return h_fwd(std::vector<Tensor>(a.begin(), a.end())); };
    for (auto [name, h] : {std::pair{"second order, over the VJP", &hr}, std::pair{"second order, over the JVP", &hf}}) {
      Split g{*h, xs, {}};
      for (std::size_t i = 0; i < xs.size(); ++i) g.diff.push_back(i);
      Jac gfd = jacobian_fd(g, xs, 1, o.eps);
      cmp(std::string(name) + " (reverse)", jacobian_rev(g, xs, (*h)(xs)), gfd, o.atol * 10, o.rtol * 10);
      cmp(std::string(name) + " (forward)", jacobian_fwd(g, xs, 1), gfd, o.atol * 10, o.rtol * 10);
      cmp(std::string(name) + " (jacfwd, batched)", jacobian_batched(g, xs, 1, true), gfd, o.atol * 10, o.rtol * 10);
      cmp(std::string(name) + " (jacrev, batched)", jacobian_batched(g, xs, 1, false), gfd, o.atol * 10, o.rtol * 10);
    }
  }

  if (o.float32 && m > 0) {
    std::vector<Tensor> all32 = inputs;
    for (auto i : f.diff) all32[i] = cast(inputs[i], DType::f32);
    CheckFn f32 = [&](std::span<const Tensor> a) { return fn(a); };
    Split s32{f32, all32, f.diff};
    auto xs32 = s32.diff_inputs();
    Jac rev32 = jacobian_rev(s32, xs32, s32(xs32));
    r.checks.push_back("float32 vs float64");
    for (std::size_t k = 0; k < rev.size(); ++k)
      for (std::size_t j = 0; j < rev[k].size(); ++j) {
        double d = std::abs(rev32[k][j] - rev[k][j]);
        if (!(d <= 1e-4 * std::max(1.0, std::abs(rev[k][j]))) && r.pass) {
          r.pass = false;
          r.failure = fmt::format("float32 vs float64: d out[{}] / d in[{}] = {:.8g} in float32, {:.8g} in float64", k, j,
                                  rev32[k][j], rev[k][j]);
        }
      }
  }

  if (o.half && m > 0)
    for (const auto& tol : kHalfTolerances) {
      // Against float64 on the same rounded inputs: only the rounding inside fn is measured.
      std::vector<Tensor> half_in = inputs, ref_in = inputs;
      for (auto i : f.diff) {
        half_in[i] = cast(inputs[i], tol.dtype);
        ref_in[i] = cast(half_in[i], DType::f64);
      }
      const std::vector<double> want = flat(fn(ref_in)), got = flat(fn(half_in));
      // The scale of the values fn rounds along the way: its inputs' and its output's.
      double scale = 1;
      for (double w : want)
        if (std::isfinite(w)) scale = std::max(scale, std::abs(w));
      for (auto i : f.diff)
        for (double v : flat(ref_in[i]))
          if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
      const double max_finite = tol.dtype == DType::f16 ? 65504.0 : 3.3895313892515355e38;
      r.checks.push_back(fmt::format("{} vs float64", dtype_name(tol.dtype)));
      for (std::size_t k = 0; k < want.size() && k < got.size(); ++k) {
        const double w = want[k], g = got[k];
        const bool ok = (std::isnan(w) && std::isnan(g)) || (w == g) ||
                        (std::isinf(g) && std::abs(w) > max_finite && std::signbit(g) == std::signbit(w)) ||
                        std::abs(g - w) <= tol.rtol * std::abs(w) + tol.atol * scale;
        if (!ok && r.pass) {
          r.pass = false;
          r.failure = fmt::format("{} vs float64: out[{}] = {:.8g} in {}, {:.8g} in float64 (tolerance {:.3g} + {:.3g} x {:.3g})", dtype_name(tol.dtype), k,
                                  g, dtype_name(tol.dtype), w, tol.rtol * std::abs(w), tol.atol, scale);
        }
      }
    }
  return r;
}

std::vector<std::string> case_kinds(std::span<const Tensor> inputs, const Tensor& output) {
  bool scalar = output.dim() == 0, broadcast = false, empty = output.numel() == 0, unit_axis = false;
  std::int64_t largest = 0, largest_in = 0;
  const Shape* first = nullptr;
  for (const auto& x : inputs) {
    empty |= x.numel() == 0;
    for (auto d : x.shape().vec()) unit_axis |= d == 1;
    largest_in = std::max(largest_in, x.numel());
    if (!is_floating(x.dtype())) continue;
    scalar |= x.dim() == 0;
    if (first && x.shape() != *first) broadcast = true;
    if (!first) first = &x.shape();
    largest = std::max(largest, x.numel());
  }
  broadcast |= output.numel() > largest_in;
  std::vector<std::string> k;
  if (scalar) k.emplace_back("scalar");
  if (broadcast) k.emplace_back("broadcast");
  if (empty) k.emplace_back("empty");
  if (unit_axis) k.emplace_back("size-1 axes");
  if (largest >= 2 && largest <= 64) k.emplace_back("small");
  if (largest > 64) k.emplace_back("medium");
  return k;
}

namespace {

// Cases derived from a primitive's own: the first float input of its largest case with at most 64
// elements is made a function of a scalar, and fed through broadcast_to from a size-1 axis (its
// first slice), so every primitive also meets a scalar and a stride-0 (broadcast) input.
std::vector<OpCase> derived_cases(const std::vector<OpCase>& cs, bool want_scalar, bool want_broadcast) {
  const OpCase* base = nullptr;
  std::size_t k = 0;
  for (const auto& c : cs)
    for (std::size_t i = 0; i < c.inputs.size(); ++i) {
      const Tensor& x = c.inputs[i];
      if (!is_floating(x.dtype())) continue;
      if (x.dim() >= 1 && x.numel() >= 2 && x.numel() <= 64 && (!base || x.numel() > base->inputs[k].numel())) base = &c, k = i;
      break;  // the first float input only
    }
  std::vector<OpCase> out;
  if (!base) return out;
  const Shape shape = base->inputs[k].shape();
  auto through_broadcast = [fn = base->fn, k, shape](std::span<const Tensor> x) {
    std::vector<Tensor> xs(x.begin(), x.end());
    xs[k] = broadcast_to(xs[k], shape);
    return fn(xs);
  };
  if (want_scalar) {
    // Input k becomes s * x0 for a rank-0 s = 1 (x0 the case's input): the same point, now a
    // function of a scalar (a plain broadcast scalar would make softmax constant).
    OpCase c = *base;
    c.label = fmt::format("{} (derived: input {} scaled by a scalar)", base->label, k);
    c.inputs[k] = scalar_tensor(1.0, DType::f64);
    c.fn = [fn = base->fn, k, x0 = base->inputs[k]](std::span<const Tensor> x) {
      std::vector<Tensor> xs(x.begin(), x.end());
      xs[k] = mul(xs[k], cast(x0, xs[k].dtype()));
      return fn(xs);
    };
    out.push_back(std::move(c));
  }
  std::size_t axis = 0;
  while (axis < shape.size() && shape[axis] < 2) ++axis;
  if (want_broadcast && axis < shape.size()) {
    OpCase c = *base;
    c.label = fmt::format("{} (derived: input {} broadcast along axis {})", base->label, k, axis);
    c.inputs[k] = slice(base->inputs[k], static_cast<std::int64_t>(axis), 0, 1).contiguous_clone();
    c.fn = through_broadcast;
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

PrimitiveReport check_primitive(const Primitive& p, const CheckOptions& opts) {
  PrimitiveReport rep;
  rep.name = std::string(p.name);
  for (const char* k : kCaseKinds) rep.coverage[k] = 0;
  // Kinds of input with no derivative to check, as in PyTorch.
  if (p.name == "max") rep.not_applicable["empty"] = "the maximum of an empty set is -inf, with no derivative (PyTorch raises)";
  if (p.name == "logsumexp") rep.not_applicable["empty"] = "the log of an empty sum is -inf, with no derivative";
  if (p.name == "mse") rep.not_applicable["empty"] = "the mean of no elements is NaN, as in PyTorch";
  if (!p.cases) return rep;
  std::vector<OpCase> cases = p.cases();
  {
    std::map<std::string, int> own;
    for (const auto& c : cases)
      try {
        for (const auto& k : case_kinds(c.inputs, c.fn(c.inputs))) ++own[k];
      } catch (const std::exception&) {
      }
    for (auto& c : derived_cases(cases, own["scalar"] == 0, own["broadcast"] == 0)) cases.push_back(std::move(c));
  }
  for (const auto& c : cases) {
    ++rep.cases;
    rep.labels.push_back(c.label);
    try {
      auto kinds = case_kinds(c.inputs, c.fn(c.inputs));
      // A derived broadcast is one even where the shapes alone do not show it (a reduction).
      if (c.label.find("(derived: input") != std::string::npos && c.label.find("broadcast along") != std::string::npos &&
          std::find(kinds.begin(), kinds.end(), "broadcast") == kinds.end())
        kinds.emplace_back("broadcast");
      for (const auto& k : kinds) ++rep.coverage[k];
    } catch (const std::exception&) {
      // check_grads below reports the failure
    }
    CheckOptions o = opts;
    o.second_order = opts.second_order && c.second_order;
    if (c.eps > 0) o.eps = c.eps;
    if (c.atol > 0) o.atol = c.atol;
    if (c.identity_rtol > 0) o.identity_rtol = c.identity_rtol;
    try {
      CheckReport r = check_grads(c.fn, c.inputs, o);
      rep.max_abs_error = std::max(rep.max_abs_error, r.max_abs_error);
      for (const auto& name : r.checks)
        if (std::find(rep.checks.begin(), rep.checks.end(), name) == rep.checks.end()) rep.checks.push_back(name);
      if (!r.pass) {
        rep.pass = false;
        rep.failures.push_back(c.label + ": " + r.failure);
      }
    } catch (const std::exception& e) {
      rep.pass = false;
      rep.failures.push_back(c.label + ": threw " + e.what());
    }
  }
  return rep;
}

}  // namespace chainrule
