#pragma once
// Model specs, one syntax everywhere (train --model, eval, grad, checkpoint metadata):
//   mlp:784-256-256-10            Sequential(Linear(784,256), ReLU, Linear(256,256), ReLU, Linear(256,10))
//                                 parameters 0.weight, 0.bias, 2.weight, ..., 4.bias
//   mlp:784-256-10:gelu           the same with another activation between the layers: relu (the
//                                 default), tanh, sigmoid, softplus, gelu, gelu_tanh, silu, elu,
//                                 leaky_relu, identity (nn::make_activation; PyTorch's defaults)
//   resmlp:784-256x8-10[:LAYOUT]  Sequential(Linear(784,256), ReLU, ResidualBlock × 8, Linear(256,10))
//                                 block i at index 2+i ("2.l1.weight"), output Linear at 2+B
// LAYOUT is lrl (default), pre or lrlr, optionally followed by +ln (LayerNorm) or +bn
// (BatchNorm1d) on each branch and +dP (Dropout with probability P after the branch's inner ReLU;
// no parameters, so the names do not change), e.g. resmlp:784-256x4-10:pre+ln or
// resmlp:784-512x2-10:lrl+d0.2.
//   resnet:1x28x28-16x3-32x3-64x3-10[:post|pre]
//                                 He et al.'s CIFAR ResNet (nn/resnet.h) on C×H×W images given
//                                 flattened ([N, C·H·W], as the data sets hold them): a 3x3
//                                 convolution to the first stage's width (16), BN, ReLU, then one
//                                 stage per WIDTHxBLOCKS of basic blocks, stride 2 at the start of
//                                 every stage after the first, global average pooling and a linear
//                                 layer to OUT. Three stages of n blocks make ResNet-(6n+2):
//                                 resnet:1x28x28-16x3-32x3-64x3-10 is ResNet-20. post (default):
//                                 the original blocks; pre: pre-activation blocks, with a final
//                                 BN and ReLU ("bn_final") before the pooling. Names as PyTorch:
//                                 conv1.weight, bn1.*, layer1.0.conv1.weight, ..., fc.weight.
//   densenet:1x28x28-g12-b6x6x6-c0.5-10[:basic]
//                                 Huang et al.'s DenseNet in its CIFAR layout (nn/densenet.h): a
//                                 3x3 convolution to 2·GROWTH channels (gGROWTH), one dense block
//                                 per entry of bN1xN2x... (that many layers each), a transition
//                                 (BN, ReLU, 1x1 convolution to floor(θ·C) channels, 2x2 average
//                                 pooling) between blocks, then BN, ReLU, global average pooling
//                                 and a linear layer to OUT. cθ is the compression θ in (0, 1]
//                                 (optional, default 0.5; c1 keeps the channels). Layers are
//                                 DenseNet-B's bottleneck (BN-ReLU-1x1 conv to 4·GROWTH, BN-ReLU-
//                                 3x3 conv to GROWTH), torchvision's layer; :basic drops the
//                                 bottleneck (BN-ReLU-3x3 conv). Names as torchvision:
//                                 features.conv0.weight, features.denseblock1.denselayer1.norm1.*,
//                                 features.transition1.conv.weight, features.norm5.*, classifier.*.
//   unet:1x28x28-c16-d2-1         Ronneberger et al.'s U-Net (nn/unet.h), padded, with BN: depth D
//                                 levels of two 3x3 conv-BN-ReLU on BASE·2^(i-1) channels (cBASE),
//                                 2x2 max pooling down, 2x2 stride-2 transposed convolutions up,
//                                 skips by concatenation, a 1x1 convolution to OUT channels. The
//                                 output is an image [N, OUT, H, W] (output_dim() = OUT·H·W). H and
//                                 W must be multiples of 2^D, else parse throws ShapeError naming
//                                 the spec (28x28 allows D <= 2: 28 -> 14 -> 7). Names as the
//                                 torch.hub U-Net: encoder1.enc1conv1.weight, upconv1.weight, conv.*.
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chainrule/nn/layers.h"

namespace chainrule::nn {

struct ModelSpec {
  enum class Kind { MLP, ResMLP, ResNet, DenseNet, UNet };
  Kind kind = Kind::MLP;
  std::vector<std::int64_t> sizes;  // mlp: every layer width, input first, output last
  std::string activation = "relu";  // mlp: the activation between layers
  std::int64_t in = 0, width = 0, blocks = 0, out = 0;  // resmlp
  BlockLayout layout = BlockLayout::LRL;
  BlockNorm norm = BlockNorm::None;
  double dropout = 0;
  std::array<std::int64_t, 3> image{};  // resnet, densenet, unet: channels, height, width (in = their product)
  std::vector<std::pair<std::int64_t, std::int64_t>> stages;  // resnet: (width, blocks) per stage
  bool preact = false;                  // resnet: pre-activation blocks
  std::int64_t growth = 0;              // densenet: growth rate k
  std::vector<std::int64_t> dense_blocks;  // densenet: layers per dense block
  double compression = 0.5;             // densenet: θ of the transitions
  bool bottleneck = true;               // densenet: 1x1 bottleneck layers (DenseNet-B)
  std::int64_t base_channels = 0, depth = 0;  // unet (out = output channels)

  // Throws ValueError naming the spec and what is wrong (ShapeError for an image size a unet or
  // densenet cannot halve often enough).
  static ModelSpec parse(std::string_view spec);
  std::string str() const;  // the canonical spelling (parse(s.str()) == s)
  std::int64_t input_dim() const { return kind == Kind::MLP ? sizes.front() : in; }
  // Outputs per example: the logits, or a unet's OUT·H·W pixels.
  std::int64_t output_dim() const {
    return kind == Kind::MLP ? sizes.back() : kind == Kind::UNet ? out * image[1] * image[2] : out;
  }
};

// A freshly built model (parameters zero; initialise with init_model).
std::shared_ptr<Sequential> build_model(const ModelSpec& spec, DType dtype = get_default_dtype());
inline std::shared_ptr<Sequential> build_model(std::string_view spec, DType dtype = get_default_dtype()) {
  return build_model(ModelSpec::parse(spec), dtype);
}

}  // namespace chainrule::nn
