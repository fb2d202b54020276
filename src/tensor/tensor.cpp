#include "chainrule/tensor/tensor.h"

#include <fmt/format.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <ostream>

#include "autodiff/compile_internal.h"
#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/node.h"
#include "chainrule/autodiff/tracer.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/allocator.h"
#include "chainrule/tensor/random.h"

namespace chainrule {

Storage::Storage(std::size_t n) : data(memory::allocate(n)), nbytes(n) {}
Storage::~Storage() { memory::deallocate(data, nbytes); }

const Shape& Tensor::shape() const {
  if (!impl_) throw ValueError("shape: the tensor is undefined");
  return impl_->shape;
}
DType Tensor::dtype() const {
  if (!impl_) throw ValueError("dtype: the tensor is undefined");
  return impl_->dtype;
}
std::int64_t Tensor::size(std::int64_t axis) const {
  auto r = dim();
  if (axis < -r || axis >= r) throw ShapeError(fmt::format("size: axis {} out of range for shape {}", axis, shape().str()));
  return shape()[static_cast<std::size_t>(axis < 0 ? axis + r : axis)];
}
int Tensor::level() const { return impl_ && impl_->frame ? impl_->frame->level : 0; }

Tensor concrete(const Tensor& t) {
  Tensor c = t;
  while (c.impl()->frame) {
    if (c.impl()->frame->kind == TraceKind::Batch)
      throw AutodiffError("a batched value inside vmap has no single concrete value to read");
    c = c.impl()->primal;
  }
  return c;
}

template <class T> const T* Tensor::data() const {
  Tensor c = concrete(*this);
  if (c.dtype() != dtype_of<T>())
    throw DTypeError(fmt::format("data: tensor has dtype {}, requested {}", dtype_name(c.dtype()), dtype_name(dtype_of<T>())));
  return static_cast<const T*>(c.impl()->storage->data) + c.impl()->offset;
}
template <class T> T* Tensor::mutable_data() {
  if (impl_->frame) throw AutodiffError("mutable_data: cannot write into a tracer of an active transform");
  if (dtype() != dtype_of<T>())
    throw DTypeError(fmt::format("mutable_data: tensor has dtype {}, requested {}", dtype_name(dtype()), dtype_name(dtype_of<T>())));
  ++impl_->storage->version;
  return static_cast<T*>(impl_->storage->data) + impl_->offset;
}
template <class T> T Tensor::item() const {
  if (numel() != 1) throw ValueError(fmt::format("item: expected one element, tensor has shape {}", shape().str()));
  return data<T>()[0];
}
template <class T> std::vector<T> Tensor::to_vector() const {
  const T* p = data<T>();
  return std::vector<T>(p, p + numel());
}
#define CHAINRULE_INSTANTIATE(T)                        \
  template const T* Tensor::data<T>() const;            \
  template T* Tensor::mutable_data<T>();                \
  template T Tensor::item<T>() const;                   \
  template std::vector<T> Tensor::to_vector<T>() const;
CHAINRULE_INSTANTIATE(float)
CHAINRULE_INSTANTIATE(double)
CHAINRULE_INSTANTIATE(std::int64_t)
CHAINRULE_INSTANTIATE(bool)
CHAINRULE_INSTANTIATE(bfloat16)
CHAINRULE_INSTANTIATE(float16)
#undef CHAINRULE_INSTANTIATE

namespace {
// Element i of a concrete tensor as a double.
double element(const Tensor& c, std::int64_t i) {
  const void* base = c.impl()->storage->data;
  auto off = c.impl()->offset + i;
  switch (c.dtype()) {
    case DType::f32: return static_cast<const float*>(base)[off];
    case DType::f64: return static_cast<const double*>(base)[off];
    case DType::i64: return static_cast<double>(static_cast<const std::int64_t*>(base)[off]);
    case DType::b8: return static_cast<const bool*>(base)[off] ? 1.0 : 0.0;
    case DType::bf16: return to_float(static_cast<const bfloat16*>(base)[off]);
    case DType::f16: return to_float(static_cast<const float16*>(base)[off]);
  }
  return 0;
}
void set_element(const Tensor& c, std::int64_t i, double v) {
  void* base = c.impl()->storage->data;
  auto off = c.impl()->offset + i;
  switch (c.dtype()) {
    case DType::f32: static_cast<float*>(base)[off] = static_cast<float>(v); break;
    case DType::f64: static_cast<double*>(base)[off] = v; break;
    case DType::i64: static_cast<std::int64_t*>(base)[off] = static_cast<std::int64_t>(v); break;
    case DType::b8: static_cast<bool*>(base)[off] = v != 0; break;
    case DType::bf16: static_cast<bfloat16*>(base)[off] = to_bfloat16(v); break;
    case DType::f16: static_cast<float16*>(base)[off] = to_float16(v); break;
  }
}
}  // namespace

double Tensor::item() const {
  if (numel() != 1) throw ValueError(fmt::format("item: expected one element, tensor has shape {}", shape().str()));
  return element(concrete(*this), 0);
}

// ---- eager reverse mode -------------------------------------------------------------------

bool Tensor::requires_grad() const { return impl_ && !impl_->frame && impl_->node != nullptr; }
bool Tensor::is_leaf() const { return !impl_->node || impl_->node->prim == nullptr; }

Tensor& Tensor::requires_grad_(bool on) {
  if (impl_->frame) throw AutodiffError("requires_grad_: cannot be set on a tracer of an active transform");
  if (on && !is_floating(dtype()))
    throw DTypeError(fmt::format("requires_grad_: only float tensors (float32, float64, bfloat16, float16) can require grad, not {}", dtype_name(dtype())));
  if (!on) {
    if (impl_->node && impl_->node->prim)
      throw AutodiffError("requires_grad_(false): the tensor is not a leaf; use detach()");
    impl_->node.reset();
    return *this;
  }
  if (!impl_->node) {
    impl_->node = memory::make_pooled<Node>();
    impl_->node->accumulates = true;
    impl_->node->eager = true;
  }
  return *this;
}
Tensor Tensor::grad() const {
  if (!impl_->node || impl_->node->prim) return {};
  return impl_->node->grad;
}
void Tensor::set_grad(const Tensor& g) const {
  if (!impl_->node || impl_->node->prim) throw AutodiffError("set_grad: the tensor is not a leaf that requires grad");
  if (g.defined() && g.shape() != shape())
    throw ShapeError(fmt::format("set_grad: gradient shape {} differs from tensor shape {}", g.shape().str(), shape().str()));
  impl_->node->grad = g;
}
std::uint64_t Tensor::register_post_accumulate_grad_hook(std::function<void(const Tensor&)> hook) const {
  if (!impl_->node || impl_->node->prim || !impl_->node->accumulates)
    throw AutodiffError("register_post_accumulate_grad_hook: the tensor is not a leaf that requires grad");
  static std::atomic<std::uint64_t> next_id{0};
  const std::uint64_t id = ++next_id;
  impl_->node->post_accumulate_grad_hooks.emplace_back(id, std::move(hook));
  return id;
}
void Tensor::remove_hook(std::uint64_t id) const {
  if (!impl_->node) return;
  std::erase_if(impl_->node->post_accumulate_grad_hooks, [id](const auto& h) { return h.first == id; });
}
void Tensor::zero_grad() const {
  if (impl_->node && !impl_->node->prim) impl_->node->grad = Tensor();
}

void Tensor::backward(const Tensor& out_ct, bool retain_graph, bool create_graph) const {
  if (impl_->frame) throw AutodiffError("backward: called on a tracer inside a transform; use grad/vjp instead");
  if (!impl_->node) throw AutodiffError("backward: the tensor does not require grad and has no grad_fn");
  Tensor seed = out_ct;
  if (!seed.defined()) {
    if (numel() != 1)
      throw AutodiffError(fmt::format("backward: output has shape {}; a non-scalar output needs an explicit cotangent", shape().str()));
    seed = ones(shape(), dtype());
  } else if (seed.shape() != shape()) {
    throw ShapeError(fmt::format("backward: cotangent shape {} differs from output shape {}", seed.shape().str(), shape().str()));
  }
  std::shared_ptr<Node> roots[] = {impl_->node};
  Tensor seeds[] = {seed};
  run_backward(roots, seeds, {}, {.retain_graph = retain_graph, .create_graph = create_graph, .accumulate = true});
}

Tensor Tensor::detach() const {
  Tensor c = concrete(*this);
  auto impl = memory::make_pooled<TensorImpl>();
  impl->shape = c.impl()->shape;
  impl->dtype = c.impl()->dtype;
  impl->storage = c.impl()->storage;
  impl->offset = c.impl()->offset;
  return Tensor(std::move(impl));
}

// ---- in-place updates ----------------------------------------------------------------------

namespace {
void check_inplace(const char* op, const Tensor& t) {
  if (t.impl()->frame) throw AutodiffError(fmt::format("{}: cannot update a tracer of an active transform in place", op));
  if (t.impl()->node && GradMode::is_enabled())
    throw AutodiffError(fmt::format("{}: in-place update of a tensor that requires grad; wrap it in a NoGradGuard", op));
}
}  // namespace

Tensor& Tensor::zero_() { return fill_(0.0); }
// Inside a trace of compile(f) each in-place update is a step of the program, so that the replay
// repeats it (BatchNorm's running statistics); the lambda runs it now with the recorder suspended.
Tensor& Tensor::fill_(double v) {
  if (detail::t_recorder) [[unlikely]] {
    detail::trace_update({*this}, [v](std::span<const Tensor> xs) { Tensor(xs[0]).fill_(v); return Tensor(); });
    return *this;
  }
  check_inplace("fill_", *this);
  ++impl_->storage->version;
  auto n = numel();
  if (v == 0.0) {
    std::memset(static_cast<char*>(impl_->storage->data) + impl_->offset * itemsize(dtype()), 0, n * itemsize(dtype()));
  } else {
    for (std::int64_t i = 0; i < n; ++i) set_element(*this, i, v);
  }
  return *this;
}
Tensor& Tensor::copy_(const Tensor& src) {
  if (detail::t_recorder) [[unlikely]] {
    detail::trace_update({*this, src}, [](std::span<const Tensor> xs) { Tensor(xs[0]).copy_(xs[1]); return Tensor(); });
    return *this;
  }
  check_inplace("copy_", *this);
  if (src.shape() != shape() || src.dtype() != dtype())
    throw ShapeError(fmt::format("copy_: source {} {} differs from destination {} {}", src.shape().str(),
                                 dtype_name(src.dtype()), shape().str(), dtype_name(dtype())));
  Tensor c = concrete(src);
  ++impl_->storage->version;
  std::memmove(static_cast<char*>(impl_->storage->data) + impl_->offset * itemsize(dtype()),
               static_cast<const char*>(c.impl()->storage->data) + c.impl()->offset * itemsize(dtype()),
               numel() * itemsize(dtype()));
  return *this;
}
Tensor& Tensor::add_(const Tensor& other, double alpha) {
  if (detail::t_recorder) [[unlikely]] {
    detail::trace_update({*this, other}, [alpha](std::span<const Tensor> xs) { Tensor(xs[0]).add_(xs[1], alpha); return Tensor(); });
    return *this;
  }
  check_inplace("add_", *this);
  if (other.shape() != shape() || other.dtype() != dtype())
    throw ShapeError(fmt::format("add_: operand {} {} differs from destination {} {}", other.shape().str(),
                                 dtype_name(other.dtype()), shape().str(), dtype_name(dtype())));
  Tensor c = concrete(other);
  auto n = numel();
  if (dtype() == DType::f32) {
    float* d = mutable_data<float>();
    const float* s = c.data<float>();
    float a = static_cast<float>(alpha);
    for (std::int64_t i = 0; i < n; ++i) d[i] += a * s[i];
  } else if (dtype() == DType::f64) {
    double* d = mutable_data<double>();
    const double* s = c.data<double>();
    for (std::int64_t i = 0; i < n; ++i) d[i] += alpha * s[i];
  } else if (dtype() == DType::bf16) {  // in float32, one rounding
    bfloat16* d = mutable_data<bfloat16>();
    const bfloat16* s = c.data<bfloat16>();
    float a = static_cast<float>(alpha);
    for (std::int64_t i = 0; i < n; ++i) d[i] = to_bfloat16(to_float(d[i]) + a * to_float(s[i]));
  } else if (dtype() == DType::f16) {
    float16* d = mutable_data<float16>();
    const float16* s = c.data<float16>();
    float a = static_cast<float>(alpha);
    for (std::int64_t i = 0; i < n; ++i) d[i] = to_float16(to_float(d[i]) + a * to_float(s[i]));
  } else {
    throw DTypeError(fmt::format("add_: expected a float tensor, got {}", dtype_name(dtype())));
  }
  return *this;
}
Tensor& Tensor::mul_(double s) {
  if (detail::t_recorder) [[unlikely]] {
    detail::trace_update({*this}, [s](std::span<const Tensor> xs) { Tensor(xs[0]).mul_(s); return Tensor(); });
    return *this;
  }
  check_inplace("mul_", *this);
  auto n = numel();
  if (dtype() == DType::f32) {
    float* d = mutable_data<float>();
    for (std::int64_t i = 0; i < n; ++i) d[i] *= static_cast<float>(s);
  } else if (dtype() == DType::f64) {
    double* d = mutable_data<double>();
    for (std::int64_t i = 0; i < n; ++i) d[i] *= s;
  } else if (dtype() == DType::bf16) {
    bfloat16* d = mutable_data<bfloat16>();
    for (std::int64_t i = 0; i < n; ++i) d[i] = to_bfloat16(to_float(d[i]) * static_cast<float>(s));
  } else if (dtype() == DType::f16) {
    float16* d = mutable_data<float16>();
    for (std::int64_t i = 0; i < n; ++i) d[i] = to_float16(to_float(d[i]) * static_cast<float>(s));
  } else {
    throw DTypeError(fmt::format("mul_: expected a float tensor, got {}", dtype_name(dtype())));
  }
  return *this;
}

Tensor Tensor::reshape(const Shape& s) const { return chainrule::reshape(*this, s); }
Tensor Tensor::t() const { return chainrule::transpose(*this, -2, -1); }
Tensor Tensor::sum() const { return chainrule::sum(*this); }
Tensor Tensor::mean() const { return chainrule::mean(*this); }
Tensor Tensor::to(DType t) const { return chainrule::cast(*this, t); }
Tensor Tensor::contiguous_clone() const {
  if (detail::t_recorder) [[unlikely]]
    return detail::trace_step({*this}, [](std::span<const Tensor> xs) { return xs[0].contiguous_clone(); });
  Tensor out = empty(shape(), dtype());
  Tensor c = concrete(*this);
  std::memcpy(out.impl()->storage->data, static_cast<const char*>(c.impl()->storage->data) + c.impl()->offset * itemsize(dtype()),
              numel() * itemsize(dtype()));
  return out;
}

// ---- factories -----------------------------------------------------------------------------

Tensor empty(const Shape& shape, DType dtype) {
  for (auto d : shape)
    if (d < 0) throw ValueError(fmt::format("empty: negative dimension in shape {}", shape.str()));
  auto impl = memory::make_pooled<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = memory::make_pooled<Storage>(static_cast<std::size_t>(shape.numel()) * itemsize(dtype));
  if (detail::t_recorder) [[unlikely]] detail::trace_made(impl->storage);  // a factory's product inside a traced function
  return Tensor(std::move(impl));
}
Tensor zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.impl()->storage->data, 0, t.impl()->storage->nbytes);
  return t;
}
Tensor full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  auto n = t.numel();
  for (std::int64_t i = 0; i < n; ++i) set_element(t, i, value);
  return t;
}
Tensor ones(const Shape& shape, DType dtype) { return full(shape, 1.0, dtype); }
Tensor scalar_tensor(double value, DType dtype) { return full(Shape{}, value, dtype); }
Tensor arange(std::int64_t n, DType dtype) {
  if (n < 0) throw ValueError(fmt::format("arange: negative length {}", n));
  Tensor t = empty(Shape{n}, dtype);
  for (std::int64_t i = 0; i < n; ++i) set_element(t, i, static_cast<double>(i));
  return t;
}
Tensor eye(std::int64_t n, DType dtype) {
  if (n < 0) throw ValueError(fmt::format("eye: negative size {}", n));
  Tensor t = zeros(Shape{n, n}, dtype);
  for (std::int64_t i = 0; i < n; ++i) set_element(t, i * n + i, 1.0);
  return t;
}
Tensor zeros_like(const Tensor& x) { return zeros(x.shape(), x.dtype()); }
Tensor ones_like(const Tensor& x) { return ones(x.shape(), x.dtype()); }

