#include "chainrule/nn/module.h"

#include <fmt/format.h>

#include <set>

#include "chainrule/autodiff/frame.h"
#include "chainrule/ops/ops.h"

namespace chainrule::nn {

namespace {
std::string join(const std::string& prefix, const std::string& name) { return prefix.empty() ? name : prefix + "." + name; }
}  // namespace

Tensor& Module::register_parameter(const std::string& name, Tensor& slot, Tensor value, bool requires_grad) {
  if (name.empty() || name.find('.') != std::string::npos)
    throw ValueError(fmt::format("register_parameter: invalid name '{}' (non-empty, no dots)", name));
  for (const auto& s : params_)
    if (s.name == name) throw ValueError(fmt::format("register_parameter: '{}' is already registered", name));
  slot = std::move(value);
  if (requires_grad) slot.requires_grad_(true);
  params_.push_back({name, &slot});
  return slot;
}

Tensor& Module::register_buffer(const std::string& name, Tensor& slot, Tensor value) {
  if (name.empty() || name.find('.') != std::string::npos)
    throw ValueError(fmt::format("register_buffer: invalid name '{}' (non-empty, no dots)", name));
  slot = std::move(value);
  buffers_.push_back({name, &slot});
  return slot;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  if (!m) throw ValueError(fmt::format("register_module: module '{}' is null", name));
  if (name.empty() || name.find('.') != std::string::npos)
    throw ValueError(fmt::format("register_module: invalid name '{}' (non-empty, no dots)", name));
  for (const auto& [n, c] : children_)
    if (n == name) throw ValueError(fmt::format("register_module: '{}' is already registered", name));
  children_.emplace_back(name, std::move(m));
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  for (const auto& s : params_) out.emplace_back(s.name, *s.tensor);
  if (recurse)
    for (const auto& [n, c] : children_)
      for (auto& [cn, t] : c->named_parameters(true)) out.emplace_back(join(n, cn), t);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  for (const auto& s : buffers_) out.emplace_back(s.name, *s.tensor);
  if (recurse)
    for (const auto& [n, c] : children_)
      for (auto& [cn, t] : c->named_buffers(true)) out.emplace_back(join(n, cn), t);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const { return children_; }

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (const auto& [n, c] : children_)
    for (auto& [cn, m] : c->named_modules()) out.emplace_back(join(n, cn), m);
  return out;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [n, t] : named_parameters()) out.emplace(n, t);
  for (auto& [n, t] : named_buffers()) out.emplace(n, t);
  return out;
}

Tensor* Module::find_tensor(const std::string& name) {
  auto dot = name.find('.');
  if (dot == std::string::npos) {
    for (auto& s : params_)
      if (s.name == name) return s.tensor;
    for (auto& s : buffers_)
      if (s.name == name) return s.tensor;
    return nullptr;
  }
  const std::string head = name.substr(0, dot);
  for (auto& [n, c] : children_)
    if (n == head) return c->find_tensor(name.substr(dot + 1));
  return nullptr;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  auto own = state_dict();
  if (strict) {
    for (const auto& [n, t] : own)
      if (!state.count(n)) throw ValueError(fmt::format("load_state_dict: missing '{}' (shape {})", n, t.shape().str()));
    for (const auto& [n, t] : state)
      if (!own.count(n)) throw ValueError(fmt::format("load_state_dict: unexpected '{}' (shape {})", n, t.shape().str()));
  }
  NoGradGuard ng;
  for (const auto& [n, src] : state) {
    Tensor* dst = find_tensor(n);
    if (!dst) continue;
    if (dst->shape() != src.shape())
      throw ShapeError(fmt::format("load_state_dict: '{}' has shape {} in the model but {} in the state", n, dst->shape().str(),
                                   src.shape().str()));
    dst->copy_(src.dtype() == dst->dtype() ? src : cast(src.detach(), dst->dtype()));
  }
}

std::int64_t Module::num_parameters() const {
  std::int64_t n = 0;
  for (const auto& t : parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::zero_grad() {
  for (auto& t : parameters()) t.zero_grad();
}

void Module::to(DType dtype) {
  for (auto& s : params_) {
    if (s.tensor->dtype() == dtype) continue;
    Tensor t = cast(s.tensor->detach(), dtype).detach();
    t.requires_grad_(s.tensor->requires_grad());
    *s.tensor = t;
  }
  for (auto& s : buffers_)
    if (is_floating(s.tensor->dtype()) && s.tensor->dtype() != dtype) *s.tensor = cast(s.tensor->detach(), dtype).detach();
  for (auto& [n, c] : children_) c->to(dtype);
}

std::string Module::str(int indent) const {
  std::string pad(static_cast<std::size_t>(indent), ' ');
  std::string s = repr();
  if (children_.empty()) return s;
  s += "(\n";
  for (const auto& [n, c] : children_) s += pad + "  (" + n + "): " + c->str(indent + 2) + "\n";
  return s + pad + ")";
}

Tensor functional_call(Module& module, const std::map<std::string, Tensor>& params, const Tensor& input) {
  struct Swap {
    Tensor* slot;
    Tensor saved;
  };
  std::vector<Swap> swaps;
  struct Restore {
    std::vector<Swap>& s;
    ~Restore() {
      for (auto it = s.rbegin(); it != s.rend(); ++it) *it->slot = std::move(it->saved);
    }
  } restore{swaps};
  for (const auto& [name, t] : params) {
    Tensor* slot = module.find_tensor(name);
    if (!slot) {
      std::string known;
      for (auto& [n, v] : module.state_dict()) known += (known.empty() ? "" : ", ") + n;
      throw ValueError(fmt::format("functional_call: the module has no parameter or buffer '{}' (has: {})", name, known));
    }
    if (slot->defined() && slot->shape() != t.shape())
      throw ShapeError(fmt::format("functional_call: '{}' has shape {} in the module but {} was given", name, slot->shape().str(),
                                   t.shape().str()));
    swaps.push_back({slot, *slot});
    *slot = t;
  }
  return module.forward(input);
}

}  // namespace chainrule::nn
