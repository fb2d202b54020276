// Reverse mode (eager and as transforms), forward mode, nesting, custom rules, errors, and the
// source text's two examples.
#include <gtest/gtest.h>

#include <cmath>

#include "chainrule/autodiff/check.h"
#include "chainrule/chainrule.h"

using namespace chainrule;

namespace {

Tensor f64(std::vector<double> v, Shape s) { return tensor(v, s, DType::f64); }
Tensor scalar(double v) { return scalar_tensor(v, DType::f64); }

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}

// ---- tensors ---------------------------------------------------------------------------------

TEST(Tensor, FactoriesBroadcastingAndViews) {
  Tensor a = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = f64({10, 20, 30}, {3});
  EXPECT_EQ((a + b).to_vector<double>(), (std::vector<double>{11, 22, 33, 14, 25, 36}));
  Tensor r = a.reshape({3, 2});
  EXPECT_EQ(r.impl()->storage, a.impl()->storage);  // a view, not a copy
  EXPECT_EQ(transpose(a).to_vector<double>(), (std::vector<double>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(sum(a, {0}).to_vector<double>(), (std::vector<double>{5, 7, 9}));
  EXPECT_EQ(sum(a, {1}, true).shape(), (Shape{2, 1}));
  EXPECT_EQ(slice(a, 1, 1, 3).to_vector<double>(), (std::vector<double>{2, 3, 5, 6}));
  EXPECT_EQ(concat({a, a}, 0).shape(), (Shape{4, 3}));
  EXPECT_EQ(stack({b, b}, 1).shape(), (Shape{3, 2}));
  EXPECT_EQ(gather(b, from_vector<std::int64_t>({2, 0})).to_vector<double>(), (std::vector<double>{30, 10}));
  EXPECT_EQ(eye(2).to_vector<float>(), (std::vector<float>{1, 0, 0, 1}));
  EXPECT_EQ(arange(3, DType::i64).to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 1, 2}));
  EXPECT_EQ(zeros({0, 3}).numel(), 0);
  EXPECT_EQ(argmax(a, 1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{2, 2}));
}

TEST(Tensor, PrintsReadably) {
  EXPECT_EQ(f64({1, 2, 3, 4}, {2, 2}).str(), "tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]], dtype=float64)");
  EXPECT_EQ(from_vector<std::int64_t>({1, 2}).str(), "tensor([1, 2], dtype=int64)");
}

TEST(Tensor, RandomIsCounterBasedAndSeeded) {
  Generator g1(42), g2(42);
  Tensor a = randn({1000}, g1, DType::f64), b = randn({1000}, g2, DType::f64);
  EXPECT_EQ(a.to_vector<double>(), b.to_vector<double>());
  double m = mean(a).item(), v = mean(square(a - m)).item();
  EXPECT_NEAR(m, 0.0, 0.1);
  EXPECT_NEAR(v, 1.0, 0.1);
  // Two draws of 500 continue the same counter stream as one draw of 1000.
  Generator g3(42);
  Tensor c1 = rand({500}, g3, DType::f64), c2 = rand({500}, g3, DType::f64);
  Generator g4(42);
  EXPECT_EQ(concat({c1, c2}).to_vector<double>(), rand({1000}, g4, DType::f64).to_vector<double>());
}

TEST(Errors, NameTheOperationAndShapes) {
  Tensor a = zeros({32, 784}), b = zeros({10, 64});
  EXPECT_EQ(error_of<ShapeError>([&] { matmul(a, b); }), "matmul: inner dimensions differ: [32, 784] @ [10, 64] (784 != 10)");
  EXPECT_NE(error_of<ShapeError>([&] { add(zeros({2, 3}), zeros({4})); }).find("add: shapes [2, 3] and [4] cannot be broadcast"),
            std::string::npos);
  EXPECT_NE(error_of<DTypeError>([&] { sub(from_vector<bool>({true}), from_vector<bool>({false})); }).find("sub: expected a number type (float32, float64, int64), got bool"),
            std::string::npos);
  EXPECT_NE(error_of<ShapeError>([&] { reshape(zeros({2, 3}), {4}); }).find("reshape: cannot reshape [2, 3]"), std::string::npos);
  EXPECT_NE(error_of<ValueError>([&] { gather(zeros({3}), from_vector<std::int64_t>({5})); }).find("index 5"), std::string::npos);
  EXPECT_NE(error_of<ValueError>([&] { cross_entropy(zeros({2, 3}), from_vector<std::int64_t>({0, 3})); }).find("label 3"),
            std::string::npos);
}

