// chainrule._core: the Python bindings (pybind11). Transforms that take Python callables are
// built from the C++ templates in transforms.h with a lambda that calls back into Python; the
// package python/chainrule/__init__.py flattens argument tuples and adds argnums / has_aux.
//
// GIL: every function here runs with the GIL held (pybind11's default), since a transform may
// call Python at any point; only matmul/linear on large concrete tensors release it (no Python
// can be called from there). See docs/python.md.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chainrule/autodiff/profiler.h>
#include <chainrule/chainrule.h>
#include <chainrule/ops/norm.h>

#include "bindings.h"

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace py = pybind11;
using namespace chainrule;

namespace {

py::dtype to_np_dtype(DType d) {
  switch (d) {
    case DType::f32: return py::dtype::of<float>();
    case DType::f64: return py::dtype::of<double>();
    case DType::i64: return py::dtype::of<std::int64_t>();
    case DType::b8: return py::dtype::of<bool>();
    case DType::f16: return py::dtype("float16");
    case DType::bf16:
      throw DTypeError("numpy has no bfloat16: convert the tensor first, t.astype(chainrule.float32).numpy()");
  }
  throw ValueError("unknown dtype");
}

DType parse_dtype(const py::handle& h) {
  if (py::isinstance<py::str>(h)) {
    std::string s = h.cast<std::string>();
    if (s == "float32" || s == "f32") return DType::f32;
    if (s == "float64" || s == "f64") return DType::f64;
    if (s == "int64" || s == "i64") return DType::i64;
    if (s == "bool" || s == "b8") return DType::b8;
    if (s == "bfloat16" || s == "bf16") return DType::bf16;
    if (s == "float16" || s == "f16" || s == "half") return DType::f16;
    throw DTypeError("dtype: unknown dtype '" + s + "' (float32, float64, bfloat16, float16, int64, bool)");
  }
  if (py::isinstance<DType>(h)) return h.cast<DType>();
  // A numpy dtype or type (np.float32, np.dtype('float64'), ...).
  py::dtype d = py::dtype::from_args(py::reinterpret_borrow<py::object>(h));
  return parse_dtype(py::str(d.attr("name")));
}

// The dtype chainrule stores a numpy dtype as, or throws DTypeError (rule in from_numpy's doc).
DType dtype_for_numpy(const py::dtype& d) {
  char kind = d.kind();
  std::size_t size = static_cast<std::size_t>(d.itemsize());
  if (kind == 'f') return size == 8 ? DType::f64 : size == 2 ? DType::f16 : DType::f32;
  if (kind == 'i' || kind == 'u') return DType::i64;
  if (kind == 'b') return DType::b8;
  throw DTypeError("from_numpy: unsupported numpy dtype '" + std::string(py::str(d.attr("name"))) +
                   "' (numeric or bool arrays only: float16, float32, float64, int64, bool; other ints -> int64)");
}

bool exact_dtype(const py::dtype& d, DType t) {
  return d.is(to_np_dtype(t)) || d.equal(to_np_dtype(t));
}

Tensor from_numpy_impl(py::array a, bool allow_share) {
  DType t = dtype_for_numpy(a.dtype());
  Shape shape;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) shape.push_back(static_cast<std::int64_t>(a.shape(i)));
  const bool c_contig = (a.flags() & py::array::c_style) != 0;
  const bool writeable = a.writeable();
  const bool aligned = reinterpret_cast<std::uintptr_t>(a.data()) % 64 == 0;
  if (allow_share && exact_dtype(a.dtype(), t) && c_contig && writeable && aligned && a.nbytes() > 0) {
    // Zero-copy: a Storage whose bytes are the array's; the array is kept alive by the deleter,
    // which gives the Storage its own (empty) allocation back before deleting it.
    auto* s = new Storage(0);
    void* own = s->data;
    std::size_t own_n = s->nbytes;
    s->data = a.mutable_data();
    s->nbytes = static_cast<std::size_t>(a.nbytes());
    auto keep = new py::object(a);
    std::shared_ptr<Storage> storage(s, [own, own_n, keep](Storage* p) {
      p->data = own;
      p->nbytes = own_n;
      delete p;
      if (Py_IsInitialized()) {
        py::gil_scoped_acquire gil;
        delete keep;
      }
    });
    auto impl = std::make_shared<TensorImpl>();
    impl->shape = shape;
    impl->dtype = t;
    impl->storage = std::move(storage);
    return Tensor(std::move(impl));
  }
  // Copy, converting to the stored dtype and to C order.
  py::array c = py::array::ensure(a.attr("astype")(to_np_dtype(t)), py::array::c_style | py::array::forcecast);
  Tensor out = empty(shape, t);
  if (c.nbytes() > 0) std::memcpy(static_cast<char*>(out.impl()->storage->data) + out.impl()->offset * static_cast<std::int64_t>(itemsize(t)), c.data(), static_cast<std::size_t>(c.nbytes()));
  return out;
}

Tensor to_tensor(const py::handle& obj, std::optional<DType> dtype) {
  if (py::isinstance<Tensor>(obj)) {
    Tensor t = obj.cast<Tensor>();
    return dtype && *dtype != t.dtype() ? cast(t, *dtype) : t;
  }
  // numpy has no bfloat16: read the values as float64 and round once.
  if (dtype == DType::bf16) return cast(to_tensor(obj, DType::f64), DType::bf16);
  py::module_ np = py::module_::import("numpy");
  py::object arr;
  if (py::isinstance<py::array>(obj)) {
    arr = py::reinterpret_borrow<py::object>(obj);
  } else {
    arr = np.attr("asarray")(obj);
    // Python floats become float32 (as torch.tensor), unless a dtype is given.
    if (!dtype && py::cast<py::array>(arr).dtype().kind() == 'f') arr = arr.attr("astype")(np.attr("float32"));
  }
  py::array a = py::cast<py::array>(arr);
  if (dtype) a = py::cast<py::array>(a.attr("astype")(to_np_dtype(*dtype)));
  return from_numpy_impl(a, false);
}

// An operand that may be a Python scalar: it takes the dtype of the tensor beside it, unless
// that would lose it, as in PyTorch: a float beside an integer or bool tensor is of the default
// float dtype (int64 tensor * 0.5 is a float tensor, not zeros), an int beside a bool tensor int64.
Tensor operand(const py::handle& obj, const Tensor& like) {
  if (py::isinstance<Tensor>(obj)) return obj.cast<Tensor>();
  if (py::isinstance<py::bool_>(obj)) return scalar_tensor(obj.cast<double>(), like.dtype());
  if (py::isinstance<py::int_>(obj)) {
    const DType t = like.dtype() == DType::b8 ? DType::i64 : like.dtype();
    // An int64 operand exactly (a double holds only 53 bits); Python ints beyond int64 raise.
    if (t == DType::i64) return from_vector<std::int64_t>({obj.cast<std::int64_t>()}, Shape{});
    return scalar_tensor(obj.cast<double>(), t);
  }
  if (py::isinstance<py::float_>(obj))
    return scalar_tensor(obj.cast<double>(), is_floating(like.dtype()) ? like.dtype() : get_default_dtype());
  if (py::isinstance<py::array>(obj)) return from_numpy_impl(py::cast<py::array>(obj), false);
  throw py::type_error(std::string("chainrule: expected a Tensor or a Python number, got ") +
                       std::string(py::str(py::type::of(obj).attr("__name__"))));
}

Tensor to_t(const py::object& obj) {
  if (py::isinstance<Tensor>(obj)) return obj.cast<Tensor>();
  throw py::type_error(std::string("chainrule: expected a Tensor, got ") + std::string(py::str(py::type::of(obj).attr("__name__"))));
}

