#pragma once
// Optimisers, as torch::optim: constructed over a model's named parameters, they read each
// parameter's accumulated .grad() and update the parameter in place. State buffers are allocated
// once, in the constructor; step() allocates nothing. Parameters without a gradient are skipped.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "chainrule/nn/module.h"

namespace chainrule::optim {

using nn::NamedTensors;

class Optimizer {
 public:
  Optimizer(NamedTensors params, double lr);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual void step() = 0;
  virtual std::string name() const = 0;
  void zero_grad();  // drops every parameter's gradient (PyTorch's set_to_none)

  double lr() const { return lr_; }
  void set_lr(double lr) { lr_ = lr; }
  std::int64_t steps() const { return steps_; }  // updates taken so far

  // Checkpointing: the state buffers under "<buffer>.<parameter name>" plus "step". state() shares
  // storage with the optimiser; load_state copies into the existing buffers and checks shapes.
  NamedTensors state() const;
  void load_state(const std::map<std::string, Tensor>& state);

 protected:
  // Registers a zero buffer shaped like each parameter, named "<buffer>.<param>"; returns its index.
  std::size_t add_buffer(const std::string& buffer);
  std::vector<Tensor>& buffer(std::size_t index) { return buffers_[index].second; }
  NamedTensors params_;
  double lr_;
  std::int64_t steps_ = 0;

 private:
  std::vector<std::pair<std::string, std::vector<Tensor>>> buffers_;
};

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;  // L2: adds weight_decay · p to the gradient
  bool nesterov = false;
};
// g = ∇ + λp;  b = μ b + (1 - dampening) g (b = g on the first step);
// d = g + μ b (Nesterov) or b (momentum) or g;  p -= lr d.  (torch.optim.SGD)
class SGD : public Optimizer {
 public:
  SGD(NamedTensors params, SGDOptions opts);
  void step() override;
  std::string name() const override { return "sgd"; }
  const SGDOptions& options() const { return opts_; }

 private:
  SGDOptions opts_;
  std::size_t momentum_ = 0;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;  // Adam: L2 added to the gradient; AdamW: decoupled, p *= 1 - lr λ
};
// m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;
// p -= lr/(1-β1ᵗ) · m / (sqrt(v)/sqrt(1-β2ᵗ) + eps).  (torch.optim.Adam)
class Adam : public Optimizer {
 public:
  Adam(NamedTensors params, AdamOptions opts);
  void step() override;
  std::string name() const override { return decoupled_ ? "adamw" : "adam"; }
  const AdamOptions& options() const { return opts_; }

 protected:
  Adam(NamedTensors params, AdamOptions opts, bool decoupled);

 private:
  AdamOptions opts_;
  bool decoupled_;
  std::size_t exp_avg_ = 0, exp_avg_sq_ = 0;
};

// Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr λ before the Adam step.
struct AdamWOptions : AdamOptions {
  AdamWOptions() { weight_decay = 0.01; }
};
class AdamW : public Adam {
 public:
  AdamW(NamedTensors params, AdamWOptions opts) : Adam(std::move(params), opts, true) {}
};

// Scales all gradients by max_norm / ‖g‖ when the global L2 norm ‖g‖ exceeds max_norm; returns
// ‖g‖ (before clipping), as torch.nn.utils.clip_grad_norm_.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

}  // namespace chainrule::optim
