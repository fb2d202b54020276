// DLPack exchange: Tensor.__dlpack__ / __dlpack_device__, chainrule.to_dlpack and
// chainrule.from_dlpack, zero-copy both ways where the layout allows (rules in docs/python.md).
#include "dlpack.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <chainrule/chainrule.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bindings.h"

namespace py = pybind11;
using namespace chainrule;

namespace chainrule::python {
namespace {

constexpr const char* kCapsule = "dltensor";
constexpr const char* kUsedCapsule = "used_dltensor";

DLDataType dl_dtype(DType d) {
  switch (d) {
    case DType::f32: return {kDLFloat, 32, 1};
    case DType::f64: return {kDLFloat, 64, 1};
    case DType::i64: return {kDLInt, 64, 1};
    case DType::b8: return {kDLBool, 8, 1};
    case DType::f16: return {kDLFloat, 16, 1};
    case DType::bf16: return {kDLBfloat, 16, 1};
  }
  throw chainrule::ValueError("to_dlpack: unknown dtype");
}

// What an exported tensor's DLManagedTensor owns: the storage, and the shape and strides arrays.
struct ExportCtx {
  std::shared_ptr<Storage> storage;
  std::vector<std::int64_t> shape, strides;
  DLManagedTensor managed{};
};

py::capsule to_dlpack(const Tensor& t0) {
  Tensor t = t0.level() > 0 ? t0.detach() : t0;  // a tracer exports its concrete value
  auto* ctx = new ExportCtx;
  ctx->storage = t.impl()->storage;
  ctx->shape = t.shape().vec();
  ctx->strides.resize(ctx->shape.size());
  std::int64_t st = 1;
  for (std::size_t i = ctx->shape.size(); i-- > 0;) {
    ctx->strides[i] = st;
    st *= ctx->shape[i];
  }
  DLTensor& d = ctx->managed.dl_tensor;
  d.data = static_cast<char*>(ctx->storage->data) + t.impl()->offset * static_cast<std::int64_t>(itemsize(t.dtype()));
  d.device = {kDLCPU, 0};
  d.ndim = static_cast<std::int32_t>(ctx->shape.size());
  d.dtype = dl_dtype(t.dtype());
  d.shape = ctx->shape.data();
  d.strides = ctx->strides.data();
  d.byte_offset = 0;
  ctx->managed.manager_ctx = ctx;
  ctx->managed.deleter = [](DLManagedTensor* self) { delete static_cast<ExportCtx*>(self->manager_ctx); };
  // The consumer renames the capsule to "used_dltensor" and calls the deleter itself; an unused
  // capsule frees the tensor when it is collected.
  PyObject* cap = PyCapsule_New(&ctx->managed, kCapsule, [](PyObject* c) {
    if (PyCapsule_IsValid(c, kCapsule)) {
      auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(c, kCapsule));
      if (m && m->deleter) m->deleter(m);
    }
  });
  if (!cap) {
    delete ctx;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::capsule>(cap);
}

// The chainrule dtype a DLPack tensor can be shared as, if any.
bool shared_dtype(const DLDataType& d, DType& out) {
  if (d.lanes != 1) return false;
  if (d.code == kDLFloat && d.bits == 32) return out = DType::f32, true;
  if (d.code == kDLFloat && d.bits == 64) return out = DType::f64, true;
  if (d.code == kDLInt && d.bits == 64) return out = DType::i64, true;
  if (d.code == kDLBool && d.bits == 8) return out = DType::b8, true;
  if (d.code == kDLFloat && d.bits == 16) return out = DType::f16, true;
  if (d.code == kDLBfloat && d.bits == 16) return out = DType::bf16, true;
  return false;
}

py::dtype numpy_dtype(const DLDataType& d) {
  const std::string bits = std::to_string(d.bits);
  if (d.lanes == 1) {
    if (d.code == kDLFloat && (d.bits == 16 || d.bits == 32 || d.bits == 64)) return py::dtype("float" + bits);
    if (d.code == kDLInt && (d.bits == 8 || d.bits == 16 || d.bits == 32 || d.bits == 64)) return py::dtype("int" + bits);
    if (d.code == kDLUInt && (d.bits == 8 || d.bits == 16 || d.bits == 32 || d.bits == 64)) return py::dtype("uint" + bits);
    if (d.code == kDLBool && d.bits == 8) return py::dtype("bool");
  }
  throw DTypeError("from_dlpack: unsupported DLPack dtype (code " + std::to_string(d.code) + ", " + bits + " bits, " +
                   std::to_string(d.lanes) + " lanes); chainrule takes float16/32/64, (u)int8-64 and bool");
}

Tensor from_dlpack(py::object obj) {
  py::object cap = obj;
  if (py::hasattr(obj, "__dlpack__")) {
    if (py::hasattr(obj, "__dlpack_device__")) {
      auto dev = obj.attr("__dlpack_device__")().cast<py::tuple>();
      if (dev[0].cast<int>() != kDLCPU)
        throw chainrule::ValueError("from_dlpack: only CPU tensors can be imported (device type " + std::to_string(dev[0].cast<int>()) + ")");
    }
    cap = obj.attr("__dlpack__")();
  }
  if (!PyCapsule_CheckExact(cap.ptr()))
    throw py::type_error("from_dlpack: expected an object with __dlpack__ or a DLPack capsule, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  if (!PyCapsule_IsValid(cap.ptr(), kCapsule))
    throw chainrule::ValueError("from_dlpack: the capsule is not an unused \"dltensor\" (a DLPack capsule can be consumed once)");
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), kCapsule));
  // From here on the capsule no longer owns the tensor: we call its deleter.
  if (PyCapsule_SetName(cap.ptr(), kUsedCapsule) != 0) throw py::error_already_set();
  std::shared_ptr<DLManagedTensor> owner(m, [](DLManagedTensor* p) {
    if (p->deleter) p->deleter(p);
  });
  const DLTensor& d = m->dl_tensor;
  if (d.device.device_type != kDLCPU && d.device.device_type != kDLCUDAHost)
    throw chainrule::ValueError("from_dlpack: only CPU tensors can be imported (device type " + std::to_string(d.device.device_type) + ")");
  std::vector<std::int64_t> shape(d.shape, d.shape + d.ndim);
  char* data = static_cast<char*>(d.data) + d.byte_offset;
  const std::int64_t item = (d.dtype.bits * d.dtype.lanes + 7) / 8;
  std::int64_t numel = 1;
  for (auto s : shape) numel *= s;
  // Compact row-major (strides of length-1 axes do not matter)?
  bool compact = true;
  if (d.strides) {
    std::int64_t expect = 1;
    for (std::int32_t i = d.ndim; i-- > 0;) {
      if (shape[static_cast<std::size_t>(i)] != 1 && d.strides[i] != expect) compact = false;
      expect *= shape[static_cast<std::size_t>(i)];
    }
  }
  DType t{};
  if (shared_dtype(d.dtype, t) && compact && numel > 0 && reinterpret_cast<std::uintptr_t>(data) % 64 == 0) {
    // Zero-copy, as from_numpy: a Storage over the producer's bytes that keeps the producer's
    // tensor alive and gives its own (empty) allocation back before it is deleted.
    auto* s = new Storage(0);
    void* own = s->data;
    std::size_t own_n = s->nbytes;
    s->data = data;
    s->nbytes = static_cast<std::size_t>(numel * item);
    std::shared_ptr<Storage> storage(s, [own, own_n, owner](Storage* p) {
      p->data = own;
      p->nbytes = own_n;
      delete p;
    });
    auto impl = std::make_shared<TensorImpl>();
    impl->shape = Shape(shape);
    impl->dtype = t;
    impl->storage = std::move(storage);
    return Tensor(std::move(impl));
  }
  // Copy (strided, misaligned, empty or another dtype): through a numpy view of the bytes and
  // chainrule.tensor's conversion rule (other ints -> int64, float16 -> float32).
  std::vector<py::ssize_t> np_shape(shape.begin(), shape.end()), np_strides(shape.size());
  std::int64_t st = item;
  for (std::size_t i = shape.size(); i-- > 0;) {
    np_strides[i] = static_cast<py::ssize_t>(d.strides ? d.strides[i] * item : st);
    st *= shape[i];
  }
  auto* keep = new std::shared_ptr<DLManagedTensor>(owner);
  py::capsule base(keep, [](void* p) { delete static_cast<std::shared_ptr<DLManagedTensor>*>(p); });
  py::array view(numpy_dtype(d.dtype), np_shape, np_strides, data, base);
  return py::module_::import("chainrule._core").attr("tensor")(view).cast<Tensor>();
}

}  // namespace

