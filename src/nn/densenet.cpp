#include "chainrule/nn/densenet.h"

#include <fmt/format.h>

#include <array>

#include "chainrule/autodiff/anomaly.h"
#include "chainrule/ops/ops.h"

namespace chainrule::nn {

namespace {
std::shared_ptr<Conv2d> conv(std::int64_t in, std::int64_t out, std::int64_t k, DType dtype, bool channels_last) {
  return std::make_shared<Conv2d>(in, out, std::array<std::int64_t, 2>{k, k},
                                  Conv2dLayerOptions{.padding = {k / 2, k / 2}, .bias = false, .dtype = dtype, .channels_last = channels_last});
}
std::shared_ptr<BatchNorm2d> norm(std::int64_t c, DType dtype, bool channels_last) {
  auto m = std::make_shared<BatchNorm2d>(c, 1e-5, 0.1, true, dtype);
  m->channels_last = channels_last;
  return m;
}

Tensor run(const char* name, Module& m, const Tensor& t) {
  NameScope scope(name);  // anomaly reports name the module path
  return m.forward(t);
}
}  // namespace

DenseLayer::DenseLayer(std::int64_t in, std::int64_t k, bool b, std::int64_t bn_size, DType dtype, bool cl)
    : in_channels(in), growth(k), bottleneck(b) {
  if (in <= 0 || k <= 0 || bn_size <= 0)
    throw ValueError(fmt::format("DenseLayer: channels, growth rate and bn_size must be positive, got in={} growth={} bn_size={}", in, k,
                                 bn_size));
  // Registration order is torchvision's _DenseLayer's.
  norm1 = register_module("norm1", norm(in, dtype, cl));
  conv1 = register_module("conv1", b ? conv(in, bn_size * k, 1, dtype, cl) : conv(in, k, 3, dtype, cl));
  if (b) {
    norm2 = register_module("norm2", norm(bn_size * k, dtype, cl));
    conv2 = register_module("conv2", conv(bn_size * k, k, 3, dtype, cl));
  }
}

Tensor DenseLayer::forward(const Tensor& x) {
  Tensor h = run("conv1", *conv1, relu(run("norm1", *norm1, x)));
  return bottleneck ? run("conv2", *conv2, relu(run("norm2", *norm2, h))) : h;
}

std::string DenseLayer::repr() const {
  return fmt::format("DenseLayer({}, growth={}{})", in_channels, growth, bottleneck ? ", bottleneck" : "");
}

DenseBlock::DenseBlock(std::int64_t in, std::int64_t n, std::int64_t k, bool b, DType dtype, bool cl)
    : in_channels(in), growth(k), channels_last(cl) {
  if (n <= 0) throw ValueError(fmt::format("DenseBlock: the number of layers must be positive, got {}", n));
  for (std::int64_t l = 0; l < n; ++l)
    layers.push_back(register_module(fmt::format("denselayer{}", l + 1), std::make_shared<DenseLayer>(in + l * k, k, b, 4, dtype, cl)));
}

std::int64_t DenseBlock::out_channels() const { return in_channels + static_cast<std::int64_t>(layers.size()) * growth; }

Tensor DenseBlock::forward(const Tensor& x) {
  // Channels are axis -3 of [N, C, H, W] and [C, H, W] alike, axis -1 channels-last.
  const std::int64_t axis = channels_last ? -1 : -3;
  if (x.dim() < 3 || x.dim() > 4 || x.shape()[static_cast<std::size_t>(x.dim() + axis)] != in_channels)
    throw ShapeError(fmt::format("{}: input of shape {} needs {}", repr(), x.shape().str(),
                                 channels_last ? fmt::format("[N, H, W, {0}] or [H, W, {0}]", in_channels)
                                               : fmt::format("[N, {0}, H, W] or [{0}, H, W]", in_channels)));
  std::vector<Tensor> features{x};
  for (std::size_t l = 0; l < layers.size(); ++l) {
    NameScope scope(fmt::format("denselayer{}", l + 1));
    features.push_back(layers[l]->forward(features.size() == 1 ? x : concat(features, axis)));
  }
  return concat(features, axis);
}

std::string DenseBlock::repr() const {
  return fmt::format("DenseBlock({}, layers={}, growth={}{})", in_channels, layers.size(), growth, channels_last ? ", channels_last" : "");
}

std::shared_ptr<Sequential> make_transition(std::int64_t in, std::int64_t out, DType dtype, bool cl) {
  auto t = std::make_shared<Sequential>();
  t->push_back("norm", norm(in, dtype, cl));
  t->push_back("relu", std::make_shared<ReLU>());
  t->push_back("conv", conv(in, out, 1, dtype, cl));
  auto pool = std::make_shared<AvgPool2d>(std::array<std::int64_t, 2>{2, 2});
  pool->channels_last = cl;
  t->push_back("pool", pool);
  return t;
}

}  // namespace chainrule::nn
