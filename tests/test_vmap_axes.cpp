// vmap over several arguments with in_axes / out_axes, and per-example gradients (issue 17).
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <string>
#include <tuple>

#include "chainrule/autodiff/stop_gradient.h"
#include "chainrule/autodiff/vmap.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"
#include "chainrule/tensor/allocator.h"

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
  // in_axes built at run time as a std::vector<InAxis>.
  std::vector<InAxis> runtime_axes = {InAxis{1}, InAxis{-1}};
  expect_close(vmap(f, runtime_axes, 1)(a, b), mul(a, exp(b)));
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
  EXPECT_NE(e.find("vmap: mapped sizes disagree: argument 0 has size 3 along axis 0, argument 1 has size 4 along axis 0"),
            std::string::npos) << e;
  e = error_of([&] { vmap(f, {not_mapped, not_mapped})(a, b); });
  EXPECT_NE(e.find("vmap: no argument is mapped"), std::string::npos) << e;
  std::vector<Tensor> v = {zeros({3}, DType::f64), zeros({2}, DType::f64)};
  e = error_of([&] { vmap([](const std::vector<Tensor>& p) { return p[0]; }, {0})(v); });
  EXPECT_NE(e.find("argument 0[0] has size 3 along axis 0, argument 0[1] has size 2 along axis 0"), std::string::npos) << e;
}

TEST(VmapAxes, PerLeafInAxesFollowTheArgumentsStructure) {
  Generator g(11);
  Tensor a = randn({5, 3}, g, DType::f64), b = randn({3}, g, DType::f64), c = randn({3, 5}, g, DType::f64);
  // A pair whose first leaf is mapped along 0 and second not at all, next to a Tensor mapped along 1.
  auto f = [](const std::pair<Tensor, Tensor>& p, const Tensor& z) { return add(mul(p.first, p.second), z); };
  Tensor out = vmap(f, {{0, not_mapped}, 1})(std::make_pair(a, b), c);
  ASSERT_EQ(out.shape(), Shape({5, 3}));
  for (std::int64_t i = 0; i < 5; ++i) expect_close(row(out, i), add(mul(row(a, i), b), row(c, i, 1)));
  // A vector with an axis per element, and an axis standing for a whole subtree (a prefix).
  std::vector<Tensor> v = {randn({5, 2}, g, DType::f64), randn({2, 5}, g, DType::f64)};
  auto h = [](const std::tuple<std::vector<Tensor>, std::vector<Tensor>>& t) {
    const auto& [p, q] = t;
    return add(add(sum(p[0]), sum(p[1])), sum(mul(q[0], q[1])));
  };
  std::vector<Tensor> w = {randn({4, 5}, g, DType::f64), randn({4, 5}, g, DType::f64)};
  Tensor out2 = vmap(h, {{{0, 1}, 1}})(std::make_tuple(v, w));
  ASSERT_EQ(out2.shape(), Shape({5}));
  for (std::int64_t i = 0; i < 5; ++i)
    expect_close(row(out2, i), add(add(sum(row(v[0], i)), sum(row(v[1], i, 1))), sum(mul(row(w[0], i, 1), row(w[1], i, 1)))));
  // A named map: each key its own entry.
  std::map<std::string, Tensor> named{{"w", b}, {"x", a}};
  Tensor out3 = vmap([](const std::map<std::string, Tensor>& m) { return sum(mul(m.at("w"), m.at("x"))); },
                     {AxisTree::map({{"w", not_mapped}, {"x", 0}})})(named);
  expect_close(out3, matmul(a, b));
  // Per-example gradients with respect to a structure whose leaves are mapped apart.
  auto loss = [](const std::pair<Tensor, Tensor>& p) { return sum(mul(tanh(p.first), p.second)); };
  auto gr = vmap(grad(loss), {{0, not_mapped}})(std::make_pair(a, b));
  ASSERT_EQ(gr.first.shape(), Shape({5, 3}));
  ASSERT_EQ(gr.second.shape(), Shape({5, 3}));
  for (std::int64_t i = 0; i < 5; ++i) {
    auto gi = grad(loss)(std::make_pair(row(a, i), b));
    expect_close(row(gr.first, i), gi.first);
    expect_close(row(gr.second, i), gi.second);
  }
}

