// Type promotion (the array API's table: bool < int64 < float32 < float64), integer arithmetic,
// scalars next to tensors, and set_default_dtype. Derivatives cross a promotion through `cast`,
// so each input's gradient comes back in its own dtype under every transform.
#include <gtest/gtest.h>

#include <vector>

#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"

using namespace chainrule;

namespace {

TEST(Promotion, TableOfResultTypes) {
  EXPECT_EQ(promote_types(DType::f32, DType::f64), DType::f64);
  EXPECT_EQ(promote_types(DType::f64, DType::f32), DType::f64);
  EXPECT_EQ(promote_types(DType::i64, DType::f32), DType::f32);
  EXPECT_EQ(promote_types(DType::b8, DType::i64), DType::i64);
  EXPECT_EQ(promote_types(DType::b8, DType::f32), DType::f32);
  EXPECT_EQ(promote_types(DType::b8, DType::b8), DType::b8);
}

TEST(Promotion, MixedFloatBinaryOpsGiveTheWiderTypeAndTheRightValues) {
  Tensor a = tensor({1.5, -2.0, 0.25}, {3}, DType::f64);
  Tensor b = tensor({0.5, 4.0, 2.0}, {3}, DType::f32);
  for (auto [name, out, expect] : {std::tuple{"add", add(a, b), std::vector<double>{2.0, 2.0, 2.25}},
                                   std::tuple{"sub", sub(b, a), std::vector<double>{-1.0, 6.0, 1.75}},
                                   std::tuple{"mul", mul(a, b), std::vector<double>{0.75, -8.0, 0.5}},
                                   std::tuple{"div", div(a, b), std::vector<double>{3.0, -0.5, 0.125}},
                                   std::tuple{"maximum", maximum(b, a), std::vector<double>{1.5, 4.0, 2.0}},
                                   std::tuple{"matmul", matmul(a, b), std::vector<double>{-6.75}}}) {
    EXPECT_EQ(out.dtype(), DType::f64) << name;
    EXPECT_EQ(out.to_vector<double>(), expect) << name;
  }
  EXPECT_EQ(where(greater(a, b), a, b).dtype(), DType::f64);
  EXPECT_EQ(concat({a, b}).dtype(), DType::f64);
  EXPECT_EQ(less(b, a).to_vector<bool>(), (std::vector<bool>{false, false, true}));
}

TEST(Promotion, GradientsComeBackInEachInputsOwnDtype) {
  Tensor x = tensor({1.0, 2.0, -3.0}, {3}, DType::f32);
  Tensor y = tensor({0.5, -1.0, 2.0}, {3}, DType::f64);
  auto f = [](const Tensor& u, const Tensor& v) { return sum(mul(mul(u, u), v)); };
  Tensor gx = grad(f, 0)(x, y), gy = grad(f, 1)(x, y);
  EXPECT_EQ(gx.dtype(), DType::f32);
  EXPECT_EQ(gy.dtype(), DType::f64);
  EXPECT_EQ(gx.to_vector<float>(), (std::vector<float>{1.0f, -4.0f, -12.0f}));  // 2 u v
  EXPECT_EQ(gy.to_vector<double>(), (std::vector<double>{1.0, 4.0, 9.0}));       // u^2
  // Forward mode and vmap see the same promotion.
  auto [out, tangent] = jvp([&](const Tensor& u) { return f(u, y); }, x, ones_like(x));
  EXPECT_EQ(out.dtype(), DType::f64);
  EXPECT_DOUBLE_EQ(tangent.item<double>(), 1.0 - 4.0 - 12.0);
  Tensor rows = vmap([&](const Tensor& u) { return add(u, y); })(stack({x, x}));
  EXPECT_EQ(rows.dtype(), DType::f64);
  EXPECT_EQ(rows.shape(), Shape({2, 3}));
}

TEST(Promotion, IntegersComputeInInt64AndDivideToFloat) {
  Tensor i = from_vector<std::int64_t>({7, -3, 4}, Shape{3});
  Tensor j = from_vector<std::int64_t>({2, 5, 4}, Shape{3});
  EXPECT_EQ(add(i, j).to_vector<std::int64_t>(), (std::vector<std::int64_t>{9, 2, 8}));
  EXPECT_EQ(mul(i, j).to_vector<std::int64_t>(), (std::vector<std::int64_t>{14, -15, 16}));
  EXPECT_EQ(maximum(i, j).to_vector<std::int64_t>(), (std::vector<std::int64_t>{7, 5, 4}));
  Tensor q = div(i, j);  // true division, as the array API and PyTorch
  EXPECT_EQ(q.dtype(), DType::f32);
  EXPECT_EQ(q.to_vector<float>(), (std::vector<float>{3.5f, -0.6f, 1.0f}));
  Tensor h = i * 0.5;  // a float scalar lifts an integer tensor to the default float type
  EXPECT_EQ(h.dtype(), DType::f32);
  EXPECT_EQ(h.to_vector<float>(), (std::vector<float>{3.5f, -1.5f, 2.0f}));
  Tensor mixed = add(i, tensor({0.25, 0.25, 0.25}, {3}, DType::f64));
  EXPECT_EQ(mixed.dtype(), DType::f64);
  EXPECT_EQ(mixed.to_vector<double>(), (std::vector<double>{7.25, -2.75, 4.25}));
  Tensor mask = from_vector<bool>({true, false, true}, Shape{3});
  EXPECT_EQ(add(mask, j).to_vector<std::int64_t>(), (std::vector<std::int64_t>{3, 5, 5}));
  // Scalars take a float tensor's type, not the default.
  EXPECT_EQ((tensor({1.0}, {1}, DType::f64) * 3.0).dtype(), DType::f64);
}

TEST(Promotion, BadOperandsStillRaiseClearErrors) {
  Tensor m = from_vector<bool>({true, false}, Shape{2});
  try {
    (void)sub(m, m);
    FAIL() << "bool - bool must raise";
  } catch (const DTypeError& e) {
    EXPECT_NE(std::string(e.what()).find("sub"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bool"), std::string::npos) << e.what();
  }
  // A tangent of the wrong dtype is still refused.
  Tensor x = tensor({1.0, 2.0}, {2}, DType::f64);
  EXPECT_THROW((void)jvp([](const Tensor& u) { return exp(u); }, x, ones({2}, DType::f32)), std::exception);
}

TEST(Promotion, DefaultDtypeIsUsedByFactoriesAndLayers) {
  EXPECT_EQ(get_default_dtype(), DType::f32);
  set_default_dtype(DType::f64);
  Tensor z = zeros({2});
  Generator gen(1);
  Tensor r = randn({2}, gen);
  nn::Linear layer(3, 2);
  Tensor y = layer.forward(ones({4, 3}));
  set_default_dtype(DType::f32);
  EXPECT_EQ(z.dtype(), DType::f64);
  EXPECT_EQ(r.dtype(), DType::f64);
  EXPECT_EQ(y.dtype(), DType::f64);
  EXPECT_EQ(zeros({2}).dtype(), DType::f32);
  EXPECT_THROW(set_default_dtype(DType::i64), DTypeError);
}

TEST(Promotion, DotProductOfTwoVectors) {
  Tensor a = tensor({1.0, 2.0, 3.0}, {3}, DType::f64);
  Tensor d = matmul(a, a);
  EXPECT_EQ(d.dim(), 0);
  EXPECT_DOUBLE_EQ(d.item<double>(), 14.0);
  EXPECT_EQ(grad([](const Tensor& u) { return matmul(u, u); })(a).to_vector<double>(), (std::vector<double>{2.0, 4.0, 6.0}));
}

}  // namespace
