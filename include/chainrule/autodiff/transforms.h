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

// A DTypeError naming transform `who` and the first leaf of x (its path from `prefix`,
// "argument 1.w1") that is not floating-point: only those have derivatives.
template <class T>
void check_floating(const char* who, const T& x, const std::string& prefix) {
  bool ok = true;
  tree_for_each(x, [&](const Tensor& leaf) { ok = ok && is_floating(leaf.dtype()); });
  if (ok) return;  // the paths are made only for the error
  tree_for_each_path(x, prefix, [&](const Tensor& leaf, const std::string& path) {
    if (!is_floating(leaf.dtype()))
      throw DTypeError(std::string(who) + ": cannot differentiate with respect to " + path + ": dtype " +
                       std::string(dtype_name(leaf.dtype())) + " (shape " + leaf.shape().str() + ") is not floating-point");
  });
}

// Tracks the differentiated arguments of one reverse-mode transform `who` (named in its errors).
class ReverseTrace {
 public:
  explicit ReverseTrace(const char* who = "grad") : who_(who), scope_(std::in_place, TraceKind::Reverse) {}
  Tensor track(const Tensor& x);
  std::vector<Tensor> track(const std::vector<Tensor>& xs);
  // Argument `index` tracked if `on`.
  template <class A> A maybe_track(bool on, const A& a, std::size_t index) {
    if constexpr (is_tree_v<A>) {
      if (!on) return a;
      check_floating(who_, a, "argument " + std::to_string(index));
      return tree_map([&](const Tensor& x) { return track(x); }, a);
    } else {
      if (on)
        throw AutodiffError(std::string(who_) + ": cannot differentiate with respect to argument " + std::to_string(index) +
                            ", which is not a tree of Tensors");
      return a;
    }
  }
  // Ends the trace (the function has returned) and remembers its output.
  void finish(const Tensor& out);
  const Tensor& out() const { return out_; }
  // Cotangents of the tracked inputs, in tracking order (zeros where none arrived).
  std::vector<Tensor> pull(const Tensor& out_ct) const;

 private:
  const char* who_;
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
  std::tuple<std::decay_t<Args>...> tracked{tr.maybe_track(on(I), args, I)...};
  return std::apply(f, tracked);
}

void check_scalar_output(const char* transform, const Tensor& out);
void check_argnums(const char* transform, const std::vector<int>& argnums, std::size_t nargs);

}  // namespace detail

