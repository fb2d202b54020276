// Networks: module names, functional_call under every transform, float64 gradchecks of every
// module, initialiser variances, losses, the hand-written backward pass, checkpoints.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "chainrule/autodiff/check.h"
#include "chainrule/autodiff/transforms.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"
#include "gradcheck_module.h"

using namespace chainrule;
using namespace chainrule::nn;
using chainrule::test_util::gradcheck_module;

namespace {

constexpr std::uint64_t kSeed = 1234;  // printed by failing checks through SCOPED_TRACE

std::vector<std::string> names_of(const Module& m) {
  std::vector<std::string> out;
  for (auto& [n, t] : m.named_parameters()) out.push_back(n);
  return out;
}


Tensor randn64(const Shape& s, std::uint64_t seed) {
  Generator g(seed);
  return randn(s, g, DType::f64);
}

template <class M>
std::shared_ptr<M> initialised(std::shared_ptr<M> m, std::uint64_t seed = kSeed) {
  Generator g(seed);
  for (auto& [n, t] : m->named_parameters()) {
    Tensor slot = t;
    normal_(slot, g, {.mean = n.ends_with("weight") && t.dim() == 1 ? 1.0 : 0.0, .std = 0.5});
  }
  return m;
}

}  // namespace

// ---- names and specs -----------------------------------------------------------------------

TEST(Modules, MlpNamesFollowPyTorchSequential) {
  auto m = build_model("mlp:784-256-256-10");
  EXPECT_EQ(names_of(*m), (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}));
  auto sd = m->state_dict();
  EXPECT_EQ(sd.at("0.weight").shape(), (Shape{256, 784}));  // W stored [out, in]
  EXPECT_EQ(sd.at("4.bias").shape(), (Shape{10}));
  EXPECT_EQ(m->num_parameters(), 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
}

TEST(Modules, ResMlpNamesPutBlocksAtTwoPlusI) {
  auto m = build_model("resmlp:784-64x3-10");
  auto n = names_of(*m);
  std::vector<std::string> want{"0.weight", "0.bias"};
  for (int b = 0; b < 3; ++b)
    for (const char* p : {"l1.weight", "l1.bias", "l2.weight", "l2.bias"}) want.push_back(std::to_string(2 + b) + "." + p);
  want.push_back("5.weight");
  want.push_back("5.bias");
  EXPECT_EQ(n, want);
  auto ln = build_model("resmlp:8-4x1-2:pre+ln");
  EXPECT_EQ(names_of(*ln), (std::vector<std::string>{"0.weight", "0.bias", "2.norm.weight", "2.norm.bias", "2.l1.weight", "2.l1.bias",
                                                     "2.l2.weight", "2.l2.bias", "3.weight", "3.bias"}));
  auto bn = build_model("resmlp:8-4x1-2:lrl+bn");
  std::vector<std::string> buffers;
  for (auto& [b, t] : bn->named_buffers()) buffers.push_back(b);
  EXPECT_EQ(buffers, (std::vector<std::string>{"2.norm.running_mean", "2.norm.running_var", "2.norm.num_batches_tracked"}));
}

TEST(Modules, SpecsRoundTripAndRejectNonsense) {
  for (const char* s : {"mlp:784-256-256-10", "resmlp:784-256x8-10", "resmlp:2-16x2-2:pre", "resmlp:2-16x2-2:lrlr+bn", "resmlp:4-8x0-3"})
    EXPECT_EQ(ModelSpec::parse(s).str(), s);
  EXPECT_EQ(ModelSpec::parse("resmlp:784-256x8-10:lrl").str(), "resmlp:784-256x8-10");
  for (const char* bad : {"", "mlp", "mlp:784", "mlp:784--10", "mlp:784-0-10", "cnn:1-2", "resmlp:784-256-10", "resmlp:784-256x8-10:abc",
                          "resmlp:784-256xq-10", "resmlp:784-256x8-10:lrl+xx", "mlp:1-2:pre"}) {
    EXPECT_THROW(ModelSpec::parse(bad), ValueError) << bad;
  }
  try {
    ModelSpec::parse("resmlp:784-256x8-10:abc");
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("abc"), std::string::npos) << e.what();
  }
}

