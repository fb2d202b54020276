// Fused, numerically stable losses.
#include <cmath>
#include <limits>

#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"
#include "chainrule/ops/array_api.h"

namespace chainrule {

namespace {

Tensor one_hot_like(const Tensor& labels, const Tensor& logits) {
  auto classes = logits.shape().back();
  return cast(equal(unsqueeze(labels, -1), arange(classes, DType::i64)), logits.dtype());
}
// d loss / d logits = softmax(logits) - onehot(labels), per row.
Tensor ce_grad(const Ctx& c) { return sub(softmax(c.x[0], -1), one_hot_like(c.x[1], c.x[0])); }

Axes trailing_axes(std::int64_t rank) {
  Axes a;
  for (std::int64_t i = -rank; i < 0; ++i) a.push_back(i);
  return a;
}
std::int64_t trailing_count(const Ctx& c) {
  const Shape& s = c.shape(0);
  return s.slice(s.size() - static_cast<std::size_t>(c.p.rank)).numel();
}

// The labels' values, each checked to be a class index in [0, classes).
const std::int64_t* checked_labels(const char* op, const Tensor& labels, std::int64_t classes) {
  const auto* y = kernels::in<std::int64_t>(labels);
  for (std::int64_t r = 0; r < labels.numel(); ++r)
    if (y[r] < 0 || y[r] >= classes)
      throw ValueError(fmt::format("{}: label {} at position {} is out of range for {} classes", op, y[r], r, classes));
  return y;
}

using cases::Domain;

}  // namespace

// Per-sample softmax cross-entropy: logsumexp(logits) - logits[label], computed in one pass
// per row with the row maximum subtracted, so logits of +-1e4 and rows of -inf stay finite.
const Primitive cross_entropy_p{
    .name = "cross_entropy",
    .forward = [](auto x, auto&) {
      const Tensor& logits = x[0];
      const Tensor& labels = x[1];
      if (labels.dtype() != DType::i64)
        throw DTypeError(fmt::format("cross_entropy: labels must be int64, got {} {}", dtype_name(labels.dtype()), labels.shape().str()));
      if (logits.dim() < 1 || logits.shape().slice(0, logits.shape().size() - 1) != labels.shape())
        throw ShapeError(fmt::format("cross_entropy: logits {} need labels of shape [..., C] minus C, got {}",
                                     logits.shape().str(), labels.shape().str()));
      const std::int64_t C = logits.shape().back(), rows = labels.numel();
      const auto* y = checked_labels("cross_entropy", labels, C);
      Tensor o = empty(labels.shape(), logits.dtype());
      kernels::dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
        using T = decltype(tag);
        const T* z = kernels::in<T>(logits);
        T* d = kernels::out<T>(o);
        for (std::int64_t r = 0; r < rows; ++r) {
          const T* row = z + r * C;
          T m = -std::numeric_limits<T>::infinity();
          for (std::int64_t j = 0; j < C; ++j) m = std::max(m, row[j]);
          if (std::isinf(m)) m = m > 0 ? m : T(0);
          double s = 0;
          for (std::int64_t j = 0; j < C; ++j) s += std::exp(static_cast<double>(row[j] - m));
          d[r] = static_cast<T>(std::log(s) + static_cast<double>(m) - static_cast<double>(row[y[r]]));
        }
        return 0;
      });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return sum(mul(ce_grad(c), t), {-1}); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return cross_entropy_backward(c.x[0], c.x[1], ct); },
    .batching = Batching::Materialize,
    .cases = [] {
      auto s = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Logits, seed); };
      auto lab = [](std::vector<std::int64_t> v, Shape sh) { return from_vector(v, sh); };
      auto ce = [](std::span<const Tensor> x) { return cross_entropy(x[0], x[1], Reduction::None); };
      return std::vector<OpCase>{
          cases::single("[3] label 1", {s({3}, 1), lab({1}, {})}, ce),
          cases::single("[4,3] labels", {s({4, 3}, 2), lab({0, 2, 1, 2}, {4})}, ce),
          cases::single("[1,1] single class", {s({1, 1}, 3), lab({0}, {1})}, ce),
          cases::single("[0,5] empty batch", {s({0, 5}, 4), lab({}, {0})}, ce),
          cases::single("[2,2,3] labels", {s({2, 2, 3}, 5), lab({0, 1, 2, 2}, {2, 2})}, ce),
          cases::single("[16,10] mean", {s({16, 10}, 6), lab({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}, {16})},
                        [](auto x) { return cross_entropy(x[0], x[1]); }),
      };
    },
};

