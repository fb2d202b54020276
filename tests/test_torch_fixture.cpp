// PyTorch interchange, against a fixture made once with PyTorch 1.13 (Debian python3-torch) by
// tools/make_torch_fixture.py: tests/fixtures/torch_mlp/{mlp,resmlp}.safetensors hold the float64
// state_dict of torch's nn.Sequential for mlp:6-5-4-3 and resmlp:6-5x2-3 (built as
// tools/torch_grad_check.py builds it, __metadata__ {"chainrule.model": SPEC}), and
// {mlp,resmlp}_io.safetensors hold inputs "x" [4, 6] and torch's logits "logits" [4, 3].
// densenet.safetensors: torchvision's DenseNet layers (bottleneck, compression 0.5, a 9-pixel
// height pooled down), CIFAR stem. unet.safetensors: the torch.hub U-Net layout (depth 2, two
// input and two output channels), whose _io "logits" are images [4, 2, 8, 4].
// {resnet,resnet_pre}.safetensors: torch ResNets (torchvision's BasicBlock layout, post- and
// pre-activation, projection and identity shortcuts, BatchNorm statistics set away from their
// defaults, evaluation mode), with their _io files of flattened images "x" [4, C*H*W].
//
// Forward: chainrule's checkpoint loader reads torch's file and reproduces torch's logits to 1e-12
// relative in float64.
// Reverse: a model chainrule saves (save_model) has exactly the tensor names and shapes of torch's
// state_dict (the fixture file). The Python side was verified once, by hand, with
//   /usr/bin/python3 tools/make_torch_fixture.py --check-chainrule FILE SPEC
// which loads a chainrule-written file into torch's nn.Sequential with load_state_dict(strict=True).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"

using namespace chainrule;
using namespace chainrule::nn;

namespace {

const std::filesystem::path kFixtures = std::filesystem::path(CHAINRULE_SOURCE_DIR) / "tests" / "fixtures" / "torch_mlp";

struct Case {
  const char* name;
  const char* spec;
};
const Case kCases[] = {{"mlp", "mlp:6-5-4-3"},
                       {"resmlp", "resmlp:6-5x2-3"},
                       {"resnet", "resnet:1x8x8-4x2-6x1-3"},
                       {"resnet_pre", "resnet:2x7x6-4x1-8x2-3:pre"},
                       {"densenet", "densenet:1x9x8-g3-b2x2-c0.5-3"}};

std::map<std::string, std::vector<std::int64_t>> names_and_shapes(const TensorFile& f) {
  std::map<std::string, std::vector<std::int64_t>> out;
  for (auto& [n, t] : f.tensors) out[n] = t.shape().vec();
  return out;
}

}  // namespace

TEST(TorchFixture, ChainruleLoadsTorchWeightsAndMatchesTorchLogits) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    LoadedModel m = load_model((kFixtures / (std::string(c.name) + ".safetensors")).string(), std::nullopt, DType::f64);
    EXPECT_EQ(m.spec.str(), c.spec);
    m.model->eval();
    TensorFile io = load_tensors((kFixtures / (std::string(c.name) + "_io.safetensors")).string());
    const Tensor& x = io.tensors.at("x");
    const Tensor& want = io.tensors.at("logits");
    ASSERT_EQ(x.dtype(), DType::f64);
    ASSERT_EQ(x.shape()[0], 4);
    ASSERT_EQ(want.shape().vec(), (std::vector<std::int64_t>{4, 3}));
    Tensor got = m.model->forward(x);
    ASSERT_EQ(got.shape().vec(), want.shape().vec());
    ASSERT_EQ(got.dtype(), DType::f64);
    const double scale = max(abs(want)).item();
    ASSERT_GT(scale, 0.1);  // the fixture's logits are not degenerate
    const double rel = max_abs_diff(got, want) / scale;
    ::testing::Test::RecordProperty(std::string("relative_difference_") + c.name, [&] { char b[32]; std::snprintf(b, sizeof b, "%.3e", rel); return std::string(b); }());
    EXPECT_LE(rel, 1e-12) << "max |chainrule - torch| / max |torch| = " << rel;
  }
}

TEST(TorchFixture, ChainruleSavesTorchStateDictNamesAndShapes) {
  auto dir = std::filesystem::temp_directory_path() / "chainrule_test_torch_fixture";
  std::filesystem::create_directories(dir);
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    auto model = build_model(c.spec, DType::f64);
    Generator g(7);
    init_model(*model, g);
    const std::string path = (dir / (std::string(c.name) + ".safetensors")).string();
    save_model(path, *model, c.spec, 1);
    TensorFile mine = load_tensors(path);
    TensorFile torch = load_tensors((kFixtures / (std::string(c.name) + ".safetensors")).string());
    EXPECT_EQ(names_and_shapes(mine), names_and_shapes(torch));
    EXPECT_EQ(mine.metadata.at(kModelKey), torch.metadata.at(kModelKey));
    for (auto& [n, t] : mine.tensors)  // BatchNorm's step counter is an integer, as in torch
      EXPECT_EQ(t.dtype(), n.ends_with("num_batches_tracked") ? DType::i64 : DType::f64) << n;
  }
  // The names spelled out, as torch's nn.Sequential(...).state_dict() lists them.
  TensorFile res = load_tensors((dir / "resmlp.safetensors").string());
  std::vector<std::string> names;
  for (auto& [n, t] : res.tensors) names.push_back(n);
  std::vector<std::string> want = {"0.weight", "0.bias", "2.l1.weight", "2.l1.bias", "2.l2.weight", "2.l2.bias",
                                   "3.l1.weight", "3.l1.bias", "3.l2.weight", "3.l2.bias", "4.weight", "4.bias"};
  std::sort(want.begin(), want.end());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, want);
  std::filesystem::remove_all(dir);
}

TEST(TorchFixture, UNetReproducesTorchsImagesAndSavesItsNames) {
  const std::string spec = "unet:2x8x4-c3-d2-2";
  LoadedModel m = load_model((kFixtures / "unet.safetensors").string(), std::nullopt, DType::f64);
  EXPECT_EQ(m.spec.str(), spec);
  m.model->eval();
  TensorFile io = load_tensors((kFixtures / "unet_io.safetensors").string());
  const Tensor& want = io.tensors.at("logits");
  ASSERT_EQ(want.shape().vec(), (std::vector<std::int64_t>{4, 2, 8, 4}));
  Tensor got = m.model->forward(io.tensors.at("x"));
  ASSERT_EQ(got.shape().vec(), want.shape().vec());
  const double scale = max(abs(want)).item();
  ASSERT_GT(scale, 0.1);
  EXPECT_LE(max_abs_diff(got, want) / scale, 1e-12);
  auto dir = std::filesystem::temp_directory_path() / "chainrule_test_torch_fixture_unet";
  std::filesystem::create_directories(dir);
  auto model = build_model(spec, DType::f64);
  const std::string path = (dir / "unet.safetensors").string();
  save_model(path, *model, spec, 1);
  EXPECT_EQ(names_and_shapes(load_tensors(path)), names_and_shapes(load_tensors((kFixtures / "unet.safetensors").string())));
  std::filesystem::remove_all(dir);
}
