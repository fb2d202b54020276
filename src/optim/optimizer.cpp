#include "chainrule/optim/optimizer.h"

#include <fmt/format.h>

#include <cmath>

#include "chainrule/autodiff/frame.h"
#include "chainrule/ops/ops.h"
#include "kernels/kernels.h"

namespace chainrule::optim {

Optimizer::Optimizer(NamedTensors params, double lr) : params_(std::move(params)), lr_(lr) {
  for (const auto& [n, p] : params_) {
    if (!is_floating(p.dtype())) throw DTypeError(fmt::format("optimizer: parameter '{}' is {}, not a float tensor", n, dtype_name(p.dtype())));
    if (is_half(p.dtype()))  // updates of 2^-8 relative size would mostly round away
      throw DTypeError(fmt::format("optimizer: parameter '{}' is {}; keep float32 master weights and compute in {} with "
                                   "nn::AutocastGuard (chainrule train --precision bf16)", n, dtype_name(p.dtype()), dtype_name(p.dtype())));
    if (p.level() != 0) throw AutodiffError(fmt::format("optimizer: parameter '{}' is a tracer of an active transform", n));
  }
  if (!(lr >= 0)) throw ValueError(fmt::format("optimizer: learning rate must be >= 0, got {}", lr));
}

void Optimizer::zero_grad() {
  for (auto& [n, p] : params_) p.zero_grad();
}

std::size_t Optimizer::add_buffer(const std::string& buffer) {
  std::vector<Tensor> bufs;
  for (const auto& [n, p] : params_) bufs.push_back(zeros(p.shape(), p.dtype()));
  buffers_.emplace_back(buffer, std::move(bufs));
  return buffers_.size() - 1;
}

NamedTensors Optimizer::state() const {
  NamedTensors out;
  out.emplace_back("step", scalar_tensor(static_cast<double>(steps_), DType::i64));
  for (const auto& [b, bufs] : buffers_)
    for (std::size_t i = 0; i < params_.size(); ++i) out.emplace_back(b + "." + params_[i].first, bufs[i]);
  return out;
}

void Optimizer::load_state(const std::map<std::string, Tensor>& state) {
  auto it = state.find("step");
  if (it == state.end()) throw ValueError(fmt::format("{}: optimizer state has no 'step'", name()));
  std::int64_t step = static_cast<std::int64_t>(it->second.item());
  NoGradGuard ng;
  for (auto& [b, bufs] : buffers_) {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const std::string key = b + "." + params_[i].first;
      auto s = state.find(key);
      if (s == state.end()) throw ValueError(fmt::format("{}: optimizer state has no '{}'", name(), key));
      if (s->second.shape() != bufs[i].shape() || s->second.dtype() != bufs[i].dtype())
        throw ShapeError(fmt::format("{}: optimizer state '{}' is {} {}, expected {} {}", name(), key, dtype_name(s->second.dtype()),
                                     s->second.shape().str(), dtype_name(bufs[i].dtype()), bufs[i].shape().str()));
      bufs[i].copy_(s->second);
    }
  }
  steps_ = step;
}

namespace {

// Calls fn(p, g, n) with raw pointers of the parameter and its gradient, in the parameter's dtype.
template <class Fn>
void for_each_grad(NamedTensors& params, const char* who, Fn&& fn) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto& [name, p] = params[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.shape() != p.shape() || g.dtype() != p.dtype())
      throw ShapeError(fmt::format("{}: gradient of '{}' is {} {}, parameter is {} {}", who, name, dtype_name(g.dtype()), g.shape().str(),
                                   dtype_name(p.dtype()), p.shape().str()));
    if (p.dtype() == DType::f32)
      fn(i, p.mutable_data<float>(), g.data<float>(), p.numel());
    else
      fn(i, p.mutable_data<double>(), g.data<double>(), p.numel());
  }
}