// cross_entropy's derivative rule, (softmax(z) - onehot(y)) ⊙ ct[..., None], in one pass per row
// instead of eight primitives (PyTorch's log_softmax_backward). Linear in ct; in z its Jacobian
// per row is ct (diag(s) - s sᵀ), symmetric, so the JVP and the VJP in z share one formula.
namespace {
Tensor ce_backward_in_z(const Tensor& t, const Ctx& c) {
  Tensor s = softmax(c.x[0], -1);
  Tensor st = mul(s, t);
  return mul(unsqueeze(c.x[2], -1), sub(st, mul(s, sum(st, {-1}, true))));
}
}  // namespace
const Primitive cross_entropy_backward_p{
    .name = "cross_entropy_backward",
    .forward = [](auto x, auto&) {
      const Tensor& logits = x[0];
      const Tensor& labels = x[1];
      const Tensor& ct = x[2];
      check_same_dtype("cross_entropy_backward", logits, ct);
      if (labels.dtype() != DType::i64 || logits.dim() < 1 || logits.shape().slice(0, logits.shape().size() - 1) != labels.shape() ||
          ct.shape() != labels.shape())
        throw ShapeError(fmt::format("cross_entropy_backward: needs logits [..., C], int64 labels [...] and a cotangent [...], got {}, {} {}, {}",
                                     logits.shape().str(), dtype_name(labels.dtype()), labels.shape().str(), ct.shape().str()));
      const std::int64_t C = logits.shape().back(), rows = labels.numel();
      const auto* y = checked_labels("cross_entropy_backward", labels, C);
      Tensor o = empty(logits.shape(), logits.dtype());
      kernels::dispatch_float(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
        using T = decltype(tag);
        const T* z = kernels::in<T>(logits);
        const T* g = kernels::in<T>(ct);
        T* d = kernels::out<T>(o);
        for (std::int64_t r = 0; r < rows; ++r) {
          const T* row = z + r * C;
          T* out = d + r * C;
          T m = -std::numeric_limits<T>::infinity();
          for (std::int64_t j = 0; j < C; ++j) m = std::max(m, row[j]);
          if (std::isinf(m)) m = m > 0 ? m : T(0);
          double total = 0;
          for (std::int64_t j = 0; j < C; ++j) total += static_cast<double>(out[j] = std::exp(row[j] - m));
          const T scale = static_cast<T>(static_cast<double>(g[r]) / total);
          for (std::int64_t j = 0; j < C; ++j) out[j] *= scale;
          out[y[r]] -= g[r];
        }
        return 0;
      });
      return o;
    },
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      if (i == 0) return ce_backward_in_z(t, c);
      return i == 2 ? cross_entropy_backward(c.x[0], c.x[1], t) : Tensor();
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      if (i == 0) return ce_backward_in_z(ct, c);
      return i == 2 ? sum(mul(ce_grad(c), ct), {-1}) : Tensor();
    },
    .batching = Batching::Materialize,
    .cases = [] {
      auto z = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Logits, seed); };
      auto g = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); };
      auto lab = [](std::vector<std::int64_t> v, Shape sh) { return from_vector(v, sh); };
      auto f = [](std::span<const Tensor> x) { return cross_entropy_backward(x[0], x[1], x[2]); };
      return std::vector<OpCase>{
          cases::single("[3] label 1", {z({3}, 1), lab({1}, {}), g({}, 2)}, f),
          cases::single("[4,3] labels", {z({4, 3}, 3), lab({0, 2, 1, 2}, {4}), g({4}, 4)}, f),
          cases::single("[2,2,3] labels", {z({2, 2, 3}, 5), lab({0, 1, 2, 2}, {2, 2}), g({2, 2}, 6)}, f),
          cases::single("[0,5] empty batch", {z({0, 5}, 7), lab({}, {0}), g({0}, 8)}, f),
          cases::single("[1,1] single class", {z({1, 1}, 9), lab({0}, {1}), g({1}, 10)}, f),
          cases::single("[16,10] labels", {z({16, 10}, 11), lab({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}, {16}), g({16}, 12)}, f),
      };
    },
};

