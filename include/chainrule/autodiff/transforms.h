#pragma once
// Function transforms, the way a JAX user expects them, in C++:
//   grad, value_and_grad, vjp, jvp, linearize, vmap, jacfwd, jacrev, jacobian, hessian, hvp.
// Each returns or evaluates a new function; any nesting works (grad of grad, jacfwd of jacrev,
// jvp of grad, ...) because every transform runs as its own level (see frame.h).
//
// Functions take Tensors (or a std::vector<Tensor>, e.g. a model's parameters) and return a
// Tensor; value_and_grad and grad also accept functions returning std::pair<Tensor, Aux>.
#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/node.h"
#include "chainrule/autodiff/tracer.h"
#include "chainrule/ops/ops.h"

namespace chainrule {

namespace detail {

// Tracks the differentiated arguments of one reverse-mode transform.
class ReverseTrace {
 public:
  ReverseTrace() : scope_(std::in_place, TraceKind::Reverse) {}
  Tensor track(const Tensor& x);
  std::vector<Tensor> track(const std::vector<Tensor>& xs);
  template <class A> A maybe_track(bool on, const A& a) { return on ? track(a) : a; }
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

// Rebuilds an argument's gradient from the flat list of cotangents.
inline Tensor take(const Tensor&, const std::vector<Tensor>& g, std::size_t& k) { return g[k++]; }
inline std::vector<Tensor> take(const std::vector<Tensor>& a, const std::vector<Tensor>& g, std::size_t& k) {
  std::vector<Tensor> r(g.begin() + static_cast<std::ptrdiff_t>(k), g.begin() + static_cast<std::ptrdiff_t>(k + a.size()));
  k += a.size();
  return r;
}

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

// value_and_grad(f, argnum)(args...) -> {f(args...), df/d args[argnum]}. f must return a scalar,
// or std::pair<scalar, Aux>, in which case the result is {{value, aux}, grad}.
template <class F>
auto value_and_grad(F f, int argnum = 0) {
  return [f, argnum](const auto&... args) {
    detail::check_argnums("value_and_grad", {argnum}, sizeof...(args));
    detail::ReverseTrace tr;
    auto result = detail::call_tracked(f, tr, {argnum}, std::index_sequence_for<decltype(args)...>{}, args...);
    tr.finish(detail::primary(result));
    detail::check_scalar_output("value_and_grad", tr.out());
    auto g = tr.pull(ones(tr.out().shape(), tr.out().dtype()));
    // The gradient has the type of the differentiated argument (Tensor or std::vector<Tensor>).
    using G = decltype(detail::take(detail::nth<0>(args...), g, std::declval<std::size_t&>()));
    std::optional<G> grads;
    auto visit = [&]<std::size_t I>() {
      if (static_cast<int>(I) != argnum) return;
      std::size_t k = 0;
      if constexpr (std::is_same_v<std::decay_t<decltype(detail::nth<I>(args...))>, std::decay_t<decltype(detail::nth<0>(args...))>>)
        grads.emplace(detail::take(detail::nth<I>(args...), g, k));
      else
        throw AutodiffError("value_and_grad: argument " + std::to_string(I) + " differs in type from argument 0; use grad(f, {argnums})");
    };
    [&]<std::size_t... I>(std::index_sequence<I...>) { (visit.template operator()<I>(), ...); }(std::index_sequence_for<decltype(args)...>{});
    if constexpr (detail::is_pair<decltype(result)>::value) {
      return std::make_pair(std::make_pair(tr.out(), std::move(result.second)), std::move(*grads));
    } else {
      return std::make_pair(tr.out(), std::move(*grads));
    }
  };
}

// grad(f, argnum)(args...) -> df/d args[argnum] (same type as that argument).
template <class F>
auto grad(F f, int argnum = 0) {
  return [vg = value_and_grad(std::move(f), argnum)](const auto&... args) { return vg(args...).second; };
}

// grad(f, {i, j, ...})(args...) -> gradients with respect to several Tensor arguments.
template <class F>
auto grad(F f, std::vector<int> argnums) {
  return [f, argnums](const auto&... args) {
    detail::check_argnums("grad", argnums, sizeof...(args));
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

// vjp(f, x) -> {f(x), pullback}; the pullback maps an output cotangent to the input cotangent and
// may be called many times (also inside other transforms).
struct VjpResult {
  Tensor out;
  std::function<Tensor(const Tensor&)> pullback;
};
template <class F>
VjpResult vjp(const F& f, const Tensor& x) {
  auto tr = std::make_shared<detail::ReverseTrace>();
  Tensor xt = tr->track(x);
  tr->finish(f(xt));
  return {tr->out(), [tr](const Tensor& ct) { return tr->pull(ct)[0]; }};
}
// Several inputs: f takes a std::vector<Tensor>; the pullback returns one cotangent per input.
struct VjpResultN {
  Tensor out;
  std::function<std::vector<Tensor>(const Tensor&)> pullback;
};
template <class F>
VjpResultN vjp(const F& f, const std::vector<Tensor>& xs) {
  auto tr = std::make_shared<detail::ReverseTrace>();
  auto xt = tr->track(xs);
  tr->finish(f(xt));
  return {tr->out(), [tr](const Tensor& ct) { return tr->pull(ct); }};
}

// jvp(f, x, t) -> {f(x), J t}: forward mode with dual numbers; nothing is recorded.
namespace detail {
std::pair<Tensor, Tensor> jvp_finish(const std::shared_ptr<Frame>& f, const Tensor& out);
void check_tangent(const Tensor& x, const Tensor& t);
}  // namespace detail
template <class F>
std::pair<Tensor, Tensor> jvp(const F& f, const Tensor& x, const Tensor& t) {
  detail::check_tangent(x, t);
  FrameScope scope(TraceKind::Jvp);
  Tensor out = f(detail::make_jvp_tracer(scope.frame(), x, t));
  return detail::jvp_finish(scope.frame(), out);
}
template <class F>
std::pair<Tensor, Tensor> jvp(const F& f, const std::vector<Tensor>& xs, const std::vector<Tensor>& ts) {
  if (xs.size() != ts.size())
    throw AutodiffError("jvp: " + std::to_string(xs.size()) + " primals but " + std::to_string(ts.size()) + " tangents");
  FrameScope scope(TraceKind::Jvp);
  std::vector<Tensor> in;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    detail::check_tangent(xs[i], ts[i]);
    in.push_back(detail::make_jvp_tracer(scope.frame(), xs[i], ts[i]));
  }
  Tensor out = f(in);
  return detail::jvp_finish(scope.frame(), out);
}

// linearize(f, x) -> {f(x), u -> J u}. The linear map re-runs f in forward mode at x.
template <class F>
std::pair<Tensor, std::function<Tensor(const Tensor&)>> linearize(F f, const Tensor& x) {
  Tensor out = f(x);
  return {out, [f, x](const Tensor& u) { return jvp(f, x, u).second; }};
}

// vmap(f)(xs) maps f over the leading axis of xs, in one batched evaluation.
namespace detail {
Tensor vmap_finish(const std::shared_ptr<Frame>& f, const Tensor& out);
}
template <class F>
auto vmap(F f) {
  return [f](const Tensor& xs) {
    if (xs.dim() == 0) throw ShapeError("vmap: input must have a leading axis to map over, got a scalar");
    FrameScope scope(TraceKind::Batch, xs.shape()[0]);
    Tensor out = f(detail::make_batch_tracer(scope.frame(), xs));
    return detail::vmap_finish(scope.frame(), out);
  };
}

// Jacobians have shape out.shape + x.shape. jacfwd pushes the whole identity through one batched
// forward pass; jacrev pulls the whole identity back through one batched reverse pass.
template <class F>
auto jacfwd(F f) {
  return [f](const Tensor& x) {
    const std::int64_t n = x.numel();
    Tensor basis = reshape(eye(n, x.dtype()), Shape{n} + x.shape());
    Tensor out_shape_probe;
    Tensor cols = vmap([&](const Tensor& t) {
      auto [y, y_t] = jvp(f, x, t);
      out_shape_probe = y;
      return y_t;
    })(basis);  // [n, out...]
    Shape out_shape = cols.shape().slice(1);
    Tensor j = transpose(reshape(cols, {n, out_shape.numel()}));  // [m, n]
    return reshape(j, out_shape + x.shape());
  };
}
namespace detail {
// The Jacobian from a pullback at x (y = f(x)): every row at once, by vmap over the identity.
template <class Pullback>
Tensor jacobian_rows(const Tensor& x, const Tensor& y, Pullback& pullback) {
  const std::int64_t m = y.numel();
  Tensor basis = reshape(eye(m, y.dtype()), Shape{m} + y.shape());
  Tensor rows = vmap(pullback)(basis);  // [m, x...]
  return reshape(rows, y.shape() + x.shape());
}
}  // namespace detail

template <class F>
auto jacrev(F f) {
  return [f](const Tensor& x) {
    auto [y, pullback] = vjp(f, x);
    return detail::jacobian_rows(x, y, pullback);
  };
}

enum class JacobianMode { Auto, Forward, Reverse };
struct JacobianOptions {
  JacobianMode mode = JacobianMode::Auto;
};
struct JacobianResult {
  Tensor jacobian;
  JacobianMode used;  // Forward or Reverse
};
// Chooses forward mode when the input is smaller than the output (n columns vs m rows), reverse
// mode otherwise. The output's size is learnt from the reverse pass's own forward evaluation,
// which reverse mode then uses: only a forward-mode choice pays for one extra evaluation of f.
// A tie goes to reverse mode for that reason, and because its rows need no final transpose.
template <class F>
JacobianResult jacobian(F f, const Tensor& x, JacobianOptions opts = {}) {
  JacobianMode mode = opts.mode;
  if (mode == JacobianMode::Auto) {
    auto [y, pullback] = vjp(f, x);
    if (x.numel() >= y.numel()) return {detail::jacobian_rows(x, y, pullback), JacobianMode::Reverse};
    mode = JacobianMode::Forward;
  }
  if (mode == JacobianMode::Forward) return {jacfwd(f)(x), mode};
  return {jacrev(f)(x), mode};
}

// hessian(f)(x) = jacfwd(jacrev(f))(x): forward over reverse.
template <class F>
auto hessian(F f) {
  return [f](const Tensor& x) { return jacfwd(jacrev(f))(x); };
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
