// Convolutional networks: BatchNorm2d and GroupNorm against reference loops and finite
// differences, under vmap and checkpoint recomputation; the resnet model spec and the
// convolutional recipe of `chainrule train`.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "chainrule/autodiff/check.h"
#include "chainrule/autodiff/transforms.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"
#include "gradcheck_module.h"
#include "chainrule/nn/train.h"

using namespace chainrule;
using namespace chainrule::nn;
using chainrule::test_util::gradcheck_module;

namespace {

Tensor randn64(const Shape& s, std::uint64_t seed) {
  Generator g(seed);
  return randn(s, g, DType::f64);
}

// Fills every parameter with N(mean, 0.5²), mean 1 for a norm's weight, so that the affine part is
// not the identity.
void perturb(Module& m, std::uint64_t seed) {
  Generator g(seed);
  for (auto& [n, t] : m.named_parameters()) {
    Tensor slot = t;
    normal_(slot, g, {.mean = n.ends_with("weight") && t.dim() == 1 ? 1.0 : 0.0, .std = 0.5});
  }
}


// Reference normalisation of x [N, C, S] (S positions) as plain loops: groups of `cpg`
// consecutive channels; per_example: statistics per (example, group) (GroupNorm), else per
// channel over the batch (BatchNorm2d, cpg = 1). Returns the output and the biased variances.
struct Ref {
  std::vector<double> y, mean, var;
};
Ref reference_norm(const std::vector<double>& x, std::int64_t N, std::int64_t C, std::int64_t S, std::int64_t cpg, bool per_example,
                   const std::vector<double>& w, const std::vector<double>& b, double eps) {
  Ref r;
  r.y.assign(x.size(), 0);
  const std::int64_t G = C / cpg;
  auto idx = [&](std::int64_t n, std::int64_t c, std::int64_t s) { return static_cast<std::size_t>((n * C + c) * S + s); };
  for (std::int64_t outer = 0; outer < (per_example ? N : 1); ++outer)
    for (std::int64_t g = 0; g < G; ++g) {
      const std::int64_t n0 = per_example ? outer : 0, n1 = per_example ? outer + 1 : N;
      double sum = 0, count = 0;
      for (std::int64_t n = n0; n < n1; ++n)
        for (std::int64_t c = g * cpg; c < (g + 1) * cpg; ++c)
          for (std::int64_t s = 0; s < S; ++s) sum += x[idx(n, c, s)], count += 1;
      const double mu = sum / count;
      double sq = 0;
      for (std::int64_t n = n0; n < n1; ++n)
        for (std::int64_t c = g * cpg; c < (g + 1) * cpg; ++c)
          for (std::int64_t s = 0; s < S; ++s) sq += (x[idx(n, c, s)] - mu) * (x[idx(n, c, s)] - mu);
      const double var = sq / count;
      r.mean.push_back(mu), r.var.push_back(var);
      for (std::int64_t n = n0; n < n1; ++n)
        for (std::int64_t c = g * cpg; c < (g + 1) * cpg; ++c)
          for (std::int64_t s = 0; s < S; ++s)
            r.y[idx(n, c, s)] = (x[idx(n, c, s)] - mu) / std::sqrt(var + eps) * w[static_cast<std::size_t>(c)] + b[static_cast<std::size_t>(c)];
    }
  return r;
}

double max_gap(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

// ---- BatchNorm2d ---------------------------------------------------------------------------

TEST(BatchNorm2d, TrainingAndEvalMatchReferenceLoops) {
  const std::int64_t N = 3, C = 2, H = 2, W = 3, S = H * W;
  BatchNorm2d bn(C, 1e-5, 0.1, true, DType::f64);
  perturb(bn, 1);
  const auto w = bn.weight.to_vector<double>(), b = bn.bias.to_vector<double>();
  Tensor x1 = randn64({N, C, H, W}, 2) * 3.0 + 1.0, x2 = randn64({N, C, H, W}, 3) * 0.5 - 2.0;
  Ref r1 = reference_norm(x1.to_vector<double>(), N, C, S, 1, false, w, b, 1e-5);
  EXPECT_LT(max_gap(bn.forward(x1).to_vector<double>(), r1.y), 1e-12);
  Ref r2 = reference_norm(x2.to_vector<double>(), N, C, S, 1, false, w, b, 1e-5);
  EXPECT_LT(max_gap(bn.forward(x2).to_vector<double>(), r2.y), 1e-12);
  // PyTorch's update: r ← (1 - m) r + m·stat, with the unbiased variance (M / (M - 1), M = N·H·W).
  const double M = N * S, unbias = M / (M - 1);
  std::vector<double> rm(C), rv(C);
  for (std::size_t c = 0; c < static_cast<std::size_t>(C); ++c) {
    rm[c] = 0.9 * (0.9 * 0 + 0.1 * r1.mean[c]) + 0.1 * r2.mean[c];
    rv[c] = 0.9 * (0.9 * 1 + 0.1 * r1.var[c] * unbias) + 0.1 * r2.var[c] * unbias;
  }
  EXPECT_LT(max_gap(bn.running_mean.to_vector<double>(), rm), 1e-12);
  EXPECT_LT(max_gap(bn.running_var.to_vector<double>(), rv), 1e-12);
  EXPECT_EQ(bn.num_batches_tracked.item<std::int64_t>(), 2);
  // Eval: the running statistics, and no update.
  bn.eval();
  const auto xs = x1.to_vector<double>();
  auto y = bn.forward(x1).to_vector<double>();
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t s = 0; s < S; ++s) {
        const auto i = static_cast<std::size_t>((n * C + c) * S + s), k = static_cast<std::size_t>(c);
        EXPECT_NEAR(y[i], (xs[i] - rm[k]) / std::sqrt(rv[k] + 1e-5) * w[k] + b[k], 1e-12);
      }
  EXPECT_EQ(bn.num_batches_tracked.item<std::int64_t>(), 2);
}

TEST(BatchNorm2d, StateDictNamesAndBadInput) {
  BatchNorm2d bn(4);
  std::vector<std::string> names;
  for (auto& [n, t] : bn.state_dict()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"bias", "num_batches_tracked", "running_mean", "running_var", "weight"}));
  EXPECT_EQ(bn.num_parameters(), 8);
  EXPECT_THROW(bn.forward(zeros({2, 3, 4, 4})), ShapeError);  // 3 channels, not 4
  EXPECT_THROW(bn.forward(zeros({2, 4})), ShapeError);        // not [N, C, H, W]
  EXPECT_THROW(bn.forward(zeros({1, 4, 1, 1})), ValueError);  // one value per channel
  EXPECT_THROW(BatchNorm2d(0), ValueError);
  BatchNorm2d plain(3, 1e-5, 0.1, false);
  EXPECT_EQ(plain.num_parameters(), 0);
  EXPECT_EQ(plain.forward(randn64({2, 3, 2, 2}, 4).to(DType::f32)).shape(), Shape({2, 3, 2, 2}));
}

