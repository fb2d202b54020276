// Issue 21's ops (chainrule/ops/array_api.h): values against formulas and reference loops written
// out here, reductions, errors, and derivatives by check_grads where the op is a composite (the
// primitives' rules are checked with every other primitive in test_core_primitives.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

}  // namespace