// A Python function of one Tensor, returning a Tensor.
auto py_fn1(py::function f) {
  return [f](const Tensor& x) { return to_t(f(x)); };
}
// A Python function of a list of Tensors, returning a Tensor.
auto py_fnN(py::function f) {
  return [f](const std::vector<Tensor>& xs) { return to_t(f(xs)); };
}

Tensor view_of(const Tensor& t) {
  if (t.level() > 0) return t.detach();
  return t;
}

py::buffer_info buffer_of(const Tensor& t0) {
  Tensor t = view_of(t0);
  std::vector<py::ssize_t> shape, strides;
  const auto item = static_cast<py::ssize_t>(itemsize(t.dtype()));
  for (auto s : t.shape()) shape.push_back(static_cast<py::ssize_t>(s));
  strides.resize(shape.size());
  py::ssize_t st = item;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = st;
    st *= shape[i];
  }
  char* p = static_cast<char*>(t.impl()->storage->data) + t.impl()->offset * item;
  if (t.dtype() == DType::bf16)
    throw DTypeError("buffer: bfloat16 has no buffer format (numpy has no bfloat16); use t.astype(chainrule.float32)");
  std::string fmt = t.dtype() == DType::f16 ? std::string("e")
                    : t.dtype() == DType::f32 ? py::format_descriptor<float>::format()
                    : t.dtype() == DType::f64 ? py::format_descriptor<double>::format()
                    : t.dtype() == DType::i64 ? py::format_descriptor<std::int64_t>::format()
                                              : py::format_descriptor<bool>::format();
  return py::buffer_info(p, item, fmt, static_cast<py::ssize_t>(shape.size()), shape, strides);
}

py::array numpy_view(const Tensor& t0) {
  Tensor t = view_of(t0);
  auto* keep = new std::shared_ptr<Storage>(t.impl()->storage);
  py::capsule base(keep, [](void* p) { delete static_cast<std::shared_ptr<Storage>*>(p); });
  py::buffer_info b = buffer_of(t);
  return py::array(to_np_dtype(t.dtype()), b.shape, b.strides, b.ptr, base);
}

// A matrix product worth releasing the GIL for: concrete operands (no transform level, so no
// Python callback can run) and about 2^20 multiply-adds or more.
bool long_kernel(const Tensor& a, const Tensor& b) {
  if (a.level() != 0 || b.level() != 0) return false;
  const std::int64_t n = b.dim() >= 2 ? b.shape()[b.dim() - 1] : 1;
  return a.numel() * n >= (std::int64_t{1} << 20);
}

Axes to_axes(const py::object& o) {
  Axes a;
  if (o.is_none()) return a;
  if (py::isinstance<py::int_>(o)) {
    a.push_back(o.cast<std::int64_t>());
    return a;
  }
  for (auto h : o) a.push_back(h.cast<std::int64_t>());
  return a;
}

Shape to_shape(const py::object& o) {
  Shape s;
  if (py::isinstance<py::int_>(o)) {
    s.push_back(o.cast<std::int64_t>());
    return s;
  }
  for (auto h : o) s.push_back(h.cast<std::int64_t>());
  return s;
}

py::tuple shape_tuple(const Shape& s) {
  py::tuple t(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) t[i] = s[i];
  return t;
}