namespace detail {
// value_and_grad with respect to argument I (known at compile time, so its type may be any tree).
template <std::size_t I, class F, class... Args>
auto value_and_grad_at(const char* who, const F& f, const Args&... args) {
  ReverseTrace tr(who);
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
    detail::ReverseTrace tr("grad");
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
  check_floating("vjp", x, "primal");
  auto tr = std::make_shared<ReverseTrace>("vjp");
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
inline bool tangent_ok(const Tensor& x, const Tensor& t) {
  return is_floating(x.dtype()) && t.shape() == x.shape() && t.dtype() == x.dtype();
}
// The error for a tangent that does not match its primal `name` ("primal.w"), from transform `who`.
[[noreturn]] void tangent_error(const char* who, const std::string& name, const Tensor& x, const Tensor& t);
template <class Out>
std::pair<Out, Out> jvp_finish_tree(const std::shared_ptr<Frame>& f, const Out& out) {
  return {tree_map([&](const Tensor& y) { return jvp_finish(f, y).first; }, out),
          tree_map([&](const Tensor& y) { return jvp_finish(f, y).second; }, out)};
}
template <class F, class T>
auto jvp_tree(const F& f, const T& xs, const T& ts) {
  FrameScope scope(TraceKind::Jvp);
  std::size_t k = 0;
  T in = tree_map2("jvp", [&](const Tensor& x, const Tensor& t) {
    if (!tangent_ok(x, t)) tangent_error("jvp", tree_paths(xs, "primal")[k], x, t);  // names made only here
    ++k;
    return make_jvp_tracer(scope.frame(), x, t);
  }, xs, ts, "primals and tangents");
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
// primal values: no primal work is repeated. x and u are trees of one structure; the output (and
// so J u) may be a tree.
template <class F, class T>
  requires is_tree_v<T>
auto linearize(F f, const T& x) {
  using Out = std::decay_t<std::invoke_result_t<F&, const T&>>;
  static_assert(is_tree_v<Out>, "linearize: f must return a tree of Tensors");
  auto tape = std::make_shared<LinearTape>();
  std::optional<Out> out;
  std::vector<std::int64_t> in_ids, out_ids;  // out_ids: -1 where an output leaf does not depend on x
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
    T xt = tree_map([&](const Tensor& leaf) {
      Tensor t = detail::make_linearize_tracer(scope.frame(), leaf);
      in_ids.push_back(tape->id_of(t));
      return t;
    }, x);
    Out y = f(xt);
    out.emplace(tree_map([&](const Tensor& o) {
      out_ids.push_back(tape->id_of(o));
      return detail::is_traced_by(o, scope.frame().get()) ? o.impl()->primal : o;
    }, y));
  }
  std::function<Out(const T&)> lin = [tape, in_ids, out_ids, x, like = *out](const T& u) {
    std::vector<Tensor> us;
    (void)tree_map2("linearize", [&](const Tensor& xl, const Tensor& ul) {
      if (!detail::tangent_ok(xl, ul)) detail::tangent_error("linearize", tree_paths(x, "primal")[us.size()], xl, ul);
      us.push_back(ul);
      return ul;
    }, x, u, "primals and tangents");
    std::vector<std::int64_t> live;
    for (auto id : out_ids)
      if (id >= 0) live.push_back(id);
    std::vector<Tensor> r;
    if (!live.empty()) r = tape->apply(in_ids, us, live);
    std::size_t k = 0, j = 0;
    return tree_map([&](const Tensor& o) {
      Tensor t = out_ids[k++] >= 0 ? r[j++] : Tensor();
      return t.defined() ? t : zeros_like(o);
    }, like);
  };
  return std::make_pair(std::move(*out), std::move(lin));
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
  int argnum = 0;  // the differentiated argument (jacfwd<I> and the like: I)
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

// jacfwd(f, opts)(args...) and jacrev(f, opts)(args...): the Jacobian of f's output with respect
// to argument opts.argnum (jacfwd<I>/jacrev<I>: argument I, of any type; a runtime argnum needs
// that argument to have the type of argument 0, as grad's). Argument and output may be trees; the
// result nests as JAX's: the output's structure outside, the argument's inside, each leaf of shape
// out_leaf.shape + in_leaf.shape (jacobian_t<Out, In>; a struct output with a structured argument
// becomes a std::tuple of its fields). For a Tensor f(Tensor), one Tensor of shape out + x.
// chunk_size and max_bytes count the directions over all leaves laid end to end.
namespace detail {
template <class Out, class In> struct jac_type;
template <class Out, class In> using jac_t = typename jac_type<Out, In>::type;
template <class Out, class In, class Fields> struct struct_jac;
template <class Out, class In, class... E> struct struct_jac<Out, In, std::tuple<E...>> {
  using type = std::conditional_t<std::is_same_v<In, Tensor>, Out, std::tuple<jac_t<std::decay_t<E>, In>...>>;
};
template <class Out, class In> struct jac_type : struct_jac<Out, In, decltype(tree_fields(std::declval<const Out&>()))> {};
template <class In> struct jac_type<Tensor, In> { using type = In; };
template <class E, class A, class In> struct jac_type<std::vector<E, A>, In> { using type = std::vector<jac_t<E, In>>; };
template <class E, std::size_t N, class In> struct jac_type<std::array<E, N>, In> { using type = std::array<jac_t<E, In>, N>; };
template <class A, class B, class In> struct jac_type<std::pair<A, B>, In> { using type = std::pair<jac_t<A, In>, jac_t<B, In>>; };
template <class... E, class In> struct jac_type<std::tuple<E...>, In> { using type = std::tuple<jac_t<E, In>...>; };
template <class V, class C, class A, class In> struct jac_type<std::map<std::string, V, C, A>, In> {
  using type = std::map<std::string, jac_t<V, In>>;
};
}  // namespace detail
template <class Out, class In> using jacobian_t = detail::jac_t<Out, In>;

namespace detail {
// A tree's leaves laid end to end in one vector: where each starts and its shape.
struct LeafLayout {
  std::vector<Shape> shapes;
  std::vector<std::int64_t> offsets;
  std::int64_t size = 0;
};
template <class T>
LeafLayout layout_of(const char* who, const T& t, const char* what) {
  LeafLayout l;
  tree_for_each(t, [&](const Tensor& x) {
    l.shapes.push_back(x.shape());
    l.offsets.push_back(l.size);
    l.size += x.numel();
  });
  if (l.shapes.empty()) throw AutodiffError(std::string(who) + ": the " + what + " has no Tensor leaves");
  return l;
}
// The leaves as one vector (a view for a single leaf).
Tensor flat_leaves(const std::vector<Tensor>& leaves);
// Leaf i of a vector laid out as l, in its shape and `dtype`.
Tensor leaf_of(const Tensor& flat, const LeafLayout& l, std::size_t i, DType dtype);
// Block (i, j) of a Jacobian J [out.size, in.size]: out leaf i by in leaf j, shaped as both.
Tensor jac_block(const Tensor& J, const LeafLayout& out, std::size_t i, const LeafLayout& in, std::size_t j);
template <class T>
T unflat(const T& like, const Tensor& flat, const LeafLayout& l) {
  std::size_t k = 0;
  return tree_map([&](const Tensor& x) { return leaf_of(flat, l, k++, x.dtype()); }, like);
}

// The Jacobian's blocks in jac_t<Out, In>, output leaf i counted by `i`.
template <class Out, class In, class Block>
jac_t<Out, In> jac_nest(const Out& o, const In& in, const Block& block, std::size_t& i) {
  using namespace tree_detail;
  if constexpr (std::is_same_v<Out, Tensor>) {
    const std::size_t oi = i++;
    std::size_t j = 0;
    return tree_map([&](const Tensor&) { return block(oi, j++); }, in);
  } else if constexpr (is_vector<Out>::value) {
    jac_t<Out, In> r;
    r.reserve(o.size());
    for (const auto& e : o) r.push_back(jac_nest(e, in, block, i));
    return r;
  } else if constexpr (is_array<Out>::value) {
    jac_t<Out, In> r;
    for (std::size_t k = 0; k < o.size(); ++k) r[k] = jac_nest(o[k], in, block, i);
    return r;
  } else if constexpr (is_pair<Out>::value) {
    return jac_t<Out, In>{jac_nest(o.first, in, block, i), jac_nest(o.second, in, block, i)};  // left to right
  } else if constexpr (is_tuple<Out>::value) {
    return std::apply([&](const auto&... e) { return jac_t<Out, In>{jac_nest(e, in, block, i)...}; }, o);
  } else if constexpr (is_map<Out>::value) {
    jac_t<Out, In> r;
    for (const auto& [k, v] : o) r.emplace(k, jac_nest(v, in, block, i));
    return r;
  } else if constexpr (std::is_same_v<In, Tensor>) {
    return tree_map([&](const Tensor&) { return block(i++, 0); }, o);
  } else {
    return std::apply([&](const auto&... e) { return jac_t<Out, In>{jac_nest(e, in, block, i)...}; }, tree_fields(o));
  }
}

// Argument K of args..., or xi in place of argument I.
template <std::size_t K, std::size_t I, class X, class... Args>
decltype(auto) arg_or(const X& xi, const Args&... args) {
  if constexpr (K == I) return (xi);
  else return nth<K>(args...);
}
template <std::size_t I, class F, class X, class... Args>
auto call_at(const F& f, const X& xi, const Args&... args) {
  return [&]<std::size_t... K>(std::index_sequence<K...>) { return f(arg_or<K, I>(xi, args...)...); }(std::index_sequence_for<Args...>{});
}

// fn.template operator()<argnum>(), for a runtime argnum whose argument has the type of argument 0
// (so that every choice has one result type).
template <class Fn, class... Args>
auto at_argnum(const char* who, int argnum, const Fn& fn, const Args&... args) {
  static_assert(sizeof...(Args) > 0, "the function must take an argument to differentiate");
  check_argnums(who, {argnum}, sizeof...(args));
  using A0 = std::decay_t<decltype(nth<0>(args...))>;
  std::optional<decltype(fn.template operator()<0>())> r;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ([&] {
      if (static_cast<int>(I) != argnum) return;
      if constexpr (std::is_same_v<std::decay_t<decltype(nth<I>(args...))>, A0>)
        r.emplace(fn.template operator()<I>());
      else
        throw AutodiffError(std::string(who) + ": argument " + std::to_string(I) + " differs in type from argument 0; use " + who +
                            "<" + std::to_string(I) + ">(f)");
    }(), ...);
  }(std::index_sequence_for<Args...>{});
  return std::move(*r);
}

// The Jacobian of argument I's map by `mode` (Auto: reverse unless the argument is the smaller),
// as jac_t; `used` and `chosen` receive the mode and the chunk.
template <std::size_t I, class F, class... Args>
auto jacobian_at(const char* who, JacobianMode mode, const F& f, const JacobianOptions& opts, std::int64_t* chosen, JacobianMode* used,
                 const Args&... args) {
  using In = std::decay_t<decltype(nth<I>(args...))>;
  static_assert(is_tree_v<In>, "jacfwd/jacrev/jacobian/hessian: the differentiated argument must be a tree of Tensors");
  const In& x = nth<I>(args...);
  check_floating(who, x, "argument " + std::to_string(I));
  auto fi = [&](const In& xi) { return call_at<I>(f, xi, args...); };
  using Out = std::decay_t<decltype(fi(x))>;
  static_assert(is_tree_v<Out>, "jacfwd/jacrev/jacobian/hessian: f must return a tree of Tensors");
  const LeafLayout in = layout_of(who, x, ("argument " + std::to_string(I)).c_str());
  std::optional<Out> like;  // the output's structure and layout, seen on the first pass
  LeafLayout out;
  auto see = [&](const Out& y) {
    if (like) return;
    like.emplace(tree_map([](const Tensor&) { return Tensor(); }, y));
    out = layout_of(who, y, "output");
  };
  auto forward = [&] {
    Tensor cols = vmap_identity(who, [&](const Tensor& t) {
      Out dy = jvp(fi, x, unflat(x, t, in)).second;
      see(dy);
      return flat_leaves(tree_leaves(dy));
    }, in.size, Shape{in.size}, tree_leaves(x)[0].dtype(), opts, chosen);  // [n, m]
    if (used) *used = JacobianMode::Forward;
    return transpose(cols);
  };
  Tensor j;
  if (mode == JacobianMode::Forward) {
    j = forward();
  } else {
    auto r = vjp([&](const In& xi) {
      Out y = fi(xi);
      see(y);
      return flat_leaves(tree_leaves(y));
    }, x);
    if (mode == JacobianMode::Reverse || in.size >= out.size) {
      auto row = [&](const Tensor& ct) { return flat_leaves(tree_leaves(r.pullback(ct))); };
      j = vmap_identity(who, row, out.size, Shape{out.size}, r.out.dtype(), opts, chosen);  // [m, n]
      if (used) *used = JacobianMode::Reverse;
    } else {
      j = forward();
    }
  }
  std::size_t i = 0;
  return jac_nest(*like, x, [&](std::size_t oi, std::size_t ij) { return jac_block(j, out, oi, in, ij); }, i);
}
}  // namespace detail

template <class F>
auto jacfwd(F f, JacobianOptions opts) {
  return [f, opts](const auto&... args) {
    return detail::at_argnum("jacfwd", opts.argnum, [&]<std::size_t I>() {
      return detail::jacobian_at<I>("jacfwd", JacobianMode::Forward, f, opts, nullptr, nullptr, args...);
    }, args...);
  };
}
template <class F>
auto jacfwd(F f, std::int64_t chunk_size = 0) {
  return jacfwd(std::move(f), JacobianOptions{.chunk_size = chunk_size});
}
template <int I, class F>
auto jacfwd(F f, JacobianOptions opts = {}) {
  return [f, opts](const auto&... args) {
    static_assert(I >= 0 && static_cast<std::size_t>(I) < sizeof...(args), "jacfwd<I>: I is not an argument");
    return detail::jacobian_at<static_cast<std::size_t>(I)>("jacfwd", JacobianMode::Forward, f, opts, nullptr, nullptr, args...);
  };
}

template <class F>
auto jacrev(F f, JacobianOptions opts) {
  return [f, opts](const auto&... args) {
    return detail::at_argnum("jacrev", opts.argnum, [&]<std::size_t I>() {
      return detail::jacobian_at<I>("jacrev", JacobianMode::Reverse, f, opts, nullptr, nullptr, args...);
    }, args...);
  };
}
template <class F>
auto jacrev(F f, std::int64_t chunk_size = 0) {
  return jacrev(std::move(f), JacobianOptions{.chunk_size = chunk_size});
}
template <int I, class F>
auto jacrev(F f, JacobianOptions opts = {}) {
  return [f, opts](const auto&... args) {
    static_assert(I >= 0 && static_cast<std::size_t>(I) < sizeof...(args), "jacrev<I>: I is not an argument");
    return detail::jacobian_at<static_cast<std::size_t>(I)>("jacrev", JacobianMode::Reverse, f, opts, nullptr, nullptr, args...);
  };
}

template <class J>
struct JacobianResultOf {
  J jacobian;                   // as jacfwd / jacrev give it
  JacobianMode used;            // Forward or Reverse
  std::int64_t chunk_size = 0;  // directions per pass after the measured ones (max_bytes), else as given
};
using JacobianResult = JacobianResultOf<Tensor>;
// Chooses forward mode when the input is smaller than the output (n columns vs m rows, over all
// leaves), reverse mode otherwise. The output's size is learnt from the reverse pass's own forward
// evaluation, which reverse mode then uses: only a forward-mode choice pays for one extra
// evaluation of f. A tie goes to reverse mode for that reason, and because its rows need no final
// transpose. x may be a tree (one argument; for several, close over the others or use jacfwd<I>).
template <class F, class T>
  requires is_tree_v<T>
auto jacobian(F f, const T& x, JacobianOptions opts = {}) {
  std::int64_t chosen = opts.chunk_size;
  JacobianMode used = JacobianMode::Reverse;
  auto j = detail::jacobian_at<0>("jacobian", opts.mode, f, opts, &chosen, &used, x);
  return JacobianResultOf<decltype(j)>{std::move(j), used, chosen};
}

// hessian(f)(args...) = jacfwd(jacrev(f))(args...) with respect to argument opts.argnum
// (hessian<I>: argument I): forward over reverse (chunk_size or max_bytes for the outer pass; each
// outer direction runs the whole inner jacrev). For a scalar f of a tree, jacobian_t<In, In>.
namespace detail {
// hessian's own checks of argument `argnum` (before the jacfwd and jacrev inside it would name themselves).
template <class... Args>
void check_hessian_input(int argnum, const Args&... args) {
  check_argnums("hessian", {argnum}, sizeof...(args));
  std::size_t i = 0;
  auto see = [&](const auto& a) {
    if constexpr (is_tree_v<std::decay_t<decltype(a)>>)
      if (static_cast<int>(i) == argnum) check_floating("hessian", a, "argument " + std::to_string(i));
    ++i;
  };
  (see(args), ...);
}
}  // namespace detail
template <class F>
auto hessian(F f, JacobianOptions opts) {
  return [f, opts](const auto&... args) {
    detail::check_hessian_input(opts.argnum, args...);
    return jacfwd(jacrev(f, JacobianOptions{.argnum = opts.argnum}), opts)(args...);
  };
}
template <class F>
auto hessian(F f, std::int64_t chunk_size = 0) {
  return hessian(std::move(f), JacobianOptions{.chunk_size = chunk_size});
}
template <int I, class F>
auto hessian(F f, JacobianOptions opts = {}) {
  return [f, opts](const auto&... args) {
    static_assert(I >= 0 && static_cast<std::size_t>(I) < sizeof...(args), "hessian<I>: I is not an argument");
    detail::check_hessian_input(I, args...);
    return jacfwd<I>(jacrev<I>(f), opts)(args...);
  };
}

// hvp(f)(x, v, rest...) = H v, the Hessian of f(·, rest...) at x applied to v, forward over
// reverse, without forming H. x and v are trees of one structure; H v has it too.
template <class F>
auto hvp(F f) {
  return [f]<class T, class... Rest>(const T& x, const T& v, const Rest&... rest) {
    detail::check_floating("hvp", x, "argument 0");
    return jvp([&](const T& xi) { return grad<0>(f)(xi, rest...); }, x, v).second;
  };
}

// Reverse mode on explicit tensors, as torch.autograd.grad: d outputs / d inputs, for eager
// tensors that require grad.
std::vector<Tensor> autograd_grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                                  const std::vector<Tensor>& grad_outputs = {}, bool retain_graph = false,
                                  bool create_graph = false);

}  // namespace chainrule
