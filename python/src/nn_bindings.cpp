// chainrule.nn, chainrule.optim, chainrule.data, chainrule.io and train() (pybind11). The
// package's python/chainrule/{nn,optim,data,io}.py re-export these submodules of _core and add
// the pure-Python parts (functional_call's argument forms, train()'s progress output).
//
// GIL: held, as in module.cpp, except where no Python can run: a module's forward on a concrete
// input, train_step with a built-in loss, the data loaders, evaluate, and train() (whose
// callbacks take the GIL back for each call).
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chainrule/chainrule.h>
#include <chainrule/data/dataset.h>
#include <chainrule/data/loader.h>
#include <chainrule/nn/nn.h>
#include <chainrule/nn/train.h>
#include <chainrule/optim/optimizer.h>
#include <chainrule/optim/schedule.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"

namespace py = pybind11;
using namespace chainrule;

namespace chainrule::python {

DType dtype_arg(const py::handle& h) {
  if (py::isinstance<DType>(h)) return h.cast<DType>();
  std::string s;
  if (py::isinstance<py::str>(h)) {
    s = h.cast<std::string>();
  } else {
    s = py::str(py::dtype::from_args(py::reinterpret_borrow<py::object>(h)).attr("name"));
  }
  if (s == "float32" || s == "f32") return DType::f32;
  if (s == "float64" || s == "f64") return DType::f64;
  if (s == "int64" || s == "i64") return DType::i64;
  if (s == "bool" || s == "b8") return DType::b8;
  throw DTypeError("dtype: unknown dtype '" + s + "' (float32, float64, int64, bool)");
}

namespace {

using Pair = std::array<std::int64_t, 2>;

DType dtype_or_default(const py::object& d) { return d.is_none() ? get_default_dtype() : dtype_arg(d); }

Pair pair_arg(const py::handle& o, const char* what) {
  if (py::isinstance<py::int_>(o)) {
    auto v = o.cast<std::int64_t>();
    return {v, v};
  }
  auto v = o.cast<std::vector<std::int64_t>>();
  if (v.size() != 2) throw chainrule::ValueError(std::string(what) + ": expected an int or a pair of ints, got " + std::to_string(v.size()) + " values");
  return {v[0], v[1]};
}

// A tensor argument given as a Tensor, a numpy array or a nested list (converted by chainrule.tensor).
Tensor tensor_arg(const py::handle& h) {
  if (py::isinstance<Tensor>(h)) return h.cast<Tensor>();
  return py::module_::import("chainrule._core").attr("tensor")(h).cast<Tensor>();
}

std::map<std::string, Tensor> tensor_map(const py::dict& d) {
  std::map<std::string, Tensor> out;
  for (auto [k, v] : d) out.emplace(k.cast<std::string>(), tensor_arg(v));
  return out;
}

py::list pairs(const nn::NamedTensors& named) {
  py::list l;
  for (const auto& [n, t] : named) l.append(py::make_tuple(n, t));
  return l;
}

// The default generator of initialisers and of layers built from Python (torch.manual_seed).
Generator& default_generator() {
  static Generator g(0);
  return g;
}
Shape shape_arg(const py::object& s) {
  if (py::isinstance<py::int_>(s)) return Shape{s.cast<std::int64_t>()};
  return Shape(s.cast<std::vector<std::int64_t>>());
}

Generator& gen_arg(const py::object& g) { return g.is_none() ? default_generator() : g.cast<Generator&>(); }

// A module's forward: without the GIL on a concrete input (pure C++: no Python runs in a layer).
Tensor run_forward(nn::Module& m, const Tensor& x) {
  if (x.level() == 0) {
    py::gil_scoped_release nogil;
    return m.forward(x);
  }
  return m.forward(x);
}

// Every module below `m` by dotted name, m itself first as "" (PyTorch's named_modules).
void collect_modules(const std::string& prefix, const nn::ModulePtr& m, std::vector<std::pair<std::string, nn::ModulePtr>>& out) {
  out.emplace_back(prefix, m);
  for (const auto& [n, c] : m->named_children()) collect_modules(prefix.empty() ? n : prefix + "." + n, c, out);
}

// state_dict in PyTorch's order: each module's parameters, then its buffers, depth first.
py::dict state_dict_of(const nn::ModulePtr& m) {
  std::vector<std::pair<std::string, nn::ModulePtr>> mods;
  collect_modules("", m, mods);
  py::dict d;
  for (const auto& [prefix, mod] : mods) {
    auto add = [&](const nn::NamedTensors& ts) {
      for (const auto& [n, t] : ts) d[py::str(prefix.empty() ? n : prefix + "." + n)] = t;
    };
    add(mod->named_parameters(false));
    add(mod->named_buffers(false));
  }
  return d;
}

nn::Nonlinearity nonlinearity_arg(const std::string& s) {
  if (s == "linear" || s == "identity" || s.starts_with("conv")) return nn::Nonlinearity::Linear;
  if (s == "relu") return nn::Nonlinearity::ReLU;
  if (s == "leaky_relu") return nn::Nonlinearity::LeakyReLU;
  if (s == "tanh") return nn::Nonlinearity::Tanh;
  if (s == "sigmoid") return nn::Nonlinearity::Sigmoid;
  throw chainrule::ValueError("nn.init: unknown nonlinearity '" + s + "' (linear, conv2d, relu, leaky_relu, tanh, sigmoid)");
}

nn::FanMode mode_arg(const std::string& s) {
  if (s == "fan_in") return nn::FanMode::FanIn;
  if (s == "fan_out") return nn::FanMode::FanOut;
  if (s == "fan_avg") return nn::FanMode::FanAvg;
  throw chainrule::ValueError("nn.init: mode must be 'fan_in', 'fan_out' or 'fan_avg', got '" + s + "'");
}

nn::BlockLayout layout_arg(const std::string& s) {
  if (s == "lrl") return nn::BlockLayout::LRL;
  if (s == "pre") return nn::BlockLayout::Pre;
  if (s == "lrlr") return nn::BlockLayout::LRLR;
  throw chainrule::ValueError("ResidualBlock: layout must be 'lrl', 'pre' or 'lrlr', got '" + s + "'");
}

nn::BlockNorm norm_arg(const std::string& s) {
  if (s == "none") return nn::BlockNorm::None;
  if (s == "layernorm" || s == "ln") return nn::BlockNorm::LayerNorm;
  if (s == "batchnorm" || s == "bn") return nn::BlockNorm::BatchNorm;
  throw chainrule::ValueError("ResidualBlock: norm must be 'none', 'layernorm' or 'batchnorm', got '" + s + "'");
}

Reduction reduction_arg(const std::string& r) {
  if (r == "mean") return Reduction::Mean;
  if (r == "sum") return Reduction::Sum;
  if (r == "none") return Reduction::None;
  throw chainrule::ValueError("reduction must be 'mean', 'sum' or 'none', got '" + r + "'");
}

// Optimisers keep their parameters' names, so that step(grads) can take a dict of gradients.
struct NamedParams {
  virtual ~NamedParams() = default;
  virtual const nn::NamedTensors& named() const = 0;
};
template <class O>
struct PyOpt : O, NamedParams {
  using O::O;
  const nn::NamedTensors& named() const override { return this->params_; }
};

// Parameters given as a Module, a dict name -> Tensor, (name, Tensor) pairs, or Tensors (named
// "0", "1", ... as in PyTorch's optimiser state).
nn::NamedTensors params_list(const py::handle& p) {
  if (py::isinstance<nn::Module>(p)) return p.cast<nn::Module&>().named_parameters();
  nn::NamedTensors out;
  if (py::isinstance<py::dict>(p)) {
    for (auto [k, v] : py::reinterpret_borrow<py::dict>(p)) out.emplace_back(k.cast<std::string>(), v.cast<Tensor>());
    return out;
  }
  std::size_t i = 0;
  for (auto h : py::iter(p)) {
    if (py::isinstance<Tensor>(h)) {
      out.emplace_back(std::to_string(i), h.cast<Tensor>());
    } else {
      auto t = h.cast<py::tuple>();
      if (t.size() != 2) throw chainrule::ValueError("optimizer: parameters must be Tensors or (name, Tensor) pairs");
      out.emplace_back(t[0].cast<std::string>(), t[1].cast<Tensor>());
    }
    ++i;
  }
  return out;
}

nn::NamedTensors params_arg(const py::handle& p) {
  nn::NamedTensors out = params_list(p);
  if (out.empty()) throw chainrule::ValueError("optimizer: got an empty parameter list");
  // Gradients are kept on leaves that require them (backward() and step(grads) alike).
  for (auto& [n, t] : out)
    if (!t.requires_grad()) t.requires_grad_(true);
  return out;
}

// C++'s "bias=true" as Python spells it, "bias=True", in a module's repr.
std::string python_bools(std::string s) {
  for (auto [from, to] : {std::pair{"=true", "=True"}, std::pair{"=false", "=False"}})
    for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at + 1)) s.replace(at, std::string(from).size(), to);
  return s;
}

