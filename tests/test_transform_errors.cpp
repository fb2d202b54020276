// Errors of the transforms name the transform and the offending leaf by its JAX-style path
// (struct fields .w1, map keys ["b"], sequence indices [1]); vmap(f, 0) maps every argument
// (issue 17, "Transforms for real programs").
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "chainrule/autodiff/vmap.h"
#include "chainrule/chainrule.h"

using namespace chainrule;
using ::testing::HasSubstr;

namespace {

struct Layer {
  Tensor w1, b1;
  int units = 3;  // not a tree field
};
CHAINRULE_TREE(Layer, w1, b1)

// The message of the exception of type E that fn throws ("" if none).
template <class E>
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

Tensor row(const Tensor& x, std::int64_t i, std::int64_t axis = 0) { return squeeze(slice(x, axis, i, i + 1), axis); }

void expect_close(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_TRUE(allclose(a, b, 1e-12, 1e-14)) << a.shape().str();
}

TEST(TransformErrors, TreePathsNameFieldsKeysAndIndices) {
  Layer l{zeros({2, 3}, DType::f64), zeros({2}, DType::f64)};
  std::map<std::string, Tensor> named{{"b", zeros({1})}, {"a", zeros({1})}};
  auto t = std::make_tuple(l, named, std::vector<Tensor>{zeros({1}), zeros({1})}, std::make_pair(zeros({1}), zeros({1})));
  EXPECT_EQ(tree_paths(t, "x"), (std::vector<std::string>{"x[0].w1", "x[0].b1", "x[1][\"a\"]", "x[1][\"b\"]", "x[2][0]", "x[2][1]",
                                                          "x[3][0]", "x[3][1]"}));
  EXPECT_EQ(tree_paths(zeros({1}), "x"), std::vector<std::string>{"x"});
}

TEST(TransformErrors, JvpTangentErrorsNameTheLeaf) {
  Layer x{zeros({2, 3}, DType::f64), zeros({2}, DType::f64)};
  auto f = [](const Layer& p) { return add(sum(p.w1), sum(p.b1)); };
  Layer bad_w1{zeros({3, 2}, DType::f64), zeros({2}, DType::f64)};
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)jvp(f, x, bad_w1); }),
              HasSubstr("jvp: the tangent for primal.w1 is float64 [3, 2], but the primal is float64 [2, 3]"));
  Layer bad_b1{zeros({2, 3}, DType::f64), zeros({2}, DType::f32)};
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)jvp(f, x, bad_b1); }),
              HasSubstr("jvp: the tangent for primal.b1 is float32 [2], but the primal is float64 [2]"));

  std::map<std::string, Tensor> xm{{"a", zeros({2})}, {"b", zeros({2})}}, tm{{"a", zeros({2})}, {"b", zeros({5})}};
  auto g = [](const std::map<std::string, Tensor>& p) { return sum(mul(p.at("a"), p.at("b"))); };
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)jvp(g, xm, tm); }), HasSubstr("jvp: the tangent for primal[\"b\"] is float32 [5]"));

  std::vector<Tensor> xv{zeros({2}), zeros({2})}, tv{zeros({2}), zeros({2, 1})};
  auto h = [](const std::vector<Tensor>& p) { return sum(mul(p[0], p[1])); };
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)jvp(h, xv, tv); }), HasSubstr("jvp: the tangent for primal[1] is float32 [2, 1]"));

  // One Tensor: the leaf is the primal itself.
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)jvp([](const Tensor& a) { return sum(a); }, zeros({2}), zeros({3})); }),
              HasSubstr("jvp: the tangent for primal is float32 [3], but the primal is float32 [2]"));
  // An integer leaf cannot be differentiated: a DTypeError naming it.
  std::vector<Tensor> xi{zeros({2}), zeros({2}, DType::i64)};
  EXPECT_THAT(error_of<DTypeError>([&] { (void)jvp(h, xi, xi); }),
              HasSubstr("jvp: cannot differentiate with respect to primal[1]: dtype int64 (shape [2]) is not floating-point"));
  // Structures that differ say which two trees were compared.
  std::map<std::string, Tensor> other{{"a", zeros({2})}, {"c", zeros({2})}};
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)jvp(g, xm, other); }),
              HasSubstr("jvp: structures differ: {a:T,b:T} and {a:T,c:T} (primals and tangents)"));
}