// Mean squared error over the trailing `rank` dimensions.
const Primitive mse_p{
    .name = "mse",
    .forward = [](auto x, auto& p) {
      check_same_dtype("mse", x[0], x[1]);
      if (x[0].shape() != x[1].shape())
        throw ShapeError(fmt::format("mse: shapes differ: {} and {}", x[0].shape().str(), x[1].shape().str()));
      const Shape& s = x[0].shape();
      Shape lead = s.slice(0, s.size() - static_cast<std::size_t>(p.rank));
      const std::int64_t rows = lead.numel(), n = s.slice(lead.size()).numel();
      Tensor o = empty(lead, x[0].dtype());
      kernels::dispatch_float(o.dtype(), "mse", [&](auto tag) {
        using T = decltype(tag);
        const T* a = kernels::in<T>(x[0]);
        const T* b = kernels::in<T>(x[1]);
        T* d = kernels::out<T>(o);
        for (std::int64_t r = 0; r < rows; ++r) {
          double acc = 0;
          for (std::int64_t j = 0; j < n; ++j) {
            double diff = static_cast<double>(a[r * n + j]) - static_cast<double>(b[r * n + j]);
            acc += diff * diff;
          }
          d[r] = static_cast<T>(acc / static_cast<double>(n));
        }
        return 0;
      });
      return o;
    },
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      Tensor prod = mul(mul(sub(c.x[0], c.x[1]), scalar_tensor(2.0, t.dtype())), t);
      if (c.p.rank > 0) prod = sum(prod, trailing_axes(c.p.rank));
      Tensor g = div(prod, scalar_tensor(static_cast<double>(trailing_count(c)), t.dtype()));
      return i == 0 ? g : neg(g);
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      // The cotangent has the leading shape; give it unit trailing axes to broadcast.
      Tensor ct_keep = reshape(ct, ct.shape() + Shape::filled(static_cast<std::size_t>(c.p.rank), 1));
      auto n = static_cast<double>(trailing_count(c));
      Tensor g = mul(ct_keep, mul(sub(c.x[0], c.x[1]), scalar_tensor(2.0 / n, ct.dtype())));
      return i == 0 ? g : neg(g);
    },
    .batching = Batching::Materialize,
    .cases = [] {
      auto s = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); };
      auto f = [](std::span<const Tensor> x) { return mse_loss(x[0], x[1]); };
      return std::vector<OpCase>{
          cases::single("[]", {s({}, 1), s({}, 2)}, f),         cases::single("[4]", {s({4}, 3), s({4}, 4)}, f),
          cases::single("[2,3]", {s({2, 3}, 5), s({2, 3}, 6)}, f), cases::single("[1,1]", {s({1, 1}, 7), s({1, 1}, 8)}, f),
          cases::single("[3,1,2]", {s({3, 1, 2}, 9), s({3, 1, 2}, 10)}, f),
          cases::single("[12,10]", {s({12, 10}, 11), s({12, 10}, 12)}, f),
      };
    },
};

namespace {
// PyTorch's reductions of per-element losses; BatchMean is kl_div's alone.
Tensor reduce_loss(std::string_view op, const Tensor& per, Reduction reduction) {
  switch (reduction) {
    case Reduction::Mean: return mean(per);
    case Reduction::Sum: return sum(per);
    case Reduction::None: return per;
    case Reduction::BatchMean:
      if (op != "kl_div") throw ValueError(fmt::format("{}: reduction batchmean is only for kl_div", op));
      return per.dim() == 0 ? per : div(sum(per), scalar_tensor(static_cast<double>(per.shape()[0]), per.dtype()));
  }
  return per;
}
void check_same_shape(std::string_view op, const Tensor& input, const Tensor& target) {
  if (input.shape() != target.shape())
    throw ShapeError(fmt::format("{}: input {} and target {} must have the same shape", op, input.shape().str(), target.shape().str()));
  check_same_dtype(std::string(op).c_str(), input, target);
}
Tensor constant(double v, const Tensor& like) { return scalar_tensor(v, like.dtype()); }
}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, Reduction reduction) {
  return reduce_loss("cross_entropy", bind(cross_entropy_p, {logits, labels}), reduction);
}
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& ct) {
  return bind(cross_entropy_backward_p, {logits, labels, ct});
}
Tensor mse_loss(const Tensor& a, const Tensor& b, Reduction reduction) {
  if (reduction == Reduction::Mean) {  // one fused pass
    Params p;
    p.rank = a.dim();
    return bind(mse_p, {a, b}, p);
  }
  check_same_shape("mse_loss", a, b);
  return reduce_loss("mse_loss", square(sub(a, b)), reduction);
}

// ---- PyTorch's other losses: exact composites of primitives ---------------------------------