// ---- eager reverse mode ----------------------------------------------------------------------

TEST(Eager, BackwardAccumulatesAndZeroGradClears) {
  Tensor x = f64({1, 2, 3}, {3}).requires_grad_();
  Tensor y = sum(x * x);
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 4, 6}));
  sum(x * 3.0).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5, 7, 9}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Eager, NonScalarNeedsCotangentAndFreedGraphSaysSo) {
  Tensor x = f64({1, 2}, {2}).requires_grad_();
  Tensor y = exp(x);
  EXPECT_NE(error_of<AutodiffError>([&] { y.backward(); }).find("needs an explicit cotangent"), std::string::npos);
  y.backward(f64({1, 1}, {2}));
  EXPECT_NE(error_of<AutodiffError>([&] { y.backward(f64({1, 1}, {2})); }).find("retain_graph=true"), std::string::npos);
  Tensor z = exp(x);
  z.backward(f64({1, 0}, {2}), /*retain_graph=*/true);
  z.backward(f64({1, 0}, {2}));
  EXPECT_NEAR(x.grad().to_vector<double>()[0], 3 * std::exp(1.0), 1e-12);
}

TEST(Eager, InPlaceChangeOfSavedTensorIsDetected) {
  Tensor w = f64({1, 2}, {2}).requires_grad_();
  Tensor x = f64({3, 4}, {2});
  Tensor y = sum(w * x);
  x.add_(f64({1, 1}, {2}));
  EXPECT_NE(error_of<AutodiffError>([&] { y.backward(); }).find("modified in place"), std::string::npos);
}

TEST(Eager, NoGradGuardRecordsNothing) {
  Tensor x = f64({1}, {1}).requires_grad_();
  {
    NoGradGuard g;
    EXPECT_FALSE((x * 2.0).requires_grad());
  }
  EXPECT_TRUE((x * 2.0).requires_grad());
}

TEST(Eager, CreateGraphGivesSecondDerivatives) {
  Tensor x = scalar(0.7).requires_grad_();
  Tensor y = x * x * x;  // y'' = 6x
  auto g = autograd_grad({y}, {x}, {}, false, /*create_graph=*/true);
  EXPECT_NEAR(g[0].item(), 3 * 0.49, 1e-12);
  auto h = autograd_grad({g[0]}, {x});
  EXPECT_NEAR(h[0].item(), 6 * 0.7, 1e-12);
  Tensor unrelated = scalar(1.0).requires_grad_();
  Tensor y2 = x * 2.0;
  EXPECT_NE(error_of<AutodiffError>([&] { autograd_grad({y2}, {unrelated}); }).find("not reachable"), std::string::npos);
}

TEST(Eager, FirstOrderBackwardRecordsNothingAndReluSavesOneTensor) {
  Tensor x = f64({-1, 2}, {2}).requires_grad_();
  Tensor y = relu(x);
  EXPECT_EQ(y.impl()->node->saved.size(), 0u);  // relu keeps only its output
  EXPECT_TRUE(y.impl()->node->saved_out.defined());
  sum(y).backward();
  EXPECT_FALSE(x.grad().requires_grad());
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 1}));
}

// ---- transforms ------------------------------------------------------------------------------

TEST(Transforms, GradValueAndGradAuxAndArgnums) {
  auto sq = [](const Tensor& x) { return sum(x * x); };
  Tensor x = f64({1, -2}, {2});
  EXPECT_EQ(grad(sq)(x).to_vector<double>(), (std::vector<double>{2, -4}));
  auto [v, g] = value_and_grad(sq)(x);
  EXPECT_EQ(v.item(), 5.0);
  auto [va, ga] = value_and_grad([](const Tensor& x) { return std::make_pair(sum(x), std::string("aux")); })(x);
  EXPECT_EQ(va.second, "aux");
  EXPECT_EQ(ga.to_vector<double>(), (std::vector<double>{1, 1}));
  auto gs = grad([](const Tensor& a, const Tensor& b) { return sum(a * b); }, std::vector<int>{1, 0})(x, f64({3, 4}, {2}));
  EXPECT_EQ(gs[0].to_vector<double>(), (std::vector<double>{1, -2}));
  EXPECT_EQ(gs[1].to_vector<double>(), (std::vector<double>{3, 4}));
  EXPECT_EQ(grad([](const Tensor& a, const Tensor& b) { return sum(a * b); }, 1)(x, f64({3, 4}, {2})).to_vector<double>(),
            (std::vector<double>{1, -2}));
  auto gv = grad([](const std::vector<Tensor>& ps) { return sum(ps[0] * ps[1]); })(std::vector<Tensor>{x, x});
  EXPECT_EQ(gv.size(), 2u);
  EXPECT_NE(error_of<AutodiffError>([&] { grad([](const Tensor& a) { return a * 2.0; })(x); }).find("must return a scalar"),
            std::string::npos);
}

