// Issue 21's ops (chainrule/ops/array_api.h): values against formulas and reference loops written
// out here, reductions, errors, and derivatives by check_grads where the op is a composite (the
// primitives' rules are checked with every other primitive in test_core_primitives.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <numeric>
#include <vector>

#include "chainrule/autodiff/check.h"
#include "chainrule/chainrule.h"
#include "chainrule/ops/array_api.h"

using namespace chainrule;

namespace {

Tensor f64s(std::vector<double> v, Shape s = {}) {
  if (s.empty()) s = Shape{static_cast<std::int64_t>(v.size())};
  return from_vector(v, s);
}
std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }
double total(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

void expect_near(const std::vector<double>& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << what << " at " << i;
}

// ---- losses -------------------------------------------------------------------------------------

const std::vector<double> kIn = {-2.5, -0.4, 0.1, 0.9, 1.7, 3.2};
const std::vector<double> kTarget = {-0.5, 0.3, -0.2, 2.2, 1.0, -1.0};

// Checks the three reductions of an elementwise loss against its per-element formula.
template <class Loss, class Ref>
void expect_elementwise_loss(Loss loss, Ref ref, const char* what) {
  Tensor a = f64s(kIn, {2, 3}), b = f64s(kTarget, {2, 3});
  std::vector<double> want;
  for (std::size_t i = 0; i < kIn.size(); ++i) want.push_back(ref(kIn[i], kTarget[i]));
  expect_near(vals(loss(a, b, Reduction::None)), want, 1e-14, what);
  EXPECT_NEAR(loss(a, b, Reduction::Sum).item(), total(want), 1e-13) << what;
  EXPECT_NEAR(loss(a, b, Reduction::Mean).item(), total(want) / 6, 1e-14) << what;
  EXPECT_EQ(loss(a, b, Reduction::None).shape(), (Shape{2, 3})) << what;
  EXPECT_THROW(loss(a, b, Reduction::BatchMean), ValueError) << what;
  EXPECT_THROW(loss(a, f64s(kTarget), Reduction::Mean), ShapeError) << what;
  auto r = check_grads([&](std::span<const Tensor> x) { return loss(x[0], x[1], Reduction::Sum); }, {a, b});
  EXPECT_TRUE(r.pass) << what << ": " << r.failure;
}

TEST(Losses, RegressionLossesMatchTheirFormulas) {
  expect_elementwise_loss([](auto a, auto b, Reduction r) { return mse_loss(a, b, r); },
                          [](double x, double y) { return (x - y) * (x - y); }, "mse_loss");
  expect_elementwise_loss([](auto a, auto b, Reduction r) { return l1_loss(a, b, r); },
                          [](double x, double y) { return std::fabs(x - y); }, "l1_loss");
  for (double delta : {1.0, 0.5, 2.5}) {
    expect_elementwise_loss([delta](auto a, auto b, Reduction r) { return huber_loss(a, b, r, delta); },
                            [delta](double x, double y) {
                              double d = std::fabs(x - y);
                              return d < delta ? 0.5 * d * d : delta * (d - 0.5 * delta);
                            },
                            "huber_loss");
    expect_elementwise_loss([delta](auto a, auto b, Reduction r) { return smooth_l1_loss(a, b, r, delta); },
                            [delta](double x, double y) {
                              double d = std::fabs(x - y);
                              return d < delta ? 0.5 * d * d / delta : d - 0.5 * delta;
                            },
                            "smooth_l1_loss");
  }
  // beta = 0 is l1; huber = beta * smooth_l1 for beta = delta
  Tensor a = f64s(kIn), b = f64s(kTarget);
  expect_near(vals(smooth_l1_loss(a, b, Reduction::None, 0.0)), vals(l1_loss(a, b, Reduction::None)), 0, "beta 0");
  EXPECT_THROW(huber_loss(a, b, Reduction::Mean, 0.0), ValueError);
  EXPECT_THROW(smooth_l1_loss(a, b, Reduction::Mean, -1.0), ValueError);
}

TEST(Losses, BinaryCrossEntropyOnProbabilitiesAndLogits) {
  const std::vector<double> z = {-3.0, -0.7, 0.0, 0.4, 2.0, 5.0}, y = {0.0, 1.0, 0.3, 1.0, 0.0, 0.8};
  std::vector<double> p;
  for (double v : z) p.push_back(1 / (1 + std::exp(-v)));
  std::vector<double> want;
  for (std::size_t i = 0; i < z.size(); ++i) want.push_back(-(y[i] * std::log(p[i]) + (1 - y[i]) * std::log(1 - p[i])));
  expect_near(vals(binary_cross_entropy(f64s(p), f64s(y), Reduction::None)), want, 1e-13, "bce");
  expect_near(vals(binary_cross_entropy_with_logits(f64s(z), f64s(y), Reduction::None)), want, 1e-13, "bce logits");
  EXPECT_NEAR(binary_cross_entropy(f64s(p), f64s(y)).item(), total(want) / 6, 1e-14);
  // PyTorch clamps the logs at -100: p = 0 with target 1 costs 100, not inf
  EXPECT_EQ(binary_cross_entropy(f64s({0.0, 1.0}), f64s({1.0, 0.0}), Reduction::None).to_vector<double>(),
            (std::vector<double>{100.0, 100.0}));
  // stable for huge logits
  auto big = vals(binary_cross_entropy_with_logits(f64s({1e4, -1e4}), f64s({0.0, 1.0}), Reduction::None));
  EXPECT_DOUBLE_EQ(big[0], 1e4);
  EXPECT_DOUBLE_EQ(big[1], 1e4);
  // d/dz = σ(z) - y
  Tensor g = grad([&](const Tensor& v) { return binary_cross_entropy_with_logits(v, f64s(y), Reduction::Sum); })(f64s(z));
  for (std::size_t i = 0; i < z.size(); ++i) EXPECT_NEAR(vals(g)[i], p[i] - y[i], 1e-14);
  auto r = check_grads([](std::span<const Tensor> x) { return binary_cross_entropy(x[0], x[1], Reduction::Sum); },
                       {f64s(p), f64s(y)});
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(Losses, NllLossIsCrossEntropyOnLogSoftmax) {
  Generator gen(3);
  Tensor z = randn({4, 5}, gen, DType::f64);
  Tensor labels = from_vector<std::int64_t>({0, 4, 2, 2});
  Tensor lp = log_softmax(z, -1);
  auto lpv = vals(lp);
  const std::int64_t lab[] = {0, 4, 2, 2};
  std::vector<double> want;
  for (int r = 0; r < 4; ++r) want.push_back(-lpv[static_cast<std::size_t>(r * 5 + lab[r])]);
  expect_near(vals(nll_loss(lp, labels, Reduction::None)), want, 1e-15, "nll");
  EXPECT_NEAR(nll_loss(lp, labels).item(), total(want) / 4, 1e-15);
  EXPECT_NEAR(nll_loss(lp, labels, Reduction::Sum).item(), cross_entropy(z, labels, Reduction::Sum).item(), 1e-13);
  EXPECT_THROW(nll_loss(lp, from_vector<std::int64_t>({0, 5, 1, 1})), ValueError);
  EXPECT_THROW(nll_loss(lp, from_vector<std::int64_t>({0, 1})), ShapeError);
  EXPECT_THROW(nll_loss(lp, f64s({0, 1, 2, 3})), DTypeError);
  auto r = check_grads([&](std::span<const Tensor> x) { return nll_loss(x[0], labels, Reduction::Mean); }, {lp});
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(Losses, KlDivPointwiseAndBatchMean) {
  // rows of log-probabilities (input) and probabilities (target, with a zero)
  const std::vector<double> q = {0.2, 0.5, 0.3, 0.6, 0.1, 0.3}, t = {0.1, 0.9, 0.0, 0.25, 0.25, 0.5};
  std::vector<double> lq, want;
  for (double v : q) lq.push_back(std::log(v));
  for (std::size_t i = 0; i < q.size(); ++i) want.push_back(t[i] > 0 ? t[i] * (std::log(t[i]) - lq[i]) : 0.0);
  Tensor in = f64s(lq, {2, 3}), tg = f64s(t, {2, 3});
  expect_near(vals(kl_div(in, tg, Reduction::None)), want, 1e-15, "kl_div");
  EXPECT_NEAR(kl_div(in, tg).item(), total(want) / 6, 1e-15);
  EXPECT_NEAR(kl_div(in, tg, Reduction::Sum).item(), total(want), 1e-15);
  EXPECT_NEAR(kl_div(in, tg, Reduction::BatchMean).item(), total(want) / 2, 1e-15);
  // log_target: the same divergence with the target given as log-probabilities (positive target)
  Tensor tg2 = f64s({0.1, 0.6, 0.3, 0.25, 0.25, 0.5}, {2, 3});
  EXPECT_NEAR(kl_div(in, log(tg2), Reduction::Sum, true).item(), kl_div(in, tg2, Reduction::Sum).item(), 1e-15);
  // finite gradient through the zero target (0 log 0 = 0)
  auto r = check_grads([](std::span<const Tensor> x) { return kl_div(x[0], x[1], Reduction::BatchMean); }, {in, tg2});
  EXPECT_TRUE(r.pass) << r.failure;
  Tensor gt = grad([&](const Tensor& v) { return kl_div(in, v, Reduction::Sum); })(tg);
  EXPECT_NEAR(vals(gt)[2], -lq[2], 1e-15);  // d/dt [t log t - t x] at t = 0, with t log t := 0
}

// ---- statistics and cumulative operations ------------------------------------------------------

TEST(Stats, ProdAndItsGradientWithZeros) {
  Tensor x = f64s({1.5, 0.0, -2.0, 0.7});
  EXPECT_EQ(prod(x).item(), 0.0);
  // d/dx_i Π x = Π_{j≠i} x_j, computed here by loops
  auto leave_one_out = [](const std::vector<double>& v) {
    std::vector<double> g(v.size(), 1.0);
    for (std::size_t i = 0; i < v.size(); ++i)
      for (std::size_t j = 0; j < v.size(); ++j)
        if (j != i) g[i] *= v[j];
    return g;
  };
  for (std::vector<double> v : {std::vector<double>{1.5, 0.0, -2.0, 0.7}, {0.0, 3.0, 0.0}, {2.0, -0.5, 4.0}}) {
    Tensor g = grad([](const Tensor& t) { return prod(t); })(f64s(v));
    expect_near(vals(g), leave_one_out(v), 1e-15, "prod gradient");
  }
  // the Hessian of x0 x1 x2 at (0, 0, 3): off-diagonal Π of the remaining one
  Tensor h = hessian([](const Tensor& t) { return prod(t); })(f64s({0.0, 0.0, 3.0}));
  expect_near(vals(h), {0, 3, 0, 3, 0, 0, 0, 0, 0}, 1e-15, "prod hessian");
  Tensor m = f64s({1, 2, 3, 4, 5, 6}, {2, 3});
  expect_near(vals(prod(m, {1})), {6, 120}, 0, "prod axis 1");
  expect_near(vals(prod(m, {0}, true)), {4, 10, 18}, 0, "prod axis 0");
  EXPECT_EQ(prod(m, {0}, true).shape(), (Shape{1, 3}));
  EXPECT_EQ(prod(zeros({0, 3}, DType::f64), {0}).to_vector<double>(), (std::vector<double>{1, 1, 1}));
}

TEST(Stats, VarStdMinArgmin) {
  const std::vector<double> v = {2.0, -1.0, 4.5, 0.5, 3.0, -2.5};
  Tensor m = f64s(v, {2, 3});
  for (double correction : {0.0, 1.0}) {
    // over all elements
    double mu = total(v) / 6, ss = 0;
    for (double e : v) ss += (e - mu) * (e - mu);
    EXPECT_NEAR(var(m, {}, correction).item(), ss / (6 - correction), 1e-14);
    EXPECT_NEAR(chainrule::std(m, {}, correction).item(), std::sqrt(ss / (6 - correction)), 1e-14);
    // per row
    for (int r = 0; r < 2; ++r) {
      double rm = (v[r * 3] + v[r * 3 + 1] + v[r * 3 + 2]) / 3, rs = 0;
      for (int c = 0; c < 3; ++c) rs += (v[r * 3 + c] - rm) * (v[r * 3 + c] - rm);
      EXPECT_NEAR(vals(var(m, {1}, correction))[r], rs / (3 - correction), 1e-14);
    }
  }
  EXPECT_EQ(var(m, {0}, 1.0, true).shape(), (Shape{1, 3}));
  expect_near(vals(min(m, {1})), {-1.0, -2.5}, 0, "min");
  EXPECT_EQ(min(m).item(), -2.5);
  EXPECT_EQ(argmin(m, 1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 2}));
  EXPECT_EQ(argmin(f64s({3, 1, 2, 1})).to_vector<std::int64_t>()[0], 1);  // the first minimum
  auto r = check_grads([](std::span<const Tensor> x) { return chainrule::std(x[0], {1}, 1.0); }, {m});
  EXPECT_TRUE(r.pass) << r.failure;
  auto r2 = check_grads([](std::span<const Tensor> x) { return var(x[0], {0}); }, {m});
  EXPECT_TRUE(r2.pass) << r2.failure;
}

TEST(Stats, AllAnyOnEveryDtype) {
  Tensor b = f64s({1, 0, 2, 3, 0.5, -1}, {2, 3});
  EXPECT_EQ(all(b).dtype(), DType::b8);
  EXPECT_FALSE(all(b).item<bool>());
  EXPECT_TRUE(any(b).item<bool>());
  EXPECT_EQ(all(b, {1}).to_vector<bool>(), (std::vector<bool>{false, true}));
  EXPECT_EQ(any(b, {0}, true).shape(), (Shape{1, 3}));
  EXPECT_EQ(any(greater(b, scalar_tensor(2.5, DType::f64)), {1}).to_vector<bool>(), (std::vector<bool>{false, true}));
  EXPECT_EQ(all(from_vector<std::int64_t>({1, 2, 3})).item<bool>(), true);
  EXPECT_EQ(all(zeros({0}, DType::f64)).item<bool>(), true);   // empty: all true, none true
  EXPECT_EQ(any(zeros({0}, DType::f64)).item<bool>(), false);
}

TEST(Stats, IntegerAndBoolSumsAreExactInt64) {
  // [2, 3, 4] of values near 2^60: a float64 accumulator would round them.
  std::vector<std::int64_t> v(24);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = (std::int64_t{1} << 60) / 7 + static_cast<std::int64_t>(i * i) - 40;
  Tensor x = from_vector<std::int64_t>(v, {2, 3, 4});
  auto at = [&](std::int64_t a, std::int64_t b, std::int64_t c) { return v[static_cast<std::size_t>((a * 3 + b) * 4 + c)]; };
  std::int64_t total = 0;
  for (auto e : v) total += e;
  EXPECT_EQ(sum(x).dtype(), DType::i64);
  EXPECT_EQ(sum(x).item<std::int64_t>(), total);
  std::vector<std::int64_t> over02(3, 0), over1(8, 0);
  for (std::int64_t a = 0; a < 2; ++a)
    for (std::int64_t b = 0; b < 3; ++b)
      for (std::int64_t c = 0; c < 4; ++c) {
        over02[static_cast<std::size_t>(b)] += at(a, b, c);
        over1[static_cast<std::size_t>(a * 4 + c)] += at(a, b, c);
      }
  EXPECT_EQ(sum(x, {0, 2}).to_vector<std::int64_t>(), over02);
  EXPECT_EQ(sum(x, {-2}, true).shape(), (Shape{2, 1, 4}));
  EXPECT_EQ(sum(x, {-2}, true).to_vector<std::int64_t>(), over1);
  // Bools count as 0 and 1; a batched (vmapped) integer sum is the per-row sum.
  Tensor m = greater(f64s({1, -1, 2, 3, -0.5, 0}, {2, 3}), scalar_tensor(0.0, DType::f64));
  EXPECT_EQ(sum(m).item<std::int64_t>(), 3);
  EXPECT_EQ(sum(m, {1}).to_vector<std::int64_t>(), (std::vector<std::int64_t>{2, 1}));
  Tensor rows = vmap([](const Tensor& r) { return sum(r); })(x);
  EXPECT_EQ(rows.to_vector<std::int64_t>(), (std::vector<std::int64_t>{
      std::accumulate(v.begin(), v.begin() + 12, std::int64_t{0}), std::accumulate(v.begin() + 12, v.end(), std::int64_t{0})}));
  EXPECT_EQ(sum(zeros({0, 3}, DType::i64), {0}).to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 0, 0}));
  EXPECT_THROW(mean(x), DTypeError);  // a mean of integers is a float: cast first, as in PyTorch
}