// opt.step(grads): the gradients, by name (dict) or in order (sequence), replace the parameters'
// accumulated ones; parameters not given get none, so the step skips them.
void set_grads(optim::Optimizer& opt, const py::object& grads) {
  const auto& named = dynamic_cast<const NamedParams&>(opt).named();
  if (py::isinstance<py::dict>(grads)) {
    auto d = grads.cast<py::dict>();
    // Every key is checked before any gradient is touched, so a bad call changes nothing.
    for (auto [k, v] : d) {
      auto ks = py::str(k).cast<std::string>();
      bool found = false;
      for (const auto& [n, t] : named) found = found || n == ks;
      if (found) continue;
      std::string known;
      for (std::size_t i = 0; i < named.size() && i < 6; ++i) known += (i ? ", '" : "'") + named[i].first + "'";
      if (named.size() > 6) known += ", ...";
      throw chainrule::ValueError("optimizer.step: gradient '" + ks + "' names no parameter of this optimizer (its " +
                                  std::to_string(named.size()) + " parameters are " + known +
                                  "; an optimizer built from a list names them by position: pass a list of gradients in "
                                  "that order, or build it from a dict such as dict(model.named_parameters()))");
    }
    for (const auto& [n, t] : named) {
      py::str key(n);
      if (d.contains(key)) t.set_grad(tensor_arg(d[key]));
      else t.zero_grad();
    }
    return;
  }
  auto seq = grads.cast<py::sequence>();
  if (seq.size() != named.size())
    throw chainrule::ValueError("optimizer.step: " + std::to_string(seq.size()) + " gradients for " + std::to_string(named.size()) + " parameters");
  for (std::size_t i = 0; i < named.size(); ++i) {
    if (seq[i].is_none()) named[i].second.zero_grad();
    else named[i].second.set_grad(tensor_arg(seq[i]));
  }
}

// A Python callable kept by C++ code that may copy it without the GIL: copies share one
// py::object, released by the holder that is destroyed last (with the GIL, in the caller).
using PyRef = std::shared_ptr<py::object>;

// An iterator over one epoch of a DataLoader; each iter(loader) starts the next epoch.
struct PyLoader {
  std::shared_ptr<data::DataLoader> loader;
  std::int64_t next_epoch = 0;
};
struct LoaderIter {
  std::shared_ptr<data::DataLoader> loader;
  std::vector<std::int64_t> order;
  std::int64_t epoch = 0, index = 0;
};

// A module defined in Python (class Net(nn.Module)): forward is the Python method; attributes
// assigned a Module become children and Tensors that require grad (nn.Parameter) become
// parameters, registered under their attribute names as PyTorch does. Their tensors live in
// slots here, so that functional_call's substitutions are what `self.weight` reads.
class PyModule : public nn::Module {
 public:
  Tensor forward(const Tensor& x) override {
    py::gil_scoped_acquire gil;
    py::function f = py::get_override(static_cast<const nn::Module*>(this), "forward");
    if (!f) {
      PyErr_SetString(PyExc_NotImplementedError, ("Module [" + class_name() + "] is missing the required \"forward\" function").c_str());
      throw py::error_already_set();
    }
    py::object out = f(x);
    if (!py::isinstance<Tensor>(out))
      throw py::type_error(class_name() + ".forward must return a Tensor, got " + std::string(py::str(py::type::of(out).attr("__name__"))));
    return out.cast<Tensor>();
  }
  // As PyTorch prints it: "Net()" alone, "Net(" followed by the children otherwise.
  std::string repr() const override { return class_name() + (named_children().empty() ? "()" : ""); }
  Tensor& add_parameter(const std::string& name, Tensor value, bool requires_grad) {
    slots_.emplace_back();
    return register_parameter(name, slots_.back(), std::move(value), requires_grad);
  }
  Tensor& add_buffer(const std::string& name, Tensor value) {
    slots_.emplace_back();
    return register_buffer(name, slots_.back(), std::move(value));
  }
  void add_module(const std::string& name, nn::ModulePtr mod) { add_child(name, std::move(mod)); }
  std::string class_name() const {
    py::gil_scoped_acquire gil;
    py::object self = py::cast(const_cast<PyModule*>(this), py::return_value_policy::reference);
    return py::str(py::type::of(self).attr("__name__"));
  }

 private:
  std::deque<Tensor> slots_;  // stable addresses for the registered slots
};

// A layer's tensor field as a property: an undefined tensor (no bias) reads as None.
template <class C>
auto tensor_get(Tensor C::*field) {
  return [field](const C& c) -> py::object { return (c.*field).defined() ? py::cast(c.*field) : py::none(); };
}
template <class C>
auto tensor_set(Tensor C::*field) {
  return [field](C& c, std::optional<Tensor> t) { c.*field = t.value_or(Tensor()); };
}

// A Python subclass's instance before its super().__init__() has no C++ module yet.
nn::Module& initialized_module(py::handle self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self.ptr());
  if (!inst->get_value_and_holder().holder_constructed())  // the most derived bound type's part
    throw py::type_error(std::string(py::str(py::type::of(self).attr("__name__"))) +
                         ": call super().__init__() before using the module or assigning its attributes");
  return self.cast<nn::Module&>();
}

nn::ModulePtr module_arg(const py::handle& h, const char* what) {
  if (!py::isinstance<nn::Module>(h))
    throw py::type_error(std::string(what) + ": expected a Module, got " + std::string(py::str(py::type::of(h).attr("__name__"))));
  return h.cast<nn::ModulePtr>();
}

PyModule& py_module(py::handle self, const char* what) {
  auto* pm = dynamic_cast<PyModule*>(&initialized_module(self));
  if (!pm) throw chainrule::ValueError(std::string(what) + ": only modules defined in Python (subclasses of nn.Module) can register new members");
  return *pm;
}

// Python children are kept alive by their parent's Python object (C++ holds the C++ part only).
void keep_child(py::handle self, const std::string& name, py::handle child) {
  py::dict d = self.attr("__dict__");
  if (!d.contains("_chainrule_children")) d["_chainrule_children"] = py::dict();
  d["_chainrule_children"][py::str(name)] = child;
}

}  // namespace