TEST(BatchNorm2d, GradcheckTrainAndEval) {
  BatchNorm2d bn(2, 1e-5, 0.1, true, DType::f64);
  perturb(bn, 5);
  auto r = gradcheck_module(bn, randn64({3, 2, 2, 2}, 6), {.float32 = false});
  EXPECT_TRUE(r.pass) << "train: " << r.failure;
  bn.eval();
  auto r2 = gradcheck_module(bn, randn64({3, 2, 2, 2}, 7), {.float32 = false});
  EXPECT_TRUE(r2.pass) << "eval: " << r2.failure;
}

TEST(BatchNorm2d, VmapNormalisesEachBatchAndLeavesTheBuffers) {
  BatchNorm2d bn(2, 1e-5, 0.1, true, DType::f64);
  perturb(bn, 8);
  Tensor xs = randn64({3, 4, 2, 2, 2}, 9);  // three batches of [4, 2, 2, 2]
  Tensor batched = vmap([&](const Tensor& x) { return bn.forward(x); })(xs);
  EXPECT_EQ(bn.num_batches_tracked.item<std::int64_t>(), 0);  // no single batch statistic under vmap
  EXPECT_EQ(bn.running_mean.to_vector<double>(), (std::vector<double>{0, 0}));
  const auto w = bn.weight.to_vector<double>(), b = bn.bias.to_vector<double>();
  for (std::int64_t k = 0; k < 3; ++k) {
    Tensor xk = squeeze(slice(xs, 0, k, k + 1), 0);
    Ref r = reference_norm(xk.to_vector<double>(), 4, 2, 4, 1, false, w, b, 1e-5);
    EXPECT_LT(max_gap(squeeze(slice(batched, 0, k, k + 1), 0).to_vector<double>(), r.y), 1e-12) << "batch " << k;
  }
}

