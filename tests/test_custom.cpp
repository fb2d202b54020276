// Custom derivative rules on functions (custom.h): the user's rule is the one used, the missing
// direction is derived by transposition, and everything nests (issue 17, item 6).
#include <gtest/gtest.h>

#include "chainrule/autodiff/custom.h"
#include "chainrule/autodiff/vmap.h"
#include "chainrule/chainrule.h"

using namespace chainrule;

namespace {

void expect_close(const Tensor& a, const Tensor& b, double rtol = 1e-12) {
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_TRUE(allclose(a, b, rtol, 1e-13)) << max_abs_diff(a, b);
}
Tensor row(const Tensor& x, std::int64_t i) { return squeeze(slice(x, 0, i, i + 1), 0); }

// softplus with the VJP ct * sigmoid(x) (JAX's log1pexp example).
auto log1pexp() {
  return custom_vjp(
      "log1pexp", [](const std::vector<Tensor>& x) { return log1p(exp(x[0])); },
      [](const std::vector<Tensor>& x, const Tensor&, const Tensor& ct) { return std::vector<Tensor>{mul(ct, sigmoid(x[0]))}; });
}

TEST(CustomRules, TheUsersVjpIsTheOneUsed) {
  // Gradient clipping as a rule: the identity whose VJP clips the cotangent.
  double bound = 0.5;  // captured state
  auto clip_grad = custom_vjp(
      "clip_grad", [](const std::vector<Tensor>& x) { return x[0]; },
      [&bound](const std::vector<Tensor>&, const Tensor&, const Tensor& ct) { return std::vector<Tensor>{clip(ct, -bound, bound)}; });
  Tensor x = tensor({1.0, -2.0, 3.0}, {3}, DType::f64);
  auto f = [&](const Tensor& v) { return sum(mul(clip_grad({v}), tensor({0.25, -4.0, 2.0}, {3}, DType::f64))); };
  expect_close(f(x), scalar_tensor(0.25 + 8.0 + 6.0, DType::f64));
  expect_close(grad(f)(x), tensor({0.25, -0.5, 0.5}, {3}, DType::f64));
  bound = 1.0;
  expect_close(grad(f)(x), tensor({0.25, -1.0, 1.0}, {3}, DType::f64));
  // Eager reverse mode uses it too.
  Tensor leaf = x.contiguous_clone();
  leaf.requires_grad_(true);
  f(leaf).backward();
  expect_close(leaf.grad(), tensor({0.25, -1.0, 1.0}, {3}, DType::f64));
}

TEST(CustomRules, ForwardModeAndSecondOrderFromTheVjpAlone) {
  auto sp = log1pexp();
  Generator g(1);
  Tensor x = randn({5}, g, DType::f64), u = randn({5}, g, DType::f64);
  Tensor s = sigmoid(x);
  // jvp derived by transposing the VJP.
  expect_close(jvp([&](const Tensor& v) { return sp({v}); }, x, u).second, mul(s, u));
  // hessian = jacfwd(jacrev): forward mode over the custom VJP, and the VJP's own derivative.
  Tensor H = hessian([&](const Tensor& v) { return sum(sp({v})); })(x);
  expect_close(H, mul(eye(5, DType::f64), mul(s, sub(scalar_tensor(1.0, DType::f64), s))));
  // grad of grad.
  Tensor gg = grad([&](const Tensor& v) { return sum(grad([&](const Tensor& w) { return sum(sp({w})); })(v)); })(x);
  expect_close(gg, mul(s, sub(scalar_tensor(1.0, DType::f64), s)));
}

TEST(CustomRules, CustomJvpGivesReverseModeByTransposition) {
  // sin with its JVP cos(x) t, and a two-input product with its JVP.
  auto my_sin = custom_jvp(
      "my_sin", [](const std::vector<Tensor>& x) { return sin(x[0]); },
      [](const std::vector<Tensor>& x, const Tensor&, const std::vector<Tensor>& t) { return mul(cos(x[0]), t[0]); });
  auto my_mul = custom_jvp(
      "my_mul", [](const std::vector<Tensor>& x) { return mul(x[0], x[1]); },
      [](const std::vector<Tensor>& x, const Tensor&, const std::vector<Tensor>& t) { return add(mul(t[0], x[1]), mul(x[0], t[1])); });
  Generator g(2);
  Tensor x = randn({4}, g, DType::f64), y = randn({4}, g, DType::f64);
  expect_close(grad([&](const Tensor& v) { return sum(my_sin({v})); })(x), cos(x));
  auto both = grad([&](const Tensor& a, const Tensor& b) { return sum(my_mul({a, my_sin({b})})); }, std::vector<int>{0, 1})(x, y);
  expect_close(both[0], sin(y));
  expect_close(both[1], mul(x, cos(y)));
  // vmap of grad of a custom_jvp function, per example.
  Tensor xs = randn({3, 4}, g, DType::f64);
  Tensor per = vmap(grad([&](const Tensor& v) { return sum(mul(my_sin({v}), v)); }))(xs);
  for (std::int64_t i = 0; i < 3; ++i) expect_close(row(per, i), add(sin(row(xs, i)), mul(row(xs, i), cos(row(xs, i)))));
}

TEST(CustomRules, VmapRunsTheUsersFunctionPerExample) {
  // The forward is written for one example (a dot product of vectors); vmap must not hand it a batch.
  auto dot = custom_vjp(
      "dot",
      [](const std::vector<Tensor>& x) {
        if (x[0].dim() != 1) throw ValueError("dot: vectors only");
        return sum(mul(x[0], x[1]));
      },
      [](const std::vector<Tensor>& x, const Tensor&, const Tensor& ct) { return std::vector<Tensor>{mul(ct, x[1]), mul(ct, x[0])}; });
  Generator g(3);
  Tensor a = randn({6, 4}, g, DType::f64), b = randn({4}, g, DType::f64);
  Tensor out = vmap([&](const Tensor& v, const Tensor& w) { return dot({v, w}); }, {0, not_mapped})(a, b);
  expect_close(out, matmul(a, b));
  Tensor per = vmap(grad([&](const Tensor& v, const Tensor& w) { return dot({v, w}); }, 1), {0, not_mapped})(a, b);
  expect_close(per, a);
}

// A dot product of vectors with a batching rule: one matmul for the batch.
struct CountedDot {
  int forward_calls = 0, batch_calls = 0;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  explicit CountedDot(bool jvp_rule) {
    CustomRules r;
    r.name = "dot";
    r.forward = [this](const std::vector<Tensor>& x) {
      ++forward_calls;
      if (x[0].dim() != 1 || x[1].dim() != 1) throw ValueError("dot: vectors only");
      return sum(mul(x[0], x[1]));
    };
    if (jvp_rule)
      r.jvp = [](const std::vector<Tensor>& x, const Tensor&, const std::vector<Tensor>& t) {
        return add(sum(mul(t[0], x[1])), sum(mul(x[0], t[1])));
      };
    else
      r.vjp = [](const std::vector<Tensor>& x, const Tensor&, const Tensor& ct) { return std::vector<Tensor>{mul(ct, x[1]), mul(ct, x[0])}; };
    r.batch = [this](std::int64_t size, const std::vector<Tensor>& x, const std::vector<std::optional<std::int64_t>>& axes)
        -> std::pair<Tensor, std::optional<std::int64_t>> {
      ++batch_calls;
      if (axes[0] && !axes[1]) return {matmul(x[0], x[1]), 0};  // [B, n] x [n]
      if (!axes[0] && axes[1]) return {matmul(x[1], x[0]), 0};
      EXPECT_EQ(x[0].shape()[0], size);
      return {sum(mul(x[0], x[1]), {-1}), 0};  // both batched
    };
    fn = custom_function(std::move(r));
  }
};

TEST(CustomRules, VmapUsesTheBatchingRule) {
  CountedDot dot(false);
  Generator g(4);
  Tensor a = randn({6, 4}, g, DType::f64), b = randn({4}, g, DType::f64), c = randn({6, 4}, g, DType::f64);
  Tensor out = vmap([&](const Tensor& v, const Tensor& w) { return dot.fn({v, w}); }, {0, not_mapped})(a, b);
  expect_close(out, matmul(a, b));
  EXPECT_EQ(dot.batch_calls, 1);
  EXPECT_EQ(dot.forward_calls, 0);  // not the per-example fallback
  Tensor both = vmap([&](const Tensor& v, const Tensor& w) { return dot.fn({v, w}); }, {0, 0})(a, c);
  expect_close(both, sum(mul(a, c), {1}));
  EXPECT_EQ(dot.batch_calls, 2);
  // Nested vmaps: the inner level calls the rule, whose ops the outer level batches.
  Tensor cube = randn({3, 6, 4}, g, DType::f64);
  Tensor nested = vmap([&](const Tensor& m) { return vmap([&](const Tensor& v) { return dot.fn({v, b}); })(m); })(cube);
  expect_close(nested, matmul(cube, b));
  EXPECT_EQ(dot.batch_calls, 3);
  EXPECT_EQ(dot.forward_calls, 0);
}

TEST(CustomRules, BatchingRuleNestsInGradAndHessian) {
  Generator g(5);
  Tensor a = randn({5, 4}, g, DType::f64), b = randn({4}, g, DType::f64);
  for (bool jvp_rule : {true, false}) {
    CountedDot dot(jvp_rule);
    // vmap of grad of a custom_jvp (or custom_vjp) function: per-example gradients w.r.t. the
    // shared vector, d/dw tanh(v . w) = (1 - tanh²) v.
    auto loss = [&](const Tensor& v, const Tensor& w) { return tanh(dot.fn({v, w})); };
    Tensor per = vmap(grad(loss, 1), {0, not_mapped})(a, b);
    Tensor t = tanh(matmul(a, b));
    expect_close(per, mul(unsqueeze(sub(scalar_tensor(1.0, DType::f64), square(t)), -1), a));
    EXPECT_GE(dot.batch_calls, 1);
    EXPECT_EQ(dot.forward_calls, 0);
    // vmap of hessian: H_w = -2 tanh (1 - tanh²) v vᵀ per example.
    Tensor hs = vmap([&](const Tensor& v) { return hessian([&](const Tensor& w) { return loss(v, w); })(b); })(a);
    ASSERT_EQ(hs.shape(), Shape({5, 4, 4}));
    for (std::int64_t i = 0; i < 5; ++i) {
      Tensor v = row(a, i);
      double ti = row(t, i).item<double>();
      expect_close(row(hs, i), mul(scalar_tensor(-2.0 * ti * (1 - ti * ti), DType::f64), mul(unsqueeze(v, -1), unsqueeze(v, 0))), 1e-10);
    }
  }
}

TEST(CustomRules, HessianOfAFunctionWithACustomVjpInside) {
  // f(x) = sum(log1pexp(x) * x): H = diag(2 s + x s (1 - s)), s = sigmoid(x).
  auto sp = log1pexp();
  Generator g(6);
  Tensor x = randn({4}, g, DType::f64);
  Tensor H = hessian([&](const Tensor& v) { return sum(mul(sp({v}), v)); })(x);
  Tensor s = sigmoid(x);
  Tensor d = add(mul(scalar_tensor(2.0, DType::f64), s), mul(x, mul(s, sub(scalar_tensor(1.0, DType::f64), s))));
  expect_close(H, mul(eye(4, DType::f64), unsqueeze(d, 0)));
}

TEST(CustomRules, ABatchingRuleOfTheWrongSizeIsAClearError) {
  CustomRules r;
  r.name = "bad_batch";
  r.forward = [](const std::vector<Tensor>& x) { return sum(x[0]); };
  r.vjp = [](const std::vector<Tensor>& x, const Tensor&, const Tensor& ct) { return std::vector<Tensor>{mul(ct, ones_like(x[0]))}; };
  r.batch = [](std::int64_t, const std::vector<Tensor>& x, const std::vector<std::optional<std::int64_t>>&)
      -> std::pair<Tensor, std::optional<std::int64_t>> { return {sum(x[0]), 0}; };  // lost the batch axis
  auto f = custom_function(std::move(r));
  try {
    (void)vmap([&](const Tensor& v) { return f({v}); })(zeros({3, 2}, DType::f64));
    FAIL();
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("custom function 'bad_batch': its batching rule returned shape [] with batch axis 0"),
              std::string::npos) << e.what();
  }
}

TEST(CustomRules, WrongRulesAreClearErrors) {
  auto bad = custom_vjp(
      "bad_rule", [](const std::vector<Tensor>& x) { return sum(x[0]); },
      [](const std::vector<Tensor>&, const Tensor&, const Tensor& ct) { return std::vector<Tensor>{ct}; });  // [] for a [3] input
  Tensor x = zeros({3}, DType::f64);
  try {
    (void)grad([&](const Tensor& v) { return bad({v}); })(x);
    FAIL();
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("custom function 'bad_rule'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3]"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)custom_function({"none", [](const std::vector<Tensor>& v) { return v[0]; }, {}, {}}), ValueError);
}

}  // namespace