template <class T> Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  if (static_cast<std::int64_t>(values.size()) != shape.numel())
    throw ShapeError(fmt::format("from_vector: {} values do not fill shape {}", values.size(), shape.str()));
  Tensor t = empty(shape, dtype_of<T>());
  if constexpr (std::is_same_v<T, bool>) {
    bool* d = static_cast<bool*>(t.impl()->storage->data);
    for (std::size_t i = 0; i < values.size(); ++i) d[i] = values[i];
  } else {
    if (!values.empty()) std::memcpy(t.impl()->storage->data, values.data(), values.size() * sizeof(T));
  }
  return t;
}
template Tensor from_vector(const std::vector<float>&, const Shape&);
template Tensor from_vector(const std::vector<double>&, const Shape&);
template Tensor from_vector(const std::vector<std::int64_t>&, const Shape&);
template Tensor from_vector(const std::vector<bool>&, const Shape&);

Tensor tensor(const std::vector<double>& values, const Shape& shape, DType dtype) {
  if (static_cast<std::int64_t>(values.size()) != shape.numel())
    throw ShapeError(fmt::format("tensor: {} values do not fill shape {}", values.size(), shape.str()));
  Tensor t = empty(shape, dtype);
  for (std::size_t i = 0; i < values.size(); ++i) set_element(t, static_cast<std::int64_t>(i), values[i]);
  return t;
}