TEST(BatchNorm2d, CheckpointRecomputationUpdatesTheBuffersOnce) {
  BatchNorm2d plain(2, 1e-5, 0.1, true, DType::f64), remat(2, 1e-5, 0.1, true, DType::f64);
  perturb(plain, 10), perturb(remat, 10);
  Tensor x = randn64({3, 2, 3, 3}, 11);
  Tensor t = randn64({3, 2, 3, 3}, 12);
  sum(mul(plain.forward(x), t)).backward();
  sum(mul(nn::checkpoint(remat, x), t)).backward();
  EXPECT_EQ(remat.num_batches_tracked.item<std::int64_t>(), 1);
  EXPECT_EQ(max_abs_diff(remat.running_var, plain.running_var), 0.0);
  EXPECT_LT(max_abs_diff(remat.weight.grad(), plain.weight.grad()), 1e-12);
  EXPECT_LT(max_abs_diff(remat.bias.grad(), plain.bias.grad()), 1e-12);
}

// ---- GroupNorm -----------------------------------------------------------------------------

TEST(GroupNorm, MatchesReferenceLoops) {
  const std::int64_t N = 2, C = 6, H = 3, W = 2;
  for (std::int64_t groups : {1, 2, 3, 6}) {
    GroupNorm gn(groups, C, 1e-5, true, DType::f64);
    perturb(gn, 13);
    Tensor x = randn64({N, C, H, W}, 14) * 2.0 + 0.5;
    Ref r = reference_norm(x.to_vector<double>(), N, C, H * W, C / groups, true, gn.weight.to_vector<double>(),
                           gn.bias.to_vector<double>(), 1e-5);
    EXPECT_LT(max_gap(gn.forward(x).to_vector<double>(), r.y), 1e-12) << groups << " groups";
    gn.eval();  // no running statistics: the same in eval mode
    EXPECT_LT(max_gap(gn.forward(x).to_vector<double>(), r.y), 1e-12) << groups << " groups, eval";
  }
  // [N, C] (no positions) and [N, C, L] work too, as in PyTorch.
  GroupNorm flat(2, 4, 1e-5, false, DType::f64);
  Tensor x2 = randn64({3, 4}, 15);
  Ref r2 = reference_norm(x2.to_vector<double>(), 3, 4, 1, 2, true, {1, 1, 1, 1}, {0, 0, 0, 0}, 1e-5);
  EXPECT_LT(max_gap(flat.forward(x2).to_vector<double>(), r2.y), 1e-12);
  EXPECT_EQ(flat.forward(randn64({3, 4, 5}, 16)).shape(), Shape({3, 4, 5}));
}

TEST(GroupNorm, GradcheckAndBadInput) {
  GroupNorm gn(2, 4, 1e-5, true, DType::f64);
  perturb(gn, 17);
  auto r = gradcheck_module(gn, randn64({2, 4, 2, 2}, 18), {.float32 = false});
  EXPECT_TRUE(r.pass) << r.failure;
  std::vector<std::string> names;
  for (auto& [n, t] : gn.state_dict()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"bias", "weight"}));
  EXPECT_THROW(GroupNorm(4, 6), ValueError);  // 4 does not divide 6
  EXPECT_THROW(GroupNorm(0, 6), ValueError);
  EXPECT_THROW(gn.forward(zeros({2, 6, 2, 2}, DType::f64)), ShapeError);
  EXPECT_THROW(gn.forward(zeros({4}, DType::f64)), ShapeError);
}

// ---- resnet ------------------------------------------------------------------------------

