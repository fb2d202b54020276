#pragma once
// Function transforms, the way a JAX user expects them, in C++:
//   grad, value_and_grad, vjp, jvp, linearize, linear_transpose, vmap, jacfwd, jacrev, jacobian,
//   hessian, hvp.
// Each returns or evaluates a new function; any nesting works (grad of grad, jacfwd of jacrev,
// jvp of grad, ...) because every transform runs as its own level (see frame.h).
//
// Arguments are trees (tree.h): a Tensor, a std::vector/array/pair/tuple/map<string> of trees, or
// a CHAINRULE_TREE struct; gradients, cotangents and tangents come back in the argument's own
// structure. grad and value_and_grad need a scalar output (or std::pair<scalar, Aux>); jvp's and
// vmap's outputs may be trees too.
#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/linearize.h"
#include "chainrule/autodiff/node.h"
#include "chainrule/autodiff/tracer.h"
#include "chainrule/autodiff/tree.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/allocator.h"

namespace chainrule {

namespace detail {

// Tracks the differentiated arguments of one reverse-mode transform.
class ReverseTrace {
 public:
  ReverseTrace() : scope_(std::in_place, TraceKind::Reverse) {}
  Tensor track(const Tensor& x);
  std::vector<Tensor> track(const std::vector<Tensor>& xs);
  template <class A> A maybe_track(bool on, const A& a) {
    if constexpr (is_tree_v<A>) {
      return on ? tree_map([&](const Tensor& x) { return track(x); }, a) : a;
    } else {
      if (on) throw AutodiffError("cannot differentiate with respect to an argument that is not a tree of Tensors");
      return a;
    }
  }
  // Ends the trace (the function has returned) and remembers its output.
  void finish(const Tensor& out);
  const Tensor& out() const { return out_; }
  // Cotangents of the tracked inputs, in tracking order (zeros where none arrived).
  std::vector<Tensor> pull(const Tensor& out_ct) const;

