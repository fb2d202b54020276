// Structured arguments (tree.h): structs, tuples, pairs, vectors and named maps through grad,
// value_and_grad, vjp, jvp and vmap, with results in the argument's own structure, checked
// against the same computation on flat Tensor arguments (issue 17, item 1).
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <tuple>

#include "chainrule/autodiff/vmap.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"

using namespace chainrule;

namespace {

struct Mlp {
  Tensor w1, b1, w2, b2;
  int classes = 3;  // not a tree field: copied unchanged
};
CHAINRULE_TREE(Mlp, w1, b1, w2, b2)

Tensor row(const Tensor& x, std::int64_t i) { return squeeze(slice(x, 0, i, i + 1), 0); }
void expect_close(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_TRUE(allclose(a, b, 1e-12, 1e-14)) << a.shape().str();
}

Tensor logits_of(const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2, const Tensor& x) {
  return add(matmul(tanh(add(matmul(x, w1, false, true), b1)), w2, false, true), b2);
}
Tensor loss_flat(const std::vector<Tensor>& p, const Tensor& x, const Tensor& y) {
  return cross_entropy(logits_of(p[0], p[1], p[2], p[3], x), y);
}
Tensor loss_struct(const Mlp& m, const Tensor& x, const Tensor& y) {
  return cross_entropy(logits_of(m.w1, m.b1, m.w2, m.b2, x), y);
}

struct Fixture {
  Generator g{11};
  Mlp m{randn({4, 3}, g, DType::f64), randn({4}, g, DType::f64), randn({3, 4}, g, DType::f64), randn({3}, g, DType::f64), 3};
  std::vector<Tensor> flat{m.w1, m.b1, m.w2, m.b2};
  Tensor x = randn({5, 3}, g, DType::f64);
  Tensor y = from_vector<std::int64_t>({0, 2, 1, 1, 0}, {5});
};

TEST(Tree, LeavesStructureAndRebuild) {
  Fixture s;
  std::map<std::string, Tensor> named{{"w", s.m.w1}, {"b", s.m.b1}};
  auto t = std::make_tuple(s.m, named, std::vector<Tensor>{s.x});
  EXPECT_EQ(tree_leaves(t).size(), 7u);
  EXPECT_EQ(tree_structure(t), "((T,T,T,T),{b:T,w:T},[T])");
  EXPECT_EQ(tree_leaves(t)[4].impl(), s.m.b1.impl());  // maps go in key order: "b" before "w"
  auto doubled = tree_map([](const Tensor& a) { return mul(a, scalar_tensor(2.0, a.dtype())); }, t);
  expect_close(std::get<0>(doubled).w2, mul(s.m.w2, scalar_tensor(2.0, DType::f64)));
  EXPECT_EQ(std::get<0>(doubled).classes, 3);
  EXPECT_THROW((void)tree_unflatten(s.m, std::vector<Tensor>{s.x}), std::exception);
}

TEST(Tree, GradOfAStructMatchesGradOfTheFlatList) {
  Fixture s;
  Mlp g = grad(loss_struct)(s.m, s.x, s.y);
  auto ref = grad(loss_flat)(s.flat, s.x, s.y);
  expect_close(g.w1, ref[0]);
  expect_close(g.b1, ref[1]);
  expect_close(g.w2, ref[2]);
  expect_close(g.b2, ref[3]);
  auto [v, g2] = value_and_grad(loss_struct)(s.m, s.x, s.y);
  expect_close(v, loss_flat(s.flat, s.x, s.y));
  expect_close(g2.b2, ref[3]);
}

TEST(Tree, GradOfANamedParameterMapAndOfAModelThroughFunctionalCall) {
  Fixture s;
  auto loss_map = [&](const std::map<std::string, Tensor>& p) {
    return cross_entropy(logits_of(p.at("0.weight"), p.at("0.bias"), p.at("2.weight"), p.at("2.bias"), s.x), s.y);
  };
  std::map<std::string, Tensor> p{{"0.weight", s.m.w1}, {"0.bias", s.m.b1}, {"2.weight", s.m.w2}, {"2.bias", s.m.b2}};
  auto g = grad(loss_map)(p);
  auto ref = grad(loss_flat)(s.flat, s.x, s.y);
  ASSERT_EQ(g.size(), 4u);
  expect_close(g.at("0.weight"), ref[0]);
  expect_close(g.at("2.bias"), ref[3]);
  // The same through a module: functional_call takes exactly this map.
  nn::Sequential model;
  model.push_back(std::make_shared<nn::Linear>(3, 4, nn::LinearOptions{true, DType::f64}));
  model.push_back(std::make_shared<nn::ReLU>());
  model.push_back(std::make_shared<nn::Linear>(4, 3, nn::LinearOptions{true, DType::f64}));
  auto gm = grad([&](const std::map<std::string, Tensor>& q) { return cross_entropy(nn::functional_call(model, q, s.x), s.y); })(p);
  auto gr = grad([&](const std::map<std::string, Tensor>& q) {
    Tensor h = relu(add(matmul(s.x, q.at("0.weight"), false, true), q.at("0.bias")));
    return cross_entropy(add(matmul(h, q.at("2.weight"), false, true), q.at("2.bias")), s.y);
  })(p);
  ASSERT_EQ(gm.size(), 4u);
  for (const auto& [name, t] : gr) expect_close(gm.at(name), t);
}

TEST(Tree, GradOfAnotherArgumentAndOfATuple) {
  Fixture s;
  // grad<1>: with respect to x while argument 0 is a struct.
  Tensor gx = grad<1>(loss_struct)(s.m, s.x, s.y);
  Tensor ref = grad([&](const Tensor& x) { return loss_flat(s.flat, x, s.y); })(s.x);
  expect_close(gx, ref);
  // One tuple argument holding a struct and a tensor.
  auto f = [&](const std::tuple<Mlp, Tensor>& a) { return loss_struct(std::get<0>(a), std::get<1>(a), s.y); };
  auto gt = grad(f)(std::make_tuple(s.m, s.x));
  expect_close(std::get<1>(gt), ref);
  expect_close(std::get<0>(gt).w1, grad(loss_flat)(s.flat, s.x, s.y)[0]);
  // A runtime argnum to an argument of another type says what to use instead.
  try {
    (void)grad(loss_struct, 1)(s.m, s.x, s.y);
    FAIL();
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("grad<1>(f)"), std::string::npos) << e.what();
  }
}