TEST(TransformErrors, LinearizeTangentErrorsNameTheLeaf) {
  Layer x{ones({2, 3}, DType::f64), ones({2}, DType::f64)};
  auto [y, lin] = linearize([](const Layer& p) { return add(sum(square(p.w1)), sum(p.b1)); }, x);
  // The map works on a good tangent (2 * sum(w1 * u.w1) + sum(u.b1) = 2 * 6 + 2)...
  EXPECT_DOUBLE_EQ(lin(Layer{ones({2, 3}, DType::f64), ones({2}, DType::f64)}).item<double>(), 14.0);
  // ...and names the leaf of a bad one.
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)lin(Layer{ones({2, 3}, DType::f64), ones({4}, DType::f64)}); }),
              HasSubstr("linearize: the tangent for primal.b1 is float64 [4], but the primal is float64 [2]"));
}

TEST(TransformErrors, VjpCotangentShape) {
  auto [out, pullback] = vjp([](const Tensor& a) { return mul(a, a); }, zeros({3}, DType::f64));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)pullback(zeros({2}, DType::f64)); }),
              HasSubstr("vjp: the cotangent is float64 [2], but the output is float64 [3]"));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)pullback(zeros({3}, DType::f32)); }),
              HasSubstr("vjp: the cotangent is float32 [3], but the output is float64 [3]"));
  // The pullback still works on a good cotangent: d(a*a) = 2 a (a = 0 here, so the zeros).
  expect_close(pullback(ones({3}, DType::f64)), zeros({3}, DType::f64));
}

TEST(TransformErrors, VmapErrorsNameStructFields) {
  Generator g(5);
  Layer l{randn({4, 3}, g, DType::f64), randn({5}, g, DType::f64)};
  auto f = [](const Layer& p) { return add(sum(p.w1), sum(p.b1)); };
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, {0})(l); }),
              HasSubstr("vmap: mapped sizes disagree: argument 0.w1 has size 4 along axis 0, argument 0.b1 has size 5 along axis 0"));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, {{0, 1}})(l); }),
              HasSubstr("vmap: in_axes 1 is out of range for argument 0.b1 of rank 1"));
}

TEST(TransformErrors, VmapOneAxisForEveryArgumentMatchesALoop) {
  Generator g(7);
  Tensor a = randn({5, 3}, g, DType::f64), b = randn({5, 3}, g, DType::f64);
  auto f = [](const Tensor& x, const Tensor& y) { return sum(mul(tanh(x), y)); };
  Tensor out = vmap(f, 0)(a, b);
  ASSERT_EQ(out.shape(), Shape({5}));
  for (std::int64_t i = 0; i < 5; ++i) EXPECT_NEAR(row(out, i).item<double>(), f(row(a, i), row(b, i)).item<double>(), 1e-12);
  // Axis 1 for both, and out_axes: each example's [3] result stacked along axis 1 of [3, 4].
  Tensor c = randn({3, 4}, g, DType::f64), d = randn({3, 4}, g, DType::f64);
  auto prod = [](const Tensor& x, const Tensor& y) { return mul(x, exp(y)); };
  Tensor out1 = vmap(prod, 1, 1)(c, d);
  ASSERT_EQ(out1.shape(), Shape({3, 4}));
  for (std::int64_t j = 0; j < 4; ++j) expect_close(row(out1, j, 1), prod(row(c, j, 1), row(d, j, 1)));
  // A tree argument: every leaf mapped along the axis.
  auto tree_fn = [](const Layer& p, const Tensor& y) { return sum(mul(add(p.w1, p.b1), y)); };
  Tensor out2 = vmap(tree_fn, 0)(Layer{a, b}, a);
  ASSERT_EQ(out2.shape(), Shape({5}));
  for (std::int64_t i = 0; i < 5; ++i)
    EXPECT_NEAR(row(out2, i).item<double>(), tree_fn(Layer{row(a, i), row(b, i)}, row(a, i)).item<double>(), 1e-12);
}