Reduction to_reduction(const std::string& r) {
  if (r == "mean") return Reduction::Mean;
  if (r == "sum") return Reduction::Sum;
  if (r == "none") return Reduction::None;
  throw ValueError("cross_entropy: reduction must be 'mean', 'sum' or 'none', got '" + r + "'");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "chainrule: automatic differentiation in C++20 (Python bindings)";
  m.attr("__version__") = CHAINRULE_VERSION;

  // Exceptions: chainrule.Error (RuntimeError) and its subclasses, each also a subclass of the
  // matching Python built-in exception.
  static py::object err = py::reinterpret_steal<py::object>(PyErr_NewException("chainrule.Error", PyExc_RuntimeError, nullptr));
  auto make_sub = [&](const char* name, PyObject* builtin) {
    py::tuple bases = py::make_tuple(err, py::handle(builtin));
    return py::reinterpret_steal<py::object>(PyErr_NewException(name, bases.ptr(), nullptr));
  };
  static py::object shape_err = make_sub("chainrule.ShapeError", PyExc_ValueError);
  static py::object dtype_err = make_sub("chainrule.DTypeError", PyExc_TypeError);
  static py::object value_err = make_sub("chainrule.ValueError", PyExc_ValueError);
  static py::object autodiff_err = make_sub("chainrule.AutodiffError", PyExc_RuntimeError);
  static py::object io_err = make_sub("chainrule.IOError", PyExc_OSError);
  m.attr("Error") = err;
  m.attr("ShapeError") = shape_err;
  m.attr("DTypeError") = dtype_err;
  m.attr("ValueError") = value_err;
  m.attr("AutodiffError") = autodiff_err;
  m.attr("IOError") = io_err;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ShapeError& e) {
      PyErr_SetString(shape_err.ptr(), e.what());
    } catch (const DTypeError& e) {
      PyErr_SetString(dtype_err.ptr(), e.what());
    } catch (const chainrule::ValueError& e) {
      PyErr_SetString(value_err.ptr(), e.what());
    } catch (const AutodiffError& e) {
      PyErr_SetString(autodiff_err.ptr(), e.what());
    } catch (const IOError& e) {
      PyErr_SetString(io_err.ptr(), e.what());
    } catch (const Error& e) {
      PyErr_SetString(err.ptr(), e.what());
    }
  });

  py::enum_<DType>(m, "DType")
      .value("float32", DType::f32)
      .value("float64", DType::f64)
      .value("int64", DType::i64)
      .value("bool", DType::b8)
      .value("bfloat16", DType::bf16)
      .value("float16", DType::f16);
  m.attr("float32") = DType::f32;
  m.attr("float64") = DType::f64;
  m.attr("int64") = DType::i64;
  m.attr("bool_") = DType::b8;
  m.attr("bfloat16") = DType::bf16;
  m.attr("float16") = DType::f16;

  py::class_<Tensor> T(m, "Tensor", py::buffer_protocol(), R"doc(A chainrule tensor (contiguous, row-major).

The buffer protocol and numpy() give a zero-copy numpy view of a concrete tensor's storage; the
view keeps the storage alive. Writes through the view are visible in the tensor and vice versa.)doc");
  T.def_buffer([](const Tensor& t) {
    // The buffer callback must not throw (pybind11 would terminate). numpy has no bfloat16: give a
    // read-only float32 copy of its exact values, kept alive by the buffer that refers to it.
    if (t.dtype() != DType::bf16) return buffer_of(t);
    py::array copy = numpy_view(cast(t.detach(), DType::f32));
    copy.attr("setflags")(py::arg("write") = false);
    auto* view = new Py_buffer();
    if (PyObject_GetBuffer(copy.ptr(), view, PyBUF_FULL_RO) != 0) {
      delete view;
      PyErr_Clear();
      return py::buffer_info(nullptr, 4, py::format_descriptor<float>::format(), 1, {py::ssize_t{0}}, {py::ssize_t{4}});  // empty
    }
    return py::buffer_info(view, true);
  })
      .def_property_readonly("shape", [](const Tensor& t) { return shape_tuple(t.shape()); })
      .def_property_readonly("ndim", [](const Tensor& t) { return t.dim(); })
      .def_property_readonly("dtype", [](const Tensor& t) { return t.dtype(); })
      .def_property_readonly("level", [](const Tensor& t) { return t.level(); })
      .def("numel", &Tensor::numel)
      .def("__len__", [](const Tensor& t) {
        if (t.dim() == 0) throw py::type_error("len() of a 0-d tensor");
        return t.shape()[0];
      })
      .def("item", [](const Tensor& t) -> py::object {
        if (t.numel() != 1) throw chainrule::ValueError("item: the tensor has " + std::to_string(t.numel()) + " elements, not 1");
        double v = t.item();
        switch (t.dtype()) {
          case DType::i64: return py::int_(static_cast<std::int64_t>(v));
          case DType::b8: return py::bool_(v != 0.0);
          default: return py::float_(v);
        }
      })
      .def("numpy", &numpy_view, "A zero-copy numpy view (a tracer gives a view of its concrete value).")
      .def("__array__", [](const Tensor& t, py::object dtype, py::object) -> py::object {
        // numpy has no bfloat16: np.asarray gives its (exact) float32 values, a copy.
        py::array a = numpy_view(t.dtype() == DType::bf16 ? cast(t.detach(), DType::f32) : t);
        if (!dtype.is_none()) return a.attr("astype")(dtype);
        return a;
      }, py::arg("dtype") = py::none(), py::arg("copy") = py::none())
      .def("__repr__", [](const Tensor& t) { return t.str(); })
      .def("__str__", [](const Tensor& t) { return t.str(); })
      .def("__bool__", [](const Tensor& t) {
        if (t.numel() != 1) throw chainrule::ValueError("bool: a tensor of " + std::to_string(t.numel()) + " elements is ambiguous");
        return t.item() != 0.0;
      })
      .def("__float__", [](const Tensor& t) { return t.item(); })
      .def("detach", &Tensor::detach)
      .def("clone", &Tensor::contiguous_clone)
      .def("astype", [](const Tensor& t, py::object d) { return cast(t, parse_dtype(d)); })
      .def("reshape", [](const Tensor& t, py::args s) {
        if (s.size() == 1 && !py::isinstance<py::int_>(s[0])) return reshape(t, to_shape(s[0]));
        return reshape(t, to_shape(s));
      })
      .def_property_readonly("T", [](const Tensor& t) { return transpose(t); })
      .def("sum", [](const Tensor& t, py::object axes, bool keepdims) { return sum(t, to_axes(axes), keepdims); },
           py::arg("axis") = py::none(), py::arg("keepdims") = false)
      .def("mean", [](const Tensor& t, py::object axes, bool keepdims) { return mean(t, to_axes(axes), keepdims); },
           py::arg("axis") = py::none(), py::arg("keepdims") = false)
      .def("fill_", [](Tensor& t, double v) { return t.fill_(v); })
      .def("copy_", [](Tensor& t, const Tensor& s) { return t.copy_(s); })
      .def("__neg__", [](const Tensor& a) { return -a; })
      .def("__add__", [](const Tensor& a, py::object b) { return add(a, operand(b, a)); })
      .def("__radd__", [](const Tensor& a, py::object b) { return add(operand(b, a), a); })
      .def("__sub__", [](const Tensor& a, py::object b) { return sub(a, operand(b, a)); })
      .def("__rsub__", [](const Tensor& a, py::object b) { return sub(operand(b, a), a); })
      .def("__mul__", [](const Tensor& a, py::object b) { return mul(a, operand(b, a)); })
      .def("__rmul__", [](const Tensor& a, py::object b) { return mul(operand(b, a), a); })
      .def("__truediv__", [](const Tensor& a, py::object b) { return div(a, operand(b, a)); })
      .def("__rtruediv__", [](const Tensor& a, py::object b) { return div(operand(b, a), a); })
      .def("__pow__", [](const Tensor& a, py::object b) {
        if (py::isinstance<py::int_>(b) || py::isinstance<py::float_>(b)) return chainrule::pow(a, b.cast<double>());
        return chainrule::pow(a, operand(b, a));
      })
      .def("__matmul__", [](const Tensor& a, const Tensor& b) { return matmul(a, b); })
      .def("__rmatmul__", [](const Tensor& a, const Tensor& b) { return matmul(b, a); })
      .def("__gt__", [](const Tensor& a, py::object b) { return greater(a, operand(b, a)); })
      .def("__ge__", [](const Tensor& a, py::object b) { return greater_equal(a, operand(b, a)); })
      .def("__lt__", [](const Tensor& a, py::object b) { return less(a, operand(b, a)); })
      .def("__le__", [](const Tensor& a, py::object b) { return less_equal(a, operand(b, a)); })
      .def("__eq__", [](const Tensor& a, py::object b) { return equal(a, operand(b, a)); })
      .def("__ne__", [](const Tensor& a, py::object b) { return equal(equal(a, operand(b, a)), scalar_tensor(0.0, DType::b8)); })
      .def("__abs__", [](const Tensor& a) { return chainrule::abs(a); })
      .def("__floordiv__", [](const Tensor& a, py::object b) { return floor_divide(a, operand(b, a)); })
      .def("__rfloordiv__", [](const Tensor& a, py::object b) { return floor_divide(operand(b, a), a); })
      .def("__mod__", [](const Tensor& a, py::object b) { return remainder(a, operand(b, a)); })
      .def("__rmod__", [](const Tensor& a, py::object b) { return remainder(operand(b, a), a); })
      .def("__and__", [](const Tensor& a, py::object b) { return bitwise_and(a, operand(b, a)); })
      .def("__rand__", [](const Tensor& a, py::object b) { return bitwise_and(operand(b, a), a); })
      .def("__or__", [](const Tensor& a, py::object b) { return bitwise_or(a, operand(b, a)); })
      .def("__ror__", [](const Tensor& a, py::object b) { return bitwise_or(operand(b, a), a); })
      .def("__xor__", [](const Tensor& a, py::object b) { return bitwise_xor(a, operand(b, a)); })
      .def("__rxor__", [](const Tensor& a, py::object b) { return bitwise_xor(operand(b, a), a); })
      .def("__invert__", [](const Tensor& a) { return bitwise_invert(a); });
  T.attr("__hash__") = py::none();

  // Creation and conversion.
  m.def("tensor", [](py::object obj, py::object dtype) {
    return to_tensor(obj, dtype.is_none() ? std::nullopt : std::optional<DType>(parse_dtype(dtype)));
  }, py::arg("obj"), py::arg("dtype") = py::none(),
  R"doc(A new tensor (always a copy) from a Tensor, numpy array, Python number or nested list.

Python floats become float32 (as torch.tensor), ints int64, bools bool; numpy arrays keep their
dtype when it is float32/float64/int64/bool, other integer dtypes become int64 and float16 float32.
Non-numeric arrays raise chainrule.DTypeError (a TypeError).)doc");
  m.def("from_numpy", [](py::array a) { return from_numpy_impl(a, true); }, py::arg("a"),
  R"doc(A tensor from a numpy array.

Zero-copy (the tensor shares the array's memory and keeps the array alive) when the array is
C-contiguous, writeable, non-empty, 64-byte aligned (chainrule's kernels assume it) and of dtype
float32, float64, int64 or bool. Otherwise the data are copied (other integer dtypes -> int64,
float16 -> float32; non-numeric -> DTypeError). In-place writes to a shared array made through
numpy are not seen by the version counter that guards saved tensors.)doc");
  m.def("zeros", [](py::object s, py::object d) { return zeros(to_shape(s), d.is_none() ? DType::f32 : parse_dtype(d)); },
        py::arg("shape"), py::arg("dtype") = py::none());
  m.def("ones", [](py::object s, py::object d) { return ones(to_shape(s), d.is_none() ? DType::f32 : parse_dtype(d)); },
        py::arg("shape"), py::arg("dtype") = py::none());
  m.def("full", [](py::object s, double v, py::object d) { return full(to_shape(s), v, d.is_none() ? DType::f32 : parse_dtype(d)); },
        py::arg("shape"), py::arg("value"), py::arg("dtype") = py::none());
  // NumPy's and PyTorch's arange(stop) / arange(start, stop, step): int64 when every bound is a
  // Python int (as torch.arange), the default float dtype otherwise, unless a dtype is given.
  m.def("arange", [](py::object start, py::object stop, py::object step, py::object d) {
    const bool ints = py::isinstance<py::int_>(start) && (stop.is_none() || py::isinstance<py::int_>(stop)) && py::isinstance<py::int_>(step);
    const DType t = !d.is_none() ? parse_dtype(d) : ints ? DType::i64 : get_default_dtype();
    if (stop.is_none()) return arange(0.0, start.cast<double>(), step.cast<double>(), t);
    return arange(start.cast<double>(), stop.cast<double>(), step.cast<double>(), t);
  }, py::arg("start"), py::arg("stop") = py::none(), py::arg("step") = 1, py::arg("dtype") = py::none());
  m.def("linspace", [](double start, double stop, std::int64_t num, py::object d, bool endpoint) {
    return linspace(start, stop, num, d.is_none() ? get_default_dtype() : parse_dtype(d), endpoint);
  }, py::arg("start"), py::arg("stop"), py::arg("num"), py::arg("dtype") = py::none(), py::arg("endpoint") = true);
  m.def("full_like", [](const Tensor& x, double v, py::object d) { return d.is_none() ? full_like(x, v) : full_like(x, v, parse_dtype(d)); },
        py::arg("x"), py::arg("fill_value"), py::arg("dtype") = py::none());
  // Training-mode batch norm as the fused primitives nn.BatchNorm1d/2d run on (ops/norm.h).
  auto opt_t = [](const std::optional<Tensor>& t) { return t.value_or(Tensor()); };
  m.def("batch_norm_stats", &chainrule::batch_norm_stats, py::arg("x"));
  m.def("batch_norm_train", [opt_t](const Tensor& x, std::optional<Tensor> w, std::optional<Tensor> b, double eps) {
    return batch_norm_train(x, opt_t(w), opt_t(b), eps);
  }, py::arg("x"), py::arg("weight") = py::none(), py::arg("bias") = py::none(), py::arg("eps") = 1e-5);
  m.def("batch_norm_backward", [opt_t](const Tensor& dy, const Tensor& x, std::optional<Tensor> w, double eps) {
    return batch_norm_backward(dy, x, opt_t(w), eps);
  }, py::arg("dy"), py::arg("x"), py::arg("weight") = py::none(), py::arg("eps") = 1e-5);
  m.def("batch_norm_backward_reduce", &chainrule::batch_norm_backward_reduce, py::arg("dy"), py::arg("x"), py::arg("eps") = 1e-5);
  m.def("tril", &chainrule::tril, py::arg("x"), py::arg("k") = 0);
  m.def("triu", &chainrule::triu, py::arg("x"), py::arg("k") = 0);
  m.def("bitwise_not", &chainrule::bitwise_not, py::arg("x"));
  m.def("bitwise_invert", &chainrule::bitwise_invert, py::arg("x"));
  m.def("eye", [](std::int64_t n, py::object d) { return eye(n, d.is_none() ? DType::f32 : parse_dtype(d)); },
        py::arg("n"), py::arg("dtype") = py::none());
  m.def("zeros_like", &zeros_like);
  m.def("_parse_dtype", [](py::handle d) { return parse_dtype(d); });
  m.def("ones_like", &ones_like);

  // Elementwise (a Python number beside a tensor takes its dtype).
#define BIN(name, fn) \
  m.def(#name, [](py::object a, py::object b) { \
    if (py::isinstance<Tensor>(a)) { Tensor ta = a.cast<Tensor>(); return fn(ta, operand(b, ta)); } \
    Tensor tb = to_t(b); return fn(operand(a, tb), tb); }, py::arg("a"), py::arg("b"));
  BIN(add, add) BIN(sub, sub) BIN(mul, mul) BIN(div, chainrule::div) BIN(maximum, maximum) BIN(minimum, minimum)
  BIN(greater, greater) BIN(greater_equal, greater_equal) BIN(less, less) BIN(less_equal, less_equal) BIN(equal, equal)
  BIN(floor_divide, floor_divide) BIN(remainder, remainder) BIN(bitwise_and, bitwise_and) BIN(bitwise_or, bitwise_or)
  BIN(bitwise_xor, bitwise_xor)
#undef BIN
  m.def("pow", [](const Tensor& a, py::object b) {
    if (py::isinstance<py::int_>(b) || py::isinstance<py::float_>(b)) return chainrule::pow(a, b.cast<double>());
    return chainrule::pow(a, operand(b, a));
  }, py::arg("a"), py::arg("exponent"));
#define UN(name) m.def(#name, [](const Tensor& x) { return chainrule::name(x); }, py::arg("x"));
  UN(neg) UN(exp) UN(log) UN(sqrt) UN(abs) UN(tanh) UN(sigmoid) UN(relu) UN(sign) UN(square)
  UN(sin) UN(cos) UN(tan) UN(asin) UN(acos) UN(atan) UN(sinh) UN(cosh) UN(asinh) UN(acosh) UN(atanh)
  UN(expm1) UN(log1p) UN(erf) UN(erfc) UN(floor) UN(ceil) UN(round) UN(trunc)
  UN(softplus) UN(log_sigmoid) UN(silu)
#undef UN
  m.def("gelu", [](const Tensor& x, py::object approximate) {
    std::string a = approximate.is_none() ? "none" : approximate.cast<std::string>();
    if (a != "none" && a != "tanh") throw py::value_error("gelu: approximate must be 'none' or 'tanh', got '" + a + "'");
    return gelu(x, a == "tanh");
  }, py::arg("x"), py::arg("approximate") = "none");
  m.def("elu", &elu, py::arg("x"), py::arg("alpha") = 1.0);
  m.def("leaky_relu", &leaky_relu, py::arg("x"), py::arg("negative_slope") = 0.01);
  m.def("clip", &clip, py::arg("x"), py::arg("min"), py::arg("max"));
  m.def("clamp", &clamp, py::arg("x"), py::arg("min"), py::arg("max"));
  m.def("relu_backward", &relu_backward, py::arg("grad"), py::arg("out"));
  m.def("where", [](const Tensor& c, py::object a, py::object b) {
    if (py::isinstance<Tensor>(a)) { Tensor ta = a.cast<Tensor>(); return where(c, ta, operand(b, ta)); }
    Tensor tb = to_t(b); return where(c, operand(a, tb), tb);
  }, py::arg("cond"), py::arg("a"), py::arg("b"));
  m.def("cast", [](const Tensor& x, py::object d) { return cast(x, parse_dtype(d)); }, py::arg("x"), py::arg("dtype"));

  // Linear algebra.
  m.def("matmul", [](const Tensor& a, const Tensor& b, bool ta, bool tb) {
    auto run = [&] { return (ta || tb) ? matmul(a, b, ta, tb) : matmul(a, b); };
    if (long_kernel(a, b)) {
      py::gil_scoped_release nogil;  // pure C++: no Python is called from here
      return run();
    }
    return run();
  }, py::arg("a"), py::arg("b"), py::arg("transpose_a") = false, py::arg("transpose_b") = false,
  "NumPy-style matmul; releases the GIL for large products of concrete tensors.");
  m.def("linear", [](const Tensor& x, const Tensor& w, const Tensor& bias) {
    if (long_kernel(x, w)) {
      py::gil_scoped_release nogil;
      return linear(x, w, bias);
    }
    return linear(x, w, bias);
  }, py::arg("x"), py::arg("weight"), py::arg("bias"));
  m.def("matmul_multiply_adds", &matmul_multiply_adds);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &get_num_threads);

  // Shape.
  m.def("reshape", [](const Tensor& x, py::object s) { return reshape(x, to_shape(s)); }, py::arg("x"), py::arg("shape"));
  m.def("flatten", &flatten, py::arg("x"), py::arg("start_axis") = 0);
  m.def("unsqueeze", &unsqueeze, py::arg("x"), py::arg("axis"));
  m.def("squeeze", static_cast<Tensor (*)(const Tensor&, std::int64_t)>(&squeeze), py::arg("x"), py::arg("axis"));
  m.def("permute", [](const Tensor& x, py::object p) { return permute(x, to_axes(p)); }, py::arg("x"), py::arg("perm"));
  m.def("transpose", &transpose, py::arg("x"), py::arg("axis0") = -2, py::arg("axis1") = -1);
  m.def("broadcast_to", [](const Tensor& x, py::object s) { return broadcast_to(x, to_shape(s)); }, py::arg("x"), py::arg("shape"));
  m.def("sum_to", [](const Tensor& x, py::object s) { return sum_to(x, to_shape(s)); }, py::arg("x"), py::arg("shape"));
  // slice(x, axis, start, stop): exact bounds; with a step (or an omitted bound): Python's rules.
  m.def("slice", [](const Tensor& x, std::int64_t axis, std::optional<std::int64_t> start, std::optional<std::int64_t> stop,
                    std::optional<std::int64_t> step) {
    if (!step && start && stop) return slice(x, axis, *start, *stop);
    return slice(x, axis, start, stop, step.value_or(1));
  }, py::arg("x"), py::arg("axis"), py::arg("start"), py::arg("stop"), py::arg("step") = py::none());
  m.def("pad", &pad, py::arg("x"), py::arg("axis"), py::arg("before"), py::arg("after"));
  m.def("concat", &concat, py::arg("xs"), py::arg("axis") = 0);
  m.def("stack", &stack, py::arg("xs"), py::arg("axis") = 0);
  m.def("gather", &gather, py::arg("x"), py::arg("index"), py::arg("axis") = 0);
  m.def("scatter_add", &scatter_add, py::arg("src"), py::arg("index"), py::arg("axis"), py::arg("size"));

  // ---- indexing and einsum (chainrule/ops/indexing.h, einsum.h) ----------------------------------
  // x[key] with NumPy's rules: ints, slices, None, Ellipsis, bools, int64/bool Tensors, lists and
  // numpy arrays (as int64 or bool index tensors), or a tuple of them.
  auto index_item = [](const py::handle& h) -> TensorIndex {
    py::module_ np = py::module_::import("numpy");
    if (py::isinstance<py::bool_>(h) || py::isinstance(h, np.attr("bool_"))) return TensorIndex(h.cast<bool>());
    if (py::isinstance<py::int_>(h) || py::isinstance(h, np.attr("integer"))) return TensorIndex(h.cast<std::int64_t>());
    if (h.is_none()) return TensorIndex(indexing::None);
    if (py::isinstance<py::ellipsis>(h)) return TensorIndex(indexing::Ellipsis);
    if (py::isinstance<py::slice>(h)) {
      auto bound = [&](const char* name) -> std::optional<std::int64_t> {
        py::object v = h.attr(name);
        if (v.is_none()) return std::nullopt;
        return v.cast<std::int64_t>();
      };
      return TensorIndex(indexing::Slice(bound("start"), bound("stop"), bound("step")));
    }
    if (py::isinstance<Tensor>(h)) return TensorIndex(h.cast<Tensor>());
    if (py::isinstance<py::list>(h) || py::isinstance<py::array>(h)) {
      py::array a = py::cast<py::array>(np.attr("asarray")(h));
      const char kind = a.dtype().kind();
      if (a.size() == 0 && kind == 'f') a = py::cast<py::array>(a.attr("astype")(np.attr("int64")));  // x[[]]
      else if (kind != 'b' && kind != 'i' && kind != 'u')
        throw py::index_error("chainrule: index arrays must be integer or bool, got " + std::string(py::str(a.dtype())));
      return TensorIndex(from_numpy_impl(a, false));
    }
    throw py::index_error("chainrule: unsupported index of type " + std::string(py::str(py::type::of(h).attr("__name__"))));
  };
  auto index_items = [index_item](const py::handle& key) {
    std::vector<TensorIndex> items;
    if (py::isinstance<py::tuple>(key))
      for (auto h : py::reinterpret_borrow<py::tuple>(key)) items.push_back(index_item(h));
    else
      items.push_back(index_item(key));
    return items;
  };
  // An index out of range is Python's IndexError (iteration over a tensor stops at it).
  T.def("__getitem__", [index_items](const Tensor& x, py::handle key) {
    try {
      return index(x, index_items(key));
    } catch (const chainrule::ValueError& e) {
      throw py::index_error(e.what());
    }
  });
  m.def("index", [index_items](const Tensor& x, py::handle key) { return index(x, index_items(key)); }, py::arg("x"), py::arg("key"),
        "x[key] (chainrule::index).");
  // JAX's x.at[key].set(v) / .add(v) / .multiply(v) / .get(): functional updates, new tensors.
  auto update_value = [](const py::object& v) -> Tensor {
    if (py::isinstance<Tensor>(v)) return v.cast<Tensor>();
    return to_tensor(v, std::nullopt);
  };
  py::class_<IndexUpdate>(m, "_IndexUpdate")
      .def("get", &IndexUpdate::get)
      .def("set", [update_value](const IndexUpdate& u, py::object v) {
        if (py::isinstance<py::float_>(v) || py::isinstance<py::int_>(v)) return u.set(v.cast<double>());
        return u.set(update_value(v));
      })
      .def("add", [update_value](const IndexUpdate& u, py::object v) {
        if (py::isinstance<py::float_>(v) || py::isinstance<py::int_>(v)) return u.add(v.cast<double>());
        return u.add(update_value(v));
      })
      .def("multiply", [update_value](const IndexUpdate& u, py::object v) {
        if (py::isinstance<py::float_>(v) || py::isinstance<py::int_>(v)) return u.multiply(v.cast<double>());
        return u.multiply(update_value(v));
      });
  struct AtRef {
    Tensor x;
  };
  py::class_<AtRef>(m, "_At").def("__getitem__", [index_items](const AtRef& a, py::handle key) { return at(a.x, index_items(key)); });
  T.def_property_readonly("at", [](const Tensor& x) { return AtRef{x}; });
  m.def("index_put", [index_items, update_value](const Tensor& x, py::handle key, py::object values, bool accumulate) {
    return index_put(x, index_items(key), update_value(values), accumulate);
  }, py::arg("x"), py::arg("indices"), py::arg("values"), py::arg("accumulate") = false);
  // einsum(subscripts, *operands) as numpy.einsum / torch.einsum (a single list of operands also works).
  auto operand_list = [](const py::args& args) {
    std::vector<Tensor> ops;
    if (args.size() == 1 && (py::isinstance<py::list>(args[0]) || py::isinstance<py::tuple>(args[0])))
      return args[0].cast<std::vector<Tensor>>();
    for (auto a : args) ops.push_back(a.cast<Tensor>());
    return ops;
  };
  m.def("einsum", [operand_list](const std::string& subscripts, py::args operands) { return einsum(subscripts, operand_list(operands)); },
        py::arg("subscripts"));
  // einsum_path(subscripts, *operands_or_shapes): the pairwise order einsum takes and its cost.
  m.def("einsum_path", [](const std::string& subscripts, py::args operands) {
    std::vector<Shape> shapes;
    for (auto a : operands) shapes.push_back(py::isinstance<Tensor>(a) ? a.cast<Tensor>().shape() : to_shape(py::reinterpret_borrow<py::object>(a)));
    EinsumPath p = einsum_path(subscripts, shapes);
    py::dict d;
    d["contractions"] = p.contractions;
    d["cost"] = p.cost;
    d["naive_cost"] = p.naive_cost;
    d["optimal"] = p.optimal;
    return d;
  }, py::arg("subscripts"));
  // ---- end of indexing and einsum ------------------------------------------------------------------

  // Reductions.