TEST(Transforms, VjpPullbackIsReusableAndJvpRecordsNothing) {
  Tensor W = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  auto f = [&](const Tensor& x) { return tanh(matmul(W, x)); };
  Tensor x = f64({0.1, -0.2, 0.3}, {3});
  auto [y, pullback] = vjp(f, x);
  Tensor g1 = pullback(f64({1, 0}, {2}));
  Tensor g2 = pullback(f64({1, 0}, {2}));
  EXPECT_EQ(g1.to_vector<double>(), g2.to_vector<double>());
  auto [y2, t] = jvp(f, x, f64({1, 0, 0}, {3}));
  EXPECT_FALSE(y2.impl()->node);
  EXPECT_FALSE(t.impl()->node);
  EXPECT_TRUE(allclose(y, y2, 0, 0));
}

TEST(Transforms, JacobiansAgreeAndAutoChoosesByShape) {
  Generator gen(3);
  Tensor W1 = randn({5, 3}, gen, DType::f64), W2 = randn({7, 5}, gen, DType::f64);
  auto f = [&](const Tensor& x) { return matmul(W2, tanh(matmul(W1, x))); };
  Tensor x = randn({3}, gen, DType::f64);
  Tensor jf = jacfwd(f)(x), jr = jacrev(f)(x);
  EXPECT_EQ(jf.shape(), (Shape{7, 3}));
  EXPECT_LT(max_abs_diff(jf, jr), 1e-12);
  auto wide = jacobian(f, x);
  EXPECT_EQ(wide.used, JacobianMode::Forward);  // 3 inputs < 7 outputs
  auto g = [&](const Tensor& v) { return matmul(W1, v); };  // 5 inputs > 5 outputs? W1 is [5, 3]: 3 -> 5
  auto narrow = [&](const Tensor& v) { return sum(tanh(v)); };  // 6 inputs -> 1 output
  EXPECT_EQ(jacobian(narrow, randn({6}, gen, DType::f64)).used, JacobianMode::Reverse);
  EXPECT_EQ(jacobian(g, randn({3}, gen, DType::f64), {.mode = JacobianMode::Reverse}).used, JacobianMode::Reverse);
  // A function of a matrix: Jacobian shape is out.shape + in.shape.
  Tensor M = randn({2, 3}, gen, DType::f64);
  EXPECT_EQ(jacrev([](const Tensor& m) { return sum(exp(m), {1}); })(M).shape(), (Shape{2, 2, 3}));
  EXPECT_LT(max_abs_diff(jacrev([](const Tensor& m) { return sum(exp(m), {1}); })(M),
                         jacfwd([](const Tensor& m) { return sum(exp(m), {1}); })(M)),
            1e-12);
}

TEST(Transforms, VmapMatchesALoop) {
  Generator gen(4);
  Tensor W = randn({4, 3}, gen, DType::f64);
  Tensor xs = randn({5, 3}, gen, DType::f64);
  Tensor ys = vmap([&](const Tensor& x) { return softmax(matmul(W, x)); })(xs);
  ASSERT_EQ(ys.shape(), (Shape{5, 4}));
  for (std::int64_t i = 0; i < 5; ++i) {
    Tensor yi = softmax(matmul(W, reshape(slice(xs, 0, i, i + 1), {3})));
    EXPECT_LT(max_abs_diff(reshape(slice(ys, 0, i, i + 1), {4}), yi), 1e-15);
  }
  // Per-example gradients: vmap of grad.
  Tensor pe = vmap(grad([&](const Tensor& x) { return sum(tanh(matmul(W, x))); }))(xs);
  EXPECT_EQ(pe.shape(), (Shape{5, 3}));
}