TEST(Modules, TrainEvalZeroGradAndPrinting) {
  auto m = build_model("resmlp:4-8x2-3:lrl+bn");
  EXPECT_TRUE(m->is_training());
  m->eval();
  for (auto& [n, sub] : m->named_modules()) EXPECT_FALSE(sub->is_training()) << n;
  m->train();
  Tensor x = randn({5, 4}, *std::make_unique<Generator>(1));
  m->forward(x).sum().backward();
  for (auto& [n, t] : m->named_parameters()) EXPECT_TRUE(t.grad().defined()) << n;
  m->zero_grad();
  for (auto& [n, t] : m->named_parameters()) EXPECT_FALSE(t.grad().defined()) << n;
  EXPECT_NE(m->str().find("(2): ResidualBlock(width=8, layout=lrl)"), std::string::npos) << m->str();
}

TEST(Modules, LoadStateDictChecksNamesAndShapes) {
  auto a = initialised(build_model("mlp:3-4-2"));
  auto b = build_model("mlp:3-4-2");
  b->load_state_dict(a->state_dict());
  for (auto& [n, t] : b->named_parameters()) EXPECT_EQ(max_abs_diff(t, a->state_dict().at(n)), 0.0) << n;
  auto sd = a->state_dict();
  sd.erase("2.bias");
  EXPECT_THROW(b->load_state_dict(sd), ValueError);
  sd = a->state_dict();
  sd["9.weight"] = zeros({1});
  EXPECT_THROW(b->load_state_dict(sd), ValueError);
  sd = a->state_dict();
  sd["0.weight"] = zeros({3, 4});
  EXPECT_THROW(b->load_state_dict(sd), ShapeError);
}

// ---- functional_call and the transforms ----------------------------------------------------

TEST(FunctionalCall, GradOverParametersEqualsEagerBackward) {
  auto m = initialised(build_model("resmlp:3-5x2-4"));
  m->to(DType::f64);
  Tensor x = randn64({6, 3}, 2);
  Tensor y = from_vector<std::int64_t>({0, 1, 2, 3, 0, 1});
  std::vector<std::string> names;
  std::vector<Tensor> values;
  for (auto& [n, t] : m->named_parameters()) names.push_back(n), values.push_back(t.detach());
  auto g = grad([&](const std::vector<Tensor>& p) {
    std::map<std::string, Tensor> params;
    for (std::size_t i = 0; i < p.size(); ++i) params.emplace(names[i], p[i]);
    return cross_entropy(functional_call(*m, params, x), y);
  })(values);
  cross_entropy(m->forward(x), y).backward();
  auto eager = m->parameters();
  ASSERT_EQ(g.size(), eager.size());
  for (std::size_t i = 0; i < g.size(); ++i) EXPECT_LT(max_abs_diff(g[i], eager[i].grad()), 1e-14) << names[i];
  // The module's own tensors are back in place afterwards.
  for (std::size_t i = 0; i < names.size(); ++i) EXPECT_TRUE(eager[i].requires_grad()) << names[i];
}

TEST(FunctionalCall, JacrevAndVmapOverAModule) {
  auto lin = initialised(std::make_shared<Linear>(3, 2, LinearOptions{.dtype = DType::f64}));
  Tensor h = randn64({3}, 3);
  // d f / d W for f = β + W h: ∂f_i/∂W_jk = δ_ij h_k.
  Tensor J = jacrev([&](const Tensor& W) { return functional_call(*lin, {{"weight", W}}, h); })(lin->weight.detach());
  ASSERT_EQ(J.shape(), (Shape{2, 2, 3}));
  auto j = J.to_vector<double>();
  auto hv = h.to_vector<double>();
  for (int i = 0; i < 2; ++i)
    for (int r = 0; r < 2; ++r)
      for (int k = 0; k < 3; ++k) EXPECT_DOUBLE_EQ(j[static_cast<std::size_t>((i * 2 + r) * 3 + k)], i == r ? hv[static_cast<std::size_t>(k)] : 0.0);
  // vmap over a batch of examples gives the batched forward.
  Tensor xs = randn64({4, 3}, 4);
  Tensor batched = vmap([&](const Tensor& x) { return functional_call(*lin, {}, x); })(xs);
  EXPECT_LT(max_abs_diff(batched, lin->forward(xs)), 1e-15);
  EXPECT_THROW(functional_call(*lin, {{"weights", lin->weight}}, h), ValueError);
  EXPECT_THROW(functional_call(*lin, {{"weight", zeros({3, 3}, DType::f64)}}, h), ShapeError);
}