namespace {
std::atomic<DType> default_dtype{DType::f32};
}
DType get_default_dtype() { return default_dtype.load(std::memory_order_relaxed); }
void set_default_dtype(DType dtype) {
  if (dtype != DType::f32 && dtype != DType::f64)
    throw DTypeError(fmt::format("set_default_dtype: the default must be float32 or float64, got {}", dtype_name(dtype)));
  default_dtype.store(dtype, std::memory_order_relaxed);
}

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype())
    throw DTypeError(fmt::format("{}: dtypes differ: {} {} and {} {}", op, dtype_name(a.dtype()), a.shape().str(),
                                 dtype_name(b.dtype()), b.shape().str()));
}

// ---- random --------------------------------------------------------------------------------

std::uint64_t Generator::bits(std::uint64_t seed, std::uint64_t counter) {
  // Two rounds of SplitMix64's finaliser over (seed, counter): a counter-based generator.
  auto mix = [](std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return mix(mix(seed + 0x9E3779B97F4A7C15ull) ^ (counter * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull));
}

namespace detail {
namespace {
struct ActiveTape {
  RngTape* record = nullptr;
  const RngTape* replay = nullptr;
  std::size_t next = 0;  // replay cursor
};
thread_local std::vector<ActiveTape> t_tapes;
}  // namespace

RngTapeScope::RngTapeScope(RngTape& record_into) { t_tapes.push_back({.record = &record_into}); }
RngTapeScope::RngTapeScope(const RngTape& replay_from, Replay) { t_tapes.push_back({.replay = &replay_from}); }
RngTapeScope::~RngTapeScope() { t_tapes.pop_back(); }

RngDraw draw(Generator& gen, std::uint64_t count) {
  if (t_tapes.empty()) return {gen.seed(), gen.advance(count), count};
  std::size_t from = t_tapes.size();  // just inside the innermost replaying tape (0: none)
  while (from > 0 && !t_tapes[from - 1].replay) --from;
  RngDraw d;
  if (from == 0) {
    d = {gen.seed(), gen.advance(count), count};
  } else {
    ActiveTape& a = t_tapes[from - 1];
    const RngTape& tape = *a.replay;
    if (a.next >= tape.size() || tape[a.next].count != count)
      throw AutodiffError(fmt::format("checkpoint: the recomputation draws random numbers differently from the forward pass "
                                      "(its draw {} takes {} numbers; the forward pass made {} draws{})", a.next + 1, count,
                                      tape.size(), a.next < tape.size() ? fmt::format(", that one of {}", tape[a.next].count) : ""));
    d = tape[a.next++];
  }
  for (std::size_t k = from; k < t_tapes.size(); ++k) t_tapes[k].record->push_back(d);
  return d;
}
}  // namespace detail

namespace {
// Inside a trace of compile(f) a draw is a step of the program: the replay draws again from the
// same generator, so the compiled function consumes it as the uncompiled one does.
// Under checkpoint's tapes a draw may come from a tape instead, which a replay that draws again
// cannot follow: that trace runs uncompiled.
template <class Draw>
Tensor traced_draw(const char* op, const Generator& gen, Draw draw) {
  detail::trace_generator(&gen, op);
  if (!detail::t_tapes.empty())
    detail::poison_trace(fmt::format("{} inside a checkpointed function (checkpoint replays recorded draws)", op));
  return detail::trace_step({}, [draw](std::span<const Tensor>) { return draw(); });
}

Tensor uniform_draw(const Shape& shape, double lo, double hi, Generator& gen, DType dtype) {
  if (detail::t_recorder) [[unlikely]]
    return traced_draw("uniform", gen, [=, &gen] { return uniform_draw(shape, lo, hi, gen, dtype); });
  if (!is_floating(dtype)) throw DTypeError(fmt::format("uniform: expected a float dtype, got {}", dtype_name(dtype)));
  Tensor t = empty(shape, dtype);
  auto n = t.numel();
  auto [seed, base, count] = detail::draw(gen, static_cast<std::uint64_t>(n));
  for (std::int64_t i = 0; i < n; ++i) set_element(t, i, lo + (hi - lo) * Generator::uniform(seed, base + i));
  return t;
}
Tensor randn_draw(const Shape& shape, Generator& gen, DType dtype) {
  if (detail::t_recorder) [[unlikely]] return traced_draw("randn", gen, [=, &gen] { return randn_draw(shape, gen, dtype); });
  if (!is_floating(dtype)) throw DTypeError(fmt::format("randn: expected a float dtype, got {}", dtype_name(dtype)));
  Tensor t = empty(shape, dtype);
  auto n = t.numel();
  auto [seed, base, count] = detail::draw(gen, static_cast<std::uint64_t>(2 * n));
  for (std::int64_t i = 0; i < n; ++i) {
    // Box-Muller on the pair of counters (2i, 2i+1); 1 - u keeps the logarithm finite.
    double u1 = 1.0 - Generator::uniform(seed, base + 2 * i);
    double u2 = Generator::uniform(seed, base + 2 * i + 1);
    set_element(t, i, std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
  }
  return t;
}
Tensor randint_draw(const Shape& shape, std::int64_t high, Generator& gen) {
  if (detail::t_recorder) [[unlikely]] return traced_draw("randint", gen, [=, &gen] { return randint_draw(shape, high, gen); });
  if (high <= 0) throw ValueError(fmt::format("randint: high must be positive, got {}", high));
  Tensor t = empty(shape, DType::i64);
  auto n = t.numel();
  auto [seed, base, count] = detail::draw(gen, static_cast<std::uint64_t>(n));
  auto* d = static_cast<std::int64_t*>(t.impl()->storage->data);
  for (std::int64_t i = 0; i < n; ++i)
    d[i] = static_cast<std::int64_t>(Generator::uniform(seed, base + i) * static_cast<double>(high));
  return t;
}
}  // namespace

// Inside a transform, a draw goes through vmap's randomness rule (detail::random_under_vmap).
Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dtype) {
  if (current_level() == 0) return uniform_draw(shape, lo, hi, gen, dtype);
  return detail::random_under_vmap("uniform", shape, [&](const Shape& s) { return uniform_draw(s, lo, hi, gen, dtype); });
}
Tensor rand(const Shape& shape, Generator& gen, DType dtype) { return uniform(shape, 0.0, 1.0, gen, dtype); }
Tensor randn(const Shape& shape, Generator& gen, DType dtype) {
  if (current_level() == 0) return randn_draw(shape, gen, dtype);
  return detail::random_under_vmap("randn", shape, [&](const Shape& s) { return randn_draw(s, gen, dtype); });
}
Tensor randint(const Shape& shape, std::int64_t high, Generator& gen) {
  if (current_level() == 0) return randint_draw(shape, high, gen);
  return detail::random_under_vmap("randint", shape, [&](const Shape& s) { return randint_draw(s, high, gen); });
}

// ---- printing ------------------------------------------------------------------------------

namespace {
void print_rec(std::string& s, const Tensor& c, std::size_t axis, std::int64_t offset, std::int64_t stride, int indent) {
  const Shape& sh = c.shape();
  if (sh.empty()) {
    double v = element(c, 0);
    s += is_floating(c.dtype()) ? fmt::format("{:.4f}", v) : c.dtype() == DType::b8 ? (v ? "true" : "false") : fmt::format("{}", static_cast<std::int64_t>(v));
    return;
  }
  std::int64_t n = sh[axis];
  if (n == 0) {
    s += "[]";
    return;
  }
  std::int64_t inner = stride / n;
  s += "[";
  bool summarise = c.numel() > 1000 && n > 6;
  for (std::int64_t i = 0; i < n; ++i) {
    if (summarise && i == 3) {
      s += "...";
      i = n - 3;
      s += axis + 1 == sh.size() ? ", " : ",\n" + std::string(indent + 1, ' ');
    }
    if (axis + 1 == sh.size()) {
      double v = element(c, offset + i);
      s += is_floating(c.dtype()) ? fmt::format("{:.4f}", v) : c.dtype() == DType::b8 ? (v ? "true" : "false") : fmt::format("{}", static_cast<std::int64_t>(v));
    } else {
      print_rec(s, c, axis + 1, offset + i * inner, inner, indent + 1);
    }
    if (i + 1 < n) s += axis + 1 == sh.size() ? ", " : ",\n" + std::string(indent + 1, ' ');
  }
  s += "]";
}
}  // namespace

std::string Tensor::str() const {
  if (!impl_) return "tensor(undefined)";
  if (impl_->frame && impl_->frame->kind == TraceKind::Batch)
    return fmt::format("tensor(<batched inside vmap>, shape={}, dtype={})", shape().str(), dtype_name(dtype()));
  Tensor c = concrete(*this);
  std::string s = "tensor(";
  print_rec(s, c, 0, 0, c.numel(), 7);
  s += fmt::format(", dtype={}", dtype_name(dtype()));
  if (impl_->frame) s += fmt::format(", level={}", level());
  if (requires_grad()) s += ", requires_grad=true";
  return s + ")";
}
std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace chainrule
