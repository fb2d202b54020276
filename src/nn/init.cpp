#include "chainrule/nn/init.h"

#include <fmt/format.h>

#include <array>
#include <cmath>

#include "chainrule/autodiff/frame.h"
#include "chainrule/nn/layers.h"
#include "chainrule/nn/resnet.h"
#include "chainrule/ops/ops.h"

namespace chainrule::nn {

double calculate_gain(Nonlinearity nl, double slope) {
  switch (nl) {
    case Nonlinearity::Linear:
    case Nonlinearity::Sigmoid: return 1.0;
    case Nonlinearity::ReLU: return std::sqrt(2.0);
    case Nonlinearity::LeakyReLU: return std::sqrt(2.0 / (1.0 + slope * slope));
    case Nonlinearity::Tanh: return 5.0 / 3.0;
  }
  return 1.0;
}

Fans calculate_fans(const Tensor& w) {
  if (w.dim() < 2)
    throw ShapeError(fmt::format("init: fans need a weight of rank >= 2 ([out, in, ...]), got shape {}", w.shape().str()));
  double receptive = 1;
  for (std::size_t i = 2; i < w.shape().size(); ++i) receptive *= static_cast<double>(w.shape()[i]);
  return {static_cast<double>(w.shape()[1]) * receptive, static_cast<double>(w.shape()[0]) * receptive};
}

double fan(const Tensor& w, FanMode mode) {
  Fans f = calculate_fans(w);
  switch (mode) {
    case FanMode::FanIn: return f.in;
    case FanMode::FanOut: return f.out;
    case FanMode::FanAvg: return (f.in + f.out) / 2;
  }
  return f.in;
}

namespace {
Tensor& fill_from(Tensor& w, const Tensor& values) {
  NoGradGuard ng;
  w.copy_(values);
  return w;
}
double checked_fan(const Tensor& w, FanMode mode, const char* who) {
  double f = fan(w, mode);
  if (f <= 0) throw ValueError(fmt::format("{}: weight of shape {} has a zero fan", who, w.shape().str()));
  return f;
}
}  // namespace

Tensor& normal_(Tensor& w, Generator& gen, const NormalOptions& o) {
  if (!is_floating(w.dtype())) throw DTypeError(fmt::format("normal_: needs a float tensor, got {}", dtype_name(w.dtype())));
  Tensor v = randn(w.shape(), gen, DType::f64);
  return fill_from(w, cast(add(mul(v, scalar_tensor(o.std, DType::f64)), scalar_tensor(o.mean, DType::f64)), w.dtype()));
}
Tensor& uniform_(Tensor& w, Generator& gen, double lo, double hi) {
  if (!is_floating(w.dtype())) throw DTypeError(fmt::format("uniform_: needs a float tensor, got {}", dtype_name(w.dtype())));
  return fill_from(w, uniform(w.shape(), lo, hi, gen, w.dtype()));
}
Tensor& constant_(Tensor& w, double value) {
  NoGradGuard ng;
  w.fill_(value);
  return w;
}
Tensor& zeros_(Tensor& w) { return constant_(w, 0.0); }
Tensor& ones_(Tensor& w) { return constant_(w, 1.0); }

Tensor& kaiming_normal_(Tensor& w, Generator& gen, const KaimingOptions& o) {
  double std = calculate_gain(o.nonlinearity, o.a) / std::sqrt(checked_fan(w, o.mode, "kaiming_normal_"));
  return normal_(w, gen, {.std = std});
}
Tensor& kaiming_uniform_(Tensor& w, Generator& gen, const KaimingOptions& o) {
  double bound = calculate_gain(o.nonlinearity, o.a) * std::sqrt(3.0 / checked_fan(w, o.mode, "kaiming_uniform_"));
  return uniform_(w, gen, -bound, bound);
}
Tensor& xavier_normal_(Tensor& w, Generator& gen, const XavierOptions& o) {
  Fans f = calculate_fans(w);
  return normal_(w, gen, {.std = o.gain * std::sqrt(2.0 / (f.in + f.out))});
}
Tensor& xavier_uniform_(Tensor& w, Generator& gen, const XavierOptions& o) {
  Fans f = calculate_fans(w);
  double bound = o.gain * std::sqrt(6.0 / (f.in + f.out));
  return uniform_(w, gen, -bound, bound);
}
Tensor& lecun_normal_(Tensor& w, Generator& gen) {
  return normal_(w, gen, {.std = 1.0 / std::sqrt(checked_fan(w, FanMode::FanIn, "lecun_normal_"))});
}

namespace {
struct SchemeName {
  std::string_view name;
  InitScheme scheme;
};
constexpr std::array<SchemeName, 13> kSchemes{{
    {"he", InitScheme::He},
    {"kaiming_normal", InitScheme::He},
    {"he_fan_out", InitScheme::HeFanOut},
    {"he_fan_avg", InitScheme::HeFanAvg},
    {"he_uniform", InitScheme::HeUniform},
    {"kaiming_uniform", InitScheme::HeUniform},
    {"xavier", InitScheme::Xavier},
    {"xavier_normal", InitScheme::Xavier},
    {"glorot", InitScheme::Xavier},
    {"xavier_uniform", InitScheme::XavierUniform},
    {"glorot_uniform", InitScheme::XavierUniform},
    {"lecun", InitScheme::LeCun},
    {"torch", InitScheme::Torch},
}};
}  // namespace

InitScheme parse_init(std::string_view name) {
  for (const auto& s : kSchemes)
    if (s.name == name) return s.scheme;
  std::string known;
  for (const auto& s : kSchemes) known += (known.empty() ? "" : ", ") + std::string(s.name);
  throw ValueError(fmt::format("unknown initialiser '{}' (known: {})", name, known));
}

std::string_view init_name(InitScheme scheme) {
  for (const auto& s : kSchemes)
    if (s.scheme == scheme) return s.name;
  return "?";
}

namespace {
// A Linear's or a convolution's weight (fans from its shape) and bias.
void init_weight(Tensor& weight, Tensor& bias, Generator& gen, InitScheme scheme) {
  switch (scheme) {
    case InitScheme::He: kaiming_normal_(weight, gen); break;
    case InitScheme::HeFanOut: kaiming_normal_(weight, gen, {.mode = FanMode::FanOut}); break;
    case InitScheme::HeFanAvg: kaiming_normal_(weight, gen, {.mode = FanMode::FanAvg}); break;
    case InitScheme::HeUniform: kaiming_uniform_(weight, gen); break;
    case InitScheme::Xavier: xavier_normal_(weight, gen); break;
    case InitScheme::XavierUniform: xavier_uniform_(weight, gen); break;
    case InitScheme::LeCun: lecun_normal_(weight, gen); break;
    case InitScheme::Torch: {
      double b = 1.0 / std::sqrt(fan(weight, FanMode::FanIn));
      uniform_(weight, gen, -b, b);
      if (bias.defined()) uniform_(bias, gen, -b, b);
      break;
    }
  }
  if (bias.defined() && scheme != InitScheme::Torch) zeros_(bias);
}
}  // namespace

void init_model(Module& model, Generator& gen, const InitOptions& opts) {
  for (auto& [name, m] : model.named_modules()) {
    if (auto* lin = dynamic_cast<Linear*>(m)) init_weight(lin->weight, lin->bias, gen, opts.scheme);
    if (auto* conv = dynamic_cast<Conv2d*>(m)) init_weight(conv->weight, conv->bias, gen, opts.scheme);
    // Fans from the weight's layout [in, out/groups, kH, kW], as torch.nn.init computes them.
    if (auto* up = dynamic_cast<ConvTranspose2d*>(m)) init_weight(up->weight, up->bias, gen, opts.scheme);
  }
  // A second pass, after the Linears of the blocks have been initialised.
  if (opts.zero_residual)
    for (auto& [name, m] : model.named_modules()) {
      if (auto* block = dynamic_cast<ResidualBlock*>(m)) zeros_(block->l2->weight);
      // A post-activation block ends its branch with bn2 (Goyal et al. 2017 zero its weight), a
      // pre-activation block with conv2.
      if (auto* block = dynamic_cast<BasicBlock*>(m)) zeros_(block->preact ? block->conv2->weight : block->bn2->weight);
    }
}

}  // namespace chainrule::nn