Tensor nll_loss(const Tensor& log_probs, const Tensor& labels, Reduction reduction) {
  if (labels.dtype() != DType::i64)
    throw DTypeError(fmt::format("nll_loss: labels must be int64, got {} {}", dtype_name(labels.dtype()), labels.shape().str()));
  if (log_probs.dim() < 1 || log_probs.shape().slice(0, log_probs.shape().size() - 1) != labels.shape())
    throw ShapeError(fmt::format("nll_loss: log-probabilities {} need labels of shape [..., C] minus C, got {}",
                                 log_probs.shape().str(), labels.shape().str()));
  if (labels.level() == 0) checked_labels("nll_loss", labels, log_probs.shape().back());
  // -Σ_c logp_c onehot_c: a mask product, so its derivative is exact and no index is differentiated.
  return reduce_loss("nll_loss", neg(sum(mul(log_probs, one_hot_like(labels, log_probs)), {-1})), reduction);
}

Tensor binary_cross_entropy(const Tensor& probs, const Tensor& targets, Reduction reduction) {
  check_same_shape("binary_cross_entropy", probs, targets);
  // NOTE: PyTorch clamps each log at -100 so that p = 0 or 1 gives a finite loss; the clamp's
  // kink is where p < e^-100 (or 1 - p is), outside the probabilities a model produces.
  const Tensor floor = constant(-100.0, probs);
  Tensor log_p = maximum(log(probs), floor), log_q = maximum(log1p(neg(probs)), floor);
  Tensor per = neg(add(mul(targets, log_p), mul(sub(constant(1.0, targets), targets), log_q)));
  return reduce_loss("binary_cross_entropy", per, reduction);
}

// NOTE: written as max(z, 0) - z y + log1p(exp(-|z|)) rather than with log σ(z): the exponent is
// never positive, so nothing overflows for logits of ±1e4. At z = 0, maximum's tie rule (½) and
// abs'(0) = 0 give ½ - y = σ(0) - y: the derivative is σ(z) - y everywhere (relu'(0) = 0 would not).
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets, Reduction reduction) {
  check_same_shape("binary_cross_entropy_with_logits", logits, targets);
  Tensor per = add(sub(maximum(logits, constant(0.0, logits)), mul(logits, targets)), log1p(exp(neg(abs(logits)))));
  return reduce_loss("binary_cross_entropy_with_logits", per, reduction);
}

// Both branches are finite everywhere, so where() passes no NaN into the derivative.
Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction reduction, double delta) {
  check_same_shape("huber_loss", input, target);
  if (!(delta > 0)) throw ValueError(fmt::format("huber_loss: delta must be positive, got {}", delta));
  Tensor d = sub(input, target), a = abs(d);
  Tensor per = where(less(a, constant(delta, a)), mul(constant(0.5, d), mul(d, d)),
                     mul(constant(delta, a), sub(a, constant(0.5 * delta, a))));
  return reduce_loss("huber_loss", per, reduction);
}

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction, double beta) {
  check_same_shape("smooth_l1_loss", input, target);
  if (!(beta >= 0)) throw ValueError(fmt::format("smooth_l1_loss: beta must be >= 0, got {}", beta));
  Tensor a = abs(sub(input, target));
  if (beta == 0) return reduce_loss("smooth_l1_loss", a, reduction);
  Tensor per = where(less(a, constant(beta, a)), mul(constant(0.5 / beta, a), mul(a, a)), sub(a, constant(0.5 * beta, a)));
  return reduce_loss("smooth_l1_loss", per, reduction);
}

Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  check_same_shape("l1_loss", input, target);
  return reduce_loss("l1_loss", abs(sub(input, target)), reduction);
}

Tensor kl_div(const Tensor& input, const Tensor& target, Reduction reduction, bool log_target) {
  check_same_shape("kl_div", input, target);
  Tensor per;
  if (log_target) {
    per = mul(exp(target), sub(target, input));
  } else {
    // NOTE: t log t is taken as 0 at t = 0 (xlogy): log sees 1 there, so neither the value nor the
    // derivative meets log(0); the derivative in t at t = 0 is then -input.
    Tensor safe = where(greater(target, constant(0.0, target)), target, constant(1.0, target));
    per = mul(target, sub(log(safe), input));
  }
  return reduce_loss("kl_div", per, reduction);
}

const Primitive* const kLossPrimitives[] = {&cross_entropy_p, &cross_entropy_backward_p, &mse_p};
std::span<const Primitive* const> loss_primitives() { return kLossPrimitives; }

}  // namespace chainrule