TEST(Stats, IntegerMaxMinArgmaxNegAbsAreExact) {
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
  // Neighbours a double cannot tell apart, and the extremes (where -x overflows).
  Tensor x = from_vector<std::int64_t>({(std::int64_t{1} << 60) + 1, (std::int64_t{1} << 60) + 3, lo, 5, hi, (std::int64_t{1} << 60) + 2}, {2, 3});
  EXPECT_EQ(max(x).item<std::int64_t>(), hi);
  EXPECT_EQ(min(x).item<std::int64_t>(), lo);
  EXPECT_EQ(max(x, {1}).to_vector<std::int64_t>(), (std::vector<std::int64_t>{(std::int64_t{1} << 60) + 3, hi}));
  EXPECT_EQ(min(x, {0}).to_vector<std::int64_t>(), (std::vector<std::int64_t>{5, (std::int64_t{1} << 60) + 3, lo}));
  EXPECT_EQ(argmax(x, 1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 1}));
  EXPECT_EQ(argmin(x, 1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{2, 0}));
  EXPECT_EQ(argmin(from_vector<std::int64_t>({3, -2, -2, 7}), 0).item<std::int64_t>(), 1);  // the first minimal one
  EXPECT_EQ(neg(x).to_vector<std::int64_t>()[2], lo);  // wraps, as NumPy and PyTorch
  EXPECT_EQ(neg(x).to_vector<std::int64_t>()[4], -hi);
  EXPECT_EQ(abs(from_vector<std::int64_t>({-3, 4, 0})).to_vector<std::int64_t>(), (std::vector<std::int64_t>{3, 4, 0}));
  EXPECT_EQ(sign(from_vector<std::int64_t>({-3, 4, 0})).to_vector<std::int64_t>(), (std::vector<std::int64_t>{-1, 1, 0}));
  EXPECT_EQ(neg(x).dtype(), DType::i64);
  EXPECT_TRUE(std::signbit(abs(scalar_tensor(-0.0, DType::f64)).item<double>()) == false);
  EXPECT_EQ(cumsum(from_vector<std::int64_t>({(std::int64_t{1} << 60) + 1, 2, -3}), 0).to_vector<std::int64_t>(),
            (std::vector<std::int64_t>{(std::int64_t{1} << 60) + 1, (std::int64_t{1} << 60) + 3, (std::int64_t{1} << 60)}));
  EXPECT_EQ(cumsum(greater(from_vector<double>({1, -1, 2}), scalar_tensor(0.0, DType::f64)), 0).to_vector<std::int64_t>(),
            (std::vector<std::int64_t>{1, 1, 2}));
  EXPECT_THROW(max(zeros({0}, DType::i64)), ValueError);
  EXPECT_THROW(max(greater(x, x)), DTypeError);  // a max of bools: compare as int64 first
}