// Hessian of a small MLP loss: jacfwd(jacrev) = hessian = finite differences of the gradient.
TEST(Transforms, HessianOfMlpLossMatchesFiniteDifferences) {
  Generator gen(5);
  Tensor W1 = randn({6, 4}, gen, DType::f64), b1 = randn({6}, gen, DType::f64), W2 = randn({3, 6}, gen, DType::f64);
  Tensor labels = from_vector<std::int64_t>({2});
  auto loss = [&](const Tensor& x) {
    Tensor h = tanh(matmul(W1, x) + b1);
    return cross_entropy(reshape(matmul(W2, h), {1, 3}), labels);
  };
  Tensor x = randn({4}, gen, DType::f64);
  Tensor H = hessian(loss)(x);
  EXPECT_LT(max_abs_diff(H, jacfwd(jacrev(loss))(x)), 1e-14);
  EXPECT_LT(max_abs_diff(H, jacrev(jacrev(loss))(x)), 1e-12);
  EXPECT_LT(max_abs_diff(H, transpose(H)), 1e-12);
  auto g = grad(loss);
  const double eps = 1e-5;
  for (std::int64_t j = 0; j < 4; ++j) {
    std::vector<double> e(4, 0.0);
    e[static_cast<std::size_t>(j)] = eps;
    Tensor col = (g(x + f64(e, {4})) - g(x - f64(e, {4}))) / (2 * eps);
    for (std::int64_t i = 0; i < 4; ++i) EXPECT_NEAR(H.to_vector<double>()[static_cast<std::size_t>(i * 4 + j)], col.to_vector<double>()[static_cast<std::size_t>(i)], 1e-8);
  }
  Tensor v = randn({4}, gen, DType::f64);
  EXPECT_LT(max_abs_diff(hvp(loss)(x, v), matmul(H, v)), 1e-12);
  auto [y, lin] = linearize(loss, x);
  EXPECT_LT(max_abs_diff(lin(v), sum(g(x) * v)), 1e-12);
}

// ---- nesting ---------------------------------------------------------------------------------

// Siskind and Pearlmutter: f(x) = x * d/dy (x + y) at y = 1 has df/dx = 1; perturbation
// confusion would give 2.
TEST(Nesting, NoPerturbationConfusionInAnyPairing) {
  Tensor one = scalar(1.0), x0 = scalar(3.0);
  auto inner_rev = [&](const Tensor& x) { return grad([&](const Tensor& y) { return x + y; })(one); };
  auto inner_fwd = [&](const Tensor& x) { return jvp([&](const Tensor& y) { return x + y; }, one, one).second; };
  auto inner_vjp = [&](const Tensor& x) { return vjp([&](const Tensor& y) { return x + y; }, one).pullback(one); };
  for (auto inner : std::vector<std::function<Tensor(const Tensor&)>>{inner_rev, inner_fwd, inner_vjp}) {
    auto f = [&](const Tensor& x) { return x * inner(x); };
    EXPECT_EQ(grad(f)(x0).item(), 1.0);
    EXPECT_EQ(jvp(f, x0, one).second.item(), 1.0);
    EXPECT_EQ(vjp(f, x0).pullback(one).item(), 1.0);
    EXPECT_EQ(jacfwd(f)(x0).item(), 1.0);
    EXPECT_EQ(jacrev(f)(x0).item(), 1.0);
  }
}

// Third derivatives of a tanh MLP's loss in all eight forward/reverse orderings agree with each
// other and with central differences of the Hessian, in float64.
TEST(Nesting, ThirdDerivativesInAllEightOrderings) {
  Generator gen(6);
  Tensor W1 = randn({5, 3}, gen, DType::f64), W2 = randn({1, 5}, gen, DType::f64);
  std::function<Tensor(const Tensor&)> loss = [&](const Tensor& x) { return sum(tanh(matmul(W2, tanh(matmul(W1, x))))); };
  Tensor x = randn({3}, gen, DType::f64);
  using Fn = std::function<Tensor(const Tensor&)>;
  auto d = [](bool fwd, Fn f) -> Fn { return fwd ? Fn(jacfwd(f)) : Fn(jacrev(f)); };
  std::vector<Tensor> results;
  for (int mask = 0; mask < 8; ++mask) {
    Fn f3 = d(mask & 4, d(mask & 2, d(mask & 1, loss)));
    results.push_back(f3(x));
    ASSERT_EQ(results.back().shape(), (Shape{3, 3, 3}));
  }
  for (int i = 1; i < 8; ++i) EXPECT_LT(max_abs_diff(results[0], results[static_cast<std::size_t>(i)]), 1e-12) << "ordering " << i;
  auto H = hessian(loss);
  const double eps = 1e-5;
  auto T = results[0].to_vector<double>();
  for (std::int64_t k = 0; k < 3; ++k) {
    std::vector<double> e(3, 0.0);
    e[static_cast<std::size_t>(k)] = eps;
    auto dH = ((H(x + f64(e, {3})) - H(x - f64(e, {3}))) / (2 * eps)).to_vector<double>();
    for (std::int64_t ij = 0; ij < 9; ++ij) EXPECT_NEAR(T[static_cast<std::size_t>(ij * 3 + k)], dH[static_cast<std::size_t>(ij)], 1e-7);
  }
}

