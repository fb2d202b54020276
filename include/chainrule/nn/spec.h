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
  enum class Kind { MLP, ResMLP, ResNet };
  Kind kind = Kind::MLP;
  std::vector<std::int64_t> sizes;  // mlp: every layer width, input first, output last
  std::string activation = "relu";  // mlp: the activation between layers
  std::int64_t in = 0, width = 0, blocks = 0, out = 0;  // resmlp
  BlockLayout layout = BlockLayout::LRL;
  BlockNorm norm = BlockNorm::None;
  double dropout = 0;
  std::array<std::int64_t, 3> image{};  // resnet: channels, height, width (in = their product)
  std::vector<std::pair<std::int64_t, std::int64_t>> stages;  // resnet: (width, blocks) per stage
  bool preact = false;                  // resnet: pre-activation blocks

  // Throws ValueError naming the spec and what is wrong.
  static ModelSpec parse(std::string_view spec);
  std::string str() const;  // the canonical spelling (parse(s.str()) == s)
  std::int64_t input_dim() const { return kind == Kind::MLP ? sizes.front() : in; }
  std::int64_t output_dim() const { return kind == Kind::MLP ? sizes.back() : out; }
};

// A freshly built model (parameters zero; initialise with init_model).
std::shared_ptr<Sequential> build_model(const ModelSpec& spec, DType dtype = get_default_dtype());
inline std::shared_ptr<Sequential> build_model(std::string_view spec, DType dtype = get_default_dtype()) {
  return build_model(ModelSpec::parse(spec), dtype);
}

}  // namespace chainrule::nn
