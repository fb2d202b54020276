// vmap over several arguments with in_axes / out_axes, and per-example gradients (issue 17).
#include <gtest/gtest.h>

#include <string>

#include "chainrule/autodiff/stop_gradient.h"
#include "chainrule/autodiff/vmap.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"

using namespace chainrule;

namespace {

Tensor row(const Tensor& x, std::int64_t i, std::int64_t axis = 0) { return squeeze(slice(x, axis, i, i + 1), axis); }

void expect_close(const Tensor& a, const Tensor& b, double rtol = 1e-12) {
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_TRUE(allclose(a, b, rtol, 1e-14)) << a.shape().str();
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const AutodiffError& e) {
    return e.what();
  }
  return "";
}

// A two-layer MLP on parameters {W1 [H,D], b1 [H], W2 [C,H], b2 [C]}; one example x [D], label y [].
Tensor mlp_loss(const std::vector<Tensor>& p, const Tensor& x, const Tensor& y) {
  Tensor h = tanh(add(matmul(p[0], x), p[1]));
  Tensor logits = add(matmul(p[2], h), p[3]);
  return cross_entropy(logits, y);
}

TEST(VmapAxes, TwoArgumentsMappedAndNotMapped) {
  Generator g(1);
  Tensor a = randn({5, 3}, g, DType::f64), b = randn({3}, g, DType::f64);
  auto f = [](const Tensor& x, const Tensor& w) { return sum(mul(x, w)); };
  Tensor out = vmap(f, {0, not_mapped})(a, b);
  ASSERT_EQ(out.shape(), Shape({5}));
  for (std::int64_t i = 0; i < 5; ++i) expect_close(row(out, i), f(row(a, i), b));
}

TEST(VmapAxes, NonzeroAndNegativeInAxesAndOutAxes) {
  Generator g(2);
  Tensor a = randn({3, 4}, g, DType::f64);  // mapped along axis 1 (size 4)
  Tensor b = randn({3, 4}, g, DType::f64);  // mapped along axis -1
  auto f = [](const Tensor& x, const Tensor& y) { return mul(x, exp(y)); };
  Tensor out = vmap(f, {1, -1})(a, b);
  ASSERT_EQ(out.shape(), Shape({4, 3}));
  for (std::int64_t i = 0; i < 4; ++i) expect_close(row(out, i), f(row(a, i, 1), row(b, i, 1)));
  Tensor out1 = vmap(f, {1, -1}, 1)(a, b);
  ASSERT_EQ(out1.shape(), Shape({3, 4}));
  expect_close(out1, mul(a, exp(b)));
  Tensor outm = vmap(f, {1, 1}, -1)(a, b);
  expect_close(outm, mul(a, exp(b)));
}

TEST(VmapAxes, VectorArgumentsAndVectorOutput) {
  Generator g(3);
  std::vector<Tensor> xs = {randn({4, 2}, g, DType::f64), randn({4, 3}, g, DType::f64)};
  Tensor s = randn({}, g, DType::f64);
  auto f = [](const std::vector<Tensor>& v, const Tensor& c) { return std::vector<Tensor>{mul(v[0], c), sum(v[1])}; };
  auto out = vmap(f, {0, not_mapped})(xs, s);
  ASSERT_EQ(out.size(), 2u);
  expect_close(out[0], mul(xs[0], s));
  expect_close(out[1], sum(xs[1], {1}));
  auto pr = vmap([](const Tensor& x) { return std::make_pair(tanh(x), exp(x)); }, {0})(xs[0]);
  expect_close(pr.first, tanh(xs[0]));
  expect_close(pr.second, exp(xs[0]));
}

TEST(VmapAxes, NestedVmapWithAxes) {
  Generator g(4);
  Tensor a = randn({3, 5}, g, DType::f64), b = randn({5, 2}, g, DType::f64);
  // outer over a's axis 0 and nothing of b; inner over b's axis 1: out[i, j] = a[i] . b[:, j]
  auto inner = [](const Tensor& x, const Tensor& col) { return sum(mul(x, col)); };
  auto outer = [&](const Tensor& x, const Tensor& m) { return vmap(inner, {not_mapped, 1})(x, m); };
  Tensor out = vmap(outer, {0, not_mapped})(a, b);
  expect_close(out, matmul(a, b));
  // Both arguments mapped in the inner vmap, the outer one on axis 1.
  Tensor c = randn({5, 3}, g, DType::f64);
  auto pair_inner = [](const Tensor& x, const Tensor& y) { return mul(x, y); };
  Tensor out2 = vmap([&](const Tensor& x, const Tensor& y) { return vmap(pair_inner, {0, 0})(x, y); }, {0, 1})(a, c);
  expect_close(out2, mul(a, transpose(c)));
}