TEST(Stats, IntegerProdAndCumprodAreExactInt64Wrapping) {
  // Products past 2^53 (a double would round) and past 2^63 (wraps modulo 2^64, as NumPy), with
  // the extremes; the reference multiplies in uint64, where overflow is defined.
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
  const std::vector<std::int64_t> v = {3037000493, 3037000453, -7, hi, 1, -1, lo, -1, 2, (std::int64_t{1} << 31) + 11, -(std::int64_t{1} << 29) - 3, 5};
  Tensor x = from_vector<std::int64_t>(v, {3, 4});
  auto wrap = [](std::int64_t a, std::int64_t b) {
    return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b));
  };
  std::int64_t total = 1;
  for (auto e : v) total = wrap(total, e);
  std::vector<std::int64_t> rows(3, 1), cols(4, 1), cum1(12), cum0(12);
  for (std::size_t r = 0; r < 3; ++r)
    for (std::size_t c = 0; c < 4; ++c) {
      rows[r] = wrap(rows[r], v[r * 4 + c]);
      cols[c] = wrap(cols[c], v[r * 4 + c]);
      cum1[r * 4 + c] = c == 0 ? v[r * 4] : wrap(cum1[r * 4 + c - 1], v[r * 4 + c]);
      cum0[r * 4 + c] = r == 0 ? v[c] : wrap(cum0[(r - 1) * 4 + c], v[r * 4 + c]);
    }
  EXPECT_EQ(prod(x).dtype(), DType::i64);
  EXPECT_EQ(prod(x).item<std::int64_t>(), total);
  EXPECT_EQ(prod(x, {1}).to_vector<std::int64_t>(), rows);
  EXPECT_EQ(prod(x, {0}, true).shape(), (Shape{1, 4}));
  EXPECT_EQ(prod(x, {0}, true).to_vector<std::int64_t>(), cols);
  EXPECT_EQ(rows[0], wrap(wrap(3037000493, 3037000453), wrap(-7, hi)));  // the first row overflows
  EXPECT_EQ(prod(from_vector<std::int64_t>({lo, -1})).item<std::int64_t>(), lo);  // INT64_MIN * -1 wraps
  EXPECT_EQ(prod(from_vector<std::int64_t>({(std::int64_t{1} << 53) + 1, 3})).item<std::int64_t>(), 3 * ((std::int64_t{1} << 53) + 1));
  EXPECT_EQ(prod(zeros({0, 2}, DType::i64), {0}).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 1}));  // empty: 1
  EXPECT_EQ(cumprod(x, 1).dtype(), DType::i64);
  EXPECT_EQ(cumprod(x, 1).to_vector<std::int64_t>(), cum1);
  EXPECT_EQ(cumprod(x, -2).to_vector<std::int64_t>(), cum0);
  Tensor batched = vmap([](const Tensor& r) { return cumprod(r, 0); })(x);  // per row, as cumprod(x, 1)
  EXPECT_EQ(batched.to_vector<std::int64_t>(), cum1);
  // Bools count as 0 and 1 and give int64, as NumPy's prod and cumprod.
  Tensor m = greater(f64s({1, 2, -1, 3, 4, 5}, {2, 3}), scalar_tensor(0.0, DType::f64));
  EXPECT_EQ(prod(m).dtype(), DType::i64);
  EXPECT_EQ(prod(m, {1}).to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 1}));
  EXPECT_EQ(cumprod(m, 1).dtype(), DType::i64);
  EXPECT_EQ(cumprod(m, 1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 1, 0, 1, 1, 1}));
}