#define RED(name) \
  m.def(#name, [](const Tensor& x, py::object axes, bool keepdims) { return chainrule::name(x, to_axes(axes), keepdims); }, \
        py::arg("x"), py::arg("axis") = py::none(), py::arg("keepdims") = false);
  RED(sum) RED(mean) RED(max) RED(logsumexp)
#undef RED
  m.def("softmax", &softmax, py::arg("x"), py::arg("axis") = -1);
  m.def("log_softmax", &log_softmax, py::arg("x"), py::arg("axis") = -1);
  m.def("argmax", &argmax, py::arg("x"), py::arg("axis") = -1);

  // Losses.
  m.def("cross_entropy", [](const Tensor& l, const Tensor& y, const std::string& r) { return cross_entropy(l, y, to_reduction(r)); },
        py::arg("logits"), py::arg("labels"), py::arg("reduction") = "mean");
  m.def("cross_entropy_backward", &cross_entropy_backward, py::arg("logits"), py::arg("labels"), py::arg("ct"));
  m.def("mse_loss", [](const Tensor& a, const Tensor& b, const std::string& r) { return mse_loss(a, b, to_reduction(r)); },
        py::arg("a"), py::arg("b"), py::arg("reduction") = "mean");

  // The array API's other functions and PyTorch's losses (chainrule/ops/array_api.h).
