#pragma once
// Tensor: a reference-counted handle to a TensorImpl. Storage is contiguous and row-major, and
// is shared by reference between a tensor and its reshaped views.
//
// A TensorImpl is either concrete (level 0: it owns a storage) or a tracer of an active transform
// (level > 0: it wraps its value one level down in `primal`). See docs/ARCHITECTURE.md.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "chainrule/errors.h"
#include "chainrule/tensor/dtype.h"
#include "chainrule/tensor/shape.h"

namespace chainrule {

struct TensorImpl;
struct Node;
struct Frame;

// Raw bytes of a tensor plus a version counter, bumped by every in-place write, so that a tensor
// saved for the backward pass and later modified is detected instead of giving a wrong gradient.
struct Storage {
  explicit Storage(std::size_t nbytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;
  std::size_t nbytes = 0;
  std::uint64_t version = 0;
};

class Tensor {
 public:
  Tensor() = default;  // undefined; inside derivative rules it stands for a symbolic zero
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  const Shape& shape() const;
  std::int64_t dim() const { return static_cast<std::int64_t>(shape().size()); }
  std::int64_t size(std::int64_t axis) const;
  std::int64_t numel() const { return shape().numel(); }
  DType dtype() const;

  // Values. These read through tracers to the concrete value underneath, so printing or
  // inspecting a tensor works inside jvp/grad (but not inside vmap, where values are batched).
  template <class T> const T* data() const;
  template <class T> T* mutable_data();  // concrete tensors only; bumps the version
  template <class T> T item() const;
  template <class T> std::vector<T> to_vector() const;
  double item() const;  // the single element, converted to double
  std::string str() const;

  // Reverse mode, eager (libtorch style).
  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);
  Tensor grad() const;                   // accumulated gradient of a leaf (undefined if none)
  void set_grad(const Tensor& g) const;  // replace the accumulated gradient
  void zero_grad() const;                // drop the accumulated gradient
  bool is_leaf() const;
  // Calls hook(grad) each time backward() has accumulated into this leaf's gradient, as PyTorch's
  // register_post_accumulate_grad_hook (data-parallel training starts communication from it).
  // Returns an id for remove_hook.
  std::uint64_t register_post_accumulate_grad_hook(std::function<void(const Tensor& grad)> hook) const;
  void remove_hook(std::uint64_t id) const;
  void backward(const Tensor& out_ct = {}, bool retain_graph = false, bool create_graph = false) const;
  Tensor detach() const;  // the concrete value, cut from every graph and transform

  // Transform bookkeeping.
  int level() const;  // 0: concrete; > 0: a tracer of the transform at that level

  // In-place updates of concrete tensors (optimisers, gradient accumulation).
  Tensor& zero_();
  Tensor& fill_(double v);
  Tensor& copy_(const Tensor& src);
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& mul_(double s);

  // Convenience methods; each forwards to the free function of the same name in ops.h.
  Tensor reshape(const Shape& shape) const;
  Tensor t() const;  // swap the last two axes
  Tensor sum() const;
  Tensor mean() const;
  Tensor to(DType dtype) const;
  Tensor contiguous_clone() const;  // a copy with its own storage

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  Shape shape;
  DType dtype = DType::f32;
  std::shared_ptr<Storage> storage;  // concrete tensors only
  std::int64_t offset = 0;           // in elements
  // Autodiff state. For a tracer, `frame` is its transform and `primal` its value one level down
  // (for vmap: with the batch axis in front). `tangent` is a JVP tracer's tangent (undefined means
  // zero). `node` is the reverse-mode node that produced this value (or the leaf accumulator).
  std::shared_ptr<Frame> frame;
  Tensor primal;
  Tensor tangent;
  std::shared_ptr<Node> node;
};

// Creating tensors.
Tensor empty(const Shape& shape, DType dtype = get_default_dtype());
Tensor zeros(const Shape& shape, DType dtype = get_default_dtype());
Tensor ones(const Shape& shape, DType dtype = get_default_dtype());
Tensor full(const Shape& shape, double value, DType dtype = get_default_dtype());
Tensor scalar_tensor(double value, DType dtype = get_default_dtype());
Tensor arange(std::int64_t n, DType dtype = get_default_dtype());
Tensor eye(std::int64_t n, DType dtype = get_default_dtype());
Tensor zeros_like(const Tensor& x);
Tensor ones_like(const Tensor& x);
template <class T> Tensor from_vector(const std::vector<T>& values, const Shape& shape);
template <class T> Tensor from_vector(const std::vector<T>& values) {
  return from_vector(values, Shape{static_cast<std::int64_t>(values.size())});
}
// A tensor of the given dtype from double values (convenient in tests and examples).
Tensor tensor(const std::vector<double>& values, const Shape& shape, DType dtype = get_default_dtype());

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Helpers shared by kernels and ops.
Tensor concrete(const Tensor& t);  // the level-0 value underneath a (non-batch) tracer
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);

}  // namespace chainrule