void bind_nn(py::module_& m) {
  // ---- random numbers and the default dtype (tensor/random.h, tensor/dtype.h) ----
  py::class_<Generator>(m, "Generator", "A counter-based random generator (seed, counter); chainrule.manual_seed seeds the default one.")
      .def(py::init<std::uint64_t>(), py::arg("seed") = 0)
      .def("seed", &Generator::seed)
      .def("counter", &Generator::counter)
      .def("set_state", &Generator::set_state, py::arg("seed"), py::arg("counter"))
      .def("manual_seed", [](Generator& g, std::uint64_t s) -> Generator& { g.set_state(s, 0); return g; }, py::arg("seed"),
           py::return_value_policy::reference_internal)
      .def("__repr__", [](const Generator& g) { return "Generator(seed=" + std::to_string(g.seed()) + ", counter=" + std::to_string(g.counter()) + ")"; });
  m.def("manual_seed", [](std::uint64_t s) { default_generator().set_state(s, 0); }, py::arg("seed"),
        "Seeds the default generator (initialisers and layers built from Python).");
  m.def("default_generator", &default_generator, py::return_value_policy::reference);
  m.def("randn", [](py::object s, py::object g, py::object d) { return randn(shape_arg(s), gen_arg(g), dtype_or_default(d)); },
        py::arg("shape"), py::arg("generator") = py::none(), py::arg("dtype") = py::none());
  m.def("rand", [](py::object s, py::object g, py::object d) { return rand(shape_arg(s), gen_arg(g), dtype_or_default(d)); },
        py::arg("shape"), py::arg("generator") = py::none(), py::arg("dtype") = py::none());
  m.def("is_grad_enabled", &GradMode::is_enabled, "Whether eager reverse mode records operations (this thread).");
  m.def("set_grad_enabled", &GradMode::set_enabled, py::arg("mode"), "torch.set_grad_enabled (this thread); see chainrule.no_grad.");
  m.def("set_default_dtype", [](py::object d) { set_default_dtype(dtype_arg(d)); }, py::arg("dtype"));
  m.def("get_default_dtype", &get_default_dtype);

  // Tensor methods of eager reverse mode (PyTorch's), added to the class module.cpp defines.
  py::object cls = m.attr("Tensor");
  py::object property = py::module_::import("builtins").attr("property");
  cls.attr("backward") = py::cpp_function(
      [](const Tensor& t, std::optional<Tensor> gradient, bool retain_graph, bool create_graph) {
        t.backward(gradient.value_or(Tensor()), retain_graph, create_graph);
      },
      py::name("backward"), py::is_method(cls), py::arg("gradient") = py::none(), py::arg("retain_graph") = false,
      py::arg("create_graph") = false, "Reverse mode from this tensor into the .grad of the leaves that require it.");
  cls.attr("requires_grad_") = py::cpp_function([](Tensor& t, bool on) { return t.requires_grad_(on); }, py::name("requires_grad_"),
                                                py::is_method(cls), py::arg("requires_grad") = true);
  cls.attr("requires_grad") = property(py::cpp_function([](const Tensor& t) { return t.requires_grad(); }),
                                       py::cpp_function([](Tensor& t, bool on) { t.requires_grad_(on); }));
  cls.attr("grad") = property(py::cpp_function([](const Tensor& t) -> py::object {
                                Tensor g = t.grad();
                                return g.defined() ? py::cast(g) : py::none();
                              }),
                              py::cpp_function([](const Tensor& t, std::optional<Tensor> g) {
                                if (g) t.set_grad(*g);
                                else t.zero_grad();
                              }));
  cls.attr("is_leaf") = property(py::cpp_function([](const Tensor& t) { return t.is_leaf(); }));

  // ---- chainrule.nn ----
  auto nnm = m.def_submodule("nn", "Modules with PyTorch's names, model specs, functional_call, initialisers and losses.");
  py::class_<nn::Module, PyModule, nn::ModulePtr> Mod(nnm, "Module", py::dynamic_attr(), R"doc(A module: parameters, buffers and children under PyTorch's names.

The layers are C++ classes; a Python subclass defines forward(self, x) and assigns children
(self.fc = nn.Linear(...)) and parameters (self.w = nn.Parameter(t): a Tensor that requires grad)
as attributes, after super().__init__(), as in PyTorch.)doc");
  Mod.def(py::init<>())
      .def("__call__", &run_forward, py::arg("x"))
      .def("forward", &run_forward, py::arg("x"))
      .def("__repr__", [](const nn::Module& mod) { return python_bools(mod.str()); })
      .def("named_parameters", [](const nn::Module& mod, bool r) { return pairs(mod.named_parameters(r)); }, py::arg("recurse") = true,
           "(name, Tensor) pairs, PyTorch's names; dict(m.named_parameters()) is the dict functional_call takes.")
      .def("parameters", &nn::Module::parameters, py::arg("recurse") = true)
      .def("named_buffers", [](const nn::Module& mod, bool r) { return pairs(mod.named_buffers(r)); }, py::arg("recurse") = true)
      .def("buffers", [](const nn::Module& mod, bool r) {
        std::vector<Tensor> v;
        for (auto& [n, t] : mod.named_buffers(r)) v.push_back(t);
        return v;
      }, py::arg("recurse") = true)
      .def("named_children", &nn::Module::named_children)
      .def("children", [](const nn::Module& mod) {
        std::vector<nn::ModulePtr> v;
        for (auto& [n, c] : mod.named_children()) v.push_back(c);
        return v;
      })
      .def("named_modules", [](nn::ModulePtr self) {
        std::vector<std::pair<std::string, nn::ModulePtr>> out;
        collect_modules("", self, out);
        return out;
      })
      .def("modules", [](nn::ModulePtr self) {
        std::vector<std::pair<std::string, nn::ModulePtr>> out;
        collect_modules("", self, out);
        std::vector<nn::ModulePtr> v;
        for (auto& [n, c] : out) v.push_back(c);
        return v;
      })
      .def("state_dict", &state_dict_of, "Parameters and buffers by name (a dict in PyTorch's order; tensors shared with the module).")
      .def("load_state_dict", [](nn::Module& mod, const py::dict& d, bool strict) { mod.load_state_dict(tensor_map(d), strict); },
           py::arg("state_dict"), py::arg("strict") = true, "Copies values into the module's tensors (shapes and dtypes must match).")
      .def("num_parameters", &nn::Module::num_parameters)
      .def("train", [](nn::ModulePtr self, bool on) { self->train(on); return self; }, py::arg("mode") = true)
      .def("eval", [](nn::ModulePtr self) { self->eval(); return self; })
      .def_property_readonly("training", &nn::Module::is_training)
      .def("zero_grad", &nn::Module::zero_grad)
      .def("to", [](nn::ModulePtr self, py::object d) { self->to(dtype_arg(d)); return self; }, py::arg("dtype"))
      .def("__setattr__", [](py::object self, const std::string& name, py::object value) {
        auto* pm = dynamic_cast<PyModule*>(&initialized_module(self));
        if (pm && !name.starts_with("_")) {
          if (py::isinstance<nn::Module>(value)) {
            pm->add_module(name, value.cast<nn::ModulePtr>());
            keep_child(self, name, value);
            return;
          }
          if (py::isinstance<Tensor>(value)) {
            Tensor t = value.cast<Tensor>();
            if (Tensor* slot = pm->find_tensor(name)) {
              *slot = t;
              return;
            }
            if (t.requires_grad()) {
              pm->add_parameter(name, t, true);
              return;
            }
          }
        }
        py::module_::import("builtins").attr("object").attr("__setattr__")(self, name, value);
      })
      .def("register_parameter", [](py::object self, const std::string& name, const Tensor& t) {
        py_module(self, "register_parameter").add_parameter(name, t, true);
      }, py::arg("name"), py::arg("param"))
      .def("register_buffer", [](py::object self, const std::string& name, const Tensor& t) {
        py_module(self, "register_buffer").add_buffer(name, t);
      }, py::arg("name"), py::arg("tensor"))
      .def("add_module", [](py::object self, const std::string& name, py::object mod) {
        py_module(self, "add_module").add_module(name, mod.cast<nn::ModulePtr>());
        keep_child(self, name, mod);
      }, py::arg("name"), py::arg("module"))
      .def("__getattr__", [](py::object self, const std::string& name) -> py::object {
        if (name.starts_with("__")) throw py::attribute_error(name);  // copy, pickle and friends probe these
        nn::Module& mod = initialized_module(self);
        for (auto& [n, c] : mod.named_children())
          if (n == name) return py::cast(c);
        if (Tensor* t = mod.find_tensor(name)) return t->defined() ? py::cast(*t) : py::none();
        throw py::attribute_error("module " + mod.repr() + " has no attribute, child, parameter or buffer '" + name + "'");
      });

  auto linear_init = [](nn::Linear& l, Generator& g) {
    // PyTorch's nn.Linear default: U(±1/sqrt(in_features)) for weight and bias.
    const double b = 1.0 / std::sqrt(static_cast<double>(l.in_features));
    nn::uniform_(l.weight, g, -b, b);
    if (l.bias.defined()) nn::uniform_(l.bias, g, -b, b);
  };
  py::class_<nn::Linear, nn::Module, std::shared_ptr<nn::Linear>>(nnm, "Linear")
      .def(py::init([linear_init](std::int64_t in, std::int64_t out, bool bias, py::object dtype, py::object generator) {
             auto l = std::make_shared<nn::Linear>(in, out, nn::LinearOptions{.bias = bias, .dtype = dtype_or_default(dtype)});
             linear_init(*l, gen_arg(generator));
             return l;
           }),
           py::arg("in_features"), py::arg("out_features"), py::arg("bias") = true, py::arg("dtype") = py::none(),
           py::arg("generator") = py::none(),
           "torch.nn.Linear, initialised as PyTorch (U(±1/sqrt(in_features))) from `generator` or the default one.")
      .def_readonly("in_features", &nn::Linear::in_features)
      .def_readonly("out_features", &nn::Linear::out_features)
      .def_property("weight", tensor_get(&nn::Linear::weight), tensor_set(&nn::Linear::weight))
      .def_property("bias", tensor_get(&nn::Linear::bias), tensor_set(&nn::Linear::bias));

  py::class_<nn::Sequential, nn::Module, std::shared_ptr<nn::Sequential>>(nnm, "Sequential")
      .def(py::init([](py::args args) {
        auto s = std::make_shared<nn::Sequential>();
        auto add_all = [&](const py::handle& h) {
          if (py::isinstance<py::dict>(h) || py::hasattr(h, "items")) {
            for (auto kv : h.attr("items")()) {
              auto t = kv.cast<py::tuple>();
              s->push_back(t[0].cast<std::string>(), module_arg(t[1], "Sequential"));
            }
          } else if (py::isinstance<py::iterable>(h)) {
            for (auto e : h) s->push_back(module_arg(e, "Sequential"));
          } else {
            s->push_back(module_arg(h, "Sequential"));
          }
        };
        if (args.size() == 1 && !py::isinstance<nn::Module>(args[0])) add_all(args[0]);
        else for (auto a : args) s->push_back(module_arg(a, "Sequential"));
        return s;
      }), py::keep_alive<1, 2>(), "Sequential(*modules), Sequential([modules]) or Sequential(OrderedDict(name=module)).")
      .def("append", [](std::shared_ptr<nn::Sequential> s, nn::ModulePtr l) { s->push_back(std::move(l)); return s; }, py::arg("module"),
           py::keep_alive<1, 2>())
      .def("__len__", &nn::Sequential::size)
      .def("__getitem__", [](const nn::Sequential& s, std::int64_t i) {
        const auto n = static_cast<std::int64_t>(s.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) throw py::index_error("Sequential: index out of range for " + std::to_string(n) + " layers");
        return s[static_cast<std::size_t>(i)];
      })
      .def("set_checkpoint_segments", &nn::Sequential::set_checkpoint_segments, py::arg("n"))
      .def_property_readonly("checkpoint_segments", &nn::Sequential::checkpoint_segments);

  py::class_<nn::Residual, nn::Module, std::shared_ptr<nn::Residual>>(nnm, "Residual")
      .def(py::init<nn::ModulePtr>(), py::arg("fn"), py::keep_alive<1, 2>());
  py::class_<nn::LayerNorm, nn::Module, std::shared_ptr<nn::LayerNorm>>(nnm, "LayerNorm")
      .def(py::init([](std::int64_t f, double eps, bool affine, py::object d) { return std::make_shared<nn::LayerNorm>(f, eps, affine, dtype_or_default(d)); }),
           py::arg("normalized_shape"), py::arg("eps") = 1e-5, py::arg("elementwise_affine") = true, py::arg("dtype") = py::none())
      .def_property("weight", tensor_get(&nn::LayerNorm::weight), tensor_set(&nn::LayerNorm::weight))
      .def_property("bias", tensor_get(&nn::LayerNorm::bias), tensor_set(&nn::LayerNorm::bias));
#define BN(Cls)                                                                                                         \
  py::class_<nn::Cls, nn::Module, std::shared_ptr<nn::Cls>>(nnm, #Cls)                                                  \
      .def(py::init([](std::int64_t f, double eps, double mom, bool affine, py::object d) {                             \
             return std::make_shared<nn::Cls>(f, eps, mom, affine, dtype_or_default(d));                                \
           }),                                                                                                          \
           py::arg("num_features"), py::arg("eps") = 1e-5, py::arg("momentum") = 0.1, py::arg("affine") = true,          \
           py::arg("dtype") = py::none())                                                                               \
      .def_property("weight", tensor_get(&nn::Cls::weight), tensor_set(&nn::Cls::weight))                                                                        \
      .def_property("bias", tensor_get(&nn::Cls::bias), tensor_set(&nn::Cls::bias))                                                                            \
      .def_property("running_mean", tensor_get(&nn::Cls::running_mean), tensor_set(&nn::Cls::running_mean))                                                            \
      .def_property("running_var", tensor_get(&nn::Cls::running_var), tensor_set(&nn::Cls::running_var));
  BN(BatchNorm1d) BN(BatchNorm2d)
#undef BN
  py::class_<nn::GroupNorm, nn::Module, std::shared_ptr<nn::GroupNorm>>(nnm, "GroupNorm")
      .def(py::init([](std::int64_t g, std::int64_t c, double eps, bool affine, py::object d) {
             return std::make_shared<nn::GroupNorm>(g, c, eps, affine, dtype_or_default(d));
           }),
           py::arg("num_groups"), py::arg("num_channels"), py::arg("eps") = 1e-5, py::arg("affine") = true, py::arg("dtype") = py::none())
      .def_property("weight", tensor_get(&nn::GroupNorm::weight), tensor_set(&nn::GroupNorm::weight))
      .def_property("bias", tensor_get(&nn::GroupNorm::bias), tensor_set(&nn::GroupNorm::bias));
  py::class_<nn::Dropout, nn::Module, std::shared_ptr<nn::Dropout>>(nnm, "Dropout")
      .def(py::init<double, std::uint64_t>(), py::arg("p") = 0.5, py::arg("seed") = 0)
      .def_readonly("p", &nn::Dropout::p);
  py::class_<nn::ResidualBlock, nn::Module, std::shared_ptr<nn::ResidualBlock>>(nnm, "ResidualBlock")
      .def(py::init([](std::int64_t w, const std::string& layout, const std::string& norm, py::object d, double p, std::uint64_t seed) {
             return std::make_shared<nn::ResidualBlock>(w, layout_arg(layout), norm_arg(norm), dtype_or_default(d), p, seed);
           }),
           py::arg("width"), py::arg("layout") = "lrl", py::arg("norm") = "none", py::arg("dtype") = py::none(), py::arg("dropout") = 0.0,
           py::arg("dropout_seed") = 0);

  py::class_<nn::Conv2d, nn::Module, std::shared_ptr<nn::Conv2d>>(nnm, "Conv2d")
      .def(py::init([](std::int64_t in, std::int64_t out, py::object k, py::object stride, py::object padding, py::object dilation,
                       std::int64_t groups, bool bias, py::object d, std::uint64_t seed) {
             nn::Conv2dLayerOptions o;
             o.stride = pair_arg(stride, "Conv2d stride");
             if (py::isinstance<py::str>(padding)) {
               auto s = padding.cast<std::string>();
               if (s == "same") o.same_padding = true;
               else if (s != "valid") throw chainrule::ValueError("Conv2d: padding must be an int, a pair, 'same' or 'valid', got '" + s + "'");
             } else {
               o.padding = pair_arg(padding, "Conv2d padding");
             }
             o.dilation = pair_arg(dilation, "Conv2d dilation");
             o.groups = groups;
             o.bias = bias;
             o.dtype = dtype_or_default(d);
             o.seed = seed;
             return std::make_shared<nn::Conv2d>(in, out, pair_arg(k, "Conv2d kernel_size"), o);
           }),
           py::arg("in_channels"), py::arg("out_channels"), py::arg("kernel_size"), py::arg("stride") = 1, py::arg("padding") = 0,
           py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("bias") = true, py::arg("dtype") = py::none(), py::arg("seed") = 0)
      .def_property("weight", tensor_get(&nn::Conv2d::weight), tensor_set(&nn::Conv2d::weight))
      .def_property("bias", tensor_get(&nn::Conv2d::bias), tensor_set(&nn::Conv2d::bias));
  py::class_<nn::ConvTranspose2d, nn::Module, std::shared_ptr<nn::ConvTranspose2d>>(nnm, "ConvTranspose2d")
      .def(py::init([](std::int64_t in, std::int64_t out, py::object k, py::object stride, py::object padding, py::object output_padding,
                       std::int64_t groups, bool bias, py::object dilation, py::object d, std::uint64_t seed) {
             nn::ConvTranspose2dLayerOptions o;
             o.stride = pair_arg(stride, "ConvTranspose2d stride");
             o.padding = pair_arg(padding, "ConvTranspose2d padding");
             o.output_padding = pair_arg(output_padding, "ConvTranspose2d output_padding");
             o.dilation = pair_arg(dilation, "ConvTranspose2d dilation");
             o.groups = groups;
             o.bias = bias;
             o.dtype = dtype_or_default(d);
             o.seed = seed;
             return std::make_shared<nn::ConvTranspose2d>(in, out, pair_arg(k, "ConvTranspose2d kernel_size"), o);
           }),
           py::arg("in_channels"), py::arg("out_channels"), py::arg("kernel_size"), py::arg("stride") = 1, py::arg("padding") = 0,
           py::arg("output_padding") = 0, py::arg("groups") = 1, py::arg("bias") = true, py::arg("dilation") = 1,
           py::arg("dtype") = py::none(), py::arg("seed") = 0)
      .def_property("weight", tensor_get(&nn::ConvTranspose2d::weight), tensor_set(&nn::ConvTranspose2d::weight))
      .def_property("bias", tensor_get(&nn::ConvTranspose2d::bias), tensor_set(&nn::ConvTranspose2d::bias));
#define POOL(Cls)                                                                                                       \
  py::class_<nn::Cls, nn::Module, std::shared_ptr<nn::Cls>>(nnm, #Cls)                                                  \
      .def(py::init([](py::object k, py::object s, py::object p) {                                                      \
             return std::make_shared<nn::Cls>(pair_arg(k, #Cls " kernel_size"), s.is_none() ? Pair{0, 0} : pair_arg(s, #Cls " stride"), \
                                              pair_arg(p, #Cls " padding"));                                            \
           }),                                                                                                          \
           py::arg("kernel_size"), py::arg("stride") = py::none(), py::arg("padding") = 0);
  POOL(MaxPool2d) POOL(AvgPool2d)
#undef POOL
  py::class_<nn::AdaptiveAvgPool2d, nn::Module, std::shared_ptr<nn::AdaptiveAvgPool2d>>(nnm, "AdaptiveAvgPool2d")
      .def(py::init([](py::object s) { return std::make_shared<nn::AdaptiveAvgPool2d>(pair_arg(s, "AdaptiveAvgPool2d output_size")); }),
           py::arg("output_size"));
  py::class_<nn::Flatten, nn::Module, std::shared_ptr<nn::Flatten>>(nnm, "Flatten")
      .def(py::init<std::int64_t, std::int64_t>(), py::arg("start_dim") = 1, py::arg("end_dim") = -1);
  py::class_<nn::Unflatten, nn::Module, std::shared_ptr<nn::Unflatten>>(nnm, "Unflatten")
      .def(py::init([](std::int64_t dim, const std::vector<std::int64_t>& sizes) { return std::make_shared<nn::Unflatten>(dim, Shape(sizes)); }),
           py::arg("dim"), py::arg("unflattened_size"));
  py::class_<nn::GlobalAvgPool2d, nn::Module, std::shared_ptr<nn::GlobalAvgPool2d>>(nnm, "GlobalAvgPool2d").def(py::init<>());
  py::class_<nn::BasicBlock, nn::Module, std::shared_ptr<nn::BasicBlock>>(nnm, "BasicBlock")
      .def(py::init([](std::int64_t in, std::int64_t out, std::int64_t stride, bool preact, py::object d) {
             return std::make_shared<nn::BasicBlock>(in, out, stride, preact, dtype_or_default(d));
           }),
           py::arg("in_channels"), py::arg("out_channels"), py::arg("stride") = 1, py::arg("preact") = false, py::arg("dtype") = py::none());

  // Activations (no parameters).
#define ACT0(Cls) py::class_<nn::Cls, nn::Module, std::shared_ptr<nn::Cls>>(nnm, #Cls).def(py::init<>());
  ACT0(ReLU) ACT0(Identity) ACT0(Tanh) ACT0(Sigmoid) ACT0(SiLU)
#undef ACT0
  py::class_<nn::Softplus, nn::Module, std::shared_ptr<nn::Softplus>>(nnm, "Softplus").def(py::init<double>(), py::arg("beta") = 1.0);
  py::class_<nn::GELU, nn::Module, std::shared_ptr<nn::GELU>>(nnm, "GELU").def(py::init<std::string>(), py::arg("approximate") = "none");
  py::class_<nn::ELU, nn::Module, std::shared_ptr<nn::ELU>>(nnm, "ELU").def(py::init<double>(), py::arg("alpha") = 1.0);
  py::class_<nn::LeakyReLU, nn::Module, std::shared_ptr<nn::LeakyReLU>>(nnm, "LeakyReLU")
      .def(py::init<double>(), py::arg("negative_slope") = 0.01);
  py::class_<nn::Softmax, nn::Module, std::shared_ptr<nn::Softmax>>(nnm, "Softmax").def(py::init<std::int64_t>(), py::arg("dim"));
  py::class_<nn::LogSoftmax, nn::Module, std::shared_ptr<nn::LogSoftmax>>(nnm, "LogSoftmax").def(py::init<std::int64_t>(), py::arg("dim"));
  nnm.def("make_activation", [](const std::string& n) { return nn::make_activation(n); }, py::arg("name"));
  nnm.def("activation_names", [] {
    std::vector<std::string> v;
    for (auto n : nn::activation_names()) v.emplace_back(n);
    return v;
  });

  // Model specs.
  py::class_<nn::ModelSpec>(nnm, "ModelSpec", "A parsed model spec (mlp:784-256-10, resmlp:..., resnet:...; see nn/spec.h).")
      .def_static("parse", [](const std::string& s) { return nn::ModelSpec::parse(s); }, py::arg("spec"))
      .def("str", &nn::ModelSpec::str)
      .def("__str__", &nn::ModelSpec::str)
      .def("__repr__", [](const nn::ModelSpec& s) { return "ModelSpec('" + s.str() + "')"; })
      .def("__eq__", [](const nn::ModelSpec& a, const nn::ModelSpec& b) { return a.str() == b.str(); })
      .def("input_dim", &nn::ModelSpec::input_dim)
      .def("output_dim", &nn::ModelSpec::output_dim)
      .def_property_readonly("kind", [](const nn::ModelSpec& s) {
        return s.kind == nn::ModelSpec::Kind::MLP ? "mlp" : s.kind == nn::ModelSpec::Kind::ResMLP ? "resmlp" : "resnet";
      });
  nnm.def("build_model", [](py::object spec, py::object d, py::object init, py::object generator, bool zero_residual) {
    nn::ModelSpec s = py::isinstance<nn::ModelSpec>(spec) ? spec.cast<nn::ModelSpec>() : nn::ModelSpec::parse(spec.cast<std::string>());
    auto model = nn::build_model(s, dtype_or_default(d));
    if (!init.is_none())
      nn::init_model(*model, gen_arg(generator), {.scheme = nn::parse_init(init.cast<std::string>()), .zero_residual = zero_residual});
    return model;
  }, py::arg("spec"), py::arg("dtype") = py::none(), py::arg("init") = "he", py::arg("generator") = py::none(),
     py::arg("zero_residual") = false,
     "The model of a spec (\"mlp:784-256-10\"), initialised with `init` (nn.init.init_model's scheme names; None: "
     "parameters left at zero, as C++'s build_model) from `generator` or the default one.");

  nnm.def("functional_call", [](nn::Module& mod, const py::dict& params, const Tensor& x) {
    return nn::functional_call(mod, tensor_map(params), x);
  }, py::arg("module"), py::arg("params"), py::arg("x"));
  nnm.def("checkpoint", [](nn::Module& mod, const Tensor& x) { return nn::checkpoint(mod, x); }, py::arg("module"), py::arg("x"),
          "module(x) recomputed in the backward pass (torch.utils.checkpoint.checkpoint(module, x)).");
  nnm.def("checkpoint_sequential", [](nn::Sequential& s, int n, const Tensor& x) { return nn::checkpoint_sequential(s, n, x); },
          py::arg("sequential"), py::arg("segments"), py::arg("x"));
  nnm.def("_cross_entropy", [](const Tensor& l, const Tensor& y, const std::string& r, double eps) {
    return eps == 0.0 ? cross_entropy(l, y, reduction_arg(r)) : nn::cross_entropy(l, y, eps, reduction_arg(r));
  });

  // chainrule.nn.init (nn/init.h), with torch.nn.init's names and argument names.
  auto init = nnm.def_submodule("init", "Initialisers (torch.nn.init's names), in place, from a Generator (default: chainrule's).");
  init.def("calculate_gain", [](const std::string& n, py::object param) {
    return nn::calculate_gain(nonlinearity_arg(n), param.is_none() ? 0.01 : param.cast<double>());
  }, py::arg("nonlinearity"), py::arg("param") = py::none());
  init.def("calculate_fans", [](const Tensor& w) { auto f = nn::calculate_fans(w); return py::make_tuple(f.in, f.out); }, py::arg("tensor"),
           "(fan_in, fan_out) of a weight of rank >= 2.");
  init.def("kaiming_normal_", [](Tensor w, double a, const std::string& mode, const std::string& nl, py::object g) {
    nn::kaiming_normal_(w, gen_arg(g), {.mode = mode_arg(mode), .nonlinearity = nonlinearity_arg(nl), .a = a});
    return w;
  }, py::arg("tensor"), py::arg("a") = 0.0, py::arg("mode") = "fan_in", py::arg("nonlinearity") = "leaky_relu", py::arg("generator") = py::none());
  init.def("kaiming_uniform_", [](Tensor w, double a, const std::string& mode, const std::string& nl, py::object g) {
    nn::kaiming_uniform_(w, gen_arg(g), {.mode = mode_arg(mode), .nonlinearity = nonlinearity_arg(nl), .a = a});
    return w;
  }, py::arg("tensor"), py::arg("a") = 0.0, py::arg("mode") = "fan_in", py::arg("nonlinearity") = "leaky_relu", py::arg("generator") = py::none());
  init.def("xavier_normal_", [](Tensor w, double gain, py::object g) { nn::xavier_normal_(w, gen_arg(g), {.gain = gain}); return w; },
           py::arg("tensor"), py::arg("gain") = 1.0, py::arg("generator") = py::none());
  init.def("xavier_uniform_", [](Tensor w, double gain, py::object g) { nn::xavier_uniform_(w, gen_arg(g), {.gain = gain}); return w; },
           py::arg("tensor"), py::arg("gain") = 1.0, py::arg("generator") = py::none());
  init.def("lecun_normal_", [](Tensor w, py::object g) { nn::lecun_normal_(w, gen_arg(g)); return w; }, py::arg("tensor"),
           py::arg("generator") = py::none());
  init.def("normal_", [](Tensor w, double mean, double std, py::object g) { nn::normal_(w, gen_arg(g), {.mean = mean, .std = std}); return w; },
           py::arg("tensor"), py::arg("mean") = 0.0, py::arg("std") = 1.0, py::arg("generator") = py::none());
  init.def("uniform_", [](Tensor w, double a, double b, py::object g) { nn::uniform_(w, gen_arg(g), a, b); return w; },
           py::arg("tensor"), py::arg("a") = 0.0, py::arg("b") = 1.0, py::arg("generator") = py::none());
  init.def("constant_", [](Tensor w, double v) { nn::constant_(w, v); return w; }, py::arg("tensor"), py::arg("val"));
  init.def("zeros_", [](Tensor w) { nn::zeros_(w); return w; }, py::arg("tensor"));
  init.def("ones_", [](Tensor w) { nn::ones_(w); return w; }, py::arg("tensor"));
  init.def("init_model", [](nn::ModulePtr model, const std::string& scheme, py::object g, bool zero_residual) {
    nn::init_model(*model, gen_arg(g), {.scheme = nn::parse_init(scheme), .zero_residual = zero_residual});
    return model;
  }, py::arg("model"), py::arg("scheme") = "he", py::arg("generator") = py::none(), py::arg("zero_residual") = false,
     "Initialises every Linear of the model (weights by the scheme: he, he_fan_out, he_fan_avg, he_uniform, xavier, "
     "xavier_uniform, lecun, torch; biases zero).");

  // Checkpoints of models (nn/checkpoint.h).
  nnm.def("save_model", [](const std::string& path, const nn::Module& model, const std::string& spec, std::int64_t step) {
    nn::save_model(path, model, spec, step);
  }, py::arg("path"), py::arg("model"), py::arg("spec"), py::arg("step") = 0,
     "Writes the state_dict with {chainrule.model: spec, chainrule.step: step} as safetensors, atomically.");
  nnm.def("load_model", [](const std::string& path, std::optional<std::string> spec, py::object d) {
    auto r = nn::load_model(path, spec, d.is_none() ? DType::f32 : dtype_arg(d));
    return py::make_tuple(r.model, r.spec.str(), r.step);
  }, py::arg("path"), py::arg("spec") = py::none(), py::arg("dtype") = py::none(),
     "(model, spec, step) of a model file written by save_model or `chainrule train`.");

  // ---- chainrule.optim ----
  auto om = m.def_submodule("optim", "Optimisers (torch.optim's names) and learning-rate schedules.");
  py::class_<optim::Optimizer, std::shared_ptr<optim::Optimizer>>(om, "Optimizer")
      .def("step", [](optim::Optimizer& o, py::object grads) {
        if (!grads.is_none()) set_grads(o, grads);
        py::gil_scoped_release nogil;
        o.step();
      }, py::arg("grads") = py::none(),
         "One update. grads (a dict by parameter name, as cr.grad of a params dict returns, or a sequence in parameter "
         "order) replaces the accumulated gradients first; without it the parameters' .grad (from backward()) is used.")
      .def("zero_grad", &optim::Optimizer::zero_grad)
      .def_property("lr", &optim::Optimizer::lr, &optim::Optimizer::set_lr)
      .def_property_readonly("steps", &optim::Optimizer::steps)
      .def("name", &optim::Optimizer::name)
      .def("named_parameters", [](const optim::Optimizer& o) { return pairs(dynamic_cast<const NamedParams&>(o).named()); })
      .def("state", [](const optim::Optimizer& o) {
        py::dict d;
        for (auto& [n, t] : o.state()) d[py::str(n)] = t;
        return d;
      })
      .def("load_state", [](optim::Optimizer& o, const py::dict& d) { o.load_state(tensor_map(d)); }, py::arg("state"));
  py::class_<PyOpt<optim::SGD>, optim::Optimizer, std::shared_ptr<PyOpt<optim::SGD>>>(om, "SGD")
      .def(py::init([](py::object params, double lr, double momentum, double dampening, double wd, bool nesterov) {
             return std::make_shared<PyOpt<optim::SGD>>(params_arg(params), optim::SGDOptions{lr, momentum, dampening, wd, nesterov});
           }),
           py::arg("params"), py::arg("lr") = 0.01, py::arg("momentum") = 0.0, py::arg("dampening") = 0.0, py::arg("weight_decay") = 0.0,
           py::arg("nesterov") = false);
  auto adam_opts = [](double lr, const std::pair<double, double>& betas, double eps, double wd, auto o) {
    o.lr = lr, o.beta1 = betas.first, o.beta2 = betas.second, o.eps = eps, o.weight_decay = wd;
    return o;
  };
  py::class_<PyOpt<optim::Adam>, optim::Optimizer, std::shared_ptr<PyOpt<optim::Adam>>>(om, "Adam")
      .def(py::init([adam_opts](py::object params, double lr, std::pair<double, double> betas, double eps, double wd) {
             return std::make_shared<PyOpt<optim::Adam>>(params_arg(params), adam_opts(lr, betas, eps, wd, optim::AdamOptions{}));
           }),
           py::arg("params"), py::arg("lr") = 1e-3, py::arg("betas") = std::make_pair(0.9, 0.999), py::arg("eps") = 1e-8,
           py::arg("weight_decay") = 0.0);
  py::class_<PyOpt<optim::AdamW>, optim::Optimizer, std::shared_ptr<PyOpt<optim::AdamW>>>(om, "AdamW")
      .def(py::init([adam_opts](py::object params, double lr, std::pair<double, double> betas, double eps, double wd) {
             return std::make_shared<PyOpt<optim::AdamW>>(params_arg(params), adam_opts(lr, betas, eps, wd, optim::AdamWOptions{}));
           }),
           py::arg("params"), py::arg("lr") = 1e-3, py::arg("betas") = std::make_pair(0.9, 0.999), py::arg("eps") = 1e-8,
           py::arg("weight_decay") = 0.01);
  om.def("clip_grad_norm_", [](py::object params, double max_norm) {
    std::vector<Tensor> ps;
    for (auto& [n, t] : params_arg(params)) ps.push_back(t);
    return optim::clip_grad_norm_(ps, max_norm);
  }, py::arg("parameters"), py::arg("max_norm"), "Scales the .grad of the parameters to global L2 norm max_norm at most; returns the norm before.");

  py::class_<optim::LRSchedule, std::shared_ptr<optim::LRSchedule>>(om, "LRSchedule",
                                                                    "lr(step) = base_lr · factor(step), step the index of the update about to be taken.")
      .def("factor", &optim::LRSchedule::factor, py::arg("step"))
      .def("__call__", &optim::LRSchedule::factor, py::arg("step"))
      .def("__repr__", &optim::LRSchedule::str);
  py::class_<optim::ConstantLR, optim::LRSchedule, std::shared_ptr<optim::ConstantLR>>(om, "ConstantLR").def(py::init<>());
  py::class_<optim::StepLR, optim::LRSchedule, std::shared_ptr<optim::StepLR>>(om, "StepLR")
      .def(py::init<std::int64_t, double>(), py::arg("step_size"), py::arg("gamma") = 0.1);
  py::class_<optim::CosineLR, optim::LRSchedule, std::shared_ptr<optim::CosineLR>>(om, "CosineLR")
      .def(py::init<std::int64_t, double>(), py::arg("total_steps"), py::arg("min_factor") = 0.0);
  py::class_<optim::WarmupLR, optim::LRSchedule, std::shared_ptr<optim::WarmupLR>>(om, "WarmupLR")
      .def(py::init([](std::int64_t w, std::shared_ptr<optim::LRSchedule> after) {
             if (!after) throw chainrule::ValueError("WarmupLR: `after` must be a schedule (ConstantLR() for none)");
             return std::make_shared<optim::WarmupLR>(w, std::move(after));
           }),
           py::arg("warmup_steps"), py::arg("after"));

  // ---- chainrule.data ----
  auto dm = m.def_submodule("data", "Data sets in memory (Fashion-MNIST, spirals, regression, CSV) and seeded mini-batch loaders.");
  py::class_<data::Dataset>(dm, "Dataset")
      .def(py::init([](py::object x, py::object y, std::int64_t classes, const std::string& name) {
             data::Dataset d;
             d.x = tensor_arg(x), d.y = tensor_arg(y), d.num_classes = classes, d.name = name;
             if (d.x.dim() != 2) throw ShapeError("Dataset: x must be [N, features], got " + d.x.shape().str());
             if (d.y.dim() < 1 || d.y.shape()[0] != d.x.shape()[0])
               throw ShapeError("Dataset: y " + d.y.shape().str() + " must have the " + std::to_string(d.x.shape()[0]) + " rows of x");
             if (classes > 0 && d.y.dtype() != DType::i64)
               throw DTypeError("Dataset: class labels y must be int64, got " + std::string(dtype_name(d.y.dtype())));
             return d;
           }),
           py::arg("x"), py::arg("y"), py::arg("num_classes") = 0, py::arg("name") = "",
           "A data set from tensors or numpy arrays (copied): x [N, features], y [N] int64 labels (num_classes > 0) or [N, k] targets.")
      .def_readwrite("name", &data::Dataset::name)
      .def_readwrite("x", &data::Dataset::x)
      .def_readwrite("y", &data::Dataset::y)
      .def_readwrite("num_classes", &data::Dataset::num_classes)
      .def_readwrite("height", &data::Dataset::height)
      .def_readwrite("width", &data::Dataset::width)
      .def("size", &data::Dataset::size)
      .def("__len__", &data::Dataset::size)
      .def("features", &data::Dataset::features)
      .def("slice", &data::Dataset::slice, py::arg("start"), py::arg("stop"))
      .def("to", [](const data::Dataset& d, py::object t) { return d.to(dtype_arg(t)); }, py::arg("dtype"))
      .def("__repr__", [](const data::Dataset& d) {
        return "Dataset('" + d.name + "', " + std::to_string(d.size()) + " examples, " + std::to_string(d.x.defined() ? d.features() : 0) +
               " features, " + std::to_string(d.num_classes) + " classes)";
      });
  py::class_<data::Splits>(dm, "Splits")
      .def(py::init([](data::Dataset tr, data::Dataset va, data::Dataset te) { return data::Splits{std::move(tr), std::move(va), std::move(te)}; }),
           py::arg("train"), py::arg("val"), py::arg("test"))
      .def_readwrite("train", &data::Splits::train)
      .def_readwrite("val", &data::Splits::val)
      .def_readwrite("test", &data::Splits::test);
  dm.def("load_fashion_mnist", [](const std::string& dir, std::int64_t validation, py::object d) {
    data::FashionMnistOptions o{dir, validation, d.is_none() ? DType::f32 : dtype_arg(d)};
    py::gil_scoped_release nogil;
    return data::load_fashion_mnist(o);
  }, py::arg("dir") = std::string(data::kFashionMnistDir), py::arg("validation") = 5000, py::arg("dtype") = py::none(),
     "Fashion-MNIST from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist); chainrule.IOError names the package if missing.");
  dm.attr("FASHION_MNIST_CLASSES") = [] {
    std::vector<std::string> v;
    for (auto c : data::kFashionMnistClasses) v.emplace_back(c);
    return v;
  }();
  dm.def("make_spirals", [](std::int64_t tr, std::int64_t va, std::int64_t te, double noise, double turns, std::uint64_t seed, py::object d) {
    return data::make_spirals({tr, va, te, noise, turns, seed, d.is_none() ? DType::f32 : dtype_arg(d)});
  }, py::arg("train") = 2000, py::arg("validation") = 500, py::arg("test") = 500, py::arg("noise") = 0.04, py::arg("turns") = 1.5,
     py::arg("seed") = 0, py::arg("dtype") = py::none());
  dm.def("make_regression_1d", [](std::int64_t tr, std::int64_t va, std::int64_t te, double noise, std::uint64_t seed, py::object d) {
    return data::make_regression_1d({tr, va, te, noise, seed, d.is_none() ? DType::f32 : dtype_arg(d)});
  }, py::arg("train") = 1000, py::arg("validation") = 200, py::arg("test") = 200, py::arg("noise") = 0.1, py::arg("seed") = 0,
     py::arg("dtype") = py::none());
  dm.def("load_csv", [](const std::string& path, int label, double vf, double tf, py::object d) {
    return data::load_csv(path, {label, vf, tf, d.is_none() ? DType::f32 : dtype_arg(d)});
  }, py::arg("path"), py::arg("label_column") = -1, py::arg("validation_fraction") = 0.15, py::arg("test_fraction") = 0.15,
     py::arg("dtype") = py::none());
  dm.def("load_by_name", [](const std::string& spec, py::object d) {
    DType t = d.is_none() ? DType::f32 : dtype_arg(d);
    py::gil_scoped_release nogil;
    return data::load_by_name(spec, t);
  }, py::arg("spec"), py::arg("dtype") = py::none(), "\"fashion-mnist\", \"fashion-mnist:DIR\", \"spirals\", \"regression\" or \"csv:PATH\".");
  dm.def("take_rows", [](const Tensor& x, const std::vector<std::int64_t>& idx) { return data::take_rows(x, idx.data(), static_cast<std::int64_t>(idx.size())); },
         py::arg("x"), py::arg("index"));

  py::class_<LoaderIter>(dm, "_EpochIterator")
      .def("__iter__", [](LoaderIter& it) -> LoaderIter& { return it; }, py::return_value_policy::reference_internal)
      .def("__len__", [](const LoaderIter& it) { return it.loader->batches_per_epoch() - it.index; })
      .def("__next__", [](LoaderIter& it) {
        if (it.index >= it.loader->batches_per_epoch()) throw py::stop_iteration();
        data::Batch b;
        {
          py::gil_scoped_release nogil;
          b = it.loader->batch(it.order, it.index, it.epoch);
        }
        ++it.index;
        return py::make_tuple(b.x, b.y);
      });
  py::class_<PyLoader>(dm, "DataLoader",
                       "Seeded mini-batches: iter(loader) runs the next epoch (0, 1, ...), each a permutation depending only on (seed, epoch).")
      .def(py::init([](const data::Dataset& d, std::int64_t batch, bool shuffle, bool drop_last, std::uint64_t seed, bool augment, int shift) {
             return PyLoader{std::make_shared<data::DataLoader>(d, data::LoaderOptions{batch, shuffle, drop_last, seed, augment, shift}), 0};
           }),
           py::arg("dataset"), py::arg("batch_size") = 128, py::arg("shuffle") = true, py::arg("drop_last") = false, py::arg("seed") = 0,
           py::arg("augment") = false, py::arg("shift") = 2)
      .def("__len__", [](const PyLoader& l) { return l.loader->batches_per_epoch(); })
      .def("batches_per_epoch", [](const PyLoader& l) { return l.loader->batches_per_epoch(); })
      .def("order", [](const PyLoader& l, std::int64_t e) { return l.loader->order(e); }, py::arg("epoch"))
      .def("batch", [](const PyLoader& l, const std::vector<std::int64_t>& order, std::int64_t i, std::int64_t e) {
        if (i < 0 || i >= l.loader->batches_per_epoch())
          throw py::index_error("DataLoader.batch: index " + std::to_string(i) + " out of range for " + std::to_string(l.loader->batches_per_epoch()) + " batches");
        auto b = l.loader->batch(order, i, e);
        return py::make_tuple(b.x, b.y);
      }, py::arg("order"), py::arg("index"), py::arg("epoch") = 0)
      .def("epoch", [](PyLoader& l, std::int64_t e) {
        LoaderIter it{l.loader, l.loader->order(e), e, 0};
        return it;
      }, py::arg("epoch"), "An iterator over the (x, y) batches of that epoch.")
      .def("set_epoch", [](PyLoader& l, std::int64_t e) { l.next_epoch = e; }, py::arg("epoch"), "The epoch the next iter(loader) runs.")
      .def_property_readonly("dataset", [](const PyLoader& l) { return l.loader->dataset(); })
      .def("__iter__", [](PyLoader& l) {
        LoaderIter it{l.loader, l.loader->order(l.next_epoch), l.next_epoch, 0};
        ++l.next_epoch;
        return it;
      });

  // ---- chainrule.io: safetensors (io/safetensors.h, nn/checkpoint.h) ----
  auto iom = m.def_submodule("io", "safetensors files: dicts of name -> Tensor, written atomically.");
  iom.def("save_safetensors", [](const std::string& path, const py::dict& tensors, std::optional<std::map<std::string, std::string>> meta) {
    nn::NamedTensors named;
    for (auto [k, v] : tensors) named.emplace_back(k.cast<std::string>(), tensor_arg(v).detach());
    py::gil_scoped_release nogil;
    nn::save_tensors(path, named, meta.value_or(std::map<std::string, std::string>{}));
  }, py::arg("path"), py::arg("tensors"), py::arg("metadata") = py::none(),
     "Writes the tensors (float32, float64, int64, bool) sorted by name, with string metadata, through a temporary file "
     "renamed into place: a reader sees the old file or the new one, never a part.");
  iom.def("load_safetensors", [](const std::string& path, bool with_metadata) -> py::object {
    nn::TensorFile f;
    {
      py::gil_scoped_release nogil;
      f = nn::load_tensors(path);
    }
    py::dict d;
    for (auto& [n, t] : f.tensors) d[py::str(n)] = t;
    if (with_metadata) return py::make_tuple(d, f.metadata);
    return d;
  }, py::arg("path"), py::arg("with_metadata") = false,
     "A dict name -> Tensor (and the metadata dict with with_metadata=True). F32, F64, I64 and BOOL load as such; other dtypes raise chainrule.IOError.");

  // ---- training (nn/train.h) ----
  py::class_<nn::TrainConfig>(nnm, "TrainConfig", "The configuration of chainrule train (nn/train.h); fields as the CLI options.")
      .def(py::init<>())
      .def_readwrite("data", &nn::TrainConfig::data)
      .def_readwrite("model", &nn::TrainConfig::model)
      .def_readwrite("init", &nn::TrainConfig::init)
      .def_readwrite("zero_residual", &nn::TrainConfig::zero_residual)
      .def_readwrite("opt", &nn::TrainConfig::opt)
      .def_readwrite("lr", &nn::TrainConfig::lr)
      .def_readwrite("weight_decay", &nn::TrainConfig::weight_decay)
      .def_readwrite("momentum", &nn::TrainConfig::momentum)
      .def_readwrite("schedule", &nn::TrainConfig::schedule)
      .def_readwrite("warmup", &nn::TrainConfig::warmup)
      .def_readwrite("label_smoothing", &nn::TrainConfig::label_smoothing)
      .def_readwrite("clip", &nn::TrainConfig::clip)
      .def_readwrite("batch", &nn::TrainConfig::batch)
      .def_readwrite("epochs", &nn::TrainConfig::epochs)
      .def_readwrite("seed", &nn::TrainConfig::seed)
      .def_readwrite("drop_last", &nn::TrainConfig::drop_last)
      .def_readwrite("augment", &nn::TrainConfig::augment)
      .def_readwrite("shift", &nn::TrainConfig::shift)
      .def_readwrite("eval_flips", &nn::TrainConfig::eval_flips)
      .def_readwrite("precision", &nn::TrainConfig::precision)
      .def_readwrite("time_budget", &nn::TrainConfig::time_budget)
      .def_property("dtype", [](const nn::TrainConfig& c) { return c.dtype; }, [](nn::TrainConfig& c, py::object d) { c.dtype = dtype_arg(d); })
      .def("json", &nn::TrainConfig::json)
      .def_static("from_json", &nn::TrainConfig::from_json, py::arg("json"))
      .def("__repr__", [](const nn::TrainConfig& c) { return "TrainConfig(" + c.json() + ")"; });
  py::class_<nn::EpochMetrics>(nnm, "EpochMetrics")
      .def_readonly("epoch", &nn::EpochMetrics::epoch)
      .def_readonly("epochs", &nn::EpochMetrics::epochs)
      .def_readonly("step", &nn::EpochMetrics::step)
      .def_readonly("lr", &nn::EpochMetrics::lr)
      .def_readonly("train_loss", &nn::EpochMetrics::train_loss)
      .def_readonly("train_accuracy", &nn::EpochMetrics::train_accuracy)
      .def_readonly("val_loss", &nn::EpochMetrics::val_loss)
      .def_readonly("val_accuracy", &nn::EpochMetrics::val_accuracy)
      .def_readonly("seconds", &nn::EpochMetrics::seconds)
      .def_readonly("samples_per_second", &nn::EpochMetrics::samples_per_second)
      .def("json", &nn::EpochMetrics::json)
      .def("__repr__", [](const nn::EpochMetrics& e) { return "EpochMetrics(" + e.json() + ")"; });
  py::class_<nn::Evaluation>(nnm, "Evaluation")
      .def_readonly("loss", &nn::Evaluation::loss)
      .def_readonly("accuracy", &nn::Evaluation::accuracy)
      .def_readonly("count", &nn::Evaluation::count)
      .def("__repr__", [](const nn::Evaluation& e) {
        return "Evaluation(loss=" + std::to_string(e.loss) + ", accuracy=" + std::to_string(e.accuracy) + ", count=" + std::to_string(e.count) + ")";
      });
  py::class_<nn::TrainResult>(nnm, "TrainResult", py::dynamic_attr())
      .def_readonly("config", &nn::TrainResult::config)
      .def_readonly("model_spec", &nn::TrainResult::model_spec)
      .def_readonly("epochs", &nn::TrainResult::epochs)
      .def_readonly("finished", &nn::TrainResult::finished)
      .def_readonly("steps", &nn::TrainResult::steps)
      .def_readonly("test", &nn::TrainResult::test)
      .def_readonly("test_single", &nn::TrainResult::test_single)
      .def_readonly("train_loss", &nn::TrainResult::train_loss)
      .def_readonly("seconds", &nn::TrainResult::seconds)
      .def_readonly("train_seconds", &nn::TrainResult::train_seconds)
      .def_readonly("samples", &nn::TrainResult::samples)
      .def_readonly("model", &nn::TrainResult::model);
  nnm.def("recommended_model", &nn::recommended_model, py::arg("data"), py::arg("features"), py::arg("classes"));
  nnm.def("read_run_config", &nn::read_run_config, py::arg("dir"));

  nnm.def("train_step", [](nn::Module& model, optim::Optimizer& opt, const Tensor& x, const Tensor& target, py::object loss, double clip) {
    nn::StepOutput r;
    if (py::isinstance<py::str>(loss)) {
      auto name = loss.cast<std::string>();
      nn::LossFn f;
      if (name == "cross_entropy") f = [](const Tensor& o, const Tensor& t) { return cross_entropy(o, t); };
      else if (name == "mse_loss" || name == "mse") f = [](const Tensor& o, const Tensor& t) { return mse_loss(o, t); };
      else throw chainrule::ValueError("train_step: loss must be 'cross_entropy', 'mse_loss' or a callable, got '" + name + "'");
      py::gil_scoped_release nogil;
      r = nn::train_step(model, opt, x, target, f, clip);
    } else {
      r = nn::train_step(model, opt, x, target, [loss](const Tensor& o, const Tensor& t) {
        py::object l = loss(o, t);
        if (!py::isinstance<Tensor>(l))
          throw py::type_error("train_step: the loss function must return a Tensor, got " + std::string(py::str(py::type::of(l).attr("__name__"))));
        return l.cast<Tensor>();
      }, clip);
    }
    return py::make_tuple(r.out, r.loss);
  }, py::arg("model"), py::arg("optimizer"), py::arg("x"), py::arg("target"), py::arg("loss") = "cross_entropy", py::arg("clip") = 0.0,
     "zero_grad, forward, loss, backward, clip (clip > 0), update; returns (output, loss). NumericalError before the update on a NaN/Inf loss.");
  nnm.def("evaluate", [](nn::Module& model, const data::Dataset& d, std::int64_t chunk, bool flips) {
    py::gil_scoped_release nogil;
    return nn::evaluate(model, d, chunk, flips);
  }, py::arg("model"), py::arg("dataset"), py::arg("chunk") = 1000, py::arg("flips") = false);

  nnm.def("_train", [](const nn::TrainConfig& config, std::optional<data::Splits> splits, const std::string& out_dir,
                       std::optional<std::int64_t> checkpoint_every, std::int64_t stop_after, int checkpoint_segments, bool resume,
                       py::object on_message, py::object on_epoch, py::object on_batch) {
    PyRef msg = std::make_shared<py::object>(on_message), ep = std::make_shared<py::object>(on_epoch),
          bt = std::make_shared<py::object>(on_batch);
    nn::RunOptions ro;
    ro.out_dir = out_dir;
    ro.checkpoint_every = checkpoint_every;
    ro.stop_after = stop_after;
    ro.checkpoint_segments = checkpoint_segments;
    ro.resume = resume;
    if (!msg->is_none())
      ro.on_message = [msg](const std::string& s) {
        py::gil_scoped_acquire gil;
        (*msg)(s);
      };
    if (!ep->is_none())
      ro.on_epoch = [ep](const nn::EpochMetrics& e) {
        py::gil_scoped_acquire gil;
        (*ep)(e);
      };
    // Always: Ctrl-C (a pending signal) stops training between steps with KeyboardInterrupt.
    ro.on_batch = [bt](std::int64_t b, std::int64_t n, double loss, double acc, double sps) {
      py::gil_scoped_acquire gil;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (!bt->is_none()) (*bt)(b, n, loss, acc, sps);
    };
    nn::TrainResult r;
    {
      py::gil_scoped_release nogil;
      data::Splits s = splits ? *splits : data::load_by_name(config.data, config.dtype);
      r = nn::train(config, s, ro);
    }
    return r;
  });
}

}  // namespace chainrule::python
