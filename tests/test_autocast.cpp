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