 private:
  std::optional<FrameScope> scope_;
  std::shared_ptr<Frame> frame_;
  std::vector<std::shared_ptr<Node>> leaves_;
  std::vector<Tensor> inputs_;
  std::shared_ptr<Node> out_node_;
  Tensor out_;
};

template <class T> struct is_pair : std::false_type {};
template <class A, class B> struct is_pair<std::pair<A, B>> : std::true_type {};

inline const Tensor& primary(const Tensor& t) { return t; }
template <class Aux> const Tensor& primary(const std::pair<Tensor, Aux>& r) { return r.first; }

template <std::size_t I, class... Args>
decltype(auto) nth(const Args&... args) {
  return std::get<I>(std::forward_as_tuple(args...));
}

template <class F, class... Args, std::size_t... I>
auto call_tracked(const F& f, ReverseTrace& tr, const std::vector<int>& argnums, std::index_sequence<I...>, const Args&... args) {
  auto on = [&](std::size_t i) { return std::find(argnums.begin(), argnums.end(), static_cast<int>(i)) != argnums.end(); };
  // A braced list is evaluated left to right, so inputs are tracked in argument order.
  std::tuple<std::decay_t<Args>...> tracked{tr.maybe_track(on(I), args)...};
  return std::apply(f, tracked);
}

void check_scalar_output(const char* transform, const Tensor& out);
void check_argnums(const char* transform, const std::vector<int>& argnums, std::size_t nargs);

}  // namespace detail

namespace detail {
// value_and_grad with respect to argument I (known at compile time, so its type may be any tree).
template <std::size_t I, class F, class... Args>
auto value_and_grad_at(const char* who, const F& f, const Args&... args) {
  ReverseTrace tr;
  auto result = call_tracked(f, tr, {static_cast<int>(I)}, std::index_sequence_for<Args...>{}, args...);
  tr.finish(primary(result));
  check_scalar_output(who, tr.out());
  auto grads = tree_unflatten(nth<I>(args...), tr.pull(ones(tr.out().shape(), tr.out().dtype())));
  if constexpr (is_pair<decltype(result)>::value) {
    return std::make_pair(std::make_pair(tr.out(), std::move(result.second)), std::move(grads));
  } else {
    return std::make_pair(tr.out(), std::move(grads));
  }
}
}  // namespace detail

// value_and_grad(f, argnum)(args...) -> {f(args...), df/d args[argnum]}. f must return a scalar,
// or std::pair<scalar, Aux>, in which case the result is {{value, aux}, grad}. The gradient has
// the structure of the differentiated argument. A runtime argnum needs that argument to have
// the type of argument 0 (the result's type is fixed when the call compiles); value_and_grad<I>
// and grad<I> take any argument.
template <class F>
auto value_and_grad(F f, int argnum = 0) {
  return [f, argnum](const auto&... args) {
    detail::check_argnums("value_and_grad", {argnum}, sizeof...(args));
    using A0 = std::decay_t<decltype(detail::nth<0>(args...))>;
    std::optional<decltype(detail::value_and_grad_at<0>("value_and_grad", f, args...))> r;
    auto visit = [&]<std::size_t I>() {
      if (static_cast<int>(I) != argnum) return;
      if constexpr (std::is_same_v<std::decay_t<decltype(detail::nth<I>(args...))>, A0>)
        r.emplace(detail::value_and_grad_at<I>("value_and_grad", f, args...));
      else
        throw AutodiffError("value_and_grad: argument " + std::to_string(I) +
                            " differs in type from argument 0; use value_and_grad<" + std::to_string(I) + ">(f) or grad<" +
                            std::to_string(I) + ">(f)");
    };
    [&]<std::size_t... I>(std::index_sequence<I...>) { (visit.template operator()<I>(), ...); }(std::index_sequence_for<decltype(args)...>{});
    return std::move(*r);
  };
}
template <int I, class F>
auto value_and_grad(F f) {
  return [f](const auto&... args) {
    static_assert(I >= 0 && static_cast<std::size_t>(I) < sizeof...(args), "value_and_grad<I>: I is not an argument");
    return detail::value_and_grad_at<static_cast<std::size_t>(I)>("value_and_grad", f, args...);
  };
}

// grad(f, argnum)(args...) -> df/d args[argnum] (same structure as that argument).
template <class F>
auto grad(F f, int argnum = 0) {
  return [vg = value_and_grad(std::move(f), argnum)](const auto&... args) { return vg(args...).second; };
}
template <int I, class F>
auto grad(F f) {
  return [f](const auto&... args) {
    static_assert(I >= 0 && static_cast<std::size_t>(I) < sizeof...(args), "grad<I>: I is not an argument");
    return detail::value_and_grad_at<static_cast<std::size_t>(I)>("grad", f, args...).second;
  };
}

// grad(f, {i, j, ...})(args...) -> gradients with respect to several Tensor arguments (for
// structures, pass them as one tuple argument, or use grad<I>).
template <class F>
auto grad(F f, std::vector<int> argnums) {
  return [f, argnums](const auto&... args) {
    detail::check_argnums("grad", argnums, sizeof...(args));
    auto check_tensor = [&]<std::size_t I>() {
      if constexpr (!std::is_same_v<std::decay_t<decltype(detail::nth<I>(args...))>, Tensor>)
        if (std::find(argnums.begin(), argnums.end(), static_cast<int>(I)) != argnums.end())
          throw AutodiffError("grad: argnums with several entries needs Tensor arguments, but argument " + std::to_string(I) +
                              " is a structure; pass the arguments as one tuple, or use grad<" + std::to_string(I) + ">(f)");
    };
    [&]<std::size_t... I>(std::index_sequence<I...>) { (check_tensor.template operator()<I>(), ...); }(std::index_sequence_for<decltype(args)...>{});
    detail::ReverseTrace tr;
    std::vector<int> sorted = argnums;
    std::sort(sorted.begin(), sorted.end());
    auto result = detail::call_tracked(f, tr, sorted, std::index_sequence_for<decltype(args)...>{}, args...);
    tr.finish(detail::primary(result));
    detail::check_scalar_output("grad", tr.out());
    auto g = tr.pull(ones(tr.out().shape(), tr.out().dtype()));
    std::vector<Tensor> out;
    for (int a : argnums) out.push_back(g[static_cast<std::size_t>(std::find(sorted.begin(), sorted.end(), a) - sorted.begin())]);
    return out;
  };
}

// vjp(f, x) -> {f(x), pullback}; the pullback maps an output cotangent to the input cotangent, in
// x's structure, and may be called many times (also inside other transforms). f returns a Tensor.
template <class T>
struct VjpOf {
  Tensor out;
  std::function<T(const Tensor&)> pullback;
};
using VjpResult = VjpOf<Tensor>;
using VjpResultN = VjpOf<std::vector<Tensor>>;
namespace detail {
template <class F, class T>
VjpOf<T> vjp_tree(const F& f, const T& x) {
  auto tr = std::make_shared<ReverseTrace>();
  T xt = tree_map([&](const Tensor& leaf) { return tr->track(leaf); }, x);
  tr->finish(f(xt));
  return {tr->out(), [tr, x](const Tensor& ct) { return tree_unflatten(x, tr->pull(ct)); }};
}
}  // namespace detail
template <class F, class T>
  requires is_tree_v<T>
VjpOf<T> vjp(const F& f, const T& x) {
  return detail::vjp_tree(f, x);
}
// Several inputs as a braced list: f takes a std::vector<Tensor>.
template <class F>
VjpResultN vjp(const F& f, const std::vector<Tensor>& xs) {
  return detail::vjp_tree(f, xs);
}

// jvp(f, x, t) -> {f(x), J t}: forward mode with dual numbers; nothing is recorded. x and t are
// trees of one structure; the output (and so its tangent) may be a tree.
namespace detail {
std::pair<Tensor, Tensor> jvp_finish(const std::shared_ptr<Frame>& f, const Tensor& out);
void check_tangent(const Tensor& x, const Tensor& t);
template <class Out>
std::pair<Out, Out> jvp_finish_tree(const std::shared_ptr<Frame>& f, const Out& out) {
  return {tree_map([&](const Tensor& y) { return jvp_finish(f, y).first; }, out),
          tree_map([&](const Tensor& y) { return jvp_finish(f, y).second; }, out)};
}
template <class F, class T>
auto jvp_tree(const F& f, const T& xs, const T& ts) {
  FrameScope scope(TraceKind::Jvp);
  T in = tree_map2("jvp", [&](const Tensor& x, const Tensor& t) {
    check_tangent(x, t);
    return make_jvp_tracer(scope.frame(), x, t);
  }, xs, ts);
  return jvp_finish_tree(scope.frame(), f(in));
}
}  // namespace detail
template <class F, class T>
  requires is_tree_v<T>
auto jvp(const F& f, const T& x, const T& t) {
  return detail::jvp_tree(f, x, t);
}
template <class F>
auto jvp(const F& f, const std::vector<Tensor>& xs, const std::vector<Tensor>& ts) {
  if (xs.size() != ts.size())
    throw AutodiffError("jvp: " + std::to_string(xs.size()) + " primals but " + std::to_string(ts.size()) + " tangents");
  return detail::jvp_tree(f, xs, ts);
}

// linearize(f, x) -> {f(x), u -> J u}. One evaluation of f records its linearisation
// (linearize.h); each call of the linear map replays the recorded JVP rules only, on the saved
// primal values: no primal work is repeated.
template <class F>
std::pair<Tensor, std::function<Tensor(const Tensor&)>> linearize(F f, const Tensor& x) {
  auto tape = std::make_shared<LinearTape>();
  Tensor out;
  std::int64_t in_id = -1, out_id = -1;
  {
    FrameScope scope(TraceKind::Linearize);
    scope.frame()->tape = tape;
    struct Finish {  // also on an exception: break the frame <-> tape cycle
      LinearTape& t;
      Frame& f;
      ~Finish() {
        t.finish();
        f.tape.reset();
      }
    } finish{*tape, *scope.frame()};
    Tensor xt = detail::make_linearize_tracer(scope.frame(), x);
    in_id = tape->id_of(xt);
    Tensor y = f(xt);
    out_id = tape->id_of(y);  // -1: the output does not depend on x
    out = detail::is_traced_by(y, scope.frame().get()) ? y.impl()->primal : y;
  }
  return {out, [tape, in_id, out_id, x, out](const Tensor& u) {
    detail::check_tangent(x, u);
    Tensor r = out_id < 0 ? Tensor() : tape->apply({&in_id, 1}, {&u, 1}, {&out_id, 1})[0];
    return r.defined() ? r : zeros_like(out);
  }};
}

// linear_transpose(lin, like)(ct) = Jᵀ ct for a linear map lin of tensors shaped like `like`
// (such as linearize's): lin's VJP, which for a linear map is its transpose wherever it is taken
// (here at zero). The reverse pass is recorded once; the returned map may be called many times.
template <class F>
std::function<Tensor(const Tensor&)> linear_transpose(F lin, const Tensor& like) {
  return vjp(lin, zeros_like(like)).pullback;
}

// vmap(f)(xs) maps f over the leading axis of xs, in one batched evaluation. `randomness` says
// what random draws inside f do (frame.h): refuse by default.
namespace detail {
Tensor vmap_finish(const std::shared_ptr<Frame>& f, const Tensor& out);
}
template <class F>
auto vmap(F f, Randomness randomness = Randomness::Error) {
  return [f, randomness](const Tensor& xs) {
    if (xs.dim() == 0) throw ShapeError("vmap: input must have a leading axis to map over, got a scalar");
    FrameScope scope(TraceKind::Batch, xs.shape()[0]);
    scope.frame()->randomness = randomness;
    Tensor out = f(detail::make_batch_tracer(scope.frame(), xs));
    return detail::vmap_finish(scope.frame(), out);
  };
}

// Jacobians have shape out.shape + x.shape. jacfwd pushes the identity through batched forward
// passes; jacrev pulls the identity back through batched reverse passes. chunk_size (0: all at
// once) bounds how many directions one pass carries, trading passes for peak memory; max_bytes
// picks the largest chunk whose pass fits in that many bytes, from the allocator's statistics.
// The result is the same either way.
enum class JacobianMode { Auto, Forward, Reverse };
struct JacobianOptions {
  JacobianMode mode = JacobianMode::Auto;  // jacobian() only
  std::int64_t chunk_size = 0;  // directions per batched pass (0: all at once, or as max_bytes allows)
  // A memory budget for one batched pass: the peak bytes it may hold above those in use when it
  // starts, beyond the Jacobian's rows already computed (0: none). The passes of 1 and of 2
  // directions (rows of the result, not extra work) are measured with memory::stats(), and the
  // largest chunk whose estimated cost (fixed + chunk x per direction) fits is used for the rest;
  // 1 if none fits. Measuring resets the allocator's high-water mark (memory::reset_peak).
  std::size_t max_bytes = 0;
};

namespace detail {
// vmap(fn) over rows [start, stop) of the n x n identity, each row shaped like `shape`; the rows
// are made only when the pass runs, so memory follows the chunk.
template <class Fn>
Tensor vmap_identity_rows(const Fn& fn, std::int64_t start, std::int64_t stop, std::int64_t n, const Shape& shape, DType dtype) {
  // The directions share one function, so random draws inside it are shared too (Same): a
  // Jacobian of a function with dropout is the Jacobian at one mask.
  if (start == 0 && stop == n) return vmap(fn, Randomness::Same)(reshape(eye(n, dtype), Shape{n} + shape));
  const std::int64_t c = stop - start;
  Tensor rows = equal(unsqueeze(add(arange(c, DType::i64), scalar_tensor(static_cast<double>(start), DType::i64)), -1),
                      arange(n, DType::i64));
  return vmap(fn, Randomness::Same)(reshape(cast(rows, dtype), Shape{c} + shape));
}
// fn(), and the peak bytes it held above those in use when it started.
template <class Fn>
Tensor measured_pass(const Fn& fn, std::size_t& bytes) {
  const std::size_t before = memory::stats().bytes_in_use;
  memory::reset_peak();
  Tensor r = fn();
  bytes = memory::stats().peak_bytes - before;
  return r;
}
// The largest chunk whose pass fits in max_bytes, from the costs of passes of 1 and 2 directions
// (fixed + c * per direction).
std::int64_t chunk_for_budget(std::size_t max_bytes, std::size_t one, std::size_t two);
// vmap(fn) over the n rows of the identity in chunks (opts.chunk_size, or as opts.max_bytes
// allows); `chosen` receives the chunk used (n: all at once).
template <class Fn>
Tensor vmap_identity(const char* who, const Fn& fn, std::int64_t n, const Shape& shape, DType dtype, const JacobianOptions& opts,
                     std::int64_t* chosen = nullptr) {
  std::int64_t chunk = opts.chunk_size;
  if (chunk < 0) throw AutodiffError(std::string(who) + ": chunk_size must be positive (or 0 for all at once), got " + std::to_string(chunk));
  if (chunk > 0 && opts.max_bytes > 0) throw AutodiffError(std::string(who) + ": give chunk_size or max_bytes, not both");
  std::vector<Tensor> parts;
  std::int64_t i = 0;
  if (opts.max_bytes > 0 && n > 1) {
    std::size_t one = 0, two = 0;
    parts.push_back(measured_pass([&] { return vmap_identity_rows(fn, 0, 1, n, shape, dtype); }, one));
    const std::int64_t second = std::min<std::int64_t>(2, n - 1);
    parts.push_back(measured_pass([&] { return vmap_identity_rows(fn, 1, 1 + second, n, shape, dtype); }, two));
    i = 1 + second;
    chunk = second == 2 ? chunk_for_budget(opts.max_bytes, one, two) : 1;
  }
  if (chunk == 0 || chunk >= n - i) {
    if (chosen) *chosen = parts.empty() ? n : std::max<std::int64_t>(chunk, 1);
    if (i < n || parts.empty()) parts.push_back(vmap_identity_rows(fn, i, n, n, shape, dtype));  // n = 0 too
    return parts.size() == 1 ? parts[0] : concat(parts, 0);
  }
  if (chosen) *chosen = chunk;
  for (; i < n; i += chunk) parts.push_back(vmap_identity_rows(fn, i, std::min(n, i + chunk), n, shape, dtype));
  return concat(parts, 0);
}
}  // namespace detail

template <class F>
auto jacfwd(F f, JacobianOptions opts) {
  return [f, opts](const Tensor& x) {
    const std::int64_t n = x.numel();
    Tensor cols = detail::vmap_identity("jacfwd", [&](const Tensor& t) { return jvp(f, x, t).second; }, n, x.shape(), x.dtype(),
                                        opts);  // [n, out...]
    Shape out_shape = cols.shape().slice(1);
    Tensor j = transpose(reshape(cols, {n, out_shape.numel()}));  // [m, n]
    return reshape(j, out_shape + x.shape());
  };
}
template <class F>
auto jacfwd(F f, std::int64_t chunk_size = 0) {
  return jacfwd(std::move(f), JacobianOptions{.chunk_size = chunk_size});
}
namespace detail {
// The Jacobian from a pullback at x (y = f(x)): the rows by vmap over the identity.
template <class Pullback>
Tensor jacobian_rows(const char* who, const Tensor& x, const Tensor& y, Pullback& pullback, const JacobianOptions& opts,
                     std::int64_t* chosen = nullptr) {
  Tensor rows = vmap_identity(who, pullback, y.numel(), y.shape(), y.dtype(), opts, chosen);  // [m, x...]
  return reshape(rows, y.shape() + x.shape());
}
}  // namespace detail

template <class F>
auto jacrev(F f, JacobianOptions opts) {
  return [f, opts](const Tensor& x) {
    auto [y, pullback] = vjp(f, x);
    return detail::jacobian_rows("jacrev", x, y, pullback, opts);
  };
}
template <class F>
auto jacrev(F f, std::int64_t chunk_size = 0) {
  return jacrev(std::move(f), JacobianOptions{.chunk_size = chunk_size});
}

struct JacobianResult {
  Tensor jacobian;
  JacobianMode used;           // Forward or Reverse
  std::int64_t chunk_size = 0;  // directions per pass after the measured ones (max_bytes), else as given
};
// Chooses forward mode when the input is smaller than the output (n columns vs m rows), reverse
// mode otherwise. The output's size is learnt from the reverse pass's own forward evaluation,
// which reverse mode then uses: only a forward-mode choice pays for one extra evaluation of f.
// A tie goes to reverse mode for that reason, and because its rows need no final transpose.
template <class F>
JacobianResult jacobian(F f, const Tensor& x, JacobianOptions opts = {}) {
  JacobianMode mode = opts.mode;
  std::int64_t chosen = opts.chunk_size;
  if (mode != JacobianMode::Forward) {
    auto [y, pullback] = vjp(f, x);
    if (mode == JacobianMode::Reverse || x.numel() >= y.numel()) {
      Tensor j = detail::jacobian_rows("jacobian", x, y, pullback, opts, &chosen);
      return {j, JacobianMode::Reverse, chosen};
    }
  }
  const std::int64_t n = x.numel();
  Tensor cols = detail::vmap_identity("jacobian", [&](const Tensor& t) { return jvp(f, x, t).second; }, n, x.shape(), x.dtype(),
                                      opts, &chosen);
  Shape out_shape = cols.shape().slice(1);
  Tensor j = transpose(reshape(cols, {n, out_shape.numel()}));
  return {reshape(j, out_shape + x.shape()), JacobianMode::Forward, chosen};
}

// hessian(f)(x) = jacfwd(jacrev(f))(x): forward over reverse (chunk_size or max_bytes for the
// outer pass; each outer direction runs the whole inner jacrev).
template <class F>
auto hessian(F f, JacobianOptions opts) {
  return [f, opts](const Tensor& x) { return jacfwd(jacrev(f), opts)(x); };
}
template <class F>
auto hessian(F f, std::int64_t chunk_size = 0) {
  return hessian(std::move(f), JacobianOptions{.chunk_size = chunk_size});
}

// hvp(f)(x, v) = H v, forward over reverse, without forming H.
template <class F>
auto hvp(F f) {
  return [f](const Tensor& x, const Tensor& v) { return jvp(grad(f), x, v).second; };
}

// Reverse mode on explicit tensors, as torch.autograd.grad: d outputs / d inputs, for eager
// tensors that require grad.
std::vector<Tensor> autograd_grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                                  const std::vector<Tensor>& grad_outputs = {}, bool retain_graph = false,
                                  bool create_graph = false);

}  // namespace chainrule
