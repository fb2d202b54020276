#pragma once
// Layers. Shapes follow PyTorch: inputs are [batch, features] (or [features] for one example),
// Linear stores W as [out, in], so f = β + W h for each example h, computed as x Wᵀ + β on a batch
// without transposing W (the transpose is folded into the GEMM).
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chainrule/nn/module.h"
#include "chainrule/tensor/random.h"

namespace chainrule::nn {

struct LinearOptions {
  bool bias = true;
  DType dtype = get_default_dtype();
};

// f = β + W h. Parameters "weight" [out, in] and "bias" [out]; initialised to zero (apply an
// initialiser from nn/init.h, or use init_model).
class Linear : public Module {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, LinearOptions opts = {});
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t in_features, out_features;
  Tensor weight, bias;
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string repr() const override { return "ReLU()"; }
};

// Children named "0", "1", ... applied in order, or named by the caller (PyTorch's
// Sequential(OrderedDict(...)), so that a network such as a ResNet gets the names "conv1", "bn1",
// "layer1.0.conv1", ... of its PyTorch definition).
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<ModulePtr> layers);
  void push_back(ModulePtr layer);  // named by its index
  void push_back(const std::string& name, ModulePtr layer);
  const std::string& name(std::size_t i) const { return names_[i]; }
  Tensor forward(const Tensor& x) override;
  std::string repr() const override { return "Sequential"; }
  std::size_t size() const { return layers_.size(); }
  const ModulePtr& operator[](std::size_t i) const { return layers_[i]; }
  // With n > 1, forward runs as checkpoint_sequential(*this, n, x): less memory in reverse mode
  // for one more forward pass of the checkpointed layers. 0 or 1: off (the default).
  void set_checkpoint_segments(int n);
  int checkpoint_segments() const { return checkpoint_segments_; }
  // Layers [begin, end) in order, without checkpointing.
  Tensor run_layers(std::size_t begin, std::size_t end, const Tensor& x);

 private:
  std::vector<ModulePtr> layers_;
  std::vector<std::string> names_;
  int checkpoint_segments_ = 0;
};

// module(x) under chainrule::checkpoint (autodiff/checkpoint.h), with the module's parameters as
// explicit inputs: reverse mode keeps x and the parameters, not the activations inside, and runs
// the module again in the backward pass (torch.utils.checkpoint.checkpoint(module, x)). The
// module must outlive the backward pass.
Tensor checkpoint(Module& module, const Tensor& x);
// torch.utils.checkpoint.checkpoint_sequential: splits seq into `segments` runs of consecutive
// layers of nearly equal length (PyTorch puts the whole remainder in the last one) and
// checkpoints each run but the last, whose activations the backward pass needs at once anyway.
Tensor checkpoint_sequential(Sequential& seq, int segments, const Tensor& x);

// h + F(h) for any module F (child "fn").
class Residual : public Module {
 public:
  explicit Residual(ModulePtr fn);
  Tensor forward(const Tensor& x) override;
  std::string repr() const override { return "Residual"; }
  ModulePtr fn;
};

// Normalises each example over its last axis: (h - mean) / sqrt(var + eps), then "weight" ⊙ · +
// "bias" (biased variance, as PyTorch).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(std::int64_t features, double eps = 1e-5, bool affine = true, DType dtype = get_default_dtype());
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t features;
  double eps;
  Tensor weight, bias;
};

// Batch normalisation over axis 0 of [batch, features]. In training mode it normalises with the
// batch statistics and updates the buffers "running_mean" and "running_var" (unbiased variance,
// momentum 0.1, as PyTorch); in eval mode it uses the buffers. Buffer updates are skipped inside
// vmap, where no single batch statistic exists.
class BatchNorm1d : public Module {
 public:
  explicit BatchNorm1d(std::int64_t features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       DType dtype = get_default_dtype());
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t features;
  double eps, momentum;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  bool channels_last = false;  // input [N, H, W, C] (the state_dict is the same)
};