TEST(TransformErrors, VmapNotMappedForEveryArgumentIsRefused) {
  Tensor a = zeros({5, 3}), b = zeros({5, 3});
  auto f = [](const Tensor& x, const Tensor& y) { return sum(mul(x, y)); };
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, not_mapped)(a, b); }), HasSubstr("vmap: no argument is mapped"));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, std::nullopt)(a, b); }), HasSubstr("vmap: no argument is mapped"));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, InAxis{})(a, b); }), HasSubstr("vmap: no argument is mapped"));
  // One axis for all still checks each argument: b has no axis 2.
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, 2)(zeros({2, 2, 2}), b); }),
              HasSubstr("vmap: in_axes 2 is out of range for argument 1 of rank 2"));
}

TEST(TransformErrors, GradNeedsAScalarFloatOutput) {
  Tensor x = ones({3}, DType::f64);
  auto vec = [](const Tensor& a) { return mul(a, a); };
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)grad(vec)(x); }),
              HasSubstr("grad: the function must return a scalar, got shape [3]; use vjp or jacrev"));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)value_and_grad(vec)(x); }),
              HasSubstr("value_and_grad: the function must return a scalar, got shape [3]"));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)grad<0>(vec)(x); }), HasSubstr("grad: the function must return a scalar"));
  // A [1]-shaped output is not a scalar either (JAX refuses it too).
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)grad([](const Tensor& a) { return reshape(sum(a), {1}); })(x); }),
              HasSubstr("grad: the function must return a scalar, got shape [1]"));
  EXPECT_THAT(error_of<DTypeError>([&] { (void)grad([](const Tensor& a) { return cast(sum(a), DType::i64); })(x); }),
              HasSubstr("grad: the function must return a float scalar, got int64"));
}

TEST(TransformErrors, IntegerInputsNameTheTransformAndTheLeaf) {
  Tensor xf = ones({2}, DType::f64), xi = zeros({2}, DType::i64);
  auto f = [](const Tensor& a, const Tensor& b) { return sum(mul(cast(a, DType::f64), cast(b, DType::f64))); };
  const std::string tail = ": dtype int64 (shape [2]) is not floating-point";
  EXPECT_THAT(error_of<DTypeError>([&] { (void)grad(f, 1)(xf, xi); }), HasSubstr("grad: cannot differentiate with respect to argument 1" + tail));
  EXPECT_THAT(error_of<DTypeError>([&] { (void)value_and_grad(f)(xi, xf); }),
              HasSubstr("value_and_grad: cannot differentiate with respect to argument 0" + tail));
  EXPECT_THAT(error_of<DTypeError>([&] { (void)grad(f, {0, 1})(xf, xi); }), HasSubstr("grad: cannot differentiate with respect to argument 1" + tail));
  // A leaf inside a structure is named by its path.
  auto g = [](const Layer& p) { return sum(cast(p.b1, DType::f64)); };
  Layer l{ones({2, 2}, DType::f64), xi};
  EXPECT_THAT(error_of<DTypeError>([&] { (void)grad(g)(l); }), HasSubstr("grad: cannot differentiate with respect to argument 0.b1" + tail));
  EXPECT_THAT(error_of<DTypeError>([&] { (void)vjp(g, l); }), HasSubstr("vjp: cannot differentiate with respect to primal.b1" + tail));
  // The Jacobians name themselves, not the vjp/jvp inside them.
  auto h = [](const Tensor& a) { return cast(a, DType::f64); };
  EXPECT_THAT(error_of<DTypeError>([&] { (void)jacrev(h)(xi); }), HasSubstr("jacrev: cannot differentiate with respect to argument 0" + tail));
  EXPECT_THAT(error_of<DTypeError>([&] { (void)jacfwd(h)(xi); }), HasSubstr("jacfwd: cannot differentiate with respect to argument 0" + tail));
  EXPECT_THAT(error_of<DTypeError>([&] { (void)jacobian(h, xi); }), HasSubstr("jacobian: cannot differentiate with respect to argument 0" + tail));
  EXPECT_THAT(error_of<DTypeError>([&] { (void)jacrev<1>(f)(xf, xi); }), HasSubstr("jacrev: cannot differentiate with respect to argument 1" + tail));
  auto sq = [](const Tensor& a, const Tensor& b) { return sum(mul(square(cast(a, DType::f64)), cast(b, DType::f64))); };
  EXPECT_THAT(error_of<DTypeError>([&] { (void)hessian(sq)(xi, xf); }), HasSubstr("hessian: cannot differentiate with respect to argument 0" + tail));
  EXPECT_THAT(error_of<DTypeError>([&] { (void)hessian(sq, JacobianOptions{.argnum = 1})(xf, xi); }),
              HasSubstr("hessian: cannot differentiate with respect to argument 1" + tail));
  EXPECT_THAT(error_of<DTypeError>([&] { (void)hessian<1>(sq)(xf, xi); }), HasSubstr("hessian: cannot differentiate with respect to argument 1" + tail));
  EXPECT_THAT(error_of<DTypeError>([&] { (void)hvp(sq)(xi, xi, xf); }), HasSubstr("hvp: cannot differentiate with respect to argument 0" + tail));
  // The float arguments still work: the Hessian of sum(a^2 b) in a is diag(2 b).
  Tensor b = from_vector<double>({1.0, 3.0}, {2});
  expect_close(hessian(sq)(xf, b), mul(eye(2, DType::f64), b * 2.0));
  expect_close(hvp(sq)(xf, xf, b), b * 2.0);
}