TEST(ResNetSpec, ParsesPrintsAndRefuses) {
  auto s = ModelSpec::parse("resnet:1x28x28-16x3-32x3-64x3-10");
  EXPECT_EQ(s.kind, ModelSpec::Kind::ResNet);
  EXPECT_EQ(s.input_dim(), 784);
  EXPECT_EQ(s.output_dim(), 10);
  EXPECT_EQ(s.str(), "resnet:1x28x28-16x3-32x3-64x3-10");
  EXPECT_EQ(ModelSpec::parse("resnet:3x8x8-4x1-8x2-5:post").str(), "resnet:3x8x8-4x1-8x2-5");
  EXPECT_EQ(ModelSpec::parse("resnet:3x8x8-4x1-5:pre").str(), "resnet:3x8x8-4x1-5:pre");
  for (const char* bad : {"resnet:28x28-16x3-10", "resnet:1x28x28-10", "resnet:1x28x28-16-10", "resnet:1x28x28-16x0-10",
                          "resnet:1x28x28-16x3-10:mid", "resnet:1x0x28-16x3-10"})
    EXPECT_THROW(ModelSpec::parse(bad), ValueError) << bad;
}

TEST(ResNet, ResNet20HasThePapersParameterCountAndPyTorchNames) {
  auto m = build_model("resnet:1x28x28-16x3-32x3-64x3-10");
  // By hand from the layer shapes: 3x3 convolutions without bias, BN 2 parameters per channel,
  // projection shortcuts (1x1 conv + BN) where the shape changes, fc 64 -> 10 with bias.
  auto conv3 = [](std::int64_t in, std::int64_t out) { return in * out * 9; };
  auto bn = [](std::int64_t c) { return 2 * c; };
  auto block = [&](std::int64_t in, std::int64_t out) {
    std::int64_t n = conv3(in, out) + bn(out) + conv3(out, out) + bn(out);
    if (in != out) n += in * out + bn(out);
    return n;
  };
  const std::int64_t expected = conv3(1, 16) + bn(16) + 3 * block(16, 16) + block(16, 32) + 2 * block(32, 32) + block(32, 64) +
                                2 * block(64, 64) + 64 * 10 + 10;
  EXPECT_EQ(expected, 272186);  // ≈ 0.27M, He et al. 2016 Table 6 (their option A has no projections: 0.269M)
  EXPECT_EQ(m->num_parameters(), expected);
  // 6n + 2 = 20 weighted layers on the main path: 19 3x3 convolutions and fc.
  int convs = 0, linears = 0;
  for (auto& [name, mod] : m->named_modules()) {
    if (auto* c = dynamic_cast<Conv2d*>(mod); c && c->kernel_size[0] == 3) ++convs;
    if (dynamic_cast<Linear*>(mod)) ++linears;
  }
  EXPECT_EQ(convs + linears, 20);
  auto sd = m->state_dict();
  for (const char* n : {"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
                        "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.2.conv2.weight", "layer1.2.bn2.running_var",
                        "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight", "layer3.0.downsample.1.running_mean",
                        "layer3.2.bn2.bias", "fc.weight", "fc.bias"})
    EXPECT_TRUE(sd.count(n)) << n;
  EXPECT_FALSE(sd.count("layer1.0.downsample.0.weight"));  // identity shortcut in stage 1
  EXPECT_FALSE(sd.count("conv1.bias"));
  EXPECT_EQ(sd.at("layer2.0.conv1.weight").shape(), Shape({32, 16, 3, 3}));
  EXPECT_EQ(sd.at("layer3.0.downsample.0.weight").shape(), Shape({64, 32, 1, 1}));
  EXPECT_EQ(sd.at("fc.weight").shape(), Shape({10, 64}));
}

