// The densenet and unet model specs: parsing and refusals, parameter counts by hand, shapes,
// float64 gradients against finite differences, and the denoising task's data.
#include <gtest/gtest.h>

#include <cmath>

#include "chainrule/autodiff/check.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/densenet.h"
#include "chainrule/nn/nn.h"
#include "gradcheck_module.h"
#include "chainrule/nn/train.h"

using namespace chainrule;
using namespace chainrule::nn;
using chainrule::test_util::gradcheck_module;

TEST(DenseNetSpec, ParsesPrintsAndRefuses) {
  auto s = ModelSpec::parse("densenet:1x28x28-g12-b6x6x6-c0.5-10");
  EXPECT_EQ(s.kind, ModelSpec::Kind::DenseNet);
  EXPECT_EQ(s.input_dim(), 784);
  EXPECT_EQ(s.output_dim(), 10);
  EXPECT_EQ(s.str(), "densenet:1x28x28-g12-b6x6x6-c0.5-10");
  EXPECT_EQ(ModelSpec::parse("densenet:1x28x28-g12-b6x6x6-10").str(), "densenet:1x28x28-g12-b6x6x6-c0.5-10");  // θ 0.5 by default
  EXPECT_EQ(ModelSpec::parse("densenet:3x8x8-g4-b2-c1-5:basic").str(), "densenet:3x8x8-g4-b2-c1-5:basic");
  EXPECT_EQ(ModelSpec::parse("densenet:3x8x8-g4-b2-c1-5:bottleneck").str(), "densenet:3x8x8-g4-b2-c1-5");
  for (const char* bad : {"densenet:1x28x28-12-b6x6x6-10", "densenet:1x28x28-g12-6x6-10", "densenet:1x28x28-g12-b6x0-10",
                          "densenet:1x28x28-g12-b6-c0-10", "densenet:1x28x28-g12-b6-c1.5-10", "densenet:1x28x28-g12-b6-10:wide",
                          "densenet:28x28-g12-b6-10", "densenet:1x28x28-g12-b6"})
    EXPECT_THROW(ModelSpec::parse(bad), ValueError) << bad;
  // Four transitions halve 8 pixels to nothing.
  EXPECT_THROW(ModelSpec::parse("densenet:1x8x8-g2-b1x1x1x1x1-4"), ShapeError);
}

