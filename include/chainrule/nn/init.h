#pragma once
// Initialisers with libtorch's names (torch::nn::init::kaiming_normal_ ...), filling a tensor in
// place from a counter-based Generator. For a weight W of shape [out, in] (extra axes multiply
// both fans, as for convolutions), fan_in = in and fan_out = out.
//
// He initialisation, derived in the text: for Y = β + wᵀh with h = ReLU(x), x symmetric about
// zero, E(H²) = σ_x²/2, so σ_y² = (d_in/2) σ_w² σ_x², and σ_y² = σ_x² needs σ_w² = 2/d_in
// (mode FanIn, forward pass). The backward pass multiplies by Wᵀ and asks for σ_w² = 2/d_out
// (FanOut); FanAvg averages the fans, σ_w² = 2/((d_in + d_out)/2), as Glorot and JAX's
// variance_scaling(mode="fan_avg") do. In general σ_w = gain / sqrt(fan) with gain² = 2 for ReLU.
#include <cstdint>
#include <string>
#include <string_view>

#include "chainrule/nn/module.h"
#include "chainrule/tensor/random.h"

namespace chainrule::nn {

enum class FanMode { FanIn, FanOut, FanAvg };
enum class Nonlinearity { Linear, ReLU, LeakyReLU, Tanh, Sigmoid };

// The factor a nonlinearity shrinks the second moment by, as torch.nn.init.calculate_gain:
// Linear/Sigmoid 1, ReLU sqrt(2), LeakyReLU sqrt(2/(1+slope²)), Tanh 5/3.
double calculate_gain(Nonlinearity nonlinearity, double negative_slope = 0.01);

struct Fans {
  double in = 0, out = 0;
};
Fans calculate_fans(const Tensor& w);  // needs rank >= 2
double fan(const Tensor& w, FanMode mode);

struct KaimingOptions {
  FanMode mode = FanMode::FanIn;
  Nonlinearity nonlinearity = Nonlinearity::ReLU;
  double a = 0;  // negative slope for LeakyReLU
};
// N(0, gain²/fan): with ReLU, σ² = 2/d_in, 2/d_out or 2/((d_in+d_out)/2).
Tensor& kaiming_normal_(Tensor& w, Generator& gen, const KaimingOptions& opts = {});
// U(-b, b) with b = gain sqrt(3/fan), the same variance.
Tensor& kaiming_uniform_(Tensor& w, Generator& gen, const KaimingOptions& opts = {});

struct XavierOptions {
  double gain = 1.0;
};
// Glorot: σ² = gain² · 2/(d_in + d_out).
Tensor& xavier_normal_(Tensor& w, Generator& gen, const XavierOptions& opts = {});
Tensor& xavier_uniform_(Tensor& w, Generator& gen, const XavierOptions& opts = {});
// LeCun: σ² = 1/d_in (untruncated).
Tensor& lecun_normal_(Tensor& w, Generator& gen);

struct NormalOptions {
  double mean = 0.0;
  double std = 1.0;
};
Tensor& normal_(Tensor& w, Generator& gen, const NormalOptions& opts = {});
Tensor& uniform_(Tensor& w, Generator& gen, double lo, double hi);
Tensor& constant_(Tensor& w, double value);
Tensor& zeros_(Tensor& w);
Tensor& ones_(Tensor& w);

// Whole-model initialisation of every Linear, Conv2d and ConvTranspose2d (weights by the scheme,
// biases zero).
enum class InitScheme {
  He,             // kaiming_normal_, fan_in ("he", "kaiming_normal")
  HeFanOut,       // kaiming_normal_, fan_out ("he_fan_out")
  HeFanAvg,       // kaiming_normal_, fan_avg ("he_fan_avg")
  HeUniform,      // kaiming_uniform_, fan_in ("he_uniform", "kaiming_uniform")
  Xavier,         // xavier_normal_ ("xavier", "glorot", "xavier_normal")
  XavierUniform,  // xavier_uniform_ ("xavier_uniform", "glorot_uniform")
  LeCun,          // lecun_normal_ ("lecun")
  Torch,          // PyTorch's nn.Linear default: U(±1/sqrt(d_in)) for weight and bias ("torch")
};
InitScheme parse_init(std::string_view name);  // ValueError listing the known names
std::string_view init_name(InitScheme scheme);

struct InitOptions {
  InitScheme scheme = InitScheme::He;
  // Zero the last layer of every residual branch (the last Linear of a ResidualBlock, the last BN
  // weight of a post-activation BasicBlock, conv2 of a pre-activation one), so each block starts
  // as the identity.
  bool zero_residual = false;
};
void init_model(Module& model, Generator& gen, const InitOptions& opts = {});

}  // namespace chainrule::nn