// ---- gradchecks of every module, in float64 through functional_call ------------------------

TEST(Gradcheck, Linear) {
  auto m = initialised(std::make_shared<Linear>(4, 3));
  auto r = gradcheck_module(*m, randn64({5, 4}, 11));
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(Gradcheck, ReLUAndSequential) {
  auto m = initialised(build_model("mlp:4-6-5-3"));
  auto r = gradcheck_module(*m, randn64({3, 4}, 12));
  EXPECT_TRUE(r.pass) << r.failure;
  ReLU relu_layer;
  auto r2 = gradcheck_module(relu_layer, randn64({7}, 13));
  EXPECT_TRUE(r2.pass) << r2.failure;
}

TEST(Gradcheck, ResidualOfAnyModule) {
  auto m = initialised(std::make_shared<Residual>(build_model("mlp:4-6-4")));
  auto r = gradcheck_module(*m, randn64({3, 4}, 14));
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(Gradcheck, ResidualBlockEveryLayout) {
  for (auto layout : {BlockLayout::LRL, BlockLayout::Pre, BlockLayout::LRLR})
    for (auto norm : {BlockNorm::None, BlockNorm::LayerNorm}) {
      auto m = initialised(std::make_shared<ResidualBlock>(5, layout, norm));
      auto r = gradcheck_module(*m, randn64({3, 5}, 15));
      EXPECT_TRUE(r.pass) << m->repr() << " norm " << static_cast<int>(norm) << ": " << r.failure;
    }
}

TEST(Gradcheck, LayerNorm) {
  auto m = initialised(std::make_shared<LayerNorm>(6));
  auto r = gradcheck_module(*m, randn64({4, 6}, 16));
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(Gradcheck, BatchNorm1dTrainAndEval) {
  auto m = initialised(std::make_shared<BatchNorm1d>(3));
  auto r = gradcheck_module(*m, randn64({6, 3}, 17), {.float32 = false});
  EXPECT_TRUE(r.pass) << "train: " << r.failure;
  m->eval();
  auto r2 = gradcheck_module(*m, randn64({6, 3}, 18), {.float32 = false});
  EXPECT_TRUE(r2.pass) << "eval: " << r2.failure;
}

TEST(Gradcheck, DropoutWithAFixedMask) {
  Dropout d(0.4, 5);
  Tensor x = randn64({4, 5}, 19);
  auto r = check_grads(
      [&](std::span<const Tensor> in) {
        d.generator.set_state(5, 0);  // the same mask on every evaluation
        return d.forward(in[0]);
      },
      {x});
  EXPECT_TRUE(r.pass) << r.failure;
}

// ---- layer semantics -----------------------------------------------------------------------

TEST(Layers, LinearIsBetaPlusWh) {
  Linear lin(2, 2, {.dtype = DType::f64});
  {
    NoGradGuard ng;
    lin.weight.copy_(tensor({1, 2, 3, 4}, {2, 2}, DType::f64));
    lin.bias.copy_(tensor({10, 20}, {2}, DType::f64));
  }
  EXPECT_EQ(lin.forward(tensor({1, -1}, {2}, DType::f64)).to_vector<double>(), (std::vector<double>{10 + 1 - 2, 20 + 3 - 4}));
  EXPECT_THROW(lin.forward(zeros({3, 5}, DType::f64)), ShapeError);
}

TEST(Layers, ResidualBlockLayoutsMatchTheirFormulas) {
  Tensor h = randn64({3, 4}, 21);
  for (auto layout : {BlockLayout::LRL, BlockLayout::Pre, BlockLayout::LRLR}) {
    auto b = initialised(std::make_shared<ResidualBlock>(4, layout, BlockNorm::None, DType::f64));
    Tensor l1 = b->l1->weight, l2 = b->l2->weight;
    auto lin = [](const Tensor& W, const Tensor& beta, const Tensor& x) { return add(matmul(x, transpose(W)), beta); };
    Tensor want;
    if (layout == BlockLayout::LRL) want = h + lin(l2, b->l2->bias, relu(lin(l1, b->l1->bias, h)));
    if (layout == BlockLayout::Pre) want = h + lin(l2, b->l2->bias, relu(lin(l1, b->l1->bias, relu(h))));
    if (layout == BlockLayout::LRLR) want = h + relu(lin(l2, b->l2->bias, relu(lin(l1, b->l1->bias, h))));
    EXPECT_LT(max_abs_diff(b->forward(h), want), 1e-14);
  }
}

TEST(Layers, BatchNormRunningStatsLikePyTorch) {
  BatchNorm1d bn(2, 1e-5, 0.1, true, DType::f64);
  Tensor x = tensor({1, 10, 3, 20, 5, 60}, {3, 2}, DType::f64);
  Tensor y = bn.forward(x);
  // Batch mean (3, 30), biased variance (8/3, 1400/3); running var uses the unbiased (4, 700).
  EXPECT_NEAR(bn.running_mean.to_vector<double>()[0], 0.1 * 3, 1e-12);
  EXPECT_NEAR(bn.running_mean.to_vector<double>()[1], 0.1 * 30, 1e-12);
  EXPECT_NEAR(bn.running_var.to_vector<double>()[0], 0.9 + 0.1 * 4, 1e-12);
  EXPECT_NEAR(bn.running_var.to_vector<double>()[1], 0.9 + 0.1 * 700, 1e-12);
  EXPECT_EQ(bn.num_batches_tracked.item<std::int64_t>(), 1);
  EXPECT_NEAR(y.to_vector<double>()[0], (1 - 3) / std::sqrt(8.0 / 3 + 1e-5), 1e-12);
  bn.eval();
  Tensor z = bn.forward(x);
  EXPECT_NEAR(z.to_vector<double>()[0], (1 - 0.3) / std::sqrt(1.3 + 1e-5), 1e-12);
}

TEST(Layers, LayerNormNormalisesEachRow) {
  LayerNorm ln(4, 1e-5, false, DType::f64);
  Tensor y = ln.forward(randn64({3, 4}, 22) * 5.0 + 2.0);
  Tensor mu = mean(y, {-1}), var = mean(square(y), {-1});
  for (double m : mu.to_vector<double>()) EXPECT_NEAR(m, 0, 1e-12);
  for (double v : var.to_vector<double>()) EXPECT_NEAR(v, 1, 1e-5);
}

TEST(Layers, DropoutIsSeededAndIdentityInEval) {
  Dropout a(0.5, 9), b(0.5, 9);
  Tensor x = ones({1000}, DType::f64);
  Tensor ya = a.forward(x), yb = b.forward(x);
  EXPECT_EQ(ya.to_vector<double>(), yb.to_vector<double>());
  double kept = 0;
  for (double v : ya.to_vector<double>()) {
    EXPECT_TRUE(v == 0 || v == 2);
    kept += v != 0;
  }
  EXPECT_NEAR(kept / 1000, 0.5, 0.06);
  EXPECT_NE(a.forward(x).to_vector<double>(), ya.to_vector<double>());  // the generator advanced
  a.eval();
  EXPECT_EQ(a.forward(x).to_vector<double>(), x.to_vector<double>());
  EXPECT_THROW(Dropout(1.5), ValueError);
}

// ---- initialisers --------------------------------------------------------------------------

namespace {
double sample_variance(const Tensor& w) {
  auto v = cast(w, DType::f64).to_vector<double>();
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  for (double x : v) s += (x - m) * (x - m);
  return s / static_cast<double>(v.size() - 1);
}
}  // namespace

TEST(Init, VariancesMatchTheirFormulas) {
  const double din = 400, dout = 1000;  // W is [out, in] = [1000, 400]
  struct Case {
    const char* name;
    std::function<void(Tensor&, Generator&)> init;
    double variance;
  };
  std::vector<Case> cases{
      {"kaiming_normal fan_in", [](Tensor& w, Generator& g) { kaiming_normal_(w, g, {.mode = FanMode::FanIn}); }, 2 / din},
      {"kaiming_normal fan_out", [](Tensor& w, Generator& g) { kaiming_normal_(w, g, {.mode = FanMode::FanOut}); }, 2 / dout},
      {"kaiming_normal fan_avg", [](Tensor& w, Generator& g) { kaiming_normal_(w, g, {.mode = FanMode::FanAvg}); }, 2 / ((din + dout) / 2)},
      {"kaiming_uniform fan_in", [](Tensor& w, Generator& g) { kaiming_uniform_(w, g); }, 2 / din},
      {"kaiming_uniform fan_avg", [](Tensor& w, Generator& g) { kaiming_uniform_(w, g, {.mode = FanMode::FanAvg}); }, 2 / ((din + dout) / 2)},
      {"kaiming_normal tanh", [](Tensor& w, Generator& g) { kaiming_normal_(w, g, {.nonlinearity = Nonlinearity::Tanh}); }, 25.0 / 9 / din},
      {"xavier_normal", [](Tensor& w, Generator& g) { xavier_normal_(w, g); }, 2 / (din + dout)},
      {"xavier_uniform gain 2", [](Tensor& w, Generator& g) { xavier_uniform_(w, g, {.gain = 2}); }, 4 * 2 / (din + dout)},
      {"lecun_normal", [](Tensor& w, Generator& g) { lecun_normal_(w, g); }, 1 / din},
      {"normal std 0.3", [](Tensor& w, Generator& g) { normal_(w, g, {.std = 0.3}); }, 0.09},
  };
  for (auto dtype : {DType::f32, DType::f64}) {
    for (auto& c : cases) {
      Tensor w = zeros({static_cast<std::int64_t>(dout), static_cast<std::int64_t>(din)}, dtype);
      w.requires_grad_();
      Generator g(kSeed);
      c.init(w, g);
      // 400,000 samples: the sample variance's relative standard error is sqrt(2/n) ≈ 0.2%.
      EXPECT_NEAR(sample_variance(w) / c.variance, 1.0, 0.01) << c.name << " " << dtype_name(dtype) << " seed " << kSeed;
    }
  }
}

TEST(Init, GainsFansZerosAndNames) {
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::ReLU), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::Linear), 1.0);
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::Tanh), 5.0 / 3);
  EXPECT_DOUBLE_EQ(calculate_gain(Nonlinearity::LeakyReLU, 0.2), std::sqrt(2.0 / 1.04));
  Fans f = calculate_fans(zeros({7, 3}));
  EXPECT_EQ(f.in, 3);
  EXPECT_EQ(f.out, 7);
  EXPECT_THROW(calculate_fans(zeros({7})), ShapeError);
  Tensor w = ones({2, 2});
  zeros_(w);
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{0, 0, 0, 0}));
  EXPECT_EQ(parse_init("kaiming_normal"), InitScheme::He);
  EXPECT_EQ(parse_init("glorot"), InitScheme::Xavier);
  EXPECT_THROW(parse_init("nope"), ValueError);
}

