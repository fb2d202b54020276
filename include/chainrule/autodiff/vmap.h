#pragma once
// vmap over several arguments with per-argument in_axes and an out_axes, as JAX's
// vmap(f, in_axes, out_axes):
//   auto per_ex = vmap(grad(loss), {not_mapped, 0, 0})(params, x, y);
// Each argument is a tree (tree.h: a Tensor, or vectors, tuples, maps, CHAINRULE_TREE structs of
// them), all of whose leaves are mapped along the same axis.
// in_axes[i] is an axis (negative counts from the end) or not_mapped (std::nullopt, JAX's None).
// A mapped axis is moved to the front before f is traced; the output's batch axis is moved to
// out_axes afterwards. The output may be any tree; every leaf gets its batch axis at out_axes.
// randomness (frame.h) chooses what random draws inside f do: Error (the default), Same, Different.
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

template <class T>
void vmap_size_of(const T& x, const InAxis& ax, std::size_t i, VmapSize& vs) {
  if (!ax) return;
  if constexpr (!is_tree_v<T>) {
    throw AutodiffError("vmap: argument " + std::to_string(i) + " is not a tree of Tensors and must be not_mapped");
  } else {
  std::size_t j = 0;
  tree_for_each(x, [&](const Tensor& leaf) {
    std::string name = "argument " + std::to_string(i);
    if constexpr (!std::is_same_v<T, Tensor>) name += "[" + std::to_string(j++) + "]";
    auto a = vmap_norm_axis(*ax, static_cast<std::int64_t>(leaf.dim()), name);
    vs.see(leaf.shape()[static_cast<std::size_t>(a)], name);
  });
  }
}

template <class T>
T vmap_wrap(const std::shared_ptr<Frame>& f, const T& x, const InAxis& ax) {
  if constexpr (!is_tree_v<T>) {
    return x;  // a static argument (a flag, a size): passed through
  } else {
    if (!ax) return x;
    return tree_map([&](const Tensor& leaf) {
      auto a = *ax < 0 ? *ax + static_cast<std::int64_t>(leaf.dim()) : *ax;
      return make_batch_tracer(f, vmap_movedim(leaf, a, 0));
    }, x);
  }
}

template <class T>
T vmap_unwrap(const std::shared_ptr<Frame>& f, const T& out, std::int64_t out_axis) {
  return tree_map([&](const Tensor& o) {
    Tensor b = vmap_finish(f, o);
    auto a = out_axis < 0 ? out_axis + static_cast<std::int64_t>(b.dim()) : out_axis;
    if (a < 0 || a >= static_cast<std::int64_t>(b.dim()))
      throw AutodiffError("vmap: out_axes " + std::to_string(out_axis) + " is out of range for an output of rank " +
                          std::to_string(b.dim()) + " (batch axis included)");
    return vmap_movedim(b, 0, a);
  }, out);
}

}  // namespace detail

// vmap(f, in_axes, out_axes)(args...): see the top of this file.
template <class F>
auto vmap(F f, std::vector<InAxis> in_axes, std::int64_t out_axes = 0, Randomness randomness = Randomness::Error) {
  return [f, in_axes, out_axes, randomness](const auto&... args) {
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
    scope.frame()->randomness = randomness;
    auto wrapped = [&]<std::size_t... I>(std::index_sequence<I...>) {
      return std::tuple<std::decay_t<decltype(args)>...>{detail::vmap_wrap(scope.frame(), args, in_axes[I])...};
    }(std::index_sequence_for<decltype(args)...>{});
    auto out = std::apply(f, wrapped);
    return detail::vmap_unwrap(scope.frame(), out, out_axes);
  };
}

}  // namespace chainrule