TEST(TransformErrors, ArgnumOutOfRange) {
  Tensor x = ones({2}, DType::f64);
  auto f = [](const Tensor& a, const Tensor& b) { return sum(mul(a, b)); };
  const std::string tail = " is not an input (the function was called with 2 arguments)";
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)grad(f, 2)(x, x); }), HasSubstr("grad: argnum 2" + tail));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)grad(f, -1)(x, x); }), HasSubstr("grad: argnum -1" + tail));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)value_and_grad(f, 5)(x, x); }), HasSubstr("value_and_grad: argnum 5" + tail));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)grad(f, {0, 3})(x, x); }), HasSubstr("grad: argnum 3" + tail));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)jacrev(f, JacobianOptions{.argnum = 2})(x, x); }), HasSubstr("jacrev: argnum 2" + tail));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)jacfwd(f, JacobianOptions{.argnum = 2})(x, x); }), HasSubstr("jacfwd: argnum 2" + tail));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)hessian(f, JacobianOptions{.argnum = 2})(x, x); }), HasSubstr("hessian: argnum 2" + tail));
  // In range, the same calls work: d/db sum(a * b) = a.
  expect_close(grad(f, 1)(x, x * 3.0), x);
}

TEST(TransformErrors, VmapSizesAndOutAxes) {
  auto f = [](const Tensor& x, const Tensor& y) { return mul(x, y); };
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, 0)(zeros({3, 2}), zeros({4, 2})); }),
              HasSubstr("vmap: mapped sizes disagree: argument 0 has size 3 along axis 0, argument 1 has size 4 along axis 0"));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, 0, 2)(zeros({3, 2}), zeros({3, 2})); }),
              HasSubstr("vmap: out_axes 2 is out of range for output (batch axis included) of rank 2"));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, 0, {0, 1})(zeros({3, 2}), zeros({3, 2})); }),
              HasSubstr("vmap: out_axes entry {0, 1} for output does not match its structure T"));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, {0, not_mapped}, not_mapped)(zeros({3, 2}), zeros({2})); }),
              HasSubstr("vmap: out_axes is not_mapped for output, but it depends on a mapped argument"));
  EXPECT_THAT(error_of<AutodiffError>([&] { (void)vmap(f, {0})(zeros({3, 2}), zeros({3, 2})); }),
              HasSubstr("vmap: in_axes has 1 entries but the function was called with 2 arguments"));
}

}  // namespace