TEST(VmapAxes, ErrorsNameVmapAndTheArgument) {
  Tensor a = zeros({3, 2}, DType::f64), b = zeros({4, 2}, DType::f64);
  auto f = [](const Tensor& x, const Tensor& y) { return add(x, y); };
  std::string e = error_of([&] { vmap(f, {0})(a, b); });
  EXPECT_NE(e.find("vmap: in_axes has 1 entries but the function was called with 2 arguments"), std::string::npos) << e;
  e = error_of([&] { vmap(f, {2, 0})(a, b); });
  EXPECT_NE(e.find("vmap: in_axes 2 is out of range for argument 0 of rank 2"), std::string::npos) << e;
  e = error_of([&] { vmap(f, {0, -3})(a, b); });
  EXPECT_NE(e.find("argument 1 of rank 2"), std::string::npos) << e;
  e = error_of([&] { vmap(f, {0, 0})(a, b); });
  EXPECT_NE(e.find("vmap: mapped sizes disagree: argument 0 has size 3 but argument 1 has size 4"), std::string::npos) << e;
  e = error_of([&] { vmap(f, {not_mapped, not_mapped})(a, b); });
  EXPECT_NE(e.find("vmap: no argument is mapped"), std::string::npos) << e;
  std::vector<Tensor> v = {zeros({3}, DType::f64), zeros({2}, DType::f64)};
  e = error_of([&] { vmap([](const std::vector<Tensor>& p) { return p[0]; }, {0})(v); });
  EXPECT_NE(e.find("argument 0[0] has size 3 but argument 0[1] has size 2"), std::string::npos) << e;
}