TEST(Stats, CumulativeOpsMatchLoops) {
  const std::vector<double> v = {0.5, -1.0, 2.0, 0.0, 3.0, 1.5};
  Tensor m = f64s(v, {2, 3});
  std::vector<double> cs0(6), cs1(6), cp1(6), lcse1(6);
  for (int r = 0; r < 2; ++r) {
    double s = 0, p = 1, l = -INFINITY;
    for (int c = 0; c < 3; ++c) {
      const double e = v[r * 3 + c];
      s += e;
      p *= e;
      l = std::log(std::exp(l) + std::exp(e));
      cs1[r * 3 + c] = s;
      cp1[r * 3 + c] = p;
      lcse1[r * 3 + c] = l;
    }
  }
  for (int c = 0; c < 3; ++c) {
    cs0[c] = v[c];
    cs0[3 + c] = v[c] + v[3 + c];
  }
  expect_near(vals(cumsum(m, 1)), cs1, 1e-15, "cumsum axis 1");
  expect_near(vals(cumsum(m, 0)), cs0, 1e-15, "cumsum axis 0");
  expect_near(vals(cumprod(m, -1)), cp1, 1e-15, "cumprod");
  expect_near(vals(logcumsumexp(m, 1)), lcse1, 1e-14, "logcumsumexp");
  // logcumsumexp stays finite where exp overflows
  auto big = vals(logcumsumexp(f64s({1000, 1000, -1000}), 0));
  expect_near(big, {1000, 1000 + std::log(2.0), 1000 + std::log(2.0)}, 1e-12, "logcumsumexp large");
  // cumprod's gradient with a zero: d/dx_i Σ_j cumprod_j, by loops
  const std::vector<double> z = {2.0, 0.0, -1.5, 3.0};
  Tensor g = grad([](const Tensor& t) { return sum(cumprod(t, 0)); })(f64s(z));
  for (std::size_t i = 0; i < z.size(); ++i) {
    double want = 0;
    for (std::size_t j = i; j < z.size(); ++j) {
      double p = 1;
      for (std::size_t k = 0; k <= j; ++k) p *= k == i ? 1.0 : z[k];
      want += p;
    }
    EXPECT_NEAR(vals(g)[i], want, 1e-15) << i;
  }
  auto r = check_grads([](std::span<const Tensor> x) { return cumprod(x[0], 1); }, {f64s({1.5, 0.0, -2.0, 0.7, 0.3, 0.0}, {2, 3})});
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(Stats, LogAddExp) {
  const std::vector<double> a = {0.0, 1000.0, -1000.0, 2.0, -3.0}, b = {0.0, 999.0, -1000.0, -1.0, 4.0};
  auto got = vals(logaddexp(f64s(a), f64s(b)));
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double m = std::max(a[i], b[i]);
    EXPECT_NEAR(got[i], m + std::log(std::exp(a[i] - m) + std::exp(b[i] - m)), 1e-12) << i;
  }
  // d/da at a = b is 1/2
  Tensor g = grad([](const Tensor& t) { return sum(logaddexp(t, f64s({0.5}))); })(f64s({0.5}));
  EXPECT_NEAR(g.item(), 0.5, 1e-15);
  auto r = check_grads([](std::span<const Tensor> x) { return logaddexp(x[0], x[1]); }, {f64s({0.3, -1.2}), f64s({2.0, -1.0})});
  EXPECT_TRUE(r.pass) << r.failure;
}

