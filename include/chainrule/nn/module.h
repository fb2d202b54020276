#pragma once
// Modules, as in libtorch: a module owns named parameters (trained), named buffers (state such as
// BatchNorm's running statistics) and named child modules. Names are hierarchical and dotted the way
// PyTorch's state_dict spells them ("0.weight", "2.l1.bias"), so checkpoints move between the two.
//
// A module's tensors live in member fields (`linear->weight`); the base class keeps a pointer to
// each, so functional_call can substitute other tensors (tracers of grad/jacrev/vmap, float64
// copies) for one call without the layer knowing.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chainrule/tensor/tensor.h"

namespace chainrule::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;  // registered slots point into the object
  Module& operator=(const Module&) = delete;

  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
  // The layer's type and configuration, e.g. "Linear(in_features=784, out_features=256)".
  virtual std::string repr() const = 0;

  // Parameters of this module and, recursively, its children, in registration order.
  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  std::vector<std::pair<std::string, Module*>> named_modules();  // "" for this module
  // Parameters and buffers by name (PyTorch's state_dict).
  std::map<std::string, Tensor> state_dict() const;
  // Copies values into the existing tensors (shapes and dtypes must match). With strict, a
  // missing or unexpected name is an error naming it.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);
  std::int64_t num_parameters() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();  // drops every parameter's gradient
  // Converts every parameter and floating buffer to `dtype` (keeping requires_grad).
  void to(DType dtype);
  std::string str(int indent = 0) const;  // the module tree, like print(model) in PyTorch

  // Slot access for functional_call: the tensor stored under a dotted name (nullptr if absent).
  Tensor* find_tensor(const std::string& name);

 protected:
  // Registers `slot` (a member of the derived class) under `name` and stores `value` in it.
  Tensor& register_parameter(const std::string& name, Tensor& slot, Tensor value, bool requires_grad = true);
  Tensor& register_buffer(const std::string& name, Tensor& slot, Tensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }
  void add_child(const std::string& name, std::shared_ptr<Module> m);

 private:
  struct Slot {
    std::string name;
    Tensor* tensor;
  };
  std::vector<Slot> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

using ModulePtr = std::shared_ptr<Module>;

// Runs module.forward(input) with the named tensors of `params` (parameters or buffers) in place of
// the module's own, restoring them afterwards (also on an exception). Names missing from `params`
// keep the module's tensors; a name the module does not have is an error. This is what lets grad,
// jacrev, jvp and vmap differentiate a model with respect to its parameters:
//   auto g = grad([&](const std::vector<Tensor>& p) { return loss(functional_call(m, zip(names, p), x)); })(values);
Tensor functional_call(Module& module, const std::map<std::string, Tensor>& params, const Tensor& input);

}  // namespace chainrule::nn
