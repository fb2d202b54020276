#include "chainrule/nn/resnet.h"

#include <fmt/format.h>

#include "chainrule/autodiff/anomaly.h"
#include "chainrule/ops/ops.h"

namespace chainrule::nn {

Tensor Unflatten::forward(const Tensor& x) {
  const std::int64_t r = x.dim(), d = dim < 0 ? dim + r : dim;
  const auto k = static_cast<std::int64_t>(sizes.size());
  if (dim >= 0 && r >= dim + k) {  // already unflattened?
    bool same = true;
    for (std::int64_t i = 0; i < k; ++i) same = same && x.shape()[static_cast<std::size_t>(dim + i)] == sizes[static_cast<std::size_t>(i)];
    if (same) return x;
  }
  std::int64_t n = 1;
  for (auto s : sizes) n *= s;
  if (d < 0 || d >= r || x.shape()[static_cast<std::size_t>(d)] != n)
    throw ShapeError(fmt::format("{}: input of shape {} has no axis {} of length {}", repr(), x.shape().str(), dim, n));
  Shape out;
  for (std::int64_t i = 0; i < r; ++i) {
    if (i == d) {
      for (auto s : sizes) out.push_back(s);
    } else {
      out.push_back(x.shape()[static_cast<std::size_t>(i)]);
    }
  }
  return reshape(x, out);
}

std::string Unflatten::repr() const { return fmt::format("Unflatten(dim={}, unflattened_size={})", dim, sizes.str()); }

Tensor GlobalAvgPool2d::forward(const Tensor& x) {
  if (x.dim() < 3)
    throw ShapeError(fmt::format("{}: input of shape {} needs {}", repr(), x.shape().str(),
                                 channels_last ? "[N, H, W, C] or [H, W, C]" : "[N, C, H, W] or [C, H, W]"));
  return channels_last ? mean(x, {-3, -2}) : mean(x, {-2, -1});
}

Tensor ToChannelsLast::forward(const Tensor& x) {
  if (x.dim() == 3) return permute(x, {1, 2, 0});
  if (x.dim() != 4) throw ShapeError(fmt::format("ToChannelsLast: input of shape {} needs [N, C, H, W] or [C, H, W]", x.shape().str()));
  return permute(x, {0, 2, 3, 1});
}

namespace {
std::shared_ptr<Conv2d> conv(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride, DType dtype, bool channels_last) {
  return std::make_shared<Conv2d>(
      in, out, std::array<std::int64_t, 2>{k, k},
      Conv2dLayerOptions{.stride = {stride, stride}, .padding = {k / 2, k / 2}, .bias = false, .dtype = dtype, .channels_last = channels_last});
}
std::shared_ptr<BatchNorm2d> bn(std::int64_t channels, DType dtype, bool channels_last) {
  auto m = std::make_shared<BatchNorm2d>(channels, 1e-5, 0.1, true, dtype);
  m->channels_last = channels_last;
  return m;
}
}  // namespace

BasicBlock::BasicBlock(std::int64_t in, std::int64_t out, std::int64_t s, bool pre, DType dtype, bool cl)
    : in_channels(in), out_channels(out), stride(s), preact(pre) {
  if (in <= 0 || out <= 0 || s <= 0)
    throw ValueError(fmt::format("BasicBlock: channels and stride must be positive, got in={} out={} stride={}", in, out, s));
  // Registration order is the order of the PyTorch module (torchvision's BasicBlock).
  conv1 = register_module("conv1", conv(in, out, 3, s, dtype, cl));
  bn1 = register_module("bn1", bn(pre ? in : out, dtype, cl));
  conv2 = register_module("conv2", conv(out, out, 3, 1, dtype, cl));
  bn2 = register_module("bn2", bn(out, dtype, cl));
  if (s != 1 || in != out) {
    downsample = std::make_shared<Sequential>();
    downsample->push_back(conv(in, out, 1, s, dtype, cl));
    if (!pre) downsample->push_back(bn(out, dtype, cl));
    register_module("downsample", downsample);
  }
}

Tensor BasicBlock::forward(const Tensor& x) {
  auto run = [](const char* name, Module& m, const Tensor& t) {
    NameScope scope(name);  // anomaly reports name the module path, e.g. "layer2.0.conv1"
    return m.forward(t);
  };
  if (preact) {
    Tensor h = relu(run("bn1", *bn1, x));
    Tensor shortcut = downsample ? run("downsample", *downsample, h) : x;
    Tensor b = run("conv2", *conv2, relu(run("bn2", *bn2, run("conv1", *conv1, h))));
    return add(b, shortcut);
  }
  Tensor b = run("bn2", *bn2, run("conv2", *conv2, relu(run("bn1", *bn1, run("conv1", *conv1, x)))));
  Tensor shortcut = downsample ? run("downsample", *downsample, x) : x;
  return relu(add(b, shortcut));
}

std::string BasicBlock::repr() const {
  return fmt::format("BasicBlock({}, {}, stride={}, {})", in_channels, out_channels, stride, preact ? "pre-activation" : "post-activation");
}

}  // namespace chainrule::nn