TEST(Nesting, EagerBackwardThroughATransform) {
  Tensor w = scalar(2.0).requires_grad_();
  // g(x) = d/dx (w x^2) = 2 w x; d g / d w = 2 x.
  Tensor gx = grad([&](const Tensor& x) { return w * x * x; })(scalar(3.0));
  EXPECT_EQ(gx.item(), 12.0);
  gx.backward();
  EXPECT_EQ(w.grad().item(), 6.0);
}

TEST(Nesting, EscapedTracerIsReported) {
  Tensor leaked;
  grad([&](const Tensor& x) {
    leaked = x;
    return sum(x);
  })(scalar(1.0));
  EXPECT_NE(error_of<AutodiffError>([&] { exp(leaked); }).find("escaped its transform"), std::string::npos);
}

// ---- custom rules ------------------------------------------------------------------------------

// my_softplus(x) = log(1 + exp(x)) as a user-defined primitive with its own rules, in one place.
const Primitive my_softplus_p{
    .name = "my_softplus",
    .forward = [](std::span<const Tensor> x, const Params&) {
      return maximum(x[0], zeros_like(x[0])) + log(1.0 + exp(-abs(x[0])));  // stable
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return t * sigmoid(c.x[0]); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return ct * sigmoid(c.x[0]); },
    .batching = Batching::Leading,
};
Tensor my_softplus(const Tensor& x) { return bind(my_softplus_p, {x}); }

TEST(CustomRules, WorkInEveryTransformNested) {
  auto r = check_grads([](std::span<const Tensor> x) { return my_softplus(x[0]); }, {f64({-2, -0.5, 0.3, 4}, {4})});
  EXPECT_TRUE(r.pass) << r.failure;
  // Second derivative sigmoid'(x) = s (1 - s), by forward over reverse and reverse over reverse.
  Tensor x = scalar(0.3);
  double s = 1 / (1 + std::exp(-0.3));
  EXPECT_NEAR(hessian([](const Tensor& v) { return my_softplus(v); })(x).item(), s * (1 - s), 1e-14);
  EXPECT_NEAR(grad(grad([](const Tensor& v) { return my_softplus(v); }))(x).item(), s * (1 - s), 1e-14);
}

// ---- the source text's examples ----------------------------------------------------------------

TEST(SeedExamples, ForwardModeJvpOfReluLayer) {
  Generator gen(7);
  Tensor W = randn({3, 5}, gen, DType::f64), x = randn({5}, gen, DType::f64), r = randn({5}, gen, DType::f64);
  auto f = [&](const Tensor& v) { return relu(matmul(W, v)); };
  auto [y, u] = jvp(f, x, r);
  // Manually: diag(1[W x > 0]) W r.
  Tensor dh_dz = cast(matmul(W, x) > 0.0, DType::f64);
  Tensor manual = dh_dz * matmul(W, r);
  EXPECT_TRUE(allclose(u, manual, 1e-12, 1e-14));
}

TEST(SeedExamples, ReverseModeVjpOfReluLayer) {
  Generator gen(8);
  Tensor x = randn({5}, gen, DType::f64), W = randn({3, 5}, gen, DType::f64), v = randn({3}, gen, DType::f64);
  Tensor xr = x.detach().requires_grad_();
  Tensor z = matmul(W, xr);
  Tensor h = relu(z);
  h.backward(v);  // the text's snippet never calls backward; here the VJP is computed for real
  Tensor manual = matmul(v * cast(z > 0.0, DType::f64), W);  // v diag(1[z > 0]) W
  EXPECT_TRUE(allclose(xr.grad(), manual, 1e-12, 1e-14));
  EXPECT_TRUE(allclose(vjp([&](const Tensor& a) { return relu(matmul(W, a)); }, x).pullback(v), manual, 1e-12, 1e-14));
}

}  // namespace

