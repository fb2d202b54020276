#pragma once
// Residual convolutional networks (He et al. 2016, "Deep residual learning for image
// recognition", section 4.2, and "Identity mappings in deep residual networks" for the
// pre-activation block), built by the model spec resnet:... (nn/spec.h). Parameter names are
// PyTorch's (torchvision's BasicBlock): conv1.weight, bn1.*, layer1.0.conv1.weight, ...,
// layer2.0.downsample.0.weight, fc.weight.
#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "chainrule/nn/layers.h"

namespace chainrule::nn {

// torch.nn.Unflatten(dim, sizes): axis `dim` of the input becomes the axes `sizes` (their product
// must equal its length), e.g. [N, 784] -> [N, 1, 28, 28] for a flattened image data set. Unlike
// PyTorch's, an input that already has the unflattened axes passes unchanged, so that a ResNet
// takes the data set's rows [N, 784] and images [N, 1, 28, 28] alike.
class Unflatten : public Module {
 public:
  Unflatten(std::int64_t dim, Shape sizes) : dim(dim), sizes(std::move(sizes)) {}
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t dim;
  Shape sizes;
};

// Global average pooling: the mean over the spatial axes, [N, C, H, W] -> [N, C] (PyTorch's
// AdaptiveAvgPool2d(1) followed by flatten(1)); [N, H, W, C] -> [N, C] when channels_last.
class GlobalAvgPool2d : public Module {
 public:
  explicit GlobalAvgPool2d(bool channels_last = false) : channels_last(channels_last) {}
  Tensor forward(const Tensor& x) override;
  std::string repr() const override { return channels_last ? "GlobalAvgPool2d(channels_last)" : "GlobalAvgPool2d()"; }
  bool channels_last;
};

// [N, C, H, W] -> [N, H, W, C] (or [C, H, W] -> [H, W, C]): where a network switches to the
// channels-last layout its layers then take (Conv2dLayerOptions::channels_last).
class ToChannelsLast : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string repr() const override { return "ToChannelsLast()"; }
};

// A basic block of two 3x3 convolutions (no bias) with batch normalisation:
//   post-activation (original):  relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
//   pre-activation:              conv2(relu(bn2(conv1(h)))) + shortcut, h = relu(bn1(x)),
//                                the shortcut being x, or the projection of h.
// When the shape changes (stride 2 or other channels), the shortcut is a projection, He et al.'s
// option B as torchvision has it: "downsample.0", a strided 1x1 convolution, then (post-activation
// only) "downsample.1", a BatchNorm2d.
class BasicBlock : public Module {
 public:
  // channels_last: input and output [N, H, W, C] (every layer of the block in that layout).
  BasicBlock(std::int64_t in_channels, std::int64_t out_channels, std::int64_t stride, bool preact, DType dtype = get_default_dtype(),
             bool channels_last = false);
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t in_channels, out_channels, stride;
  bool preact;
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm2d> bn1, bn2;
  std::shared_ptr<Sequential> downsample;  // null for the identity shortcut
};

}  // namespace chainrule::nn