// torch.nn.BatchNorm2d: batch normalisation of [N, C, H, W] per channel, over N, H and W, with
// the buffers, momentum and unbiased running variance of BatchNorm1d (and its behaviour under
// vmap and checkpoint recomputation: it shares BatchNorm1d's code).
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(std::int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       DType dtype = get_default_dtype());
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t features;
  double eps, momentum;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  bool channels_last = false;  // input [N, H, W, C] (the state_dict is the same)
};

// torch.nn.GroupNorm: the C channels of [N, C, *] fall into num_groups groups of consecutive
// channels; each example is normalised over each group's channels and positions (biased
// variance), then "weight" and "bias" [C] apply per channel. No running statistics: training and
// eval agree.
class GroupNorm : public Module {
 public:
  GroupNorm(std::int64_t num_groups, std::int64_t num_channels, double eps = 1e-5, bool affine = true, DType dtype = get_default_dtype());
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t num_groups, num_channels;
  double eps;
  Tensor weight, bias;
};

// Zeroes each element with probability p in training mode and scales the rest by 1/(1-p); the
// identity in eval mode. The mask comes from the module's own counter-based generator, so runs
// are reproducible and the generator's state can be checkpointed.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, std::uint64_t seed = 0);
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  double p;
  Generator generator;
};

// Residual block layouts, as discussed in the text (a block usually begins and ends with a linear
// layer; starting with a ReLU hides the negative part of its input, ending with one makes every
// block output non-negative):
//   lrl  = linear-relu-linear (default),   h + l2(relu(l1(h)))
//   pre  = relu-linear-relu-linear,        h + l2(relu(l1(relu(h))))
//   lrlr = linear-relu-linear-relu,        h + relu(l2(relu(l1(h))))
// With a norm, it is applied first on the branch: h + F(norm(h)); with dropout, it follows the
// branch's inner ReLU (child "drop", no parameters).
enum class BlockLayout { LRL, Pre, LRLR };
enum class BlockNorm { None, LayerNorm, BatchNorm };

// Children "norm" (when present), "l1" and "l2", so parameters are named like "2.l1.weight".
class ResidualBlock : public Module {
 public:
  ResidualBlock(std::int64_t width, BlockLayout layout = BlockLayout::LRL, BlockNorm norm = BlockNorm::None,
                DType dtype = get_default_dtype(), double dropout = 0, std::uint64_t dropout_seed = 0);
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  BlockLayout layout;
  ModulePtr norm;  // null when BlockNorm::None
  std::shared_ptr<Linear> l1, l2;
  std::shared_ptr<Dropout> drop;  // null without dropout
};

// ---- convolution (issue 16, first slice) -------------------------------------------------------

struct Conv2dLayerOptions {
  std::array<std::int64_t, 2> stride{1, 1};
  std::array<std::int64_t, 2> padding{0, 0};
  std::array<std::int64_t, 2> dilation{1, 1};
  std::int64_t groups = 1;
  bool same_padding = false;  // padding="same" (stride 1)
  bool bias = true;
  DType dtype = get_default_dtype();
  std::uint64_t seed = 0;  // the generator of the default initialisation
  // Input [N, H, W, in] and output [N, oH, oW, out] (Conv2dOptions::channels_last); weight unchanged.
  bool channels_last = false;
};

// torch.nn.Conv2d: "weight" [out, in/groups, kH, kW], "bias" [out], initialised as PyTorch:
// kaiming_uniform_(a = sqrt(5)) for the weight (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), and the
// bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in/groups·kH·kW. Input [N, in, H, W] (or [in, H, W]).
class Conv2d : public Module {
 public:
  Conv2d(std::int64_t in_channels, std::int64_t out_channels, std::array<std::int64_t, 2> kernel_size,
         Conv2dLayerOptions opts = {});
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t in_channels, out_channels;
  std::array<std::int64_t, 2> kernel_size;
  Conv2dLayerOptions options;
  Tensor weight, bias;
};

struct ConvTranspose2dLayerOptions {
  std::array<std::int64_t, 2> stride{1, 1};
  std::array<std::int64_t, 2> padding{0, 0};
  std::array<std::int64_t, 2> output_padding{0, 0};
  std::array<std::int64_t, 2> dilation{1, 1};
  std::int64_t groups = 1;
  bool bias = true;
  DType dtype = get_default_dtype();
  std::uint64_t seed = 0;
};

