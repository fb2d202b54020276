#include "chainrule/nn/unet.h"

#include <fmt/format.h>

#include "chainrule/autodiff/anomaly.h"
#include "chainrule/ops/ops.h"

namespace chainrule::nn {

std::shared_ptr<Sequential> make_unet_block(std::int64_t in, std::int64_t c, const std::string& p, DType dtype) {
  auto b = std::make_shared<Sequential>();
  for (int i = 1; i <= 2; ++i) {
    b->push_back(fmt::format("{}conv{}", p, i),
                 std::make_shared<Conv2d>(i == 1 ? in : c, c, std::array<std::int64_t, 2>{3, 3},
                                          Conv2dLayerOptions{.padding = {1, 1}, .bias = false, .dtype = dtype}));
    b->push_back(fmt::format("{}norm{}", p, i), std::make_shared<BatchNorm2d>(c, 1e-5, 0.1, true, dtype));
    b->push_back(fmt::format("{}relu{}", p, i), std::make_shared<ReLU>());
  }
  return b;
}

UNet::UNet(std::array<std::int64_t, 3> img, std::int64_t base, std::int64_t d, std::int64_t out, DType dtype)
    : image(img), base_channels(base), depth(d), out_channels(out) {
  if (img[0] <= 0 || img[1] <= 0 || img[2] <= 0 || base <= 0 || d <= 0 || d > 20 || out <= 0)
    throw ValueError(fmt::format("UNet: image {}x{}x{}, base channels {}, depth {} and output channels {} must be positive (depth <= 20)",
                                 img[0], img[1], img[2], base, d, out));
  const std::int64_t scale = std::int64_t{1} << d;
  if (img[1] % scale != 0 || img[2] % scale != 0)
    throw ShapeError(fmt::format("UNet: a depth of {} halves the image {} times, so its height and width must be multiples of {}; "
                                 "{}x{} is not",
                                 d, d, scale, img[1], img[2]));
  push_back("unflatten", std::make_shared<Unflatten>(1, Shape{img[0], img[1], img[2]}));
  std::int64_t in = img[0];
  for (std::int64_t i = 1; i <= d; ++i) {
    const std::int64_t c = base << (i - 1);
    encoders.push_back(make_unet_block(in, c, fmt::format("enc{}", i), dtype));
    push_back(fmt::format("encoder{}", i), encoders.back());
    push_back(fmt::format("pool{}", i), std::make_shared<MaxPool2d>(std::array<std::int64_t, 2>{2, 2}));
    in = c;
  }
  bottleneck = make_unet_block(in, base << d, "bottleneck", dtype);
  push_back("bottleneck", bottleneck);
  upconvs.resize(static_cast<std::size_t>(d)), decoders.resize(static_cast<std::size_t>(d));
  for (std::int64_t i = d; i >= 1; --i) {
    const std::int64_t c = base << (i - 1);
    const auto k = static_cast<std::size_t>(i - 1);
    upconvs[k] = std::make_shared<ConvTranspose2d>(2 * c, c, std::array<std::int64_t, 2>{2, 2},
                                                   ConvTranspose2dLayerOptions{.stride = {2, 2}, .dtype = dtype});
    push_back(fmt::format("upconv{}", i), upconvs[k]);
    decoders[k] = make_unet_block(2 * c, c, fmt::format("dec{}", i), dtype);
    push_back(fmt::format("decoder{}", i), decoders[k]);
  }
  head = std::make_shared<Conv2d>(base, out, std::array<std::int64_t, 2>{1, 1}, Conv2dLayerOptions{.dtype = dtype});
  push_back("conv", head);
}

Tensor UNet::forward(const Tensor& x) {
  if (checkpoint_segments() > 1)
    throw ValueError(fmt::format("{}: checkpointing by segments needs a chain of layers; a U-Net's skips are not one", repr()));
  auto run = [](const std::string& name, Module& m, const Tensor& t) {
    NameScope scope(name);
    return m.forward(t);
  };
  Tensor h = run("unflatten", *(*this)[0], x);
  if (h.dim() != 4) throw ShapeError(fmt::format("{}: input of shape {} needs [N, {}] or [N, {}, {}, {}]", repr(), x.shape().str(),
                                                  image[0] * image[1] * image[2], image[0], image[1], image[2]));
  std::vector<Tensor> skips;
  for (std::int64_t i = 1; i <= depth; ++i) {
    skips.push_back(run(fmt::format("encoder{}", i), *encoders[static_cast<std::size_t>(i - 1)], h));
    h = max_pool2d(skips.back(), {2, 2});
  }
  h = run("bottleneck", *bottleneck, h);
  for (std::int64_t i = depth; i >= 1; --i) {
    const auto k = static_cast<std::size_t>(i - 1);
    Tensor up = run(fmt::format("upconv{}", i), *upconvs[k], h);
    h = run(fmt::format("decoder{}", i), *decoders[k], concat({up, skips[k]}, 1));
  }
  return run("conv", *head, h);
}

std::string UNet::repr() const {
  return fmt::format("UNet({}x{}x{}, base_channels={}, depth={}, out_channels={})", image[0], image[1], image[2], base_channels, depth,
                     out_channels);
}

}  // namespace chainrule::nn