template <class T> T* buf(Tensor& t) { return t.mutable_data<T>(); }

// The update loops are compiled for AVX-512, AVX2 and baseline x86-64 (CHAINRULE_VECTOR_CLONES).

template <class T>
struct SgdCoefficients {
  T lr, momentum, one_minus_dampening, weight_decay;
  bool first, nesterov;
};
template <class T>
inline void sgd_update_impl(T* __restrict p, const T* __restrict g, T* __restrict b, std::int64_t n, const SgdCoefficients<T>& k) {
  if (!b) {
    for (std::int64_t j = 0; j < n; ++j) p[j] -= k.lr * (g[j] + k.weight_decay * p[j]);
    return;
  }
  for (std::int64_t j = 0; j < n; ++j) {
    const T d = g[j] + k.weight_decay * p[j];
    const T bj = k.first ? d : k.momentum * b[j] + k.one_minus_dampening * d;
    b[j] = bj;
    p[j] -= k.lr * (k.nesterov ? d + k.momentum * bj : bj);
  }
}
CHAINRULE_VECTOR_CLONES void sgd_update(float* p, const float* g, float* b, std::int64_t n, const SgdCoefficients<float>& k) {
  sgd_update_impl(p, g, b, n, k);
}
CHAINRULE_VECTOR_CLONES void sgd_update(double* p, const double* g, double* b, std::int64_t n, const SgdCoefficients<double>& k) {
  sgd_update_impl(p, g, b, n, k);
}

template <class T>
struct AdamCoefficients {
  T beta1, beta2, eps, step_size, inv_sqrt_bc2, decay, l2;
};
template <class T>
inline void adam_update_impl(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, std::int64_t n,
                             const AdamCoefficients<T>& k) {
  for (std::int64_t j = 0; j < n; ++j) {
    const T gj = g[j] + k.l2 * p[j];
    const T mj = k.beta1 * m[j] + (1 - k.beta1) * gj;
    const T vj = k.beta2 * v[j] + (1 - k.beta2) * gj * gj;
    m[j] = mj, v[j] = vj;
    p[j] = k.decay * p[j] - k.step_size * mj / (std::sqrt(vj) * k.inv_sqrt_bc2 + k.eps);
  }
}
CHAINRULE_VECTOR_CLONES void adam_update(float* p, const float* g, float* m, float* v, std::int64_t n,
                                         const AdamCoefficients<float>& k) {
  adam_update_impl(p, g, m, v, n, k);
}
CHAINRULE_VECTOR_CLONES void adam_update(double* p, const double* g, double* m, double* v, std::int64_t n,
                                         const AdamCoefficients<double>& k) {
  adam_update_impl(p, g, m, v, n, k);
}

}  // namespace

// ---- SGD -----------------------------------------------------------------------------------

SGD::SGD(NamedTensors params, SGDOptions opts) : Optimizer(std::move(params), opts.lr), opts_(opts) {
  if (opts.momentum < 0 || opts.weight_decay < 0 || opts.dampening < 0)
    throw ValueError(fmt::format("sgd: momentum {}, dampening {} and weight_decay {} must be >= 0", opts.momentum, opts.dampening,
                                 opts.weight_decay));
  if (opts.nesterov && (opts.momentum <= 0 || opts.dampening != 0))
    throw ValueError("sgd: nesterov needs momentum > 0 and dampening 0");
  if (opts.momentum > 0) momentum_ = add_buffer("momentum_buffer");
}

void SGD::step() {
  NoGradGuard ng;
  const bool first = steps_ == 0;
  const double lr = lr_, mu = opts_.momentum, damp = opts_.dampening, wd = opts_.weight_decay;
  for_each_grad(params_, "sgd", [&](std::size_t i, auto* p, const auto* g, std::int64_t n) {
    using T = std::remove_pointer_t<decltype(p)>;
    T* b = mu > 0 ? buf<T>(buffer(momentum_)[i]) : nullptr;
    const SgdCoefficients<T> k{static_cast<T>(lr), static_cast<T>(mu), static_cast<T>(1 - damp), static_cast<T>(wd),
                               first, opts_.nesterov};
    kernels::parallel_range(n, [&](std::int64_t begin, std::int64_t end) {
      sgd_update(p + begin, g + begin, b ? b + begin : nullptr, end - begin, k);
    });
  });
  ++steps_;
}

