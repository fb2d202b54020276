// Optimisers: one (and two) steps of each against a hand computation, schedules, clipping,
// state round trips, and no reallocation of state buffers by step().
#include <gtest/gtest.h>

#include <cmath>

#include "chainrule/chainrule.h"
#include "chainrule/optim/optimizer.h"
#include "chainrule/optim/schedule.h"

using namespace chainrule;
using namespace chainrule::optim;

namespace {

// A parameter p with gradient g, both float64 vectors.
Tensor param_with_grad(const std::vector<double>& p, const std::vector<double>& g) {
  Tensor t = tensor(p, {static_cast<std::int64_t>(p.size())}, DType::f64);
  t.requires_grad_();
  t.set_grad(tensor(g, {static_cast<std::int64_t>(g.size())}, DType::f64));
  return t;
}
void set_grad(Tensor& p, const std::vector<double>& g) { p.set_grad(tensor(g, {static_cast<std::int64_t>(g.size())}, DType::f64)); }

void expect_values(const Tensor& t, const std::vector<double>& want, double tol = 1e-15) {
  auto v = t.to_vector<double>();
  ASSERT_EQ(v.size(), want.size());
  for (std::size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], want[i], tol * std::max(1.0, std::abs(want[i]))) << "element " << i;
}

}  // namespace

TEST(Optim, SgdPlainAndWeightDecay) {
  Tensor p = param_with_grad({1.0, -2.0}, {0.5, 0.25});
  SGD opt({{"p", p}}, {.lr = 0.1, .weight_decay = 0.01});
  opt.step();
  // p -= lr (g + λ p)
  expect_values(p, {1.0 - 0.1 * (0.5 + 0.01 * 1.0), -2.0 - 0.1 * (0.25 + 0.01 * -2.0)});
  EXPECT_EQ(opt.steps(), 1);
}

TEST(Optim, SgdMomentumAndNesterovTwoSteps) {
  for (bool nesterov : {false, true}) {
    Tensor p = param_with_grad({1.0}, {0.5});
    SGD opt({{"p", p}}, {.lr = 0.1, .momentum = 0.9, .nesterov = nesterov});
    opt.step();  // b = g = 0.5
    double b = 0.5, x = 1.0;
    x -= 0.1 * (nesterov ? 0.5 + 0.9 * b : b);
    expect_values(p, {x});
    set_grad(p, {0.2});
    opt.step();  // b = 0.9 b + g
    b = 0.9 * b + 0.2;
    x -= 0.1 * (nesterov ? 0.2 + 0.9 * b : b);
    expect_values(p, {x});
  }
  Tensor q = param_with_grad({1.0}, {0.5});
  EXPECT_THROW(SGD({{"q", q}}, {.lr = 0.1, .nesterov = true}), ValueError);
}

TEST(Optim, AdamTwoStepsByHand) {
  Tensor p = param_with_grad({1.0, -1.0}, {0.3, -2.0});
  Adam opt({{"p", p}}, {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8});
  std::vector<double> x{1.0, -1.0}, m{0, 0}, v{0, 0};
  std::vector<std::vector<double>> grads{{0.3, -2.0}, {-0.1, 0.5}};
  for (int t = 1; t <= 2; ++t) {
    if (t == 2) set_grad(p, grads[1]);
    opt.step();
    for (int i = 0; i < 2; ++i) {
      double g = grads[static_cast<std::size_t>(t - 1)][static_cast<std::size_t>(i)];
      m[static_cast<std::size_t>(i)] = 0.9 * m[static_cast<std::size_t>(i)] + 0.1 * g;
      v[static_cast<std::size_t>(i)] = 0.99 * v[static_cast<std::size_t>(i)] + 0.01 * g * g;
      double mhat = m[static_cast<std::size_t>(i)] / (1 - std::pow(0.9, t)), vhat = v[static_cast<std::size_t>(i)] / (1 - std::pow(0.99, t));
      x[static_cast<std::size_t>(i)] -= 0.01 * mhat / (std::sqrt(vhat) + 1e-8);
    }
    expect_values(p, x, 1e-13);
  }
  // The first step moves each coordinate by about lr, whatever the gradient's scale.
  EXPECT_NEAR(1.0 - 0.01, 1.0 - 0.01 * 0.3 / (0.3 + 1e-8), 1e-9);
}

TEST(Optim, AdamL2VersusAdamWDecoupledDecay) {
  Tensor a = param_with_grad({2.0}, {0.5});
  Adam adam({{"a", a}}, {.lr = 0.1, .weight_decay = 0.1});
  adam.step();
  // L2: g' = 0.5 + 0.1·2 = 0.7; first Adam step moves by lr · g'/|g'|.
  expect_values(a, {2.0 - 0.1 * 0.7 / (0.7 + 1e-8)}, 1e-14);
  Tensor w = param_with_grad({2.0}, {0.5});
  AdamWOptions o;
  o.lr = 0.1, o.weight_decay = 0.1;
  AdamW adamw({{"w", w}}, o);
  adamw.step();
  // Decoupled: p = p (1 - lr λ) - lr · g/|g|.
  expect_values(w, {2.0 * (1 - 0.1 * 0.1) - 0.1 * 0.5 / (0.5 + 1e-8)}, 1e-14);
  EXPECT_EQ(adamw.name(), "adamw");
  EXPECT_DOUBLE_EQ(AdamWOptions().weight_decay, 0.01);
}