// ---- sorting and searching ----------------------------------------------------------------------

TEST(Sort, ValuesIndicesAndStableTies) {
  const std::vector<double> v = {3.0, -1.0, 2.0, -1.0, 5.0, 2.0};
  std::vector<std::int64_t> want_idx(6);
  std::iota(want_idx.begin(), want_idx.end(), 0);
  std::stable_sort(want_idx.begin(), want_idx.end(), [&](auto a, auto b) { return v[a] < v[b]; });
  EXPECT_EQ(argsort(f64s(v)).to_vector<std::int64_t>(), want_idx);
  EXPECT_EQ(argsort(f64s(v)).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 3, 2, 5, 0, 4}));  // ties in order
  EXPECT_EQ(argsort(f64s(v), -1, true).to_vector<std::int64_t>(), (std::vector<std::int64_t>{4, 0, 2, 5, 1, 3}));
  auto sorted = v;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(vals(sort(f64s(v))), sorted);
  // along axis 0 of a matrix
  Tensor m = f64s({3, 1, 2, 1, 5, 0}, {3, 2});
  EXPECT_EQ(vals(sort(m, 0)), (std::vector<double>{2, 0, 3, 1, 5, 1}));
  EXPECT_EQ(argsort(m, 0).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 2, 0, 0, 2, 1}));
  // NaN last
  EXPECT_EQ(argsort(f64s({2.0, NAN, 1.0})).to_vector<std::int64_t>(), (std::vector<std::int64_t>{2, 0, 1}));
  // the gradient of sort sends each position's cotangent to the element that landed there
  const std::vector<double> w = {10, 20, 30, 40, 50, 60};
  Tensor g = grad([&](const Tensor& t) { return sum(mul(sort(t), f64s(w))); })(f64s(v));
  std::vector<double> want(6);
  for (std::size_t j = 0; j < 6; ++j) want[static_cast<std::size_t>(want_idx[j])] = w[j];
  EXPECT_EQ(vals(g), want);
  auto r = check_grads([](std::span<const Tensor> x) { return sort(x[0], -1, true); }, {f64s({0.3, -1.2, 2.5, 0.1}, {2, 2})});
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(Sort, TopkAndSearchsorted) {
  Tensor m = f64s({0.5, 4.0, -2.0, 3.0, 1.0, 1.0, 7.0, -3.0}, {2, 4});
  auto [values, indices] = topk(m, 2);
  EXPECT_EQ(vals(values), (std::vector<double>{4.0, 3.0, 7.0, 1.0}));
  EXPECT_EQ(indices.to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 3, 2, 0}));  // tie: the first
  auto [lo, lo_idx] = topk(m, 3, 1, false);
  EXPECT_EQ(vals(lo), (std::vector<double>{-2.0, 0.5, 3.0, -3.0, 1.0, 1.0}));
  EXPECT_EQ(lo_idx.to_vector<std::int64_t>(), (std::vector<std::int64_t>{2, 0, 3, 3, 0, 1}));
  EXPECT_EQ(topk(m, 0).first.shape(), (Shape{2, 0}));
  EXPECT_THROW(topk(m, 5), ValueError);
  Tensor g = grad([&](const Tensor& t) { return sum(topk(t, 2).first); })(m);
  EXPECT_EQ(vals(g), (std::vector<double>{0, 1, 0, 1, 1, 0, 1, 0}));

  Tensor seq = f64s({1.0, 2.0, 2.0, 4.0});
  Tensor q = f64s({0.0, 2.0, 3.0, 5.0, 1.0});
  EXPECT_EQ(searchsorted(seq, q).to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 1, 3, 4, 0}));
  EXPECT_EQ(searchsorted(seq, q, true).to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 3, 3, 4, 1}));
  EXPECT_THROW(searchsorted(f64s({1, 2, 3, 4}, {2, 2}), q), ShapeError);
}