#define LOSS(name) \
  m.def(#name, [](const Tensor& a, const Tensor& b, const std::string& r) { return chainrule::name(a, b, to_reduction(r)); }, \
        py::arg("input"), py::arg("target"), py::arg("reduction") = "mean");
  LOSS(nll_loss) LOSS(binary_cross_entropy) LOSS(binary_cross_entropy_with_logits) LOSS(l1_loss)
#undef LOSS
  m.def("huber_loss", [](const Tensor& a, const Tensor& b, const std::string& r, double d) { return huber_loss(a, b, to_reduction(r), d); },
        py::arg("input"), py::arg("target"), py::arg("reduction") = "mean", py::arg("delta") = 1.0);
  m.def("smooth_l1_loss", [](const Tensor& a, const Tensor& b, const std::string& r, double beta) {
    return smooth_l1_loss(a, b, to_reduction(r), beta);
  }, py::arg("input"), py::arg("target"), py::arg("reduction") = "mean", py::arg("beta") = 1.0);
  m.def("kl_div", [](const Tensor& a, const Tensor& b, const std::string& r, bool log_target) {
    return kl_div(a, b, to_reduction(r), log_target);
  }, py::arg("input"), py::arg("target"), py::arg("reduction") = "mean", py::arg("log_target") = false);
