#pragma once
// vmap over several arguments with per-argument in_axes and an out_axes, as JAX's
// vmap(f, in_axes, out_axes):
//   auto per_ex = vmap(grad(loss), {not_mapped, 0, 0})(params, x, y);
// Each argument is a Tensor or a std::vector<Tensor> (all its tensors mapped along the same axis).
// in_axes[i] is an axis (negative counts from the end) or not_mapped (std::nullopt, JAX's None).
// A mapped axis is moved to the front before f is traced; the output's batch axis is moved to
// out_axes afterwards. The output may be a Tensor, a std::vector<Tensor> or a std::pair of Tensors.
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "chainrule/autodiff/transforms.h"

namespace chainrule {

using InAxis = std::optional<std::int64_t>;
inline constexpr std::nullopt_t not_mapped = std::nullopt;

namespace detail {

inline std::int64_t vmap_norm_axis(std::int64_t axis, std::int64_t rank, const std::string& what) {
  if (axis < -rank || axis >= rank)
    throw AutodiffError("vmap: in_axes " + std::to_string(axis) + " is out of range for " + what + " of rank " + std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}
// Moves axis `from` of x to position `to` (movedim).
inline Tensor vmap_movedim(const Tensor& x, std::int64_t from, std::int64_t to) {
  if (from == to) return x;
  const auto r = static_cast<std::int64_t>(x.dim());
  Axes rest;
  for (std::int64_t i = 0; i < r; ++i)
    if (i != from) rest.push_back(i);
  Axes perm;
  for (std::int64_t i = 0, k = 0; i < r; ++i) perm.push_back(i == to ? from : rest[static_cast<std::size_t>(k++)]);
  return permute(x, perm);
}

struct VmapSize {
  std::int64_t size = -1;
  std::string who;
  void see(std::int64_t s, const std::string& name) {
    if (size < 0) {
      size = s;
      who = name;
    } else if (s != size) {
      throw AutodiffError("vmap: mapped sizes disagree: " + who + " has size " + std::to_string(size) + " but " + name +
                          " has size " + std::to_string(s));
    }
  }
};

inline void vmap_size_of(const Tensor& x, const InAxis& ax, std::size_t i, VmapSize& vs) {
  if (!ax) return;
  const std::string name = "argument " + std::to_string(i);
  auto a = vmap_norm_axis(*ax, static_cast<std::int64_t>(x.dim()), name);
  vs.see(x.shape()[static_cast<std::size_t>(a)], name);
}
inline void vmap_size_of(const std::vector<Tensor>& xs, const InAxis& ax, std::size_t i, VmapSize& vs) {
  if (!ax) return;
  for (std::size_t j = 0; j < xs.size(); ++j) {
    const std::string name = "argument " + std::to_string(i) + "[" + std::to_string(j) + "]";
    auto a = vmap_norm_axis(*ax, static_cast<std::int64_t>(xs[j].dim()), name);
    vs.see(xs[j].shape()[static_cast<std::size_t>(a)], name);
  }
}

inline Tensor vmap_wrap(const std::shared_ptr<Frame>& f, const Tensor& x, const InAxis& ax) {
  if (!ax) return x;
  auto a = *ax < 0 ? *ax + static_cast<std::int64_t>(x.dim()) : *ax;
  return make_batch_tracer(f, vmap_movedim(x, a, 0));
}
inline std::vector<Tensor> vmap_wrap(const std::shared_ptr<Frame>& f, const std::vector<Tensor>& xs, const InAxis& ax) {
  std::vector<Tensor> r;
  r.reserve(xs.size());
  for (const auto& x : xs) r.push_back(vmap_wrap(f, x, ax));
  return r;
}

inline Tensor vmap_unwrap(const std::shared_ptr<Frame>& f, const Tensor& out, std::int64_t out_axis) {
  Tensor b = vmap_finish(f, out);
  auto a = out_axis < 0 ? out_axis + static_cast<std::int64_t>(b.dim()) : out_axis;
  if (a < 0 || a >= static_cast<std::int64_t>(b.dim()))
    throw AutodiffError("vmap: out_axes " + std::to_string(out_axis) + " is out of range for an output of rank " +
                        std::to_string(b.dim()) + " (batch axis included)");
  return vmap_movedim(b, 0, a);
}
inline std::vector<Tensor> vmap_unwrap(const std::shared_ptr<Frame>& f, const std::vector<Tensor>& outs, std::int64_t out_axis) {
  std::vector<Tensor> r;
  r.reserve(outs.size());
  for (const auto& o : outs) r.push_back(vmap_unwrap(f, o, out_axis));
  return r;
}
template <class A, class B>
auto vmap_unwrap(const std::shared_ptr<Frame>& f, const std::pair<A, B>& out, std::int64_t out_axis) {
  return std::make_pair(vmap_unwrap(f, out.first, out_axis), vmap_unwrap(f, out.second, out_axis));
}

}  // namespace detail

// vmap(f, in_axes, out_axes)(args...): see the top of this file.
template <class F>
auto vmap(F f, std::vector<InAxis> in_axes, std::int64_t out_axes = 0) {
  return [f, in_axes, out_axes](const auto&... args) {
    constexpr std::size_t n = sizeof...(args);
    if (in_axes.size() != n)
      throw AutodiffError("vmap: in_axes has " + std::to_string(in_axes.size()) + " entries but the function was called with " +
                          std::to_string(n) + " arguments");
    detail::VmapSize vs;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (detail::vmap_size_of(args, in_axes[I], I, vs), ...);
    }(std::index_sequence_for<decltype(args)...>{});
    if (vs.size < 0) throw AutodiffError("vmap: no argument is mapped (every in_axes entry is not_mapped, or mapped lists are empty)");
    FrameScope scope(TraceKind::Batch, vs.size);
    auto wrapped = [&]<std::size_t... I>(std::index_sequence<I...>) {
      return std::tuple<std::decay_t<decltype(args)>...>{detail::vmap_wrap(scope.frame(), args, in_axes[I])...};
    }(std::index_sequence_for<decltype(args)...>{});
    auto out = std::apply(f, wrapped);
    return detail::vmap_unwrap(scope.frame(), out, out_axes);
  };
}

}  // namespace chainrule