TEST(VmapAxes, OutAxesPerOutput) {
  Generator g(12);
  Tensor a = randn({4, 3}, g, DType::f64), b = randn({3}, g, DType::f64);
  auto f = [](const Tensor& x, const Tensor& y) { return std::make_pair(mul(x, y), std::make_pair(sum(x), exp(y))); };
  // The first output's batch axis last, the second's first; exp(y) does not depend on x: not_mapped.
  auto out = vmap(f, {0, not_mapped}, {1, {0, not_mapped}})(a, b);
  expect_close(out.first, transpose(mul(a, b)));
  expect_close(out.second.first, sum(a, {1}));
  expect_close(out.second.second, exp(b));
  // One axis for a whole output subtree.
  auto out2 = vmap(f, {0, not_mapped}, {-1, 0})(a, b);
  expect_close(out2.first, transpose(mul(a, b)));
  ASSERT_EQ(out2.second.second.shape(), Shape({4, 3}));  // broadcast: the same for every example
  std::string e = error_of([&] { vmap(f, {0, not_mapped}, {not_mapped, 0})(a, b); });
  EXPECT_NE(e.find("vmap: out_axes is not_mapped for output[0], but it depends on a mapped argument"), std::string::npos) << e;
  e = error_of([&] { vmap(f, {0, not_mapped}, {0, {0, 0, 0}})(a, b); });
  EXPECT_NE(e.find("vmap: out_axes entry {0, 0, 0} for output[1] does not match its structure (T,T): 3 entries for 2 fields"),
            std::string::npos) << e;
  e = error_of([&] { vmap(f, {0, not_mapped}, {2, 0})(a, b); });
  EXPECT_NE(e.find("vmap: out_axes 2 is out of range for output[0] (batch axis included) of rank 2"), std::string::npos) << e;
}

TEST(VmapAxes, PerLeafErrorsNameTheArgumentAndList) {
  Tensor a = zeros({5, 3}, DType::f64), b = zeros({3, 4}, DType::f64), c = zeros({5}, DType::f64);
  auto f = [](const std::vector<Tensor>& v, const Tensor& z) { return add(sum(v[0]), add(sum(v[1]), sum(z))); };
  std::vector<Tensor> v = {a, b};
  std::string e = error_of([&] { vmap(f, {{0, 1, 0}, 0})(v, c); });
  EXPECT_NE(e.find("vmap: in_axes entry {0, 1, 0} for argument 0 does not match its structure [T,T]: 3 entries for 2 elements"),
            std::string::npos) << e;
  e = error_of([&] { vmap(f, {0, {0}})(v, c); });
  EXPECT_NE(e.find("for argument 1 does not match its structure T: a Tensor takes one axis or not_mapped"), std::string::npos) << e;
  e = error_of([&] { vmap(f, {{0, 2}, 0})(v, c); });
  EXPECT_NE(e.find("vmap: in_axes 2 is out of range for argument 0[1] of rank 2"), std::string::npos) << e;
  e = error_of([&] { vmap(f, {{0, 1}, 0})(v, c); });
  EXPECT_NE(e.find("vmap: mapped sizes disagree: argument 0[0] has size 5 along axis 0, argument 0[1] has size 4 along axis 1, "
                   "argument 1 has size 5 along axis 0"), std::string::npos) << e;
  std::map<std::string, Tensor> m{{"w", a}, {"x", a}};
  auto fm = [](const std::map<std::string, Tensor>& p) { return sum(p.at("w")); };
  e = error_of([&] { vmap(fm, {AxisTree::map({{"w", 0}, {"y", 0}})})(m); });
  EXPECT_NE(e.find("keys differ (missing: x; not in the argument: y)"), std::string::npos) << e;
  e = error_of([&] { vmap(fm, {{0, 0}})(m); });
  EXPECT_NE(e.find("a map takes AxisTree::map"), std::string::npos) << e;
}

TEST(VmapAxes, ChunkSizeGivesTheSameResult) {
  Generator g(13);
  Tensor a = randn({7, 3}, g, DType::f64), b = randn({3, 7}, g, DType::f64);
  auto f = [](const Tensor& x, const Tensor& y) { return std::make_pair(mul(tanh(x), y), sum(x)); };
  auto full = vmap(f, {0, 1}, {1, 0})(a, b);
  for (std::int64_t chunk : {1, 2, 3, 7, 100}) {
    auto part = vmap(f, {0, 1}, VmapOptions{.out_axes = {1, 0}, .chunk_size = chunk})(a, b);
    expect_close(part.first, full.first);
    expect_close(part.second, full.second);
  }
  // Per-example gradients in chunks, nested in a grad (a sum of per-example losses).
  auto loss = [](const Tensor& w, const Tensor& x) { return sum(tanh(mul(w, x))); };
  Tensor w = randn({3}, g, DType::f64);
  Tensor per = vmap(grad(loss), {not_mapped, 0}, VmapOptions{.chunk_size = 3})(w, a);
  expect_close(per, vmap(grad(loss), {not_mapped, 0})(w, a));
  Tensor gw = grad([&](const Tensor& v) { return sum(vmap(loss, {not_mapped, 0}, VmapOptions{.chunk_size = 2})(v, a)); })(w);
  expect_close(gw, sum(per, {0}));
  EXPECT_NE(error_of([&] { vmap(f, {0, 1}, VmapOptions{.chunk_size = -1})(a, b); }).find("vmap: chunk_size must be positive"),
            std::string::npos);
}