#define RED(name) \
  m.def(#name, [](const Tensor& x, py::object axes, bool keepdims) { return chainrule::name(x, to_axes(axes), keepdims); }, \
        py::arg("x"), py::arg("axis") = py::none(), py::arg("keepdims") = false);
  RED(prod) RED(min) RED(all) RED(any)
#undef RED
  m.def("var", [](const Tensor& x, py::object axes, double c, bool k) { return var(x, to_axes(axes), c, k); },
        py::arg("x"), py::arg("axis") = py::none(), py::arg("correction") = 0.0, py::arg("keepdims") = false);
  m.def("std", [](const Tensor& x, py::object axes, double c, bool k) { return chainrule::std(x, to_axes(axes), c, k); },
        py::arg("x"), py::arg("axis") = py::none(), py::arg("correction") = 0.0, py::arg("keepdims") = false);
  m.def("argmin", &chainrule::argmin, py::arg("x"), py::arg("axis") = -1);
  m.def("logaddexp", &chainrule::logaddexp, py::arg("a"), py::arg("b"));
  m.def("cumsum", &chainrule::cumsum, py::arg("x"), py::arg("axis"));
  m.def("cumprod", &chainrule::cumprod, py::arg("x"), py::arg("axis"));
  m.def("logcumsumexp", &chainrule::logcumsumexp, py::arg("x"), py::arg("axis"));
  m.def("argsort", &chainrule::argsort, py::arg("x"), py::arg("axis") = -1, py::arg("descending") = false);
  m.def("sort", &chainrule::sort, py::arg("x"), py::arg("axis") = -1, py::arg("descending") = false);
  m.def("topk", [](const Tensor& x, std::int64_t k, std::int64_t axis, bool largest) {
    auto [v, i] = topk(x, k, axis, largest);
    return py::make_tuple(v, i);
  }, py::arg("x"), py::arg("k"), py::arg("axis") = -1, py::arg("largest") = true);
  m.def("take_along_axis", &chainrule::take_along_axis, py::arg("x"), py::arg("indices"), py::arg("axis"));
  m.def("scatter_add_along_axis", &chainrule::scatter_add_along_axis, py::arg("src"), py::arg("indices"), py::arg("axis"), py::arg("size"));
  m.def("linear_scan", &chainrule::linear_scan, py::arg("a"), py::arg("b"), py::arg("axis"), py::arg("reverse") = false);
  m.def("searchsorted", &chainrule::searchsorted, py::arg("sorted_sequence"), py::arg("values"), py::arg("right") = false);
  m.def("flip", [](const Tensor& x, py::object axes) { return flip(x, to_axes(axes)); }, py::arg("x"), py::arg("axis") = py::none());
  m.def("roll", &chainrule::roll, py::arg("x"), py::arg("shift"), py::arg("axis"));
  m.def("tile", &chainrule::tile, py::arg("x"), py::arg("reps"));
  m.def("repeat", &chainrule::repeat, py::arg("x"), py::arg("repeats"), py::arg("axis"));
  m.def("repeat_interleave", &chainrule::repeat_interleave, py::arg("x"), py::arg("repeats"), py::arg("axis"));
  m.def("moveaxis", &chainrule::moveaxis, py::arg("x"), py::arg("source"), py::arg("destination"));
  m.def("expand_dims", &chainrule::expand_dims, py::arg("x"), py::arg("axis"));
  m.def("split", &chainrule::split, py::arg("x"), py::arg("sizes"), py::arg("axis") = 0);
  m.def("unstack", &chainrule::unstack, py::arg("x"), py::arg("axis") = 0);
  m.def("meshgrid", [](const std::vector<Tensor>& xs, const std::string& indexing) { return meshgrid(xs, indexing); },
        py::arg("xs"), py::arg("indexing") = "xy");
  m.def("lgamma", &chainrule::lgamma, py::arg("x"));
  m.def("digamma", &chainrule::digamma, py::arg("x"));
  m.def("polygamma", &chainrule::polygamma, py::arg("n"), py::arg("x"));

  // Convolution and pooling (chainrule/ops/conv.h), NCHW as PyTorch (conv: NHWC with channels_last=True).
  using Pair = std::array<std::int64_t, 2>;
  auto pair_of = [](const py::object& o) -> Pair {
    if (py::isinstance<py::int_>(o)) { auto v = o.cast<std::int64_t>(); return {v, v}; }
    auto v = o.cast<std::vector<std::int64_t>>();
    if (v.size() != 2) throw py::value_error("expected an int or a pair of ints");
    return {v[0], v[1]};
  };
  m.def("conv2d", [pair_of](const Tensor& x, const Tensor& w, std::optional<Tensor> b, py::object stride, py::object padding,
                            py::object dilation, std::int64_t groups, bool channels_last) {
    Conv2dOptions o;
    o.channels_last = channels_last;
    o.stride = pair_of(stride);
    if (py::isinstance<py::str>(padding)) {
      auto s = padding.cast<std::string>();
      if (s == "same") o.same_padding = true;
      else if (s != "valid") throw py::value_error("conv2d: padding must be an int, a pair, 'same' or 'valid', got '" + s + "'");
    } else {
      o.padding = pair_of(padding);
    }
    o.dilation = pair_of(dilation);
    o.groups = groups;
    return conv2d(x, w, b.value_or(Tensor()), o);
  }, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("stride") = 1, py::arg("padding") = 0,
     py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("channels_last") = false);
  m.def("conv_transpose2d", [pair_of](const Tensor& x, const Tensor& w, std::optional<Tensor> b, py::object stride, py::object padding,
                                      py::object output_padding, py::object dilation, std::int64_t groups, bool channels_last) {
    ConvTranspose2dOptions o;
    o.channels_last = channels_last;
    o.stride = pair_of(stride);
    o.padding = pair_of(padding);
    o.output_padding = pair_of(output_padding);
    o.dilation = pair_of(dilation);
    o.groups = groups;
    return conv_transpose2d(x, w, b.value_or(Tensor()), o);
  }, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("stride") = 1, py::arg("padding") = 0,
     py::arg("output_padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("channels_last") = false);
  // PyTorch's unfold and fold (kernel, stride, padding, dilation as ints or pairs).
  auto geometry = [pair_of](py::object stride, py::object padding, py::object dilation) {
    Conv2dOptions o;
    o.stride = pair_of(stride), o.padding = pair_of(padding), o.dilation = pair_of(dilation);
    return o;
  };
  m.def("im2col", [pair_of, geometry](const Tensor& x, py::object k, py::object stride, py::object padding, py::object dilation) {
    auto kk = pair_of(k);
    return im2col(x, kk[0], kk[1], geometry(stride, padding, dilation));
  }, py::arg("x"), py::arg("kernel_size"), py::arg("stride") = 1, py::arg("padding") = 0, py::arg("dilation") = 1);
  m.def("col2im", [pair_of, geometry](const Tensor& cols, py::object size, py::object k, py::object stride, py::object padding,
                                       py::object dilation) {
    auto hw = pair_of(size), kk = pair_of(k);
    return col2im(cols, hw[0], hw[1], kk[0], kk[1], geometry(stride, padding, dilation));
  }, py::arg("cols"), py::arg("output_size"), py::arg("kernel_size"), py::arg("stride") = 1, py::arg("padding") = 0,
     py::arg("dilation") = 1);
  m.def("max_pool2d", [pair_of](const Tensor& x, py::object k, py::object s, py::object p) {
    return max_pool2d(x, pair_of(k), s.is_none() ? Pair{0, 0} : pair_of(s), pair_of(p));
  }, py::arg("x"), py::arg("kernel_size"), py::arg("stride") = py::none(), py::arg("padding") = 0);
  m.def("avg_pool2d", [pair_of](const Tensor& x, py::object k, py::object s, py::object p) {
    return avg_pool2d(x, pair_of(k), s.is_none() ? Pair{0, 0} : pair_of(s), pair_of(p));
  }, py::arg("x"), py::arg("kernel_size"), py::arg("stride") = py::none(), py::arg("padding") = 0);
  m.def("adaptive_avg_pool2d", [pair_of](const Tensor& x, py::object size) { return adaptive_avg_pool2d(x, pair_of(size)); },
        py::arg("x"), py::arg("output_size"));
  m.def("upsample2d", [pair_of](const Tensor& x, py::object s) { return upsample2d(x, pair_of(s)); }, py::arg("x"),
        py::arg("scale_factor"));

  // chainrule.linalg (chainrule/ops/linalg.h), the array API's names.
  auto la = m.def_submodule("linalg", "Linear algebra with derivatives, on LAPACK (the array API's linalg).");
  la.def("inv", &linalg::inv, py::arg("a"));
  la.def("solve", &linalg::solve, py::arg("a"), py::arg("b"));
  la.def("solve_triangular", &linalg::solve_triangular, py::arg("a"), py::arg("b"), py::arg("upper"), py::arg("left") = true,
         py::arg("unitriangular") = false);
  la.def("det", &linalg::det, py::arg("a"));
  la.def("slogdet", [](const Tensor& a) { auto r = linalg::slogdet(a); return py::make_tuple(r.sign, r.logabsdet); }, py::arg("a"));
  la.def("cholesky", &linalg::cholesky, py::arg("a"), py::arg("upper") = false);
  la.def("qr", [](const Tensor& a, const std::string& mode) { auto r = linalg::qr(a, mode); return py::make_tuple(r.Q, r.R); },
         py::arg("a"), py::arg("mode") = "reduced");
  la.def("eigh", [](const Tensor& a) { auto r = linalg::eigh(a); return py::make_tuple(r.eigenvalues, r.eigenvectors); }, py::arg("a"));
  la.def("eigvalsh", &linalg::eigvalsh, py::arg("a"));
  la.def("svd", [](const Tensor& a, bool full) { auto r = linalg::svd(a, full); return py::make_tuple(r.U, r.S, r.Vh); },
         py::arg("a"), py::arg("full_matrices") = false);
  la.def("svdvals", &linalg::svdvals, py::arg("a"));
  la.def("vector_norm", [](const Tensor& x, double ord, py::object axes, bool k) { return linalg::vector_norm(x, ord, to_axes(axes), k); },
         py::arg("x"), py::arg("ord") = 2.0, py::arg("axis") = py::none(), py::arg("keepdims") = false);
  la.def("matrix_norm", [](const Tensor& x, py::object ord, bool k) {
    if (py::isinstance<py::str>(ord)) return linalg::matrix_norm(x, ord.cast<std::string>(), k);
    return linalg::matrix_norm(x, ord.cast<double>(), k);
  }, py::arg("x"), py::arg("ord") = "fro", py::arg("keepdims") = false);
  la.def("pinv", &linalg::pinv, py::arg("a"), py::arg("rtol") = -1.0);
  la.def("matrix_power", &linalg::matrix_power, py::arg("a"), py::arg("n"));
  la.def("matrix_rank", &linalg::matrix_rank, py::arg("a"), py::arg("rtol") = -1.0);
  la.def("cross", &linalg::cross, py::arg("a"), py::arg("b"), py::arg("axis") = -1);
  la.def("matrix_transpose", &linalg::matrix_transpose, py::arg("x"));
  la.def("outer", &linalg::outer, py::arg("a"), py::arg("b"));
  la.def("diagonal", &linalg::diagonal, py::arg("x"), py::arg("offset") = 0);
  la.def("trace", &linalg::trace, py::arg("x"), py::arg("offset") = 0);
  la.def("vecdot", &linalg::vecdot, py::arg("a"), py::arg("b"), py::arg("axis") = -1);
  la.def("tensordot", [](const Tensor& a, const Tensor& b, std::int64_t axes) { return linalg::tensordot(a, b, axes); },
         py::arg("a"), py::arg("b"), py::arg("axes") = 2);

  // Numerical helpers.
  m.def("allclose", &allclose, py::arg("a"), py::arg("b"), py::arg("rtol") = 1e-5, py::arg("atol") = 1e-8);
  m.def("max_abs_diff", &max_abs_diff, py::arg("a"), py::arg("b"));

  // Transform building blocks on flat lists of tensors (the package adds pytrees, argnums, aux).
  m.def("_vjp", [](py::function f, const std::vector<Tensor>& xs) {
    auto r = vjp(py_fnN(f), xs);
    return py::make_tuple(r.out, py::cpp_function(r.pullback));
  });
  m.def("_check_scalar", [](const char* name, const Tensor& out) { detail::check_scalar_output(name, out); });
  // compile on a flat function (the package keeps one per argument structure and rebuilds trees).
  using FlatFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
  py::class_<Compiled<FlatFn>>(m, "_Compiled")
      .def("__call__", [](const Compiled<FlatFn>& c, const std::vector<Tensor>& xs) { return c(xs); })
      .def_property_readonly("traces", &Compiled<FlatFn>::traces)
      .def_property_readonly("uncompiled_signatures", [](const Compiled<FlatFn>& c) { return c.stats().uncompiled_signatures; })
      .def_property_readonly("reason", [](const Compiled<FlatFn>& c) { return c.stats().reason; })
      .def_property_readonly("steps", [](const Compiled<FlatFn>& c) { return c.stats().steps; })
      .def("clear", &Compiled<FlatFn>::clear);
  m.def("_compile", [](py::function f) {
    return compile(FlatFn([f](const std::vector<Tensor>& xs) { return f(xs).cast<std::vector<Tensor>>(); }));
  });
  // f maps a list of Tensors to a list of Tensors (the Python side flattens its trees).
  m.def("_jvp", [](py::function f, const std::vector<Tensor>& xs, const std::vector<Tensor>& ts) {
    auto [y, t] = jvp([f](const std::vector<Tensor>& in) { return f(in).cast<std::vector<Tensor>>(); }, xs, ts);
    return py::make_tuple(y, t);
  });
  // vmap over several arguments; in_axes[i] < 0 means "not mapped".
  m.def("_vmap", [](py::function f, const std::vector<Tensor>& xs, const std::vector<std::int64_t>& axes) {
    std::int64_t n = -1;
    std::vector<Tensor> moved(xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) {
      if (axes[i] < 0) continue;
      if (xs[i].dim() <= axes[i])
        throw ShapeError("vmap: argument " + std::to_string(i) + " has " + std::to_string(xs[i].dim()) + " axes, cannot map over axis " +
                         std::to_string(axes[i]));
      moved[i] = xs[i];
      if (axes[i] != 0) {
        Axes perm;
        perm.push_back(axes[i]);
        for (std::int64_t k = 0; k < xs[i].dim(); ++k)
          if (k != axes[i]) perm.push_back(k);
        moved[i] = permute(xs[i], perm);
      }
      std::int64_t s = moved[i].shape()[0];
      if (n >= 0 && s != n)
        throw ShapeError("vmap: mapped axes differ in size (" + std::to_string(n) + " != " + std::to_string(s) + ")");
      n = s;
    }
    if (n < 0) throw chainrule::ValueError("vmap: in_axes maps no argument");
    FrameScope scope(TraceKind::Batch, n);
    std::vector<Tensor> in(xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) in[i] = axes[i] < 0 ? xs[i] : detail::make_batch_tracer(scope.frame(), moved[i]);
    auto outs = f(in).cast<std::vector<Tensor>>();  // the Python side flattens the output tree
    for (auto& o : outs) o = detail::vmap_finish(scope.frame(), o);
    return outs;
  });
  m.def("_jacfwd", [](py::function f, const Tensor& x, std::int64_t chunk) { return jacfwd(py_fn1(f), chunk)(x); });
  m.def("_jacrev", [](py::function f, const Tensor& x, std::int64_t chunk) { return jacrev(py_fn1(f), chunk)(x); });
  m.def("_hessian", [](py::function f, const Tensor& x, std::int64_t chunk) { return hessian(py_fn1(f), chunk)(x); });
  m.def("_linearize", [](py::function f, const Tensor& x) {
    auto [y, lin] = linearize(py_fn1(f), x);
    return py::make_tuple(y, py::cpp_function(lin));
  });
  m.def("_hvp", [](py::function f, const Tensor& x, const Tensor& v) { return hvp(py_fn1(f))(x, v); });

  // chainrule.profiler (chainrule/autodiff/profiler.h), torch.profiler's names: a context manager.
  struct PyProfile {
    std::unique_ptr<profiler::Profile> p;
    profiler::Profile& get() {
      if (!p) throw chainrule::ValueError("profiler.profile: not started (use it as `with profile() as prof:`)");
      return *p;
    }
  };
  auto pr = m.def_submodule("profiler", "Time per primitive, forward and backward, as a table and a Chrome trace.");
  py::class_<PyProfile>(pr, "profile", R"doc(Records every primitive's forward kernel and every VJP rule while entered:

    with chainrule.profiler.profile() as prof:
        loss = f(x); loss.backward()
    print(prof.table())
    prof.export_chrome_trace("trace.json")  # Perfetto, chrome://tracing)doc")
      .def(py::init<>())
      .def("__enter__", [](PyProfile& self) -> PyProfile& { self.p = std::make_unique<profiler::Profile>(); return self; },
           py::return_value_policy::reference)
      .def("__exit__", [](PyProfile& self, py::args) { self.get().stop(); return false; })
      .def("table", [](PyProfile& self, int steps) { return self.get().table(steps); }, py::arg("steps") = 1,
           "The rows (per step when steps > 1) and the share outside any primitive.")
      .def("export_chrome_trace", [](PyProfile& self, const std::string& path) { self.get().export_chrome_trace(path); },
           py::arg("path"))
      .def("key_averages", [](PyProfile& self, int steps) {
        py::list rows;
        for (const auto& r : self.get().key_averages(steps))
          rows.append(py::dict(py::arg("name") = r.name, py::arg("phase") = profiler::phase_name(r.phase), py::arg("calls") = r.calls,
                               py::arg("total_ms") = r.total_ms, py::arg("self_ms") = r.self_ms));
        return rows;
      }, py::arg("steps") = 1, "Rows as dicts: name, phase, calls, total_ms, self_ms (sorted by self time).")
      .def("events", [](PyProfile& self) {
        py::list out;
        for (const auto& e : self.get().events())
          out.append(py::dict(py::arg("name") = e.name, py::arg("phase") = profiler::phase_name(e.phase), py::arg("thread") = e.thread,
                              py::arg("start_ns") = e.start_ns, py::arg("duration_ns") = e.duration_ns));
        return out;
      });
  struct PyRecordFunction {
    std::string name;
    std::unique_ptr<profiler::RecordFunction> r;
  };
  py::class_<PyRecordFunction>(pr, "record_function", "A named region in the profile (torch.profiler.record_function).")
      .def(py::init([](std::string name) { return PyRecordFunction{std::move(name), nullptr}; }), py::arg("name"))
      .def("__enter__", [](PyRecordFunction& self) { self.r = std::make_unique<profiler::RecordFunction>(self.name); })
      .def("__exit__", [](PyRecordFunction& self, py::args) { self.r.reset(); return false; });

  // Blocks in their own files (bindings.h): nn, optim, data, io, train; DLPack.
  chainrule::python::bind_nn(m);
  chainrule::python::bind_dlpack(m);
}