TEST(VmapAxes, OneArgumentVmapUnchanged) {
  Tensor a = from_vector<double>({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor out = vmap([](const Tensor& x) { return sum(x); })(a);
  expect_close(out, from_vector<double>({3, 7, 11}, {3}));
}

TEST(VmapAxes, CrossEntropyWithBatchedLabels) {
  Generator g(5);
  Tensor z = randn({6, 4}, g, DType::f64);
  Tensor y = from_vector<std::int64_t>({0, 3, 1, 2, 2, 0}, {6});
  Tensor out = vmap([](const Tensor& l, const Tensor& t) { return cross_entropy(l, t); }, {0, 0})(z, y);
  expect_close(out, cross_entropy(z, y, Reduction::None));
  Tensor ct = randn({6}, g, DType::f64);
  Tensor back = vmap([](const Tensor& l, const Tensor& t, const Tensor& c) { return cross_entropy_backward(l, t, c); }, {0, 0, 0})(z, y, ct);
  expect_close(back, cross_entropy_backward(z, y, ct));
}

TEST(VmapAxes, PerExampleGradientsOfAnMlpMatchALoopOfGrad) {
  Generator g(6);
  const std::int64_t N = 7, D = 5, H = 8, C = 3;
  std::vector<Tensor> params = {randn({H, D}, g, DType::f64), randn({H}, g, DType::f64), randn({C, H}, g, DType::f64),
                                randn({C}, g, DType::f64)};
  Tensor x = randn({N, D}, g, DType::f64);
  Tensor y = from_vector<std::int64_t>({0, 1, 2, 2, 1, 0, 1}, {N});
  auto per_ex = vmap(grad(mlp_loss), {not_mapped, 0, 0})(params, x, y);
  ASSERT_EQ(per_ex.size(), params.size());
  for (std::size_t k = 0; k < params.size(); ++k) ASSERT_EQ(per_ex[k].shape(), Shape{N} + params[k].shape());
  for (std::int64_t i = 0; i < N; ++i) {
    auto gi = grad(mlp_loss)(params, row(x, i), row(y, i));
    for (std::size_t k = 0; k < params.size(); ++k) expect_close(row(per_ex[k], i), gi[k]);
  }
  // value_and_grad inside vmap: per-example losses and gradients.
  auto vg = vmap([](const std::vector<Tensor>& p, const Tensor& xi, const Tensor& yi) {
    auto [v, gr] = value_and_grad(mlp_loss)(p, xi, yi);
    gr.push_back(v);
    return gr;
  }, {not_mapped, 0, 0})(params, x, y);
  ASSERT_EQ(vg.size(), params.size() + 1);
  for (std::int64_t i = 0; i < N; ++i) expect_close(row(vg.back(), i), mlp_loss(params, row(x, i), row(y, i)));
  for (std::size_t k = 0; k < params.size(); ++k) expect_close(vg[k], per_ex[k]);
}

TEST(VmapAxes, BatchedGatherIndicesAndTheirPerExampleGradients) {
  // An embedding lookup with per-example token indices: gather's index input is batched.
  Generator g(8);
  Tensor table = randn({5, 3}, g, DType::f64);
  Tensor tokens = from_vector<std::int64_t>({4, 0, 0, 2, 1, 3, 3, 3, 0}, {3, 3});
  Tensor rows = vmap([&](const Tensor& idx) { return gather(table, idx, 0); })(tokens);
  ASSERT_EQ(rows.shape(), Shape({3, 3, 3}));
  for (std::int64_t i = 0; i < 3; ++i) expect_close(row(rows, i), gather(table, row(tokens, i), 0));
  // Both inputs batched (a table per example), and the gradient w.r.t. the shared table.
  Tensor tables = randn({3, 5, 3}, g, DType::f64);
  Tensor both = vmap([](const Tensor& t, const Tensor& idx) { return gather(t, idx, 0); }, {0, 0})(tables, tokens);
  for (std::int64_t i = 0; i < 3; ++i) expect_close(row(both, i), gather(row(tables, i), row(tokens, i), 0));
  auto loss = [](const Tensor& t, const Tensor& idx) { return sum(tanh(gather(t, idx, 0))); };
  Tensor per_ex = vmap(grad(loss), {not_mapped, 0})(table, tokens);
  ASSERT_EQ(per_ex.shape(), Shape({3, 5, 3}));
  for (std::int64_t i = 0; i < 3; ++i) expect_close(row(per_ex, i), grad(loss)(table, row(tokens, i)));
}

TEST(VmapAxes, VmapOfGradOfTwoTensorArguments) {
  Generator g(7);
  Tensor w = randn({4}, g, DType::f64), xs = randn({6, 4}, g, DType::f64), ys = randn({6}, g, DType::f64);
  auto loss = [](const Tensor& wi, const Tensor& xi, const Tensor& yi) {
    Tensor r = sub(sum(mul(wi, tanh(xi))), yi);
    return mul(r, r);
  };
  auto both = vmap(grad(loss, std::vector<int>{0, 1}), {not_mapped, 0, 0})(w, xs, ys);
  ASSERT_EQ(both.size(), 2u);
  ASSERT_EQ(both[0].shape(), Shape({6, 4}));
  ASSERT_EQ(both[1].shape(), Shape({6, 4}));
  Tensor gx = vmap(grad(loss, 1), {not_mapped, 0, 0})(w, xs, ys);
  for (std::int64_t i = 0; i < 6; ++i) {
    auto gi = grad(loss, std::vector<int>{0, 1})(w, row(xs, i), row(ys, i));
    expect_close(row(both[0], i), gi[0]);
    expect_close(row(both[1], i), gi[1]);
    expect_close(row(gx, i), gi[1]);
  }
  // Both w and x mapped.
  Tensor ws = randn({6, 4}, g, DType::f64);
  auto both2 = vmap(grad(loss, std::vector<int>{0, 1}), {0, 0, 0})(ws, xs, ys);
  for (std::int64_t i = 0; i < 6; ++i) {
    auto gi = grad(loss, std::vector<int>{0, 1})(row(ws, i), row(xs, i), row(ys, i));
    expect_close(row(both2[0], i), gi[0]);
    expect_close(row(both2[1], i), gi[1]);
  }
}

TEST(StopGradient, IsAConstantUnderEveryTransform) {
  Tensor x = from_vector<double>({0.5, -1.5, 2.0}, {3});
  auto f = [](const Tensor& v) { return sum(mul(square(v), stop_gradient(v))); };  // grad 2 v s(v)
  expect_close(f(x), sum(mul(square(x), x)));
  expect_close(grad(f)(x), mul(2.0 * x, x));
  Tensor t = from_vector<double>({1.0, 2.0, -1.0}, {3});
  auto [y, y_t] = jvp(f, x, t);
  expect_close(y_t, sum(mul(mul(2.0 * x, x), t)));
  // hessian: d/dv (2 v s(v)) = diag(2 s(v)), not diag(6 v).
  Tensor h = hessian(f)(x);
  Tensor expect = mul(eye(3, DType::f64), unsqueeze(2.0 * x, 0));
  expect_close(h, expect);
  // vmap(grad): per-row gradients, the stopped value batched like any other.
  Tensor xs = from_vector<double>({0.5, -1.5, 2.0, 1.0, 3.0, -0.25}, {2, 3});
  Tensor gs = vmap(grad(f))(xs);
  expect_close(gs, mul(2.0 * xs, xs));
  Tensor gs2 = vmap(grad(f), {0})(xs);
  expect_close(gs2, mul(2.0 * xs, xs));
  // Inside vmap alone it is the identity on the batch.
  expect_close(vmap([](const Tensor& v) { return stop_gradient(v); })(xs), xs);
}

}  // namespace

namespace {

TEST(VmapRandomness, RefusedByDefaultSameOrDifferentOnRequest) {
  Tensor xs = zeros({4, 3}, DType::f64);
  Generator g(21);
  auto noisy = [&](const Tensor& x) { return add(x, randn({3}, g, DType::f64)); };
  try {
    (void)vmap(noisy)(xs);
    FAIL() << "a draw inside vmap must be refused by default";
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("randn: a random draw inside vmap"), std::string::npos) << e.what();
  }
  // Same: one draw, [3], shared by every example: the very values a draw outside would give.
  Generator g1(5), g2(5);
  Tensor same = vmap([&](const Tensor& x) { return add(x, randn({3}, g1, DType::f64)); }, Randomness::Same)(xs);
  Tensor ref = randn({3}, g2, DType::f64);
  for (std::int64_t i = 0; i < 4; ++i) expect_close(row(same, i), ref);
  // Different: a [4, 3] draw, one row per example, reproducible from the seed.
  Generator g3(5), g4(5);
  Tensor diff = vmap([&](const Tensor& x) { return add(x, randn({3}, g3, DType::f64)); }, {0}, 0, Randomness::Different)(xs);
  expect_close(diff, randn({4, 3}, g4, DType::f64));
  EXPECT_GT(max_abs_diff(row(diff, 0), row(diff, 1)), 1e-3);
  // Nested: the inner vmap draws per inner example, the outer shares (Same over Different).
  Generator g5(9), g6(9);
  Tensor nested = vmap([&](const Tensor& x) {
    return vmap([&](const Tensor& r) { return add(r, rand({}, g5, DType::f64)); }, Randomness::Different)(x);
  }, Randomness::Same)(zeros({2, 3}, DType::f64));
  Tensor inner = rand({3}, g6, DType::f64);
  expect_close(row(nested, 0), inner);
  expect_close(row(nested, 1), inner);
}

TEST(VmapRandomness, DropoutPerExampleUnderVmap) {
  nn::Dropout drop(0.5, 3);
  Tensor xs = ones({8, 16}, DType::f64);
  EXPECT_THROW((void)vmap([&](const Tensor& x) { return drop.forward(x); })(xs), AutodiffError);
  Tensor out = vmap([&](const Tensor& x) { return drop.forward(x); }, Randomness::Different)(xs);
  ASSERT_EQ(out.shape(), Shape({8, 16}));
  // Each example gets its own mask: rows differ, and every kept entry is scaled by 1 / (1 - p).
  EXPECT_GT(max_abs_diff(row(out, 0), row(out, 1)), 0.5);
  for (double v : out.to_vector<double>()) EXPECT_TRUE(v == 0.0 || v == 2.0) << v;
}

}  // namespace