TEST(VmapAxes, ChunkSizeLowersPeakMemory) {
  // Each example makes a [512, 512] intermediate: the peak follows the examples per chunk.
  Generator g(14);
  Tensor xs = randn({32, 512}, g, DType::f64);
  auto f = [](const Tensor& x) { return sum(tanh(mul(unsqueeze(x, -1), unsqueeze(x, 0)))); };
  auto peak_of = [&](std::int64_t chunk, Tensor& out) {
    memory::reset_peak();
    const std::size_t before = memory::stats().bytes_in_use;
    out = vmap(f, {0}, VmapOptions{.chunk_size = chunk})(xs);
    return memory::stats().peak_bytes - before;
  };
  Tensor all, c8, c2;
  const std::size_t p_all = peak_of(0, all), p8 = peak_of(8, c8), p2 = peak_of(2, c2);
  expect_close(c8, all);
  expect_close(c2, all);
  const double example = 512.0 * 512 * 8;  // one example's intermediate, float64
  EXPECT_GT(static_cast<double>(p_all), 32 * example);
  EXPECT_LT(static_cast<double>(p8), 0.5 * static_cast<double>(p_all));
  EXPECT_LT(static_cast<double>(p2), 0.5 * static_cast<double>(p8));
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

namespace {

// f: R^64 -> R^8 through a hidden layer of 2048: each direction of jacfwd carries [2048] vectors.
struct Wide {
  Generator g{15};
  Tensor w1 = randn({2048, 64}, g, DType::f64) * 0.125, w2 = randn({8, 2048}, g, DType::f64) * 0.02;
  Tensor x = randn({64}, g, DType::f64);
  Tensor operator()(const Tensor& v) const { return matmul(w2, tanh(matmul(w1, v))); }
};

TEST(JacobianBudget, PeakFallsWithTheChunkAndTheBudgetHolds) {
  Wide f;
  auto peak_of = [&](const JacobianOptions& o, Tensor& out, std::int64_t* chosen = nullptr) {
    memory::reset_peak();
    const std::size_t before = memory::stats().bytes_in_use;
    JacobianOptions fwd = o;
    fwd.mode = JacobianMode::Forward;
    JacobianResult r = jacobian(f, f.x, fwd);
    const std::size_t peak = memory::stats().peak_bytes - before;
    out = r.jacobian;
    if (chosen) *chosen = r.chunk_size;
    return static_cast<double>(peak);
  };
  // The Jacobian in closed form: W2 diag(1 - tanh²(W1 x)) W1.
  Tensor h = tanh(matmul(f.w1, f.x));
  Tensor expect = matmul(f.w2, mul(unsqueeze(sub(scalar_tensor(1.0, DType::f64), square(h)), -1), f.w1));
  Tensor all, c16, c4;
  const double p_all = peak_of({}, all), p16 = peak_of({.chunk_size = 16}, c16), p4 = peak_of({.chunk_size = 4}, c4);
  expect_close(all, expect, 1e-10);
  expect_close(c16, all);
  expect_close(c4, all);
  EXPECT_LT(p16, 0.5 * p_all);
  EXPECT_LT(p4, 0.5 * p16);
  // A budget of a third of the all-at-once peak: a chunk between 1 and 64 is chosen, and the
  // call's peak stays within 25% of the budget (the allocator's size classes round up by at most
  // 25%) plus the Jacobian's own bytes (its rows, their concatenation and its transpose).
  const auto budget = static_cast<std::size_t>(p_all / 3);
  Tensor b;
  std::int64_t chosen = 0;
  const double p_budget = peak_of({.max_bytes = budget}, b, &chosen);
  expect_close(b, all);
  EXPECT_GT(chosen, 1);
  EXPECT_LT(chosen, 64);
  const double jac_bytes = 64.0 * 8 * 8;
  EXPECT_LE(p_budget, 1.25 * static_cast<double>(budget) + 4 * jac_bytes) << "chunk " << chosen << ", budget " << budget;
  std::printf("jacfwd peak bytes: all %.0f, chunk 16 %.0f, chunk 4 %.0f; budget %zu -> chunk %lld, peak %.0f\n", p_all, p16, p4,
              budget, static_cast<long long>(chosen), p_budget);
  // The same through jacfwd, jacrev and hessian.
  expect_close(jacfwd(f, JacobianOptions{.max_bytes = budget})(f.x), all);
  expect_close(jacrev(f, JacobianOptions{.max_bytes = 4096})(f.x), all);
  auto scalar = [&](const Tensor& v) { return sum(f(v)); };
  Tensor hs = hessian(scalar)(f.x);
  expect_close(hessian(scalar, JacobianOptions{.max_bytes = budget})(f.x), hs, 1e-10);
  try {
    (void)jacfwd(f, JacobianOptions{.chunk_size = 4, .max_bytes = budget})(f.x);
    FAIL() << "chunk_size and max_bytes together must be refused";
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("jacfwd: give chunk_size or max_bytes, not both"), std::string::npos) << e.what();
  }
}

}  // namespace
