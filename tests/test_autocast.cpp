// Mixed precision (nn/autocast.h): Linear layers on bfloat16 operands with float32 results, float32
// master weights and gradients, and a model that still trains.
#include <gtest/gtest.h>

#include "chainrule/chainrule.h"
#include "chainrule/nn/autocast.h"
#include "chainrule/nn/nn.h"

using namespace chainrule;

namespace {

TEST(Autocast, LinearRunsOnBfloat16OperandsAndReturnsFloat32) {
  Generator gen(3);
  nn::Linear lin(24, 16);
  lin.weight = randn({16, 24}, gen).requires_grad_();
  lin.bias = randn({16}, gen).requires_grad_();
  Tensor x = randn({8, 24}, gen);
  Tensor plain = lin.forward(x);
  Tensor mixed;
  {
    nn::AutocastGuard guard(DType::bf16);
    ASSERT_EQ(nn::autocast_dtype(), DType::bf16);
    mixed = lin.forward(x);
  }
  EXPECT_FALSE(nn::autocast_dtype().has_value());
  ASSERT_EQ(mixed.dtype(), DType::f32);
  // The same as rounding the operands to bfloat16 by hand (an independent float64 loop).
  auto xv = cast(cast(x, DType::bf16), DType::f64).to_vector<double>();
  auto wv = cast(cast(lin.weight.detach(), DType::bf16), DType::f64).to_vector<double>();
  auto bv = cast(cast(lin.bias.detach(), DType::bf16), DType::f64).to_vector<double>();
  auto mv = mixed.to_vector<float>(), pv = plain.to_vector<float>();
  double largest_gap = 0;
  for (int r = 0; r < 8; ++r)
    for (int j = 0; j < 16; ++j) {
      double ref = bv[j], mag = std::fabs(bv[j]);
      for (int k = 0; k < 24; ++k) ref += xv[r * 24 + k] * wv[j * 24 + k], mag += std::fabs(xv[r * 24 + k] * wv[j * 24 + k]);
      const double got = mv[r * 16 + j];
      EXPECT_LE(std::fabs(got - ref), 0x1p-8 * std::fabs(ref) + 1e-5 * mag) << r << "," << j;  // the output's bf16 rounding
      largest_gap = std::max(largest_gap, std::fabs(got - pv[r * 16 + j]));
    }
  EXPECT_GT(largest_gap, 1e-4);  // it did not run in float32
  // Gradients reach the float32 master weights in float32.
  sum(mul(mixed, mixed)).backward();
  EXPECT_EQ(lin.weight.grad().dtype(), DType::f32);
  EXPECT_EQ(lin.bias.grad().dtype(), DType::f32);
  EXPECT_THROW(nn::AutocastGuard(DType::f64), DTypeError);
}

TEST(Autocast, ARegressionStillTrains) {
  // y = x A for a fixed A; one Linear layer fitted by SGD, under autocast and without.
  Generator gen(5);
  Tensor A = randn({6, 3}, gen), x = randn({256, 6}, gen), y = matmul(x, A);
  auto fit = [&](bool mixed) {
    nn::Linear lin(6, 3);
    lin.weight.requires_grad_();
    lin.bias.requires_grad_();
    std::optional<nn::AutocastGuard> guard;
    if (mixed) guard.emplace(DType::bf16);
    double first = 0, last = 0;
    for (int step = 0; step < 200; ++step) {
      Tensor loss = mean(square(sub(lin.forward(x), y)));
      if (step == 0) first = loss.item();
      last = loss.item();
      loss.backward();
      NoGradGuard ng;
      lin.weight.add_(lin.weight.grad(), -0.1);
      lin.bias.add_(lin.bias.grad(), -0.1);
      lin.weight.set_grad(Tensor());
      lin.bias.set_grad(Tensor());
    }
    EXPECT_EQ(lin.weight.dtype(), DType::f32);
    return std::pair{first, last};
  };
  auto [f32_first, f32_last] = fit(false);
  auto [bf_first, bf_last] = fit(true);
  EXPECT_LT(f32_last, 1e-3 * f32_first);
  EXPECT_LT(bf_last, 1e-2 * bf_first);  // bf16 operands limit the fit to about their precision
}

}  // namespace

// Conv2d under bf16 autocast: oneDNN multiplies bfloat16 roundings of the float32 operands, with
// float32 accumulation and result, in the forward and in both backward convolutions.
TEST(Autocast, Conv2dMultipliesBfloat16RoundingsAndReturnsFloat32) {
  Generator gen(11);
  // Stride 1 and 8 input channels: where all three convolutions take bf16 (kernels/conv.cpp's
  // bf16_pays keeps strided backward-weights and thin stems in float32).
  nn::Conv2d conv(8, 16, {3, 3}, nn::Conv2dLayerOptions{.padding = {1, 1}, .bias = false});
  const Tensor w = randn({16, 8, 3, 3}, gen);
  conv.weight = w.detach().requires_grad_();
  const Tensor x = randn({4, 8, 10, 10}, gen).requires_grad_();
  const Tensor r = randn({4, 16, 10, 10}, gen);  // the loss sum(y r): dy = r
  const Tensor plain = conv.forward(x);
  Tensor mixed;
  {
    nn::AutocastGuard guard(DType::bf16);
    mixed = conv.forward(x);
    sum(mul(mixed, r)).backward();
  }
  ASSERT_EQ(mixed.dtype(), DType::f32);
  ASSERT_EQ(x.grad().dtype(), DType::f32);
  ASSERT_EQ(conv.weight.grad().dtype(), DType::f32);
  if (max(abs(sub(mixed, plain))).item() == 0) GTEST_SKIP() << "no bf16 convolution on this CPU: float32 products";
  // The reference: float64 convolutions of the bfloat16-rounded operands.
  auto rounded = [](const Tensor& t) { return cast(cast(t.detach(), DType::bf16), DType::f64); };
  const Tensor x64 = rounded(x).requires_grad_(), w64 = rounded(w).requires_grad_();
  Conv2dOptions o;
  o.padding = {1, 1};
  const Tensor y64 = conv2d(x64, w64, Tensor{}, o);
  sum(mul(y64, rounded(r))).backward();
  auto close = [](const Tensor& got, const Tensor& want, const char* what) {
    const double gap = max(abs(sub(cast(got, DType::f64), want))).item(), scale = max(abs(want)).item();
    EXPECT_LE(gap, 1e-5 * scale) << what;  // float32 accumulation of exact bf16 products
  };
  close(mixed, y64.detach(), "y");
  close(x.grad(), x64.grad(), "dx");
  close(conv.weight.grad(), w64.grad(), "dw");
  EXPECT_GT(max(abs(sub(mixed, plain))).item(), 1e-3 * max(abs(plain)).item());  // not float32 products
}