TEST(ResNet, ForwardAndBackwardShapesBothBlockKinds) {
  for (const char* spec : {"resnet:1x28x28-16x1-32x1-64x1-10", "resnet:1x28x28-16x1-32x1-64x1-10:pre"}) {
    SCOPED_TRACE(spec);
    auto m = build_model(spec);
    Generator g(3);
    init_model(*m, g);
    Tensor x = randn({4, 784}, g);
    Tensor y = randint({4}, 10, g);
    Tensor out = m->forward(x);
    EXPECT_EQ(out.shape(), Shape({4, 10}));
    cross_entropy(out, y).backward();
    for (auto& [n, p] : m->named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << n;
      EXPECT_EQ(p.grad().shape(), p.shape()) << n;
    }
    // The stages halve the 28x28 image twice: 28 -> 14 -> 7 before the pooling (float32
    // networks hold their activations channels-last inside: [N, H, W, C]).
    auto seq = std::dynamic_pointer_cast<Sequential>(m);
    Tensor h = x;
    for (std::size_t i = 0; i < seq->size() && seq->name(i) != "avgpool"; ++i) h = (*seq)[i]->forward(h);
    EXPECT_EQ(h.shape(), Shape({4, 7, 7, 64}));
    m->eval();
    Tensor logits = m->forward(x);
    EXPECT_EQ(logits.shape(), Shape({4, 10}));
    // Images [N, 1, 28, 28] give the same logits as their rows [N, 784].
    EXPECT_EQ(max_abs_diff(m->forward(reshape(x, {4, 1, 28, 28})), logits), 0.0);
    EXPECT_THROW(m->forward(zeros({4, 783})), ShapeError);
  }
}

// The block's wiring against the formula written with conv2d and the BN formula directly.
TEST(ResNet, BasicBlockMatchesItsFormula) {
  for (bool pre : {false, true}) {
    BasicBlock b(2, 3, 2, pre, DType::f64);
    perturb(b, 20);
    Generator g(21);
    for (auto& [n, t] : b.named_parameters())
      if (n.find("conv") != std::string::npos || n.find("downsample.0") != std::string::npos) {
        Tensor slot = t;
        normal_(slot, g, {.std = 0.4});
      }
    Tensor x = randn64({2, 2, 5, 5}, 22);
    // Batch statistics, biased variance, eps 1e-5, written out.
    auto bnf = [](const Tensor& h, const BatchNorm2d& m) {
      Tensor mu = mean(h, {0, 2, 3}, true), var = mean(square(sub(h, mu)), {0, 2, 3}, true);
      Shape c{m.features, 1, 1};
      return add(mul(div(sub(h, mu), sqrt(add(var, scalar_tensor(1e-5, DType::f64)))), reshape(m.weight, c)), reshape(m.bias, c));
    };
    auto conv = [](const Tensor& h, const Conv2d& c) {
      Conv2dOptions o;
      o.stride = c.options.stride, o.padding = c.options.padding;
      return conv2d(h, c.weight, Tensor(), o);
    };
    auto& ds0 = dynamic_cast<Conv2d&>(*(*b.downsample)[0]);
    Tensor want;
    if (!pre) {
      auto& ds1 = dynamic_cast<BatchNorm2d&>(*(*b.downsample)[1]);
      want = relu(add(bnf(conv(relu(bnf(conv(x, *b.conv1), *b.bn1)), *b.conv2), *b.bn2), bnf(conv(x, ds0), ds1)));
    } else {
      Tensor h = relu(bnf(x, *b.bn1));
      want = add(conv(relu(bnf(conv(h, *b.conv1), *b.bn2)), *b.conv2), conv(h, ds0));
    }
    Tensor got = b.forward(x);
    EXPECT_EQ(got.shape(), Shape({2, 3, 3, 3}));
    EXPECT_LT(max_abs_diff(got, want), 1e-12) << (pre ? "pre" : "post");
  }
}

TEST(ResNet, BasicBlockGradcheck) {
  for (bool pre : {false, true}) {
    BasicBlock b(2, 2, 1, pre, DType::f64);  // identity shortcut; the projection is checked by the formula test
    perturb(b, 23);
    auto r = gradcheck_module(b, randn64({2, 2, 3, 3}, 24), {.second_order = false, .float32 = false});
    EXPECT_TRUE(r.pass) << (pre ? "pre: " : "post: ") << r.failure;
  }
}

TEST(ResNet, ZeroResidualMakesEachBlockStartAsItsShortcut) {
  for (const char* spec : {"resnet:1x8x8-4x2-8x1-3", "resnet:1x8x8-4x2-8x1-3:pre"}) {
    SCOPED_TRACE(spec);
    auto m = build_model(spec, DType::f64);
    Generator g(25);
    init_model(*m, g, {.zero_residual = true});
    auto& block = dynamic_cast<BasicBlock&>(*(*std::dynamic_pointer_cast<Sequential>((*m)[std::string(spec).ends_with("pre") ? 2 : 4]))[1]);
    Tensor x = randn64({3, 4, 8, 8}, 26);
    Tensor want = block.preact ? x : relu(x);  // identity shortcut, zero branch
    EXPECT_LT(max_abs_diff(block.forward(x), want), 1e-12);
  }
}