TEST(Tree, VjpAndJvpOnStructuresAgree) {
  Fixture s;
  auto f = [&](const Mlp& m) { return logits_of(m.w1, m.b1, m.w2, m.b2, s.x); };  // [5, 3]
  auto [out, pullback] = vjp(f, s.m);
  Generator g(3);
  Tensor v = randn(out.shape(), g, DType::f64);
  Mlp ct = pullback(v);
  Mlp u = tree_map([&](const Tensor& a) { return randn(a.shape(), g, DType::f64); }, s.m);
  auto [out2, ju] = jvp(f, s.m, u);
  expect_close(out2, out);
  // <v, J u> = <Jᵀ v, u>, summed over the struct's leaves.
  double lhs = sum(mul(v, ju)).item<double>(), rhs = 0;
  auto lc = tree_leaves(ct), lu = tree_leaves(u);
  for (std::size_t i = 0; i < lc.size(); ++i) rhs += sum(mul(lc[i], lu[i])).item<double>();
  EXPECT_NEAR(lhs, rhs, 1e-10 * (std::abs(lhs) + 1));
  // A tree output: jvp of a function returning a pair gives a pair of tangents.
  auto [po, pt] = jvp([&](const Mlp& m) { return std::make_pair(f(m), sum(m.b1)); }, s.m, u);
  expect_close(po.first, out);
  expect_close(pt.first, ju);
  expect_close(pt.second, sum(u.b1));
  // Hessian-vector product in a struct: jvp of grad, the result an Mlp.
  Mlp hv = jvp([&](const Mlp& m) { return grad(loss_struct)(m, s.x, s.y); }, s.m, u).second;
  auto flat_hv = jvp([&](const std::vector<Tensor>& p) { return grad(loss_flat)(p, s.x, s.y); }, s.flat, tree_leaves(u)).second;
  expect_close(hv.w2, flat_hv[2]);
}

TEST(Tree, PerExampleGradientsOfAStruct) {
  Fixture s;
  auto one = [](const Mlp& m, const Tensor& x, const Tensor& y) {
    return cross_entropy(logits_of(m.w1, m.b1, m.w2, m.b2, unsqueeze(x, 0)), unsqueeze(y, 0));
  };
  Mlp per_ex = vmap(grad(one), {not_mapped, 0, 0})(s.m, s.x, s.y);
  ASSERT_EQ(per_ex.w1.shape(), Shape({5, 4, 3}));
  for (std::int64_t i = 0; i < 5; ++i) {
    Mlp gi = grad(one)(s.m, row(s.x, i), row(s.y, i));
    expect_close(row(per_ex.w1, i), gi.w1);
    expect_close(row(per_ex.b2, i), gi.b2);
  }
}

TEST(Tree, PerFieldInAxesOfAStruct) {
  // An ensemble of 4 hidden units as the batch: w1's rows, b1's entries and w2's columns are
  // mapped, b2 is shared; the entry follows the struct's fields in declaration order.
  Fixture s;
  auto unit = [&](const Mlp& m) { return sum(mul(tanh(add(matmul(s.x, m.w1), m.b1)), sum(add(m.w2, m.b2)))); };
  Tensor out = vmap(unit, {{0, 0, 1, not_mapped}})(s.m);
  ASSERT_EQ(out.shape(), Shape({4}));
  for (std::int64_t i = 0; i < 4; ++i) {
    Mlp one = s.m;
    one.w1 = row(s.m.w1, i);
    one.b1 = row(s.m.b1, i);
    one.w2 = squeeze(slice(s.m.w2, 1, i, i + 1), 1);
    expect_close(row(out, i), unit(one));
  }
  try {
    (void)vmap(unit, {{0, 0, 1}})(s.m);
    FAIL();
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("vmap: in_axes entry {0, 0, 1} for argument 0 does not match its structure (T,T,T,T): "
                                         "3 entries for 4 fields"), std::string::npos) << e.what();
  }
}

TEST(Tree, MismatchedStructuresAreClearErrors) {
  Fixture s;
  std::map<std::string, Tensor> a{{"w", s.x}}, b{{"v", s.x}};
  try {
    (void)jvp([](const std::map<std::string, Tensor>& p) { return sum(p.at("w")); }, a, b);
    FAIL();
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("jvp: structures differ: {w:T} and {v:T}"), std::string::npos) << e.what();
  }
  std::vector<Tensor> two{s.x, s.x}, one{s.x};
  EXPECT_THROW((void)jvp([](const std::vector<Tensor>& p) { return sum(p[0]); }, two, one), AutodiffError);
}

}  // namespace
