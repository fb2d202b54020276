#pragma once
// Densely connected convolutional networks (Huang et al. 2017, "Densely connected convolutional
// networks"), built by the model spec densenet:... (nn/spec.h) in the CIFAR layout of the paper's
// section 3 (one 3x3 convolution before the first block, no stem pooling). Parameter names are
// torchvision's densenet: features.conv0.weight, features.denseblock1.denselayer1.norm1.weight,
// ...conv1.weight, ...norm2.*, ...conv2.weight, features.transition1.norm.*, ...conv.weight,
// features.norm5.* (torchvision's name whatever the number of blocks), classifier.weight.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "chainrule/nn/layers.h"

namespace chainrule::nn {

// One layer of a dense block, BN-ReLU-conv ordered (the paper's H_l). With a bottleneck
// (DenseNet-B, torchvision's _DenseLayer): norm1, relu, conv1 (1x1 to bn_size·growth channels),
// norm2, relu, conv2 (3x3, growth channels). Without: norm1, relu, conv1 (3x3, growth channels).
// The input is the concatenation of every earlier feature map of the block; the output is the
// growth new channels alone.
class DenseLayer : public Module {
 public:
  DenseLayer(std::int64_t in_channels, std::int64_t growth, bool bottleneck, std::int64_t bn_size = 4,
             DType dtype = get_default_dtype(), bool channels_last = false);
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t in_channels, growth;
  bool bottleneck;
  std::shared_ptr<BatchNorm2d> norm1, norm2;  // norm2 null without bottleneck
  std::shared_ptr<Conv2d> conv1, conv2;       // conv2 null without bottleneck
};

// A dense block of `layers` DenseLayers (children denselayer1, denselayer2, ...): layer l sees the
// block's input and the outputs of layers 1..l-1 concatenated along the channels, in that order,
// and the block returns all of them concatenated: in_channels + layers·growth channels. Inputs
// [N, C, H, W] or [C, H, W]; [N, H, W, C] or [H, W, C] when channels_last (its layers' too).
class DenseBlock : public Module {
 public:
  DenseBlock(std::int64_t in_channels, std::int64_t layers, std::int64_t growth, bool bottleneck, DType dtype = get_default_dtype(),
             bool channels_last = false);
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t out_channels() const;
  std::int64_t in_channels, growth;
  bool channels_last;
  std::vector<std::shared_ptr<DenseLayer>> layers;
};

// A transition between two blocks (torchvision's _Transition): norm, relu, conv (1x1, no bias)
// to out_channels, pool (2x2 average pooling, stride 2; odd sizes round down as in PyTorch).
std::shared_ptr<Sequential> make_transition(std::int64_t in_channels, std::int64_t out_channels, DType dtype = get_default_dtype(),
                                            bool channels_last = false);

}  // namespace chainrule::nn