// ---- the convolutional recipe of `chainrule train` ---------------------------------------

namespace {
data::Dataset tiny_images(std::int64_t n, std::uint64_t seed) {
  Generator g(seed);
  data::Dataset d;
  d.name = "images";
  d.x = rand({n, 64}, g);
  d.y = randint({n}, 3, g);
  d.num_classes = 3;
  d.height = d.width = 8;
  return d;
}
}  // namespace

TEST(ResNetRecipe, ModelResnetTrainsTheRecipesNetworkOnImagesOnly) {
  set_num_threads(1);  // a tiny network: OpenMP's barriers would spin on a busy machine
  const data::Splits images{tiny_images(64, 1), tiny_images(16, 2), tiny_images(16, 3)};
  const auto dir = std::filesystem::temp_directory_path() / ("resnet_recipe_" + std::to_string(::getpid()));
  TrainConfig c;
  c.data = "images";
  c.model = kResNetAlias;
  c.batch = 32;
  c.epochs = 0;  // the recipe's number of epochs; stopped after one step
  TrainResult r = train(c, images, {.out_dir = dir.string(), .stop_after = 1});
  EXPECT_EQ(r.model_spec, "resnet:1x8x8-16x1-32x1-64x1-3");
  EXPECT_EQ(r.config.epochs, kResNetEpochs);
  EXPECT_EQ(r.steps, 1);
  // A resumed run keeps the resolved spec.
  EXPECT_EQ(read_run_config(dir.string()).model, "resnet:1x8x8-16x1-32x1-64x1-3");
  std::filesystem::remove_all(dir);
  const data::Splits flat = data::make_spirals({.train = 64, .validation = 16, .test = 16, .seed = 3});
  c.data = "spirals";
  EXPECT_THROW(train(c, flat, {.out_dir = dir.string()}), ValueError);
  std::filesystem::remove_all(dir);
}

// A float32 ResNet runs channels-last inside; the same weights in a float64 (NCHW) network give
// the same logits, loss gradients and running statistics, for both block kinds.
TEST(ResNet, ChannelsLastFloat32MatchesTheNchwNetwork) {
  for (const char* spec : {"resnet:1x12x12-8x1-16x1-4", "resnet:1x12x12-8x1-16x1-4:pre"}) {
    SCOPED_TRACE(spec);
    auto m32 = build_model(spec, DType::f32);
    auto m64 = build_model(spec, DType::f64);
    Generator g(5);
    init_model(*m64, g);
    auto sd = m64->state_dict();
    for (auto& [name, t] : sd) t = cast(t, t.dtype() == DType::f64 ? DType::f32 : t.dtype());
    m32->load_state_dict(sd);
    const Tensor x = randn({6, 144}, g, DType::f64);
    const Tensor y = randint({6}, 4, g);
    const Tensor out32 = m32->forward(cast(x, DType::f32)), out64 = m64->forward(x);
    EXPECT_LT(max_abs_diff(cast(out32, DType::f64), out64), 1e-4);
    cross_entropy(out32, y).backward();
    cross_entropy(out64, y).backward();
    auto p32 = m32->named_parameters(), p64 = m64->named_parameters();
    ASSERT_EQ(p32.size(), p64.size());
    for (std::size_t i = 0; i < p32.size(); ++i) {
      const double scale = max(abs(p64[i].second.grad())).item();
      EXPECT_LT(max_abs_diff(cast(p32[i].second.grad(), DType::f64), p64[i].second.grad()), 1e-4 * std::max(scale, 1.0)) << p32[i].first;
    }
    auto b32 = m32->state_dict(), b64 = m64->state_dict();
    for (auto& [name, t] : b64) {
      if (name.find("running_") == std::string::npos) continue;
      EXPECT_LT(max_abs_diff(cast(b32.at(name), DType::f64), t), 1e-5) << name;
    }
    m32->eval(), m64->eval();
    EXPECT_LT(max_abs_diff(cast(m32->forward(cast(x, DType::f32)), DType::f64), m64->forward(x)), 1e-4);
  }
}
