// The fused batch-norm primitives (ops/norm.h) against the composite formula they replace
// (mean, subtract, square, mean, sqrt, divide, scale, shift, written here with plain ops): values,
// first and second derivatives in float64 to rounding, float32 near it, vmap, and bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "chainrule/autodiff/transforms.h"
#include "chainrule/chainrule.h"
#include "chainrule/ops/norm.h"

using namespace chainrule;

namespace {

Tensor randn_(const Shape& s, std::uint64_t seed, DType dt = DType::f64) {
  Generator g(seed);
  return randn(s, g, dt);
}

// The composite: per channel of axis 1, over every other axis.
Tensor composite(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  Axes axes{0};
  Shape view{x.shape()[1]};
  for (std::int64_t a = 2; a < x.dim(); ++a) axes.push_back(a), view.push_back(1);
  Tensor d = sub(x, reshape(mean(x, axes), view));
  Tensor var = reshape(mean(square(d), axes), view);
  Tensor y = div(d, sqrt(add(var, scalar_tensor(eps, x.dtype()))));
  return w.defined() ? add(mul(y, reshape(w, view)), reshape(b, view)) : y;
}

double gap(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  return max_abs_diff(a, b);
}

struct Sample {
  Tensor x, w, b, t;  // t: the output's weighting in the scalar loss sum(y · t)
};
Sample sample(const Shape& s, std::uint64_t seed, DType dt = DType::f64) {
  const std::int64_t c = s[1];
  return {add(mul(randn_(s, seed, dt), scalar_tensor(3.0, dt)), scalar_tensor(1.5, dt)), add(randn_({c}, seed + 1, dt), scalar_tensor(1.0, dt)),
          randn_({c}, seed + 2, dt), randn_(s, seed + 3, dt)};
}

using Norm = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, double);
Tensor fused(const Tensor& x, const Tensor& w, const Tensor& b, double eps) { return batch_norm_train(x, w, b, eps); }

// Gradients of sum(norm(x, w, b) · t) in x, w, b; and of the second-order scalar
// sum(dx · t) + sum(dw) · 2 + sum(db · dw) in x, w, b (reverse over reverse).
std::vector<Tensor> first(Norm f, const Sample& s, double eps) {
  return grad([&](const Tensor& x, const Tensor& w, const Tensor& b) { return sum(mul(f(x, w, b, eps), s.t)); }, {0, 1, 2})(s.x, s.w, s.b);
}
std::vector<Tensor> second(Norm f, const Sample& s, double eps) {
  auto inner = [&](const Tensor& x, const Tensor& w, const Tensor& b) { return sum(mul(f(x, w, b, eps), s.t)); };
  return grad(
      [&](const Tensor& x, const Tensor& w, const Tensor& b) {
        auto g = grad(inner, {0, 1, 2})(x, w, b);
        return add(add(sum(mul(g[0], s.t)), mul(sum(g[1]), scalar_tensor(2.0, x.dtype()))), sum(mul(g[2], g[1])));
      },
      {0, 1, 2})(s.x, s.w, s.b);
}

}  // namespace

TEST(BatchNormFused, MatchesCompositeValuesAndGradientsInFloat64) {
  for (const Shape& shape : {Shape{8, 5, 6, 7}, Shape{16, 3, 4, 4}, Shape{32, 6}, Shape{2, 4, 1, 1}}) {
    const Sample s = sample(shape, 10 + static_cast<std::uint64_t>(shape.numel()));
    EXPECT_LT(gap(fused(s.x, s.w, s.b, 1e-5), composite(s.x, s.w, s.b, 1e-5)), 1e-12) << shape.str();
    const auto gf = first(fused, s, 1e-5), gc = first(composite, s, 1e-5);
    for (std::size_t i = 0; i < 3; ++i) EXPECT_LT(gap(gf[i], gc[i]), 1e-11) << shape.str() << " input " << i;
    const auto hf = second(fused, s, 1e-5), hc = second(composite, s, 1e-5);
    for (std::size_t i = 0; i < 3; ++i) EXPECT_LT(gap(hf[i], hc[i]), 1e-10) << shape.str() << " second order, input " << i;
  }
}

TEST(BatchNormFused, StatisticsAreTheBatchMeanAndBiasedVariance) {
  const Sample s = sample({6, 3, 2, 5}, 40);
  auto [y, stats] = batch_norm_train_with_stats(s.x, s.w, s.b, 1e-5);
  EXPECT_EQ(stats.shape(), Shape({2, 3}));
  const auto xs = s.x.to_vector<double>(), st = stats.to_vector<double>();
  for (std::size_t c = 0; c < 3; ++c) {
    double m = 0, v = 0;
    for (std::size_t n = 0; n < 6; ++n)
      for (std::size_t k = 0; k < 10; ++k) m += xs[(n * 3 + c) * 10 + k];
    m /= 60;
    for (std::size_t n = 0; n < 6; ++n)
      for (std::size_t k = 0; k < 10; ++k) v += (xs[(n * 3 + c) * 10 + k] - m) * (xs[(n * 3 + c) * 10 + k] - m);
    EXPECT_NEAR(st[c], m, 1e-12);
    EXPECT_NEAR(st[3 + c], v / 60, 1e-11);
  }
}