TEST(Optim, StepAllocatesNothingAndSkipsParametersWithoutGradient) {
  Tensor p = param_with_grad({1, 2, 3}, {1, 1, 1});
  Tensor q = param_with_grad({5}, {1});
  q.zero_grad();
  Adam opt({{"p", p}, {"q", q}}, {});
  auto before = opt.state();
  std::vector<const void*> ptrs;
  for (auto& [n, t] : before) ptrs.push_back(t.impl()->storage->data);
  const void* pdata = p.impl()->storage->data;
  for (int i = 0; i < 3; ++i) opt.step();
  auto after = opt.state();
  for (std::size_t i = 1; i < after.size(); ++i) EXPECT_EQ(after[i].second.impl()->storage->data, ptrs[i]) << after[i].first;
  EXPECT_EQ(p.impl()->storage->data, pdata);
  EXPECT_EQ(q.to_vector<double>()[0], 5.0);
  EXPECT_EQ(after[0].first, "step");
  EXPECT_EQ(after[0].second.item<std::int64_t>(), 3);
}

TEST(Optim, StateRoundTripContinuesIdentically) {
  auto run = [](int steps_before, bool reload) {
    Tensor p = param_with_grad({1.0, 2.0}, {0.1, -0.2});
    Adam opt({{"p", p}}, {.lr = 0.05});
    for (int i = 0; i < steps_before; ++i) opt.step();
    if (reload) {
      std::map<std::string, Tensor> st;
      for (auto& [n, t] : opt.state()) st.emplace(n, t.contiguous_clone());
      Tensor p2 = tensor(p.to_vector<double>(), {2}, DType::f64);
      p2.requires_grad_();
      p2.set_grad(p.grad());
      Adam fresh({{"p", p2}}, {.lr = 0.05});
      fresh.load_state(st);
      fresh.step();
      return p2.to_vector<double>();
    }
    opt.step();
    return p.to_vector<double>();
  };
  EXPECT_EQ(run(3, true), run(3, false));
  Tensor p = param_with_grad({1.0}, {0.1});
  Adam opt({{"p", p}}, {});
  EXPECT_THROW(opt.load_state({{"step", scalar_tensor(1, DType::i64)}}), ValueError);
}

TEST(Optim, ClipGradNorm) {
  Tensor a = param_with_grad({0, 0}, {3, 0});
  Tensor b = param_with_grad({0}, {4});
  double n = clip_grad_norm_({a, b}, 1.0);
  EXPECT_DOUBLE_EQ(n, 5.0);
  expect_values(a.grad(), {3.0 / (5 + 1e-6), 0}, 1e-15);
  expect_values(b.grad(), {4.0 / (5 + 1e-6)}, 1e-15);
  EXPECT_NEAR(clip_grad_norm_({a, b}, 10.0), 1.0, 1e-6);  // below the limit: unchanged
}

TEST(Optim, Schedules) {
  StepLR step(10, 0.5);
  EXPECT_EQ(step.factor(0), 1.0);
  EXPECT_EQ(step.factor(9), 1.0);
  EXPECT_EQ(step.factor(10), 0.5);
  EXPECT_EQ(step.factor(25), 0.25);
  CosineLR cos(100, 0.1);
  EXPECT_DOUBLE_EQ(cos.factor(0), 1.0);
  EXPECT_NEAR(cos.factor(50), 0.55, 1e-15);
  EXPECT_DOUBLE_EQ(cos.factor(100), 0.1);
  EXPECT_DOUBLE_EQ(cos.factor(1000), 0.1);
  WarmupLR warm(4, std::make_shared<CosineLR>(10));
  EXPECT_DOUBLE_EQ(warm.factor(0), 0.25);
  EXPECT_DOUBLE_EQ(warm.factor(3), 1.0);
  EXPECT_DOUBLE_EQ(warm.factor(4), 1.0);
  EXPECT_NEAR(warm.factor(9), 0.5, 1e-15);
  EXPECT_THROW(StepLR(0, 0.5), ValueError);
  EXPECT_THROW(CosineLR(0), ValueError);
}

TEST(Optim, TrainsALinearRegressionToItsSolution) {
  // Least squares y = 2x - 1 with SGD + momentum on eager gradients: converges to (2, -1).
  Generator g(3);
  Tensor x = randn({64, 1}, g, DType::f64);
  Tensor y = x * 2.0 - 1.0;
  Tensor w = zeros({1, 1}, DType::f64), b = zeros({1}, DType::f64);
  w.requires_grad_(), b.requires_grad_();
  SGD opt({{"w", w}, {"b", b}}, {.lr = 0.1, .momentum = 0.9});
  for (int i = 0; i < 500; ++i) {
    opt.zero_grad();
    mse_loss(add(matmul(x, w), b), y).backward();
    opt.step();
  }
  EXPECT_NEAR(w.item(), 2.0, 1e-6);
  EXPECT_NEAR(b.item(), -1.0, 1e-6);
}