TEST(Init, ModelInitZeroesBiasesAndOptionallyResidualBranches) {
  auto m = build_model("resmlp:6-8x2-3");
  Generator g(kSeed);
  init_model(*m, g, {.scheme = InitScheme::He, .zero_residual = true});
  auto sd = m->state_dict();
  for (auto& [n, t] : sd) {
    double sumsq = sum(square(t)).item();
    if (n.ends_with("bias") || n.find("l2.weight") != std::string::npos) EXPECT_EQ(sumsq, 0.0) << n;
    else EXPECT_GT(sumsq, 0.0) << n;
  }
  // With zeroed branches each block is the identity at initialisation.
  Tensor x = randn({4, 6}, g);
  auto& seq = *m;
  Tensor h = relu(seq[0]->forward(x));
  EXPECT_EQ(max_abs_diff(seq[3]->forward(seq[2]->forward(h)), h), 0.0);
  // The same seed gives the same weights.
  auto m2 = build_model("resmlp:6-8x2-3");
  Generator g2(kSeed);
  init_model(*m2, g2, {.zero_residual = true});
  for (auto& [n, t] : m2->state_dict()) EXPECT_EQ(max_abs_diff(t, sd.at(n)), 0.0) << n;
}

// ---- losses --------------------------------------------------------------------------------