// ---- Adam, AdamW ---------------------------------------------------------------------------

Adam::Adam(NamedTensors params, AdamOptions opts) : Adam(std::move(params), opts, false) {}

Adam::Adam(NamedTensors params, AdamOptions opts, bool decoupled) : Optimizer(std::move(params), opts.lr), opts_(opts), decoupled_(decoupled) {
  if (!(opts.beta1 >= 0 && opts.beta1 < 1 && opts.beta2 >= 0 && opts.beta2 < 1))
    throw ValueError(fmt::format("{}: betas must be in [0, 1), got ({}, {})", name(), opts.beta1, opts.beta2));
  if (!(opts.eps >= 0 && opts.weight_decay >= 0))
    throw ValueError(fmt::format("{}: eps {} and weight_decay {} must be >= 0", name(), opts.eps, opts.weight_decay));
  exp_avg_ = add_buffer("exp_avg");
  exp_avg_sq_ = add_buffer("exp_avg_sq");
}

void Adam::step() {
  NoGradGuard ng;
  const double t = static_cast<double>(steps_ + 1);
  const double bc1 = 1 - std::pow(opts_.beta1, t), bc2 = 1 - std::pow(opts_.beta2, t);
  const double step_size = lr_ / bc1, inv_sqrt_bc2 = 1 / std::sqrt(bc2);
  const double decay = decoupled_ ? 1 - lr_ * opts_.weight_decay : 1.0;
  const double l2 = decoupled_ ? 0.0 : opts_.weight_decay;
  for_each_grad(params_, name().c_str(), [&](std::size_t i, auto* p, const auto* g, std::int64_t n) {
    using T = std::remove_pointer_t<decltype(p)>;
    T* m = buf<T>(buffer(exp_avg_)[i]);
    T* v = buf<T>(buffer(exp_avg_sq_)[i]);
    const T b1 = static_cast<T>(opts_.beta1), b2 = static_cast<T>(opts_.beta2), eps = static_cast<T>(opts_.eps);
    const T ss = static_cast<T>(step_size), isb = static_cast<T>(inv_sqrt_bc2), dec = static_cast<T>(decay), tl2 = static_cast<T>(l2);
    const AdamCoefficients<T> k{b1, b2, eps, ss, isb, dec, tl2};
    kernels::parallel_range(n, [&](std::int64_t begin, std::int64_t end) {
      adam_update(p + begin, g + begin, m + begin, v + begin, end - begin, k);
    });
  });
  ++steps_;
}

// ---- clipping ------------------------------------------------------------------------------

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  double sq = 0;
  for (const auto& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    const auto n = g.numel();
    if (g.dtype() == DType::f32) {
      const float* d = g.data<float>();
      for (std::int64_t i = 0; i < n; ++i) sq += static_cast<double>(d[i]) * d[i];
    } else if (is_half(g.dtype())) {
      for (double v : cast(g, DType::f64).to_vector<double>()) sq += v * v;
    } else {
      const double* d = g.data<double>();
      for (std::int64_t i = 0; i < n; ++i) sq += d[i] * d[i];
    }
  }
  const double norm = std::sqrt(sq);
  if (norm > max_norm) {
    NoGradGuard ng;
    const double scale = max_norm / (norm + 1e-6);
    for (const auto& p : params) {
      Tensor g = p.grad();
      if (g.defined()) g.mul_(scale);
    }
  }
  return norm;
}

}  // namespace chainrule::optim