void bind_dlpack(py::module_& m) {
  py::object cls = m.attr("Tensor");
  cls.attr("__dlpack__") = py::cpp_function([](const Tensor& t, py::object /*stream*/) { return to_dlpack(t); }, py::name("__dlpack__"),
                                            py::is_method(cls), py::arg("stream") = py::none(),
                                            "A DLPack capsule sharing this tensor's storage (CPU; a tracer gives its concrete value).");
  cls.attr("__dlpack_device__") = py::cpp_function([](const Tensor&) { return py::make_tuple(static_cast<int>(kDLCPU), 0); },
                                                   py::name("__dlpack_device__"), py::is_method(cls));
  m.def("to_dlpack", &to_dlpack, py::arg("x"), "A \"dltensor\" capsule sharing x's storage (torch.utils.dlpack.from_dlpack takes it).");
  m.def("from_dlpack", &from_dlpack, py::arg("x"),
        R"doc(A tensor from an object with __dlpack__ (a torch.Tensor, a numpy array) or a "dltensor" capsule.

Zero-copy (sharing the producer's memory, keeping it alive) for a CPU tensor that is
row-major contiguous, non-empty, 64-byte aligned and float32, float64, int64 or bool; otherwise
copied, converting as chainrule.tensor does (other ints -> int64, float16 -> float32).)doc");
}

}  // namespace chainrule::python