// float32 statistics come from one shifted pass in double: far from zero (mean 1000, standard
// deviation 0.01, where E[x²] - E[x]² in float32 would lose every digit) they still match the
// float64 two-pass values of the same data to float32 rounding.
TEST(BatchNormFused, Float32StatisticsOfDataFarFromZero) {
  Generator g(70);
  Tensor x = randn({64, 4, 6, 6}, g, DType::f64) * 0.01 + 1000.0;
  Tensor x32 = x.to(DType::f32);
  const auto want = batch_norm_stats(x32.to(DType::f64)).to_vector<double>(), got = batch_norm_stats(x32).to(DType::f64).to_vector<double>();
  for (std::size_t c = 0; c < 4; ++c) {
    EXPECT_NEAR(got[c], want[c], 1e-7 * 1000) << c;
    EXPECT_NEAR(got[4 + c], want[4 + c], 1e-6 * want[4 + c]) << c;  // the variance, about 1e-4
  }
}

TEST(BatchNormFused, AffineFalseAndFloat32) {
  const Sample s = sample({8, 4, 5, 5}, 50);
  EXPECT_LT(gap(batch_norm_train(s.x, {}, {}, 1e-5), composite(s.x, {}, {}, 1e-5)), 1e-12);
  auto gx = [&](Norm f, const Tensor& x) {
    return grad([&](const Tensor& xx) { return sum(mul(f(xx, {}, {}, 1e-5), s.t.to(x.dtype()))); })(x);
  };
  EXPECT_LT(gap(gx(fused, s.x), gx(composite, s.x)), 1e-11);
  // float32: the same to float32 rounding (sums accumulate in double in both).
  const Sample f = sample({16, 8, 7, 7}, 60, DType::f32);
  EXPECT_EQ(fused(f.x, f.w, f.b, 1e-5).dtype(), DType::f32);
  EXPECT_LT(gap(fused(f.x, f.w, f.b, 1e-5), composite(f.x, f.w, f.b, 1e-5)), 1e-5);
  const auto g32 = first(fused, f, 1e-5), c32 = first(composite, f, 1e-5);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_LT(gap(g32[i], c32[i]), 1e-3 * (1 + max_abs_diff(c32[i], zeros_like(c32[i])))) << i;
}

TEST(BatchNormFused, VmapOverBatchesAndOverWeights) {
  const Sample s = sample({4, 3, 2, 2}, 70);
  Tensor xs = randn_({5, 4, 3, 2, 2}, 71), ws = randn_({5, 3}, 72);
  Tensor per_batch = vmap([&](const Tensor& x) { return fused(x, s.w, s.b, 1e-5); })(xs);
  Tensor per_weight = vmap([&](const Tensor& w) { return fused(s.x, w, s.b, 1e-5); })(ws);
  for (std::int64_t k = 0; k < 5; ++k) {
    Tensor xk = squeeze(slice(xs, 0, k, k + 1), 0), wk = squeeze(slice(ws, 0, k, k + 1), 0);
    EXPECT_LT(gap(squeeze(slice(per_batch, 0, k, k + 1), 0), composite(xk, s.w, s.b, 1e-5)), 1e-12) << k;
    EXPECT_LT(gap(squeeze(slice(per_weight, 0, k, k + 1), 0), composite(s.x, wk, s.b, 1e-5)), 1e-12) << k;
  }
}

TEST(BatchNormFused, BadInputNamesTheOpAndShapes) {
  const Sample s = sample({4, 3, 2, 2}, 80);
  EXPECT_THROW(batch_norm_train(s.x, zeros({4}, DType::f64), zeros({4}, DType::f64)), ShapeError);
  EXPECT_THROW(batch_norm_train(zeros({3}, DType::f64), {}, {}), ShapeError);
  EXPECT_THROW(batch_norm_train(zeros({0, 3}, DType::f64), {}, {}), ValueError);
  EXPECT_THROW(batch_norm_train(s.x, s.w, {}), ValueError);
  EXPECT_THROW(batch_norm_train(s.x, s.w.to(DType::f32), s.b.to(DType::f32)), DTypeError);
  try {
    batch_norm_train(s.x, zeros({4}, DType::f64), zeros({4}, DType::f64));
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("batch_norm_train"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4, 3, 2, 2]"), std::string::npos) << e.what();
  }
}
