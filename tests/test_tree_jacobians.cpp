// Jacobians, Hessians, hvp and linearize of functions of trees and of several arguments (issue 17,
// item 1): results nest as JAX's (output structure outside, argument structure inside), checked
// against the single-Tensor transforms on the leaves laid end to end and against central finite
// differences, in float64.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "chainrule/autodiff/vmap.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"

using namespace chainrule;

namespace {

struct Net {
  Tensor w, b;
};
CHAINRULE_TREE(Net, w, b)

struct Stats {  // a struct output
  Tensor mean, top;
};
CHAINRULE_TREE(Stats, mean, top)

void expect_close(const Tensor& a, const Tensor& b, double rtol = 1e-12, double atol = 1e-12) {
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_TRUE(allclose(a, b, rtol, atol)) << a.shape().str() << " max |a - b| " << max(abs(sub(a, b))).item<double>();
}

// The leaves of a tree laid end to end, and back: written here with plain slices, independently
// of the library's layout.
template <class T>
Tensor cat_leaves(const T& t) {
  std::vector<Tensor> v;
  tree_for_each(t, [&](const Tensor& x) { v.push_back(reshape(x, Shape{x.numel()})); });
  return concat(v, 0);
}
template <class T>
T split_leaves(const T& like, const Tensor& theta) {
  std::int64_t off = 0;
  return tree_map([&](const Tensor& x) {
    Tensor r = reshape(slice(theta, 0, off, off + x.numel()), x.shape());
    off += x.numel();
    return r;
  }, like);
}
// Rows [r0, r0 + out.numel()) and columns [c0, c0 + in.numel()) of a flat Jacobian, shaped out + in.
Tensor block(const Tensor& j, std::int64_t r0, const Shape& out, std::int64_t c0, const Shape& in) {
  return reshape(slice(slice(j, 0, r0, r0 + out.numel()), 1, c0, c0 + in.numel()), out + in);
}
Tensor diag(const Tensor& v) { return mul(eye(v.numel(), v.dtype()), v); }  // diag(v)[i, j] = v[j] δ_ij

// Central differences of g: R^n -> R^m at theta, [m, n].
template <class G>
Tensor fd_jacobian(const G& g, const Tensor& theta) {
  const std::int64_t n = theta.numel();
  const double h = 1e-6;
  std::vector<Tensor> cols;
  for (std::int64_t k = 0; k < n; ++k) {
    Tensor e = mul(squeeze(slice(eye(n, DType::f64), 0, k, k + 1), 0), scalar_tensor(h, DType::f64));
    cols.push_back(div(sub(g(add(theta, e)), g(sub(theta, e))), scalar_tensor(2 * h, DType::f64)));
  }
  return transpose(stack(cols, 0));
}

struct Fixture {
  Generator g{5};
  Net net{randn({3, 4}, g, DType::f64), randn({3}, g, DType::f64)};
  Tensor x = randn({2, 4}, g, DType::f64);
  // A pair output: the layer's tanh output [2, 3] and a scalar.
  std::pair<Tensor, Tensor> f(const Net& n) const {
    Tensor h = tanh(add(matmul(x, n.w, false, true), n.b));
    return {h, sum(mul(n.b, n.b))};
  }
  Tensor f_flat(const Tensor& theta) const {
    auto [h, s] = f(split_leaves(net, theta));
    return concat({reshape(h, Shape{6}), reshape(s, Shape{1})}, 0);
  }
};

TEST(TreeJacobian, StructArgumentPairOutputMatchesTheFlatJacobianAndFiniteDifferences) {
  Fixture s;
  auto pf = [&](const Net& n) { return s.f(n); };
  const Tensor theta = cat_leaves(s.net);  // 12 + 3
  const Tensor flat = jacrev([&](const Tensor& t) { return s.f_flat(t); })(theta);  // [7, 15]
  expect_close(flat, fd_jacobian([&](const Tensor& t) { return s.f_flat(t); }, theta), 1e-7, 1e-8);
  for (int mode = 0; mode < 3; ++mode) {
    std::pair<Net, Net> j = mode == 0   ? jacrev(pf)(s.net)
                            : mode == 1 ? jacfwd(pf)(s.net)
                                        : jacobian(pf, s.net).jacobian;
    expect_close(j.first.w, block(flat, 0, {2, 3}, 0, {3, 4}));  // [2, 3, 3, 4]
    expect_close(j.first.b, block(flat, 0, {2, 3}, 12, {3}));
    expect_close(j.second.w, block(flat, 6, {}, 0, {3, 4}));  // [3, 4], zero
    expect_close(j.second.b, block(flat, 6, {}, 12, {3}));    // 2 b
  }
  expect_close(jacrev(pf)(s.net).second.b, mul(s.net.b, scalar_tensor(2.0, DType::f64)));
  // Chunked passes and a memory budget give the same blocks.
  auto c = jacrev(pf, JacobianOptions{.chunk_size = 2})(s.net);
  expect_close(c.first.w, block(flat, 0, {2, 3}, 0, {3, 4}));
  auto d = jacfwd(pf, JacobianOptions{.chunk_size = 4})(s.net);
  expect_close(d.first.b, block(flat, 0, {2, 3}, 12, {3}));
  auto m = jacobian(pf, s.net, JacobianOptions{.max_bytes = 1 << 20});
  expect_close(m.jacobian.first.w, block(flat, 0, {2, 3}, 0, {3, 4}));
}

TEST(TreeJacobian, StructOutputsNestAsTheirFields) {
  Fixture s;
  auto stats = [&](const Tensor& x) { return Stats{mean(x), max(mul(x, x), {0}, false)}; };
  // A Tensor argument: the struct itself, each field d field / d x.
  Stats j = jacrev(stats)(s.x);
  expect_close(j.mean, mul(ones({2, 4}, DType::f64), scalar_tensor(1.0 / 8, DType::f64)));
  expect_close(j.top, jacfwd([&](const Tensor& x) { return max(mul(x, x), {0}, false); })(s.x));
  // A struct argument: a tuple of the output's fields, each a Net.
  auto g = [&](const Net& n) { return Stats{sum(n.w), mul(n.b, n.b)}; };
  std::tuple<Net, Net> k = jacfwd(g)(s.net);
  expect_close(std::get<0>(k).w, ones({3, 4}, DType::f64));
  expect_close(std::get<0>(k).b, zeros({3}, DType::f64));
  expect_close(std::get<1>(k).b, diag(mul(s.net.b, scalar_tensor(2.0, DType::f64))));
  expect_close(std::get<1>(k).w, zeros({3, 3, 4}, DType::f64));
}

TEST(TreeJacobian, SeveralArgumentsByArgnum) {
  Fixture s;
  auto f = [](const Net& n, const Tensor& x) { return tanh(add(matmul(x, n.w, false, true), n.b)); };  // [2, 3]
  Tensor jx = jacfwd<1>(f)(s.net, s.x);
  Tensor ref = jacrev([&](const Tensor& x) { return f(s.net, x); })(s.x);
  expect_close(jx, ref);
  expect_close(jacrev<1>(f)(s.net, s.x), ref);
  Net jn = jacrev<0>(f)(s.net, s.x);
  expect_close(jn.b, jacfwd([&](const Tensor& b) { return f(Net{s.net.w, b}, s.x); })(s.net.b));
  // A runtime argnum, as JAX's argnums, where the arguments share a type.
  auto h = [](const Tensor& a, const Tensor& b) { return mul(sin(a), b); };
  Generator g(2);
  Tensor a = randn({3}, g, DType::f64), b = randn({3}, g, DType::f64);
  expect_close(jacrev(h, JacobianOptions{.argnum = 1})(a, b), diag(sin(a)));
  expect_close(jacfwd(h, JacobianOptions{.argnum = 0})(a, b), diag(mul(cos(a), b)));
  // d²/da² sum(sin(a) b) = diag(-sin(a) b)
  expect_close(hessian([](const Tensor& a, const Tensor& b) { return sum(mul(sin(a), b)); }, JacobianOptions{.argnum = 0})(a, b),
               diag(neg(mul(sin(a), b))));
  try {
    (void)jacrev(f, JacobianOptions{.argnum = 1})(s.net, s.x);
    FAIL();
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("jacrev<1>(f)"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)jacfwd(h, JacobianOptions{.argnum = 2})(a, b), AutodiffError);
}

// A small MLP run by functional_call, with its parameters as a named map.
struct MapFixture {
  Generator g{9};
  nn::Sequential model;
  std::map<std::string, Tensor> p;
  Tensor x = randn({5, 3}, g, DType::f64);
  Tensor y = from_vector<std::int64_t>({0, 1, 1, 0, 1}, {5});
  MapFixture() {
    model.push_back(std::make_shared<nn::Linear>(3, 4, nn::LinearOptions{true, DType::f64}));
    model.push_back(std::make_shared<nn::Tanh>());
    model.push_back(std::make_shared<nn::Linear>(4, 2, nn::LinearOptions{true, DType::f64}));
    p = {{"0.weight", randn({4, 3}, g, DType::f64)}, {"0.bias", randn({4}, g, DType::f64)},
         {"2.weight", randn({2, 4}, g, DType::f64)}, {"2.bias", randn({2}, g, DType::f64)}};
  }
  Tensor logits(const std::map<std::string, Tensor>& q) { return nn::functional_call(model, q, x); }
  Tensor loss(const std::map<std::string, Tensor>& q) { return cross_entropy(logits(q), y); }
};

TEST(TreeJacobian, HessianAndJacrevWithRespectToAParameterMap) {
  MapFixture s;
  const Tensor theta = cat_leaves(s.p);  // 26, in key order: 0.bias, 0.weight, 2.bias, 2.weight
  auto loss_flat = [&](const Tensor& t) { return s.loss(split_leaves(s.p, t)); };
  const Tensor hflat = hessian(loss_flat)(theta);  // [26, 26]
  // The flat Hessian itself against central differences of the gradient.
  expect_close(hflat, fd_jacobian([&](const Tensor& t) { return grad(loss_flat)(t); }, theta), 1e-6, 1e-7);
  std::map<std::string, std::map<std::string, Tensor>> h = hessian([&](const std::map<std::string, Tensor>& q) { return s.loss(q); })(s.p);
  ASSERT_EQ(h.size(), 4u);
  std::int64_t r0 = 0;
  for (const auto& [ro, pr] : s.p) {
    ASSERT_EQ(h.at(ro).size(), 4u);
    std::int64_t c0 = 0;
    for (const auto& [co, pc] : s.p) {
      expect_close(h.at(ro).at(co), block(hflat, r0, pr.shape(), c0, pc.shape()));
      c0 += pc.numel();
    }
    r0 += pr.numel();
  }
  // jacrev of the logits [5, 2] with respect to the map: one [5, 2] + leaf block per parameter.
  const Tensor jflat = reshape(jacfwd([&](const Tensor& t) { return s.logits(split_leaves(s.p, t)); })(theta), {10, 26});
  auto j = jacrev([&](const std::map<std::string, Tensor>& q) { return s.logits(q); })(s.p);
  std::int64_t c0 = 0;
  for (const auto& [name, leaf] : s.p) {
    expect_close(j.at(name), block(jflat, 0, {5, 2}, c0, leaf.shape()));
    c0 += leaf.numel();
  }
  // Chunked over the flattened leaves: the same.
  auto jc = jacrev([&](const std::map<std::string, Tensor>& q) { return s.logits(q); }, JacobianOptions{.chunk_size = 3})(s.p);
  for (const auto& [name, t] : j) expect_close(jc.at(name), t);
  auto hc = hessian([&](const std::map<std::string, Tensor>& q) { return s.loss(q); }, JacobianOptions{.chunk_size = 8})(s.p);
  expect_close(hc.at("2.weight").at("0.bias"), h.at("2.weight").at("0.bias"));
}

TEST(TreeJacobian, HvpOfATreeIsTheHessianTimesTheVector) {
  MapFixture s;
  Generator g(4);
  auto v = tree_map([&](const Tensor& t) { return randn(t.shape(), g, DType::f64); }, s.p);
  auto hv = hvp([&](const std::map<std::string, Tensor>& q) { return s.loss(q); })(s.p, v);
  const Tensor theta = cat_leaves(s.p);
  const Tensor hflat = hessian([&](const Tensor& t) { return s.loss(split_leaves(s.p, t)); })(theta);
  auto ref = split_leaves(s.p, squeeze(matmul(hflat, unsqueeze(cat_leaves(v), 1)), 1));
  ASSERT_EQ(hv.size(), 4u);
  for (const auto& [name, t] : ref) expect_close(hv.at(name), t);
  // Extra arguments after the vector are held fixed.
  auto loss_xy = [&](const std::map<std::string, Tensor>& q, const Tensor& x) { return cross_entropy(nn::functional_call(s.model, q, x), s.y); };
  auto hv2 = hvp(loss_xy)(s.p, v, s.x);
  for (const auto& [name, t] : ref) expect_close(hv2.at(name), t);
}

TEST(TreeJacobian, LinearizeOfATreeAgreesWithJvp) {
  Fixture s;
  auto pf = [&](const Net& n) { return s.f(n); };
  auto [y, lin] = linearize(pf, s.net);
  Generator g(6);
  Net u{randn({3, 4}, g, DType::f64), randn({3}, g, DType::f64)};
  auto [y2, ju] = jvp(pf, s.net, u);
  expect_close(y.first, y2.first);
  std::pair<Tensor, Tensor> lu = lin(u);
  expect_close(lu.first, ju.first);
  expect_close(lu.second, ju.second);
  // A tangent of another structure is refused, naming the transform.
  auto bad = [&] { (void)linearize([](const std::vector<Tensor>& v) { return sum(v[0]); }, std::vector<Tensor>{s.x}).second(std::vector<Tensor>{s.x, s.x}); };
  try {
    bad();
    FAIL();
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("linearize"), std::string::npos) << e.what();
  }
}

}  // namespace
