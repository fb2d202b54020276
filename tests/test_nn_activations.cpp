// The activation modules (PyTorch names and defaults): values against the textbook formulas
// written out here, and their use in model specs.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "chainrule/autodiff/check.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"

using namespace chainrule;
using namespace chainrule::nn;

namespace {

const std::vector<double> kXs = {-4.0, -1.5, -0.3, 0.0, 0.2, 1.1, 3.5};

Tensor xs() { return from_vector(kXs); }

double phi(double v) { return 0.5 * (1 + std::erf(v / std::sqrt(2.0))); }

void expect_elementwise(Module& m, double (*ref)(double)) {
  auto got = m.forward(xs()).to_vector<double>();
  ASSERT_EQ(got.size(), kXs.size());
  for (std::size_t i = 0; i < kXs.size(); ++i) EXPECT_NEAR(got[i], ref(kXs[i]), 1e-14) << m.repr() << " at " << kXs[i];
}

TEST(Activations, MatchTheirFormulas) {
  Tanh t;
  expect_elementwise(t, [](double v) { return std::tanh(v); });
  Sigmoid s;
  expect_elementwise(s, [](double v) { return 1 / (1 + std::exp(-v)); });
  Softplus sp;
  expect_elementwise(sp, [](double v) { return std::log(1 + std::exp(v)); });
  Softplus sp2(2.0);
  expect_elementwise(sp2, [](double v) { return std::log(1 + std::exp(2 * v)) / 2; });
  GELU g;
  expect_elementwise(g, [](double v) { return v * phi(v); });
  GELU gt("tanh");
  expect_elementwise(gt, [](double v) {
    return 0.5 * v * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (v + 0.044715 * v * v * v)));
  });
  SiLU si;
  expect_elementwise(si, [](double v) { return v / (1 + std::exp(-v)); });
  ELU e;
  expect_elementwise(e, [](double v) { return v > 0 ? v : std::exp(v) - 1; });
  ELU e2(0.5);
  expect_elementwise(e2, [](double v) { return v > 0 ? v : 0.5 * (std::exp(v) - 1); });
  LeakyReLU l;
  expect_elementwise(l, [](double v) { return v > 0 ? v : 0.01 * v; });
  LeakyReLU l2(0.2);
  expect_elementwise(l2, [](double v) { return v > 0 ? v : 0.2 * v; });
  Identity id;
  expect_elementwise(id, [](double v) { return v; });
}

TEST(Activations, SoftmaxModulesAlongTheirDim) {
  Tensor x = reshape(from_vector<double>({1, 2, 3, -1, 0, 4}), {2, 3});
  auto v = x.to_vector<double>();
  for (std::int64_t dim : {0, 1, -1}) {
    Softmax sm(dim);
    LogSoftmax lsm(dim);
    auto p = sm.forward(x).to_vector<double>(), lp = lsm.forward(x).to_vector<double>();
    const std::int64_t d = dim < 0 ? dim + 2 : dim;
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 3; ++c) {
        double z = 0;
        for (int k = 0; k < (d == 1 ? 3 : 2); ++k) z += std::exp(d == 1 ? v[r * 3 + k] : v[k * 3 + c]);
        EXPECT_NEAR(p[r * 3 + c], std::exp(v[r * 3 + c]) / z, 1e-15) << "dim " << dim;
        EXPECT_NEAR(lp[r * 3 + c], v[r * 3 + c] - std::log(z), 1e-14) << "dim " << dim;
      }
  }
  EXPECT_EQ(Softmax(1).repr(), "Softmax(dim=1)");
}

TEST(Activations, ReprsAndBadArguments) {
  EXPECT_EQ(GELU("tanh").repr(), "GELU(approximate='tanh')");
  EXPECT_EQ(LeakyReLU(0.2).repr(), "LeakyReLU(negative_slope=0.2)");
  EXPECT_EQ(ELU().repr(), "ELU(alpha=1)");
  EXPECT_THROW(GELU("fast"), ValueError);
  EXPECT_THROW(Softplus(0.0), ValueError);
  EXPECT_THROW(make_activation("swish"), ValueError);
  for (auto name : activation_names()) EXPECT_NE(make_activation(name), nullptr) << name;
}

TEST(Activations, ModelSpecsNameThem) {
  for (const char* s : {"mlp:4-6-3:gelu", "mlp:4-6-3:tanh", "mlp:4-6-5-3:leaky_relu", "mlp:4-3:silu"})
    EXPECT_EQ(ModelSpec::parse(s).str(), s);
  EXPECT_EQ(ModelSpec::parse("mlp:4-6-3:relu").str(), "mlp:4-6-3");
  EXPECT_THROW(ModelSpec::parse("mlp:4-6-3:swish"), ValueError);
  EXPECT_THROW(ModelSpec::parse("mlp:4-6-3:pre"), ValueError);
  auto m = build_model("mlp:4-6-5-3:gelu_tanh");
  ASSERT_EQ(m->size(), 5u);
  EXPECT_EQ((*m)[1]->repr(), "GELU(approximate='tanh')");
  EXPECT_EQ((*m)[3]->repr(), "GELU(approximate='tanh')");
}

// A GELU MLP's parameter gradient against finite differences (float64).
TEST(Activations, MlpGradientWithEachActivation) {
  for (auto name : activation_names()) {
    auto m = build_model("mlp:3-4-2:" + std::string(name), DType::f64);
    Generator g(7);
    init_model(*m, g);
    std::vector<std::string> names;
    std::vector<Tensor> inputs{randn({5, 3}, g, DType::f64)};
    for (auto& [n, t] : m->named_parameters()) {
      names.push_back(n);
      inputs.push_back(t);
    }
    auto f = [&](std::span<const Tensor> in) {
      std::map<std::string, Tensor> params;
      for (std::size_t k = 0; k < names.size(); ++k) params.emplace(names[k], in[k + 1]);
      return functional_call(*m, params, in[0]);
    };
    auto r = check_grads(f, inputs, {.float32 = false});
    EXPECT_TRUE(r.pass) << name << ": " << r.failure;
  }
}

}  // namespace