// torch.nn.ConvTranspose2d: "weight" [in, out/groups, kH, kW], "bias" [out], initialised as
// PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both, fan_in from the weight's layout,
// out/groups·kH·kW. Input [N, in, H, W] (or [in, H, W]).
class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(std::int64_t in_channels, std::int64_t out_channels, std::array<std::int64_t, 2> kernel_size,
                  ConvTranspose2dLayerOptions opts = {});
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t in_channels, out_channels;
  std::array<std::int64_t, 2> kernel_size;
  ConvTranspose2dLayerOptions options;
  Tensor weight, bias;
};

// torch.nn.MaxPool2d(kernel_size, stride = kernel_size, padding = 0); a stride of 0 means the kernel size.
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(std::array<std::int64_t, 2> kernel_size, std::array<std::int64_t, 2> stride = {0, 0},
                     std::array<std::int64_t, 2> padding = {0, 0});
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::array<std::int64_t, 2> kernel_size, stride, padding;
  // Inputs [N, H, W, C] or [H, W, C] (Conv2dLayerOptions::channels_last); the result has the same layout.
  bool channels_last = false;
};

// torch.nn.AvgPool2d(kernel_size, stride = kernel_size, padding = 0), count_include_pad = true.
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(std::array<std::int64_t, 2> kernel_size, std::array<std::int64_t, 2> stride = {0, 0},
                     std::array<std::int64_t, 2> padding = {0, 0});
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::array<std::int64_t, 2> kernel_size, stride, padding;
  // Inputs [N, H, W, C] or [H, W, C] (Conv2dLayerOptions::channels_last); the result has the same layout.
  bool channels_last = false;
};

// torch.nn.AdaptiveAvgPool2d(output_size); {1, 1} is global average pooling.
class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(std::array<std::int64_t, 2> output_size);
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::array<std::int64_t, 2> output_size;
};

// torch.nn.Flatten(start_dim = 1, end_dim = -1).
class Flatten : public Module {
 public:
  explicit Flatten(std::int64_t start_dim = 1, std::int64_t end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t start_dim, end_dim;
};

// ---- activations (PyTorch's torch.nn names and defaults) ---------------------------------------
// Modules without parameters around the ops of chainrule/ops/ops.h.

class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  std::string repr() const override { return "Identity()"; }
};
class Tanh : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string repr() const override { return "Tanh()"; }
};
class Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string repr() const override { return "Sigmoid()"; }
};
// log(1 + e^(βx)) / β. PyTorch switches to x above βx > threshold; softplus here is exact there
// (it never overflows), so no threshold is needed.
class Softplus : public Module {
 public:
  explicit Softplus(double beta = 1.0);
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  double beta;
};
// approximate: "none" (x Φ(x), with erf) or "tanh".
class GELU : public Module {
 public:
  explicit GELU(std::string approximate = "none");
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::string approximate;
};
class SiLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string repr() const override { return "SiLU()"; }
};
class ELU : public Module {
 public:
  explicit ELU(double alpha = 1.0) : alpha(alpha) {}
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  double alpha;
};
class LeakyReLU : public Module {
 public:
  explicit LeakyReLU(double negative_slope = 0.01) : negative_slope(negative_slope) {}
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  double negative_slope;
};
// PyTorch's dim has no default for these two (an implicit one is deprecated): it is required.
class Softmax : public Module {
 public:
  explicit Softmax(std::int64_t dim) : dim(dim) {}
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t dim;
};
class LogSoftmax : public Module {
 public:
  explicit LogSoftmax(std::int64_t dim) : dim(dim) {}
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::int64_t dim;
};

// The activation module a model spec names: relu, tanh, sigmoid, softplus, gelu, gelu_tanh,
// silu, elu, leaky_relu, identity (PyTorch's defaults). Throws ValueError listing the names.
ModulePtr make_activation(std::string_view name);
// The names make_activation accepts, in that order.
std::span<const std::string_view> activation_names();

}  // namespace chainrule::nn
