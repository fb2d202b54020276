#include "chainrule/nn/layers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "chainrule/autodiff/anomaly.h"
#include "chainrule/autodiff/compile.h"
#include "chainrule/nn/autocast.h"
#include "chainrule/autodiff/checkpoint.h"
#include "chainrule/autodiff/frame.h"
#include "chainrule/ops/norm.h"
#include "chainrule/ops/ops.h"

namespace chainrule::nn {

// ---- Linear --------------------------------------------------------------------------------

Linear::Linear(std::int64_t in, std::int64_t out, LinearOptions opts) : in_features(in), out_features(out) {
  if (in <= 0 || out <= 0) throw ValueError(fmt::format("Linear: sizes must be positive, got in={} out={}", in, out));
  register_parameter("weight", weight, zeros({out, in}, opts.dtype));
  if (opts.bias) register_parameter("bias", bias, zeros({out}, opts.dtype));
}

// f = β + W h for every row h of x: x Wᵀ + β, with Wᵀ folded into the GEMM.
Tensor Linear::forward(const Tensor& x) {
  if (x.dim() < 1 || x.shape().back() != in_features)
    throw ShapeError(fmt::format("Linear({}, {}): input of shape {} needs a last axis of {}", in_features, out_features,
                                 x.shape().str(), in_features));
  if (auto t = autocast_dtype(); t && x.dtype() == DType::f32 && weight.dtype() == DType::f32) {
    // Mixed precision (nn/autocast.h): half operands into the GEMM, a float32 result.
    const Tensor y = bias.defined() ? linear(cast(x, *t), cast(weight, *t), cast(bias, *t))
                                    : matmul(cast(x, *t), cast(weight, *t), false, true);
    return cast(y, DType::f32);
  }
  return bias.defined() ? linear(x, weight, bias) : matmul(x, weight, false, true);
}

std::string Linear::repr() const {
  return fmt::format("Linear(in_features={}, out_features={}, bias={})", in_features, out_features, bias.defined());
}

// ---- ReLU, Sequential, Residual -------------------------------------------------------------

Tensor ReLU::forward(const Tensor& x) { return relu(x); }

Sequential::Sequential(std::vector<ModulePtr> layers) {
  for (auto& l : layers) push_back(std::move(l));
}
void Sequential::push_back(ModulePtr layer) { push_back(std::to_string(layers_.size()), std::move(layer)); }
void Sequential::push_back(const std::string& name, ModulePtr layer) {
  register_module(name, layer);
  layers_.push_back(std::move(layer));
  names_.push_back(name);
}
Tensor Sequential::forward(const Tensor& x) {
  if (checkpoint_segments_ > 1) return checkpoint_sequential(*this, checkpoint_segments_, x);
  return run_layers(0, layers_.size(), x);
}

Tensor Sequential::run_layers(std::size_t begin, std::size_t end, const Tensor& x) {
  Tensor h = x;
  for (std::size_t i = begin; i < end; ++i) {
    NameScope scope(names_[i]);  // anomaly reports name the module path, e.g. "2.l1"
    h = layers_[i]->forward(h);
  }
  return h;
}

void Sequential::set_checkpoint_segments(int segments) {
  if (segments < 0) throw ValueError(fmt::format("Sequential: checkpoint segments must be >= 0, got {}", segments));
  checkpoint_segments_ = segments;
}

// ---- checkpointing -------------------------------------------------------------------------

namespace {

// Layers [begin, end) of seq under chainrule::checkpoint, with every parameter an explicit input
// (the recomputation substitutes the saved ones, which may be tracers of enclosing transforms).
Tensor checkpoint_layers(const Sequential& seq, std::size_t begin, std::size_t end, const Tensor& x) {
  std::vector<Tensor> inputs{x};
  std::vector<ModulePtr> layers;
  std::vector<std::vector<std::string>> names;
  std::vector<std::string> scopes;
  for (std::size_t i = begin; i < end; ++i) {
    layers.push_back(seq[i]);
    scopes.push_back(seq.name(i));
    names.emplace_back();
    for (auto& [name, t] : seq[i]->named_parameters()) {
      names.back().push_back(name);
      inputs.push_back(t);
    }
  }
  auto run = [layers = std::move(layers), names = std::move(names), scopes = std::move(scopes)](const std::vector<Tensor>& in) {
    Tensor h = in[0];
    std::size_t k = 1;
    for (std::size_t j = 0; j < layers.size(); ++j) {
      std::map<std::string, Tensor> params;
      for (const auto& name : names[j]) params.emplace(name, in[k++]);
      NameScope scope(scopes[j]);
      h = functional_call(*layers[j], params, h);
    }
    return h;
  };
  return chainrule::checkpoint(run, inputs);
}

}  // namespace

Tensor checkpoint(Module& module, const Tensor& x) {
  std::vector<Tensor> inputs{x};
  std::vector<std::string> names;
  for (auto& [name, t] : module.named_parameters()) {
    names.push_back(name);
    inputs.push_back(t);
  }
  Module* m = &module;  // as in PyTorch, the module must outlive the backward pass
  auto run = [m, names = std::move(names)](const std::vector<Tensor>& in) {
    std::map<std::string, Tensor> params;
    for (std::size_t k = 0; k < names.size(); ++k) params.emplace(names[k], in[k + 1]);
    return functional_call(*m, params, in[0]);
  };
  return chainrule::checkpoint(run, inputs);
}

Tensor checkpoint_sequential(Sequential& seq, int segments, const Tensor& x) {
  if (segments < 1) throw ValueError(fmt::format("checkpoint_sequential: segments must be >= 1, got {}", segments));
  const std::size_t n = seq.size(), k = std::min<std::size_t>(static_cast<std::size_t>(segments), std::max<std::size_t>(n, 1));
  // Segment s is layers [s n / k, (s + 1) n / k): the remainder is spread over the segments.
  // As in PyTorch, the last segment is not checkpointed: the backward pass needs its
  // activations at once, so recomputing them would only cost time.
  Tensor h = x;
  for (std::size_t s = 0; s + 1 < k; ++s) h = checkpoint_layers(seq, s * n / k, (s + 1) * n / k, h);
  return seq.run_layers((k - 1) * n / k, n, h);
}

Residual::Residual(ModulePtr f) : fn(register_module("fn", std::move(f))) {}
Tensor Residual::forward(const Tensor& x) { return add(x, fn->forward(x)); }

// ---- LayerNorm -----------------------------------------------------------------------------

LayerNorm::LayerNorm(std::int64_t n, double e, bool affine, DType dtype) : features(n), eps(e) {
  if (n <= 0) throw ValueError(fmt::format("LayerNorm: features must be positive, got {}", n));
  if (affine) {
    register_parameter("weight", weight, ones({n}, dtype));
    register_parameter("bias", bias, zeros({n}, dtype));
  }
}

Tensor LayerNorm::forward(const Tensor& x) {
  if (x.dim() < 1 || x.shape().back() != features)
    throw ShapeError(fmt::format("LayerNorm({}): input of shape {} needs a last axis of {}", features, x.shape().str(), features));
  Tensor d = sub(x, mean(x, {-1}, true));
  Tensor var = mean(square(d), {-1}, true);
  Tensor y = div(d, sqrt(add(var, scalar_tensor(eps, x.dtype()))));
  return weight.defined() ? add(mul(y, weight), bias) : y;
}

std::string LayerNorm::repr() const { return fmt::format("LayerNorm({}, eps={}, affine={})", features, eps, weight.defined()); }

// ---- BatchNorm1d ---------------------------------------------------------------------------

BatchNorm1d::BatchNorm1d(std::int64_t n, double e, double m, bool affine, DType dtype) : features(n), eps(e), momentum(m) {
  if (n <= 0) throw ValueError(fmt::format("BatchNorm1d: features must be positive, got {}", n));
  if (affine) {
    register_parameter("weight", weight, ones({n}, dtype));
    register_parameter("bias", bias, zeros({n}, dtype));
  }
  register_buffer("running_mean", running_mean, zeros({n}, dtype));
  register_buffer("running_var", running_var, ones({n}, dtype));
  register_buffer("num_batches_tracked", num_batches_tracked, zeros({}, DType::i64));
}

namespace {
bool is_batched(const Tensor& t) {
  for (const TensorImpl* c = t.impl(); c && c->frame; c = c->primal.impl())
    if (c->frame->kind == TraceKind::Batch) return true;
  return false;
}

// The state of a BatchNorm layer, shared by BatchNorm1d and BatchNorm2d.
struct BatchNormState {
  const std::string& name;
  double eps, momentum;
  Tensor &weight, &bias, &running_mean, &running_var, &num_batches_tracked;
};

// Normalises x per channel (axis 1) over `axes` (every other axis); `stat_shape` views a [C]
// statistic so that it broadcasts against x ([C] for [N, C], [C, 1, 1] for [N, C, H, W]).
// Training runs the fused primitives (ops/norm.h: one pass for the statistics, one for y, and one
// fused backward) when x, weight and bias share a float dtype; otherwise, and in eval mode, the
// composite below, whose per-channel factor weight / sqrt(var + eps) is formed on [C] first, so
// the full-size tensor sees one subtraction, one multiplication and one addition.
Tensor batch_norm(const Tensor& x, const Axes& axes, const Shape& stat_shape, bool training, BatchNormState s) {
  auto view = [&](const Tensor& t) { return reshape(t, stat_shape); };
  Tensor d, inv;
  if (training) {
    std::int64_t n = 1;
    for (auto a : axes) n *= x.shape()[static_cast<std::size_t>(a)];
    if (n < 2)
      throw ValueError(fmt::format("{}: training needs more than one value per channel, got input of shape {}", s.name, x.shape().str()));
    const bool fused = is_floating(x.dtype()) &&
                       (!s.weight.defined() || (s.weight.dtype() == x.dtype() && s.bias.dtype() == x.dtype()));
    Tensor mu, var, y;
    if (fused) {
      Tensor stats;
      std::tie(y, stats) = batch_norm_train_with_stats(x, s.weight, s.bias, s.eps);
      const Shape c{x.shape()[1]};
      mu = reshape(slice(stats, 0, 0, 1), c);
      var = reshape(slice(stats, 0, 1, 2), c);
    } else {
      mu = mean(x, axes);
      d = sub(x, view(mu));
      var = mean(square(d), axes);
      inv = div(scalar_tensor(1.0, x.dtype()), sqrt(add(var, scalar_tensor(s.eps, x.dtype()))));
    }
    // Once per forward pass: not inside vmap, and not again when checkpoint recomputes the layer.
    if (!is_batched(mu) && !checkpoint_recomputing() && s.running_mean.dtype() == x.dtype()) {
      NoGradGuard ng;
      Tensor mu_c = mu.detach(), var_c = var.detach();
      s.running_mean.mul_(1 - s.momentum).add_(mu_c, s.momentum);
      // Running variance is the unbiased estimate, as in PyTorch.
      s.running_var.mul_(1 - s.momentum).add_(var_c, s.momentum * static_cast<double>(n) / static_cast<double>(n - 1));
      compile_effect([counter = s.num_batches_tracked]() mutable { counter.mutable_data<std::int64_t>()[0] += 1; });
    }
    if (fused) return y;
  } else {
    // Evaluation: the per-channel affine map x * scale + shift, its two vectors computed first (as
    // PyTorch's and oneDNN's kernels do), so the activations take two passes, not three.
    inv = div(scalar_tensor(1.0, x.dtype()), sqrt(add(s.running_var, scalar_tensor(s.eps, x.dtype()))));
    const Tensor scale = s.weight.defined() ? mul(inv, s.weight) : inv;
    const Tensor shift = neg(mul(s.running_mean, scale));
    return add(mul(x, view(scale)), view(s.bias.defined() ? add(shift, s.bias) : shift));
  }
  if (!s.weight.defined()) return mul(d, view(inv));
  return add(mul(d, view(mul(inv, s.weight))), view(s.bias));
}
}  // namespace

Tensor BatchNorm1d::forward(const Tensor& x) {
  if (x.dim() != 2 || x.shape()[1] != features)
    throw ShapeError(fmt::format("BatchNorm1d({}): input of shape {} must be [batch, {}]", features, x.shape().str(), features));
  const std::string name = fmt::format("BatchNorm1d({})", features);
  return batch_norm(x, {0}, {features}, is_training(),
                    {name, eps, momentum, weight, bias, running_mean, running_var, num_batches_tracked});
}

std::string BatchNorm1d::repr() const {
  return fmt::format("BatchNorm1d({}, eps={}, momentum={}, affine={})", features, eps, momentum, weight.defined());
}

// ---- BatchNorm2d, GroupNorm -------------------------------------------------------------------

BatchNorm2d::BatchNorm2d(std::int64_t n, double e, double m, bool affine, DType dtype) : features(n), eps(e), momentum(m) {
  if (n <= 0) throw ValueError(fmt::format("BatchNorm2d: num_features must be positive, got {}", n));
  if (affine) {
    register_parameter("weight", weight, ones({n}, dtype));
    register_parameter("bias", bias, zeros({n}, dtype));
  }
  register_buffer("running_mean", running_mean, zeros({n}, dtype));
  register_buffer("running_var", running_var, ones({n}, dtype));
  register_buffer("num_batches_tracked", num_batches_tracked, zeros({}, DType::i64));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  const std::string name = fmt::format("BatchNorm2d({})", features);
  if (channels_last) {  // [N, H, W, C] as [N*H*W, C]: the statistics over the rows
    if (x.dim() != 4 || x.shape()[3] != features)
      throw ShapeError(fmt::format("{}: input of shape {} must be [N, H, W, {}] (channels-last)", name, x.shape().str(), features));
    const Tensor y = batch_norm(reshape(x, {x.numel() / features, features}), {0}, {features}, is_training(),
                                {name, eps, momentum, weight, bias, running_mean, running_var, num_batches_tracked});
    return reshape(y, x.shape());
  }
  if (x.dim() != 4 || x.shape()[1] != features)
    throw ShapeError(fmt::format("BatchNorm2d({}): input of shape {} must be [N, {}, H, W]", features, x.shape().str(), features));
  return batch_norm(x, {0, 2, 3}, {features, 1, 1}, is_training(),
                    {name, eps, momentum, weight, bias, running_mean, running_var, num_batches_tracked});
}

std::string BatchNorm2d::repr() const {
  return fmt::format("BatchNorm2d({}, eps={}, momentum={}, affine={})", features, eps, momentum, weight.defined());
}

GroupNorm::GroupNorm(std::int64_t g, std::int64_t c, double e, bool affine, DType dtype) : num_groups(g), num_channels(c), eps(e) {
  if (g <= 0 || c <= 0 || c % g != 0)
    throw ValueError(fmt::format("GroupNorm: num_groups ({}) must be positive and divide num_channels ({})", g, c));
  if (affine) {
    register_parameter("weight", weight, ones({c}, dtype));
    register_parameter("bias", bias, zeros({c}, dtype));
  }
}

Tensor GroupNorm::forward(const Tensor& x) {
  if (x.dim() < 2 || x.shape()[1] != num_channels)
    throw ShapeError(fmt::format("{}: input of shape {} must be [N, {}, *]", repr(), x.shape().str(), num_channels));
  // [N, C, *] -> [N, G, C/G · prod(*)]: each row of the last axis is one example's group.
  Tensor g = reshape(x, {x.shape()[0], num_groups, -1});
  Tensor d = sub(g, mean(g, {-1}, true));
  Tensor var = mean(square(d), {-1}, true);
  Tensor y = reshape(div(d, sqrt(add(var, scalar_tensor(eps, x.dtype())))), x.shape());
  if (!weight.defined()) return y;
  Shape per_channel{num_channels};  // [C, 1, ..., 1] against [N, C, *]
  for (std::int64_t i = 2; i < x.dim(); ++i) per_channel.push_back(1);
  return add(mul(y, reshape(weight, per_channel)), reshape(bias, per_channel));
}

std::string GroupNorm::repr() const {
  return fmt::format("GroupNorm({}, {}, eps={}, affine={})", num_groups, num_channels, eps, weight.defined());
}

// ---- Dropout -------------------------------------------------------------------------------

Dropout::Dropout(double prob, std::uint64_t seed) : p(prob), generator(seed) {
  if (!(p >= 0 && p <= 1)) throw ValueError(fmt::format("Dropout: p must be in [0, 1], got {}", p));
}

Tensor Dropout::forward(const Tensor& x) {
  if (!is_training() || p == 0) return x;
  if (p == 1) return mul(x, zeros(x.shape(), x.dtype()));
  Tensor u = rand(x.shape(), generator, x.dtype());
  Tensor keep = cast(greater_equal(u, scalar_tensor(p, x.dtype())), x.dtype());
  return mul(x, mul(keep, scalar_tensor(1.0 / (1.0 - p), x.dtype())));
}

std::string Dropout::repr() const { return fmt::format("Dropout(p={})", p); }

// ---- ResidualBlock -------------------------------------------------------------------------

ResidualBlock::ResidualBlock(std::int64_t width, BlockLayout lay, BlockNorm nrm, DType dtype, double dropout, std::uint64_t seed)
    : layout(lay) {
  if (nrm == BlockNorm::LayerNorm) norm = register_module("norm", std::make_shared<LayerNorm>(width, 1e-5, true, dtype));
  if (nrm == BlockNorm::BatchNorm) norm = register_module("norm", std::make_shared<BatchNorm1d>(width, 1e-5, 0.1, true, dtype));
  l1 = register_module("l1", std::make_shared<Linear>(width, width, LinearOptions{.dtype = dtype}));
  l2 = register_module("l2", std::make_shared<Linear>(width, width, LinearOptions{.dtype = dtype}));
  if (dropout > 0) drop = register_module("drop", std::make_shared<Dropout>(dropout, seed));
}

Tensor ResidualBlock::forward(const Tensor& h) {
  Tensor b = norm ? norm->forward(h) : h;
  auto inner = [&](const Tensor& t) { return drop ? drop->forward(relu(t)) : relu(t); };
  auto first = [&](const Tensor& t) {
    NameScope scope("l1");
    return l1->forward(t);
  };
  auto second = [&](const Tensor& t) {
    NameScope scope("l2");
    return l2->forward(t);
  };
  switch (layout) {
    case BlockLayout::LRL: b = second(inner(first(b))); break;
    case BlockLayout::Pre: b = second(inner(first(relu(b)))); break;
    case BlockLayout::LRLR: b = relu(second(inner(first(b)))); break;
  }
  return add(h, b);
}

std::string ResidualBlock::repr() const {
  static const char* names[] = {"lrl", "pre", "lrlr"};
  return fmt::format("ResidualBlock(width={}, layout={})", l1->in_features, names[static_cast<int>(layout)]);
}

// ---- Conv2d, Flatten ---------------------------------------------------------------------------

namespace {
// [in, H, W] runs as a batch of one.
template <class F>
Tensor image_or_batch(const std::string& who, std::int64_t channels, const Tensor& x, F&& f) {
  if (x.dim() == 3) return squeeze(f(unsqueeze(x, 0)), 0);
  if (x.dim() != 4)
    throw ShapeError(fmt::format("{}: input of shape {} needs [N, {}, H, W] or [{}, H, W]", who, x.shape().str(), channels, channels));
  return f(x);
}

std::string pair_str(std::array<std::int64_t, 2> a) { return fmt::format("({}, {})", a[0], a[1]); }
}  // namespace

namespace {
// Mixed precision for convolutions (nn/autocast.h): under bf16 autocast, float32 operands are
// multiplied in bfloat16 inside the kernel (Conv2dOptions::bf16), the result stays float32, so
// no cast passes are needed around the call. f16 autocast leaves convolutions in float32.
bool bf16_products(const Tensor& x, const Tensor& weight) {
  return autocast_dtype() == DType::bf16 && x.dtype() == DType::f32 && weight.dtype() == DType::f32;
}
}  // namespace

Conv2d::Conv2d(std::int64_t in, std::int64_t out, std::array<std::int64_t, 2> k, Conv2dLayerOptions opts)
    : in_channels(in), out_channels(out), kernel_size(k), options(opts) {
  if (in <= 0 || out <= 0 || k[0] <= 0 || k[1] <= 0 || opts.groups <= 0 || in % opts.groups != 0 || out % opts.groups != 0)
    throw ValueError(fmt::format("Conv2d: channels and kernel size must be positive and groups divide both channel counts, got "
                                 "in={} out={} kernel=({}, {}) groups={}",
                                 in, out, k[0], k[1], opts.groups));
  Generator gen(opts.seed);
  // kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain·sqrt(3 / fan_in) = 1/sqrt(fan_in).
  const double bound = 1.0 / std::sqrt(static_cast<double>(in / opts.groups * k[0] * k[1]));
  register_parameter("weight", weight, uniform({out, in / opts.groups, k[0], k[1]}, -bound, bound, gen, opts.dtype));
  if (opts.bias) register_parameter("bias", bias, uniform({out}, -bound, bound, gen, opts.dtype));
}

Tensor Conv2d::forward(const Tensor& x) {
  Conv2dOptions o;
  o.stride = options.stride;
  o.padding = options.padding;
  o.dilation = options.dilation;
  o.groups = options.groups;
  o.same_padding = options.same_padding;
  o.bf16 = bf16_products(x, weight);
  o.channels_last = options.channels_last;
  return image_or_batch(repr(), in_channels, x, [&](const Tensor& b) { return conv2d(b, weight, bias, o); });
}

std::string Conv2d::repr() const {
  return fmt::format("Conv2d({}, {}, kernel_size={}, stride={}, padding={}, dilation={}, groups={}, bias={}{})", in_channels,
                     out_channels, pair_str(kernel_size), pair_str(options.stride),
                     options.same_padding ? std::string("same") : pair_str(options.padding), pair_str(options.dilation),
                     options.groups, bias.defined(), options.channels_last ? ", channels_last" : "");
}

ConvTranspose2d::ConvTranspose2d(std::int64_t in, std::int64_t out, std::array<std::int64_t, 2> k, ConvTranspose2dLayerOptions opts)
    : in_channels(in), out_channels(out), kernel_size(k), options(opts) {
  if (in <= 0 || out <= 0 || k[0] <= 0 || k[1] <= 0 || opts.groups <= 0 || in % opts.groups != 0 || out % opts.groups != 0)
    throw ValueError(fmt::format("ConvTranspose2d: channels and kernel size must be positive and groups divide both channel "
                                 "counts, got in={} out={} kernel=({}, {}) groups={}",
                                 in, out, k[0], k[1], opts.groups));
  Generator gen(opts.seed);
  // PyTorch's fan_in is the weight's size(1)·kH·kW, here out/groups·kH·kW.
  const double bound = 1.0 / std::sqrt(static_cast<double>(out / opts.groups * k[0] * k[1]));
  register_parameter("weight", weight, uniform({in, out / opts.groups, k[0], k[1]}, -bound, bound, gen, opts.dtype));
  if (opts.bias) register_parameter("bias", bias, uniform({out}, -bound, bound, gen, opts.dtype));
}

Tensor ConvTranspose2d::forward(const Tensor& x) {
  ConvTranspose2dOptions o;
  o.stride = options.stride;
  o.padding = options.padding;
  o.output_padding = options.output_padding;
  o.dilation = options.dilation;
  o.groups = options.groups;
  o.bf16 = bf16_products(x, weight);
  return image_or_batch(repr(), in_channels, x, [&](const Tensor& b) { return conv_transpose2d(b, weight, bias, o); });
}

std::string ConvTranspose2d::repr() const {
  return fmt::format("ConvTranspose2d({}, {}, kernel_size={}, stride={}, padding={}, output_padding={}, dilation={}, groups={}, "
                     "bias={})",
                     in_channels, out_channels, pair_str(kernel_size), pair_str(options.stride), pair_str(options.padding),
                     pair_str(options.output_padding), pair_str(options.dilation), options.groups, bias.defined());
}

// ---- pooling -------------------------------------------------------------------------------

namespace {
std::array<std::int64_t, 2> or_kernel(std::array<std::int64_t, 2> stride, std::array<std::int64_t, 2> k) {
  return {stride[0] == 0 ? k[0] : stride[0], stride[1] == 0 ? k[1] : stride[1]};
}
}  // namespace

MaxPool2d::MaxPool2d(std::array<std::int64_t, 2> k, std::array<std::int64_t, 2> s, std::array<std::int64_t, 2> p)
    : kernel_size(k), stride(or_kernel(s, k)), padding(p) {}
Tensor MaxPool2d::forward(const Tensor& x) { return max_pool2d(x, kernel_size, stride, padding); }
std::string MaxPool2d::repr() const {
  return fmt::format("MaxPool2d(kernel_size={}, stride={}, padding={})", pair_str(kernel_size), pair_str(stride), pair_str(padding));
}

AvgPool2d::AvgPool2d(std::array<std::int64_t, 2> k, std::array<std::int64_t, 2> s, std::array<std::int64_t, 2> p)
    : kernel_size(k), stride(or_kernel(s, k)), padding(p) {}
Tensor AvgPool2d::forward(const Tensor& x) {
  if (!channels_last) return avg_pool2d(x, kernel_size, stride, padding);
  if (x.dim() != 3 && x.dim() != 4) throw ShapeError(fmt::format("{}: input of shape {} needs [N, H, W, C] or [H, W, C]", repr(), x.shape().str()));
  const auto r = static_cast<std::size_t>(x.dim());
  const std::int64_t h = x.shape()[r - 3], w = x.shape()[r - 2], c = x.shape()[r - 1];
  const auto [kh, kw] = kernel_size;
  if (stride != kernel_size || padding != std::array<std::int64_t, 2>{0, 0} || h < kh || w < kw) {
    // The general case on the channels-first kernel (its errors name the shapes).
    const Axes to_first = r == 4 ? Axes{0, 3, 1, 2} : Axes{2, 0, 1}, to_last = r == 4 ? Axes{0, 2, 3, 1} : Axes{1, 2, 0};
    return permute(avg_pool2d(permute(x, to_first), kernel_size, stride, padding), to_last);
  }
  // Non-overlapping tiles: the mean over each kh x kw tile of [..., H/kh, kh, W/kw, kw, C], the
  // rows and columns past the last whole tile dropped as PyTorch's floor mode drops them.
  const std::int64_t oh = h / kh, ow = w / kw;
  Tensor t = x;
  if (oh * kh != h) t = slice(t, -3, 0, oh * kh);
  if (ow * kw != w) t = slice(t, -2, 0, ow * kw);
  Shape tiles = r == 4 ? Shape{x.shape()[0], oh, kh, ow, kw, c} : Shape{oh, kh, ow, kw, c};
  return mean(reshape(t, tiles), {-4, -2});
}
std::string AvgPool2d::repr() const {
  return fmt::format("AvgPool2d(kernel_size={}, stride={}, padding={}{})", pair_str(kernel_size), pair_str(stride), pair_str(padding),
                     channels_last ? ", channels_last" : "");
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(std::array<std::int64_t, 2> size) : output_size(size) {}
Tensor AdaptiveAvgPool2d::forward(const Tensor& x) { return adaptive_avg_pool2d(x, output_size); }
std::string AdaptiveAvgPool2d::repr() const { return fmt::format("AdaptiveAvgPool2d(output_size={})", pair_str(output_size)); }

Tensor Flatten::forward(const Tensor& x) {
  const auto r = static_cast<std::int64_t>(x.dim());
  const std::int64_t s = start_dim < 0 ? start_dim + r : start_dim, e = end_dim < 0 ? end_dim + r : end_dim;
  if (r == 0 || s < 0 || e >= r || s > e)
    throw ShapeError(fmt::format("{}: dims out of range for input of shape {}", repr(), x.shape().str()));
  Shape out;
  for (std::int64_t d = 0; d < s; ++d) out.push_back(x.shape()[static_cast<std::size_t>(d)]);
  std::int64_t n = 1;
  for (std::int64_t d = s; d <= e; ++d) n *= x.shape()[static_cast<std::size_t>(d)];
  out.push_back(n);
  for (std::int64_t d = e + 1; d < r; ++d) out.push_back(x.shape()[static_cast<std::size_t>(d)]);
  return reshape(x, out);
}

std::string Flatten::repr() const { return fmt::format("Flatten(start_dim={}, end_dim={})", start_dim, end_dim); }

// ---- activations -----------------------------------------------------------------------------

Tensor Tanh::forward(const Tensor& x) { return tanh(x); }
Tensor Sigmoid::forward(const Tensor& x) { return sigmoid(x); }

Softplus::Softplus(double b) : beta(b) {
  if (!(b > 0)) throw ValueError(fmt::format("Softplus: beta must be positive, got {}", b));
}
Tensor Softplus::forward(const Tensor& x) {
  if (beta == 1.0) return softplus(x);
  return div(softplus(mul(x, scalar_tensor(beta, x.dtype()))), scalar_tensor(beta, x.dtype()));
}
std::string Softplus::repr() const { return fmt::format("Softplus(beta={})", beta); }

GELU::GELU(std::string a) : approximate(std::move(a)) {
  if (approximate != "none" && approximate != "tanh")
    throw ValueError(fmt::format("GELU: approximate must be 'none' or 'tanh', got '{}'", approximate));
}
Tensor GELU::forward(const Tensor& x) { return gelu(x, approximate == "tanh"); }
std::string GELU::repr() const { return fmt::format("GELU(approximate='{}')", approximate); }

Tensor SiLU::forward(const Tensor& x) { return silu(x); }
Tensor ELU::forward(const Tensor& x) { return elu(x, alpha); }
std::string ELU::repr() const { return fmt::format("ELU(alpha={})", alpha); }
Tensor LeakyReLU::forward(const Tensor& x) { return leaky_relu(x, negative_slope); }
std::string LeakyReLU::repr() const { return fmt::format("LeakyReLU(negative_slope={})", negative_slope); }
Tensor Softmax::forward(const Tensor& x) { return softmax(x, dim); }
std::string Softmax::repr() const { return fmt::format("Softmax(dim={})", dim); }
Tensor LogSoftmax::forward(const Tensor& x) { return log_softmax(x, dim); }
std::string LogSoftmax::repr() const { return fmt::format("LogSoftmax(dim={})", dim); }

namespace {
constexpr std::string_view kActivations[] = {"relu", "tanh", "sigmoid",   "softplus", "gelu",
                                             "gelu_tanh", "silu", "elu", "leaky_relu", "identity"};
}  // namespace

std::span<const std::string_view> activation_names() { return kActivations; }

ModulePtr make_activation(std::string_view name) {
  if (name == "relu") return std::make_shared<ReLU>();
  if (name == "tanh") return std::make_shared<Tanh>();
  if (name == "sigmoid") return std::make_shared<Sigmoid>();
  if (name == "softplus") return std::make_shared<Softplus>();
  if (name == "gelu") return std::make_shared<GELU>();
  if (name == "gelu_tanh") return std::make_shared<GELU>("tanh");
  if (name == "silu") return std::make_shared<SiLU>();
  if (name == "elu") return std::make_shared<ELU>();
  if (name == "leaky_relu") return std::make_shared<LeakyReLU>();
  if (name == "identity") return std::make_shared<Identity>();
  throw ValueError(fmt::format("unknown activation '{}' (known: {})", name, fmt::join(kActivations, ", ")));
}

}  // namespace chainrule::nn