// ---- Jacobians of chains in the matrix-chain order ---------------------------------------------

namespace {
// Dense tanh layers with widths dims, as a chain of stages (f64).
std::vector<Stage> dense_chain(const std::vector<std::int64_t>& dims, Generator& gen) {
  std::vector<Stage> stages;
  for (std::size_t k = 1; k < dims.size(); ++k) {
    Tensor w = randn({dims[k], dims[k - 1]}, gen, DType::f64) * (1.0 / std::sqrt(static_cast<double>(dims[k - 1])));
    Tensor b = randn({dims[k]}, gen, DType::f64) * 0.1;
    stages.push_back([w, b](const Tensor& h) { return tanh(matmul(w, h) + b); });
  }
  return stages;
}
Tensor compose(const std::vector<Stage>& stages, Tensor x) {
  for (const auto& f : stages) x = f(x);
  return x;
}
}  // namespace

TEST(ChainJacobian, EveryStrategyEqualsJacrev) {
  Generator gen(11);
  for (const auto& dims : std::vector<std::vector<std::int64_t>>{{5}, {5, 7}, {6, 3, 9, 2}, {40, 60, 3, 60, 40}, {3, 50, 2, 50, 3, 7}}) {
    if (dims.size() < 2) {
      EXPECT_THROW(jacobian(std::vector<Stage>{}, randn({5}, gen, DType::f64)), ValueError);
      continue;
    }
    auto stages = dense_chain(dims, gen);
    Tensor x = randn({dims[0]}, gen, DType::f64);
    Tensor ref = jacrev([&](const Tensor& v) { return compose(stages, v); })(x);
    const double scale = max(abs(ref)).item();
    for (auto s : {ChainStrategy::Optimal, ChainStrategy::Forward, ChainStrategy::Reverse}) {
      auto r = jacobian(stages, x, s);
      ASSERT_EQ(r.jacobian.shape(), ref.shape());
      EXPECT_LE(max(abs(r.jacobian - ref)).item(), 1e-12 * scale) << r.order.bracketing;
    }
  }
}

TEST(ChainJacobian, OptimalOrderCountsFewestMultiplyAdds) {
  // Wide ends and a narrow middle: both single-mode orders are expensive; (J4 J3)(J2 J1) is cheap.
  Generator gen(12);
  const std::vector<std::int64_t> dims{96, 128, 4, 128, 96};
  auto stages = dense_chain(dims, gen);
  Tensor x = randn({dims[0]}, gen, DType::f64);
  auto madds = [&](ChainStrategy s) {
    const std::uint64_t before = matmul_multiply_adds();
    auto r = jacobian(stages, x, s);
    return std::pair{matmul_multiply_adds() - before, r.order};
  };
  auto [opt, order] = madds(ChainStrategy::Optimal);
  auto [fwd, forder] = madds(ChainStrategy::Forward);
  auto [rev, rorder] = madds(ChainStrategy::Reverse);
  EXPECT_EQ(order.bracketing, "((J4 J3) (J2 J1))");
  EXPECT_EQ(order.cost, matrix_chain_order(dims).cost);
  EXPECT_LT(order.cost, std::min(forder.cost, rorder.cost));
  // The counted work follows the DP's prediction: far below either single-mode order.
  EXPECT_LT(3 * opt, std::min(fwd, rev)) << "optimal " << opt << ", forward " << fwd << ", reverse " << rev;
}

TEST(ChainJacobian, NestsUnderGrad) {
  // d/dx of sum(J(x)) through the chain strategy equals the same through jacrev.
  Generator gen(13);
  auto stages = dense_chain({4, 6, 2, 5}, gen);
  Tensor x = randn({4}, gen, DType::f64);
  Tensor a = grad([&](const Tensor& v) { return sum(jacobian(stages, v).jacobian); })(x);
  Tensor b = grad([&](const Tensor& v) { return sum(jacrev([&](const Tensor& u) { return compose(stages, u); })(v)); })(x);
  EXPECT_LE(max(abs(a - b)).item(), 1e-12 * std::max(1.0, max(abs(b)).item()));
}