TEST(UNetSpec, ParsesPrintsAndRefusesSizesThatDoNotHalve) {
  auto s = ModelSpec::parse("unet:1x28x28-c16-d2-1");
  EXPECT_EQ(s.kind, ModelSpec::Kind::UNet);
  EXPECT_EQ(s.input_dim(), 784);
  EXPECT_EQ(s.output_dim(), 784);  // an image of one channel
  EXPECT_EQ(s.str(), "unet:1x28x28-c16-d2-1");
  EXPECT_EQ(ModelSpec::parse("unet:3x8x4-c2-d2-2").output_dim(), 64);
  for (const char* bad : {"unet:1x28x28-16-d2-1", "unet:1x28x28-c16-2-1", "unet:1x28x28-c16-d0-1", "unet:1x28x28-c16-d2",
                          "unet:1x28x28-c16-d2-1:x"})
    EXPECT_THROW(ModelSpec::parse(bad), ValueError) << bad;
  try {
    ModelSpec::parse("unet:1x28x28-c16-d3-1");  // 28 -> 14 -> 7 -> ?
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("unet:1x28x28-c16-d3-1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("28x28 -> 14x14 -> 7x7"), std::string::npos) << e.what();
  }
}

TEST(DenseNet, ParameterCountByHandTorchvisionNamesAndShapes) {
  const std::int64_t k = 12;
  auto m = build_model("densenet:1x28x28-g12-b6x6x6-c0.5-10");
  // By hand: conv0 3x3 1 -> 2k; each bottleneck layer on c channels: BN(c), 1x1 c -> 4k, BN(4k),
  // 3x3 4k -> k; transitions BN(c) and 1x1 c -> c/2; norm5; classifier with bias.
  auto layer = [&](std::int64_t c) { return 2 * c + c * 4 * k + 2 * 4 * k + 4 * k * k * 9; };
  std::int64_t c = 2 * k, expected = 9 * c;
  for (int b = 0; b < 3; ++b) {
    for (int l = 0; l < 6; ++l) expected += layer(c), c += k;
    if (b < 2) expected += 2 * c + c * (c / 2), c /= 2;
  }
  expected += 2 * c + c * 10 + 10;
  EXPECT_EQ(c, 132);
  EXPECT_EQ(m->num_parameters(), expected);
  auto sd = m->state_dict();
  EXPECT_EQ(sd.at("features.conv0.weight").shape(), Shape({24, 1, 3, 3}));
  EXPECT_EQ(sd.at("features.denseblock1.denselayer1.norm1.weight").shape(), Shape({24}));
  EXPECT_EQ(sd.at("features.denseblock1.denselayer1.conv1.weight").shape(), Shape({48, 24, 1, 1}));
  EXPECT_EQ(sd.at("features.denseblock1.denselayer6.conv2.weight").shape(), Shape({12, 48, 3, 3}));
  EXPECT_EQ(sd.at("features.transition1.conv.weight").shape(), Shape({48, 96, 1, 1}));  // 24 + 6·12 = 96 -> 48
  EXPECT_EQ(sd.at("features.transition2.norm.running_var").shape(), Shape({120}));     // 48 + 72
  EXPECT_EQ(sd.at("features.norm5.weight").shape(), Shape({132}));                     // 60 + 72
  EXPECT_EQ(sd.at("classifier.weight").shape(), Shape({10, 132}));
  EXPECT_TRUE(sd.count("features.norm5.num_batches_tracked"));
  EXPECT_FALSE(sd.count("features.conv0.bias"));
  EXPECT_FALSE(sd.count("features.transition3.conv.weight"));
  // :basic layers are one BN and one 3x3 conv each.
  auto b = build_model("densenet:1x8x8-g4-b2-c1-3:basic");
  EXPECT_EQ(b->num_parameters(), 9 * 8 + (2 * 8 + 8 * 4 * 9) + (2 * 12 + 12 * 4 * 9) + 2 * 16 + 16 * 3 + 3);
}

TEST(DenseNet, ForwardShapesConcatOrderAndGradcheck) {
  auto m = build_model("densenet:1x28x28-g4-b2x2x2-c0.5-10");
  Generator g(1);
  init_model(*m, g);
  Tensor x = randn({3, 784}, g);
  EXPECT_EQ(m->forward(x).shape(), Shape({3, 10}));
  cross_entropy(m->forward(x), randint({3}, 10, g)).backward();
  for (auto& [n, p] : m->named_parameters()) ASSERT_TRUE(p.grad().defined()) << n;
  // A block returns its input first, then each layer's new channels.
  DenseBlock block(3, 2, 2, true, DType::f64);
  init_model(block, g);
  Tensor h = randn({2, 3, 4, 4}, g, DType::f64);
  Tensor out = block.forward(h);
  EXPECT_EQ(out.shape(), Shape({2, 7, 4, 4}));
  EXPECT_EQ(max_abs_diff(slice(out, 1, 0, 3), h), 0.0);
  EXPECT_LT(max_abs_diff(slice(out, 1, 3, 5), block.layers[0]->forward(h)), 1e-12);
  EXPECT_LT(max_abs_diff(slice(out, 1, 5, 7), block.layers[1]->forward(slice(out, 1, 0, 5))), 1e-12);
  EXPECT_THROW(block.forward(zeros({2, 4, 4, 4}, DType::f64)), ShapeError);
  // Gradients of a tiny float64 DenseNet (training-mode BN) against finite differences.
  auto tiny = build_model("densenet:1x4x4-g2-b1x1-c0.5-2", DType::f64);
  init_model(*tiny, g);
  // Batch norm over 2 x 4 x 4 pixels amplifies rounding: like the float32 comparison, the
  // half-precision one (per-primitive tolerances) is for single ops, not this whole network.
  auto r = gradcheck_module(*tiny, randn({2, 16}, g, DType::f64), {.second_order = false, .float32 = false, .half = false});
  EXPECT_TRUE(r.pass) << r.failure;
}

// float32 DenseNets run channels-last inside: the same weights give the float64 (channels-first)
// network's logits and gradients to float32 rounding, in training and evaluation mode, on image
// sizes whose transitions pool odd sizes (7 -> 3) too.
TEST(DenseNet, ChannelsLastFloat32MatchesChannelsFirstFloat64) {
  for (const char* spec : {"densenet:1x28x28-g4-b2x2x2-c0.5-10", "densenet:2x7x9-g3-b1x2-c0.5-4:basic"}) {
    auto m32 = build_model(spec, DType::f32), m64 = build_model(spec, DType::f64);
    Generator g(7);
    init_model(*m64, g);
    auto sd = m64->state_dict();
    for (auto& [name, t] : sd) t = t.to(t.dtype() == DType::f64 ? DType::f32 : t.dtype());
    m32->load_state_dict(sd);
    const auto in = ModelSpec::parse(spec).input_dim();
    Tensor x = randn({5, in}, g, DType::f64), y = randint({5}, ModelSpec::parse(spec).output_dim(), g);
    for (bool train : {true, false}) {
      m32->train(train), m64->train(train);
      for (auto* m : {m32.get(), m64.get()})
        for (auto& [n, p] : m->named_parameters()) p.zero_grad();
      Tensor l32 = cross_entropy(m32->forward(x.to(DType::f32)), y), l64 = cross_entropy(m64->forward(x), y);
      l32.backward(), l64.backward();
      EXPECT_NEAR(l32.to(DType::f64).item<double>(), l64.item<double>(), 1e-4) << spec << " train " << train;
      if (!train) continue;
      const auto p64 = m64->named_parameters(), p32 = m32->named_parameters();
      ASSERT_EQ(p32.size(), p64.size());
      for (std::size_t i = 0; i < p32.size(); ++i) {
        const auto& [n, p] = p32[i];
        ASSERT_EQ(n, p64[i].first);
        const Tensor g64 = p64[i].second.grad();
        EXPECT_LT(max_abs_diff(p.grad().to(DType::f64), g64), 1e-4 * (1 + max(abs(g64)).item<double>())) << spec << " " << n;
      }
    }
  }
  // The channels-last pooling itself, against the channels-first kernel: tiles, odd sizes rounded
  // down, and the general case (overlapping windows, padding) through the kernel.
  Generator g(8);
  Tensor x = randn({2, 3, 7, 6}, g, DType::f64);
  for (auto [k, s, p] : std::vector<std::array<std::int64_t, 3>>{{2, 2, 0}, {3, 3, 0}, {3, 2, 1}, {2, 1, 0}}) {
    AvgPool2d first({k, k}, {s, s}, {p, p}), last({k, k}, {s, s}, {p, p});
    last.channels_last = true;
    const Tensor want = first.forward(x), got = permute(last.forward(permute(x, {0, 2, 3, 1})), {0, 3, 1, 2});
    EXPECT_EQ(got.shape(), want.shape()) << k << s << p;
    EXPECT_LT(max_abs_diff(got, want), 1e-12) << k << s << p;
  }
  AvgPool2d last({2, 2});
  last.channels_last = true;
  EXPECT_THROW(last.forward(zeros({2, 3})), ShapeError);
}

TEST(UNet, ParameterCountByHandShapesAndGradcheck) {
  auto m = build_model("unet:1x28x28-c16-d2-1");
  auto block = [](std::int64_t in, std::int64_t c) { return in * c * 9 + 2 * c + c * c * 9 + 2 * c; };
  auto up = [](std::int64_t in, std::int64_t out) { return in * out * 4 + out; };
  const std::int64_t expected = block(1, 16) + block(16, 32) + block(32, 64) + up(64, 32) + block(64, 32) + up(32, 16) +
                                block(32, 16) + 16 * 1 + 1;
  EXPECT_EQ(m->num_parameters(), expected);
  auto sd = m->state_dict();
  for (const char* n : {"encoder1.enc1conv1.weight", "encoder1.enc1norm2.running_mean", "encoder2.enc2conv2.weight",
                        "bottleneck.bottleneckconv1.weight", "upconv2.weight", "upconv2.bias", "decoder2.dec2conv1.weight",
                        "decoder1.dec1norm2.bias", "conv.weight", "conv.bias"})
    EXPECT_TRUE(sd.count(n)) << n;
  EXPECT_EQ(sd.at("bottleneck.bottleneckconv1.weight").shape(), Shape({64, 32, 3, 3}));
  EXPECT_EQ(sd.at("upconv2.weight").shape(), Shape({64, 32, 2, 2}));
  EXPECT_EQ(sd.at("decoder1.dec1conv1.weight").shape(), Shape({16, 32, 3, 3}));  // upsampled 16 + skip 16
  Generator g(2);
  init_model(*m, g);
  Tensor x = randn({2, 784}, g);
  Tensor y = m->forward(x);
  EXPECT_EQ(y.shape(), Shape({2, 1, 28, 28}));
  EXPECT_EQ(max_abs_diff(m->forward(reshape(x, {2, 1, 28, 28})), y), 0.0);
  EXPECT_THROW(m->forward(zeros({2, 783})), ShapeError);
  m->set_checkpoint_segments(2);
  EXPECT_THROW(m->forward(x), ValueError);
  auto tiny = build_model("unet:1x4x4-c2-d1-1", DType::f64);
  init_model(*tiny, g);
  // Batch norm over 2 x 4 x 4 pixels amplifies rounding: like the float32 comparison, the
  // half-precision one (per-primitive tolerances) is for single ops, not this whole network.
  auto r = gradcheck_module(*tiny, randn({2, 16}, g, DType::f64), {.second_order = false, .float32 = false, .half = false});
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(Denoising, NoisyInputsHaveTheClosedFormPsnrAndFixedNoise) {
  Generator g(3);
  data::Dataset d;
  d.name = "images";
  d.x = rand({400, 64}, g, DType::f64);
  d.y = randint({400}, 3, g);
  d.num_classes = 3;
  d.height = d.width = 8;
  data::Splits s = denoising_splits({d, d, d});
  EXPECT_EQ(s.test.num_classes, 0);
  EXPECT_EQ(max_abs_diff(s.test.y, d.x), 0.0);
  // The same noise in every call, another stream per split.
  EXPECT_EQ(max_abs_diff(denoising_splits({d, d, d}).test.x, s.test.x), 0.0);
  EXPECT_GT(max_abs_diff(s.train.x, s.test.x), 0.1);
  // E(noise²) = 0.25 per pixel: 10 log10(1 / 0.25) = 6.02 dB; the identity's output has the input's PSNR.
  Identity id;
  Evaluation e = evaluate(id, s.test);
  // Mean of per-image PSNRs, by a plain loop (Jensen puts it a little above the 6.02 dB of the mean MSE).
  const auto xs = s.test.x.to_vector<double>(), ys = s.test.y.to_vector<double>();
  double want = 0;
  for (std::size_t i = 0; i < 400; ++i) {
    double se = 0;
    for (std::size_t j = 0; j < 64; ++j) se += (xs[i * 64 + j] - ys[i * 64 + j]) * (xs[i * 64 + j] - ys[i * 64 + j]);
    want += 10 * std::log10(64 / se) / 400;
  }
  EXPECT_NEAR(e.input_psnr, want, 1e-9);
  EXPECT_NEAR(e.input_psnr, 10 * std::log10(4.0), 0.2);
  EXPECT_NEAR(e.psnr, e.input_psnr, 1e-12);
  EXPECT_NEAR(e.loss, 0.25, 0.01);
  EXPECT_TRUE(std::isnan(evaluate(id, d).psnr));
  data::Dataset flat = d;
  flat.height = flat.width = 0;
  EXPECT_THROW(denoising_splits({flat, flat, flat}), ValueError);
}

// Test-time flips: the prediction for each image is the mean of the class probabilities of the
// image and of its mirror image, computed here by a plain loop over the pixels.
TEST(Evaluate, FlipsAverageTheProbabilitiesOfTheImageAndItsMirror) {
  Generator g(5);
  data::Dataset d;
  d.name = "images";
  d.x = rand({50, 12}, g, DType::f64);  // 3 x 4 images
  d.y = randint({50}, 3, g);
  d.num_classes = 3;
  d.height = 3, d.width = 4;
  Linear lin(12, 3, LinearOptions{.dtype = DType::f64});
  lin.weight = randn({3, 12}, g, DType::f64);
  const auto xs = d.x.to_vector<double>(), w = lin.weight.to_vector<double>(), b = lin.bias.to_vector<double>();
  const auto ys = d.y.to_vector<std::int64_t>();
  auto probabilities = [&](std::size_t i, bool mirror) {
    std::vector<double> z(3);
    double zmax = -1e300, sum = 0;
    for (std::size_t k = 0; k < 3; ++k) {
      z[k] = b[k];
      for (std::size_t r = 0; r < 3; ++r)
        for (std::size_t c = 0; c < 4; ++c) z[k] += w[k * 12 + r * 4 + c] * xs[i * 12 + r * 4 + (mirror ? 3 - c : c)];
      zmax = std::max(zmax, z[k]);
    }
    for (double& v : z) sum += v = std::exp(v - zmax);
    for (double& v : z) v /= sum;
    return z;
  };
  double loss = 0;
  std::int64_t correct = 0;
  for (std::size_t i = 0; i < 50; ++i) {
    auto p = probabilities(i, false), q = probabilities(i, true);
    std::vector<double> m(3);
    for (std::size_t k = 0; k < 3; ++k) m[k] = (p[k] + q[k]) / 2;
    loss -= std::log(m[static_cast<std::size_t>(ys[i])]) / 50;
    correct += std::max_element(m.begin(), m.end()) - m.begin() == ys[i];
  }
  const Evaluation plain = evaluate(lin, d, 7), flipped = evaluate(lin, d, 7, /*flips=*/true);
  EXPECT_NEAR(flipped.loss, loss, 1e-12);
  EXPECT_DOUBLE_EQ(flipped.accuracy, static_cast<double>(correct) / 50);
  EXPECT_GT(std::abs(flipped.loss - plain.loss), 1e-6);  // the mirror images do change the prediction
  data::Dataset flat = d;
  flat.height = flat.width = 0;
  EXPECT_THROW(evaluate(lin, flat, 7, true), ValueError);
}