TEST(Sort, TakeAlongAxisMatchesLoops) {
  Tensor x = f64s({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor idx = from_vector<std::int64_t>({2, 2, 0, 1}, {2, 2});
  EXPECT_EQ(vals(take_along_axis(x, idx, 1)), (std::vector<double>{3, 3, 4, 5}));
  Tensor s = scatter_add_along_axis(f64s({1, 2, 3, 4}, {2, 2}), idx, 1, 3);
  EXPECT_EQ(vals(s), (std::vector<double>{0, 0, 3, 3, 4, 0}));
  EXPECT_THROW(take_along_axis(x, from_vector<std::int64_t>({3, 0}, {2, 1}), 1), ValueError);
  EXPECT_THROW(take_along_axis(x, from_vector<std::int64_t>({0, 0, 0}, {3, 1}), 1), ShapeError);
  // vmap: one row per example
  Tensor rows = vmap([&](const Tensor& r) { return sort(r); })(f64s({3, 1, 2, 0, 5, 4}, {2, 3}));
  EXPECT_EQ(vals(rows), (std::vector<double>{1, 2, 3, 0, 4, 5}));
}

// ---- manipulation -------------------------------------------------------------------------------

TEST(Manip, FlipRollTileRepeat) {
  Tensor m = f64s({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(vals(flip(m, {1})), (std::vector<double>{3, 2, 1, 6, 5, 4}));
  EXPECT_EQ(vals(flip(m, {0})), (std::vector<double>{4, 5, 6, 1, 2, 3}));
  EXPECT_EQ(vals(flip(m)), (std::vector<double>{6, 5, 4, 3, 2, 1}));
  EXPECT_EQ(vals(roll(m, 1, 1)), (std::vector<double>{3, 1, 2, 6, 4, 5}));
  EXPECT_EQ(vals(roll(m, -4, 1)), (std::vector<double>{2, 3, 1, 5, 6, 4}));
  EXPECT_EQ(vals(roll(m, 1, 0)), (std::vector<double>{4, 5, 6, 1, 2, 3}));
  Tensor t = tile(f64s({1, 2}), {2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 6}));
  EXPECT_EQ(vals(t), (std::vector<double>{1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2}));
  EXPECT_EQ(vals(tile(m, {2})), (std::vector<double>{1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6}));
  EXPECT_EQ(vals(repeat(m, 2, 1)), (std::vector<double>{1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6}));
  EXPECT_EQ(vals(repeat_interleave(m, 2, 0)), (std::vector<double>{1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6}));
  // derivatives: tile and repeat sum the cotangent over the copies
  Tensor g = grad([](const Tensor& v) { return sum(mul(tile(v, {3}), f64s({1, 2, 3, 4, 5, 6}))); })(f64s({0.0, 0.0}));
  EXPECT_EQ(vals(g), (std::vector<double>{9, 12}));
  for (auto f : {+[](std::span<const Tensor> x) { return flip(x[0], {0, 1}); }, +[](std::span<const Tensor> x) { return roll(x[0], 2, -1); },
                 +[](std::span<const Tensor> x) { return repeat(x[0], 3, 0); }, +[](std::span<const Tensor> x) { return tile(x[0], {2, 1, 2}); }}) {
    auto r = check_grads(f, {m});
    EXPECT_TRUE(r.pass) << r.failure;
  }
}

TEST(Manip, AxesSplitMeshgrid) {
  Tensor x = zeros({2, 1, 3, 1}, DType::f64);
  EXPECT_EQ(squeeze(x, {1, 3}).shape(), (Shape{2, 3}));
  EXPECT_EQ(squeeze(x, {-1}).shape(), (Shape{2, 1, 3}));
  EXPECT_THROW(squeeze(x, {0}), ShapeError);
  EXPECT_EQ(expand_dims(x, 0).shape(), (Shape{1, 2, 1, 3, 1}));
  EXPECT_EQ(moveaxis(zeros({2, 3, 4}), 0, -1).shape(), (Shape{3, 4, 2}));
  EXPECT_EQ(moveaxis(zeros({2, 3, 4}), 2, 0).shape(), (Shape{4, 2, 3}));
  Tensor m = f64s({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(vals(moveaxis(m, 0, 1)), (std::vector<double>{1, 4, 2, 5, 3, 6}));
  auto parts = split(m, {1, 2}, 1);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(vals(parts[0]), (std::vector<double>{1, 4}));
  EXPECT_EQ(vals(parts[1]), (std::vector<double>{2, 3, 5, 6}));
  EXPECT_THROW(split(m, {1, 1}, 1), ShapeError);
  auto rows = unstack(m, 0);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].shape(), (Shape{3}));
  EXPECT_EQ(vals(rows[1]), (std::vector<double>{4, 5, 6}));
  auto xy = meshgrid({f64s({1, 2, 3}), f64s({10, 20})});
  EXPECT_EQ(xy[0].shape(), (Shape{2, 3}));
  EXPECT_EQ(vals(xy[0]), (std::vector<double>{1, 2, 3, 1, 2, 3}));
  EXPECT_EQ(vals(xy[1]), (std::vector<double>{10, 10, 10, 20, 20, 20}));
  auto ij = meshgrid({f64s({1, 2, 3}), f64s({10, 20})}, "ij");
  EXPECT_EQ(ij[0].shape(), (Shape{3, 2}));
  EXPECT_EQ(vals(ij[1]), (std::vector<double>{10, 20, 10, 20, 10, 20}));
}

// ---- special functions --------------------------------------------------------------------------

TEST(Special, LgammaDigammaPolygamma) {
  const std::vector<double> v = {0.3, 1.0, 2.5, 7.0, 30.0, -0.5, -2.3};
  auto lg = vals(lgamma(f64s(v)));
  for (std::size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(lg[i], std::lgamma(v[i]), 1e-13) << v[i];
  // digamma: ψ(1) = -γ, ψ(1/2) = -γ - 2 ln 2, ψ(x+1) = ψ(x) + 1/x; trigamma(1) = π²/6,
  // ψ''(1) = -2 ζ(3), ψ⁽³⁾(1) = π⁴/15
  const double euler = 0.57721566490153286061;
  auto d = vals(digamma(f64s({1.0, 0.5, 3.0, -0.5})));
  EXPECT_NEAR(d[0], -euler, 1e-14);
  EXPECT_NEAR(d[1], -euler - 2 * std::log(2.0), 1e-14);
  EXPECT_NEAR(d[2], -euler + 1 + 0.5, 1e-14);
  EXPECT_NEAR(d[3], d[1] + 2.0, 1e-13);  // ψ(1/2) = ψ(-1/2) + 1/(-1/2)
  EXPECT_NEAR(polygamma(1, f64s({1.0})).item(), std::numbers::pi * std::numbers::pi / 6, 1e-14);
  EXPECT_NEAR(polygamma(2, f64s({1.0})).item(), -2 * 1.2020569031595942854, 1e-13);
  EXPECT_NEAR(polygamma(3, f64s({1.0})).item(), std::pow(std::numbers::pi, 4) / 15, 1e-12);
  EXPECT_TRUE(std::isnan(digamma(f64s({-2.0})).item()));
  // d/dx lgamma = digamma, and the second derivative of digamma exists (polygamma(2))
  auto dd = [](const Tensor& x) { return sum(digamma(x)); };
  Tensor h = hessian(dd)(f64s({1.0}));
  EXPECT_NEAR(h.item(), -2 * 1.2020569031595942854, 1e-12);
  EXPECT_THROW(polygamma(-1, f64s({1.0})), ValueError);
}

}  // namespace
