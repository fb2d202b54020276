// Generated derivative tests: every registered primitive with a test spec gets gradcheck (reverse
// and forward against central differences in float64), batched Jacobians, the JVP/VJP identity,
// second order and float32-vs-float64, over its sample shapes.
#include <gtest/gtest.h>

#include "chainrule/autodiff/check.h"
#include "chainrule/chainrule.h"

using namespace chainrule;

namespace {

std::vector<const Primitive*> differentiable() {
  std::vector<const Primitive*> v;
  for (const auto* p : all_primitives())
    if (p->differentiable()) v.push_back(p);
  return v;
}

class PrimitiveDerivatives : public ::testing::TestWithParam<const Primitive*> {};

TEST_P(PrimitiveDerivatives, MatchFiniteDifferencesAndEachOther) {
  const Primitive& p = *GetParam();
  ASSERT_NE(p.cases, nullptr) << p.name << " has no test cases";
  PrimitiveReport r = check_primitive(p);
  EXPECT_GE(r.cases, 6) << p.name << " needs at least six sample inputs";
  // Every kind of input (scalar, broadcast, empty, size-1 axes, small, medium) or a reason why not.
  for (const char* kind : kCaseKinds)
    EXPECT_TRUE(r.coverage[kind] > 0 || r.not_applicable.contains(kind)) << p.name << " has no " << kind << " case";
  // All checks ran, second order included (every primitive's rules are built from primitives).
  for (const char* check : {"reverse vs finite differences", "forward vs finite differences", "jvp/vjp identity",
                            "second order, over the VJP (reverse)", "second order, over the JVP (forward)", "float32 vs float64",
                            "vmap of jacfwd vs jacfwd", "vmap of jacrev vs jacrev"})
    EXPECT_NE(std::find(r.checks.begin(), r.checks.end(), check), r.checks.end()) << p.name << " never ran: " << check;
  for (const auto& f : r.failures) ADD_FAILURE() << p.name << ": " << f;
  EXPECT_TRUE(r.pass);
}

INSTANTIATE_TEST_SUITE_P(All, PrimitiveDerivatives, ::testing::ValuesIn(differentiable()),
                         [](const auto& info) { return std::string(info.param->name); });

TEST(PrimitiveRegistry, HasAtLeastThirtyDifferentiablePrimitivesWithUniqueNames) {
  auto ps = differentiable();
  EXPECT_GE(ps.size(), 30u);
  std::set<std::string_view> names;
  for (const auto* p : all_primitives()) EXPECT_TRUE(names.insert(p->name).second) << "duplicate " << p->name;
  for (const char* n : {"add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "pow", "abs", "tanh", "sigmoid", "relu",
                        "maximum", "minimum", "where", "matmul", "transpose", "reshape", "broadcast_to", "sum", "mean",
                        "max", "logsumexp", "softmax", "log_softmax", "cross_entropy", "mse", "slice", "concat", "gather"}) {
    const Primitive* p = find_primitive(n);
    ASSERT_NE(p, nullptr) << n;
    EXPECT_TRUE(p->differentiable()) << n;
  }
}

// The documented conventions at kinks, identical in forward and reverse mode.
TEST(Kinks, ReluAbsMaximumMaxAtTies) {
  Tensor zero = scalar_tensor(0.0, DType::f64);
  auto relu_f = [](const Tensor& x) { return relu(x); };
  EXPECT_EQ(grad(relu_f)(zero).item(), 0.0);
  EXPECT_EQ(jvp(relu_f, zero, scalar_tensor(1.0, DType::f64)).second.item(), 0.0);
  auto abs_f = [](const Tensor& x) { return abs(x); };
  EXPECT_EQ(grad(abs_f)(zero).item(), 0.0);
  EXPECT_EQ(jvp(abs_f, zero, scalar_tensor(1.0, DType::f64)).second.item(), 0.0);
  Tensor one = scalar_tensor(1.0, DType::f64);
  auto gm = grad([](const Tensor& a, const Tensor& b) { return maximum(a, b); }, std::vector<int>{0, 1})(one, one);
  EXPECT_EQ(gm[0].item(), 0.5);
  EXPECT_EQ(gm[1].item(), 0.5);
  Tensor x = tensor({3, 1, 3, 2}, {4}, DType::f64);
  auto gmax = grad([](const Tensor& v) { return max(v); })(x).to_vector<double>();
  EXPECT_EQ(gmax, (std::vector<double>{0.5, 0, 0.5, 0}));
  auto jmax = jvp([](const Tensor& v) { return max(v); }, x, tensor({1, 1, 1, 1}, {4}, DType::f64)).second.item();
  EXPECT_EQ(jmax, 1.0);
}

}  // namespace