TEST(Losses, CrossEntropyMeanSumAndNone) {
  Tensor z = tensor({1, 2, 3, -1, 0, 4}, {2, 3}, DType::f64);
  Tensor y = from_vector<std::int64_t>({2, 0});
  double l0 = std::log(std::exp(1) + std::exp(2) + std::exp(3)) - 3;
  double l1 = std::log(std::exp(-1) + std::exp(0) + std::exp(4)) + 1;
  EXPECT_NEAR(cross_entropy(z, y).item(), (l0 + l1) / 2, 1e-14);
  EXPECT_NEAR(cross_entropy(z, y, Reduction::Sum).item(), l0 + l1, 1e-14);
  EXPECT_NEAR(cross_entropy(z, y, Reduction::None).to_vector<double>()[1], l1, 1e-14);
}

TEST(Losses, LabelSmoothingMatchesSmoothedTargets) {
  Tensor z = tensor({1, 2, 3, -1, 0, 4}, {2, 3}, DType::f64);
  Tensor y = from_vector<std::int64_t>({2, 0});
  const double eps = 0.1;
  double want = 0;
  auto zv = z.to_vector<double>();
  for (int r = 0; r < 2; ++r) {
    double lse = std::log(std::exp(zv[3 * r]) + std::exp(zv[3 * r + 1]) + std::exp(zv[3 * r + 2]));
    for (int c = 0; c < 3; ++c) {
      double target = (c == (r == 0 ? 2 : 0) ? 1 - eps : 0) + eps / 3;
      want -= target * (zv[static_cast<std::size_t>(3 * r + c)] - lse);
    }
  }
  EXPECT_NEAR(cross_entropy(z, y, eps, Reduction::Sum).item(), want, 1e-14);
  EXPECT_NEAR(cross_entropy(z, y, 0.0).item(), cross_entropy(z, y).item(), 1e-15);
  EXPECT_THROW(cross_entropy(z, y, 1.5), ValueError);
  auto r = check_grads([&](std::span<const Tensor> x) { return cross_entropy(x[0], y, eps); }, {z});
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(Losses, MseAndBceWithLogits) {
  Tensor a = tensor({1, 2, 3}, {3}, DType::f64), b = tensor({0, 2, 5}, {3}, DType::f64);
  EXPECT_NEAR(mse_loss(a, b, Reduction::Mean).item(), 5.0 / 3, 1e-15);
  EXPECT_NEAR(mse_loss(a, b, Reduction::Sum).item(), 5.0, 1e-15);
  EXPECT_THROW(mse_loss(a, zeros({2}, DType::f64), Reduction::Mean), ShapeError);
  Tensor z = tensor({-3, -0.5, 0.7, 2}, {4}, DType::f64), t = tensor({0, 1, 0.3, 1}, {4}, DType::f64);
  auto zv = z.to_vector<double>(), tv = t.to_vector<double>();
  double want = 0;
  for (int i = 0; i < 4; ++i) {
    double s = 1 / (1 + std::exp(-zv[i]));
    want += -(tv[i] * std::log(s) + (1 - tv[i]) * std::log(1 - s));
  }
  EXPECT_NEAR(binary_cross_entropy_with_logits(z, t).item(), want / 4, 1e-14);
  // Stable for huge logits: the loss of a confident wrong answer is |z|, not inf.
  Tensor big = tensor({1e4, -1e4}, {2}, DType::f64);
  auto per = binary_cross_entropy_with_logits(big, tensor({0, 1}, {2}, DType::f64), Reduction::None).to_vector<double>();
  EXPECT_DOUBLE_EQ(per[0], 1e4);
  EXPECT_DOUBLE_EQ(per[1], 1e4);
  auto r = check_grads([&](std::span<const Tensor> x) { return binary_cross_entropy_with_logits(x[0], x[1], Reduction::Sum); }, {z, t});
  EXPECT_TRUE(r.pass) << r.failure;
}

// ---- the text's backward pass by hand ------------------------------------------------------

TEST(ManualBackprop, EqualsReverseAndForwardModeTo1e12) {
  // A K = 3 layer ReLU MLP, 5 -> 7 -> 6 -> 4, batch of 8, float64.
  const std::vector<std::int64_t> sizes{5, 7, 6, 4};
  std::vector<Tensor> W, b;
  Generator g(kSeed);
  for (std::size_t k = 0; k + 1 < sizes.size(); ++k) {
    W.push_back(randn({sizes[k + 1], sizes[k]}, g, DType::f64) * std::sqrt(2.0 / static_cast<double>(sizes[k])));
    b.push_back(randn({sizes[k + 1]}, g, DType::f64) * 0.1);
  }
  Tensor x = randn({8, 5}, g, DType::f64);
  Tensor y = randint({8}, 4, g);
  MlpGradients by_hand = mlp_backprop_by_hand(W, b, x, y);

  // The same network as a module, differentiated by reverse mode through functional_call.
  auto m = build_model("mlp:5-7-6-4", DType::f64);
  std::map<std::string, Tensor> params;
  std::vector<std::string> names;
  for (std::size_t k = 0; k < W.size(); ++k) {
    params[std::to_string(2 * k) + ".weight"] = W[k];
    params[std::to_string(2 * k) + ".bias"] = b[k];
  }
  for (auto& [n, t] : m->named_parameters()) names.push_back(n);
  std::vector<Tensor> values;
  for (auto& n : names) values.push_back(params.at(n));
  auto loss_of = [&](const std::vector<Tensor>& p) {
    std::map<std::string, Tensor> mp;
    for (std::size_t i = 0; i < p.size(); ++i) mp.emplace(names[i], p[i]);
    return cross_entropy(functional_call(*m, mp, x), y);
  };
  auto [loss, reverse] = value_and_grad(loss_of)(values);
  EXPECT_NEAR(loss.item(), by_hand.loss.item(), 1e-14);

  auto rel = [](const Tensor& a, const Tensor& ref) {
    return max_abs_diff(a, ref) / std::max(1e-300, max(abs(ref)).item());
  };
  for (std::size_t k = 0; k < W.size(); ++k) {
    const Tensor& gw = reverse[2 * k];
    const Tensor& gb = reverse[2 * k + 1];
    EXPECT_LT(rel(by_hand.weight_grads[k], gw), 1e-12) << "dW_" << k << " hand vs reverse";
    EXPECT_LT(rel(by_hand.bias_grads[k], gb), 1e-12) << "dβ_" << k << " hand vs reverse";
    // Forward mode: jacfwd of the scalar loss with respect to one parameter is its gradient.
    for (int which = 0; which < 2; ++which) {
      const std::size_t idx = 2 * k + static_cast<std::size_t>(which);
      Tensor fwd = jacfwd([&](const Tensor& p) {
        auto v = values;
        v[idx] = p;
        return loss_of(v);
      })(values[idx]);
      const Tensor& hand = which == 0 ? by_hand.weight_grads[k] : by_hand.bias_grads[k];
      EXPECT_LT(rel(hand, fwd), 1e-12) << names[idx] << " hand vs forward mode";
    }
  }
}

// ---- checkpoints ---------------------------------------------------------------------------

TEST(Checkpoint, RoundTripIsExactAndMetadataIsDeterministic) {
  auto dir = std::filesystem::temp_directory_path() / "chainrule_test_nn_ckpt";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "model.safetensors").string();
  for (const char* spec : {"resmlp:5-6x2-3:pre+bn", "mlp:5-4-3"}) {
    auto m = build_model(spec);
    Generator g(kSeed);
    init_model(*m, g);
    if (spec[0] == 'r') m->forward(randn({4, 5}, g));  // move BatchNorm's running statistics
    save_model(path, *m, spec, 42);
    auto f = load_tensors(path);
    EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"chainrule.model", spec}, {"chainrule.step", "42"}}));
    LoadedModel l = load_model(path);
    EXPECT_EQ(l.spec.str(), spec);
    EXPECT_EQ(l.step, 42);
    for (auto& [n, t] : m->state_dict()) EXPECT_EQ(max_abs_diff(cast(t, DType::f64), cast(l.model->state_dict().at(n), DType::f64)), 0.0) << n;
    m->eval();
    l.model->eval();
    Tensor x = randn({3, 5}, g);
    EXPECT_EQ(max_abs_diff(m->forward(x), l.model->forward(x)), 0.0);
    // Same model, same bytes.
    const std::string path2 = (dir / "again.safetensors").string();
    save_model(path2, *m, spec, 42);
    std::ifstream a(path, std::ios::binary), b(path2, std::ios::binary);
    std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_EQ(sa, sb);
    EXPECT_THROW(load_model(path, std::string("mlp:5-9-3")), ValueError);
  }
  // A file without metadata needs a spec, and a wrong spec is reported.
  auto m = build_model("mlp:2-3");
  NamedTensors plain;
  for (auto& [n, t] : m->state_dict()) plain.emplace_back(n, t);
  save_tensors(path, plain);
  EXPECT_THROW(load_model(path), ValueError);
  EXPECT_EQ(load_model(path, std::string("mlp:2-3")).step, -1);
  EXPECT_THROW(load_model(path, std::string("mlp:2-4-3")), IOError);
  std::filesystem::remove_all(dir);
}
