#pragma once
// vmap over several arguments with per-argument in_axes and out_axes, as JAX's
// vmap(f, in_axes, out_axes) (and torch.func's chunk_size):
//   auto per_ex = vmap(grad(loss), {not_mapped, 0, 0})(params, x, y);
// Each argument is a tree (tree.h: a Tensor, or vectors, tuples, maps, CHAINRULE_TREE structs of
// them). An in_axes entry is an axis (negative counts from the end) or not_mapped (std::nullopt,
// JAX's None) for every leaf of its argument, or a tree of such entries that follows the
// argument's structure, as a JAX in_axes pytree (a prefix: an axis stands for a whole subtree):
//   vmap(f, {{0, not_mapped}, 1})(std::make_pair(a, b), c);      // a along 0, b not mapped, c along 1
//   vmap(f, {AxisTree::map({{"w", not_mapped}, {"x", 0}})})(named);
// A mapped axis is moved to the front before f is traced; each output leaf's batch axis is moved
// to its out_axes entry (a tree following the output's structure, or one axis for all leaves;
// not_mapped returns a leaf that does not depend on the mapped arguments as it is).
// randomness (frame.h) chooses what random draws inside f do: Error (the default), Same, Different.
// chunk_size (VmapOptions) runs f over chunks of that many examples and concatenates the results:
// the same values for less peak memory (random draws are then made per chunk, Same and Different).
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "chainrule/autodiff/transforms.h"

namespace chainrule {

using InAxis = std::optional<std::int64_t>;
inline constexpr std::nullopt_t not_mapped = std::nullopt;

// An in_axes / out_axes entry: one axis (or not_mapped) for a whole subtree, a sequence of entries
// for a vector, array, pair, tuple or struct (its fields in declaration order), or a map of
// entries for a std::map (the same keys).
class AxisTree {
 public:
  AxisTree(int axis) : leaf_(axis) {}  // NOLINT: an axis is an entry
  AxisTree(std::int64_t axis) : leaf_(axis) {}  // NOLINT
  AxisTree(std::nullopt_t) {}  // NOLINT: not_mapped
  AxisTree(InAxis axis) : leaf_(axis) {}  // NOLINT
  AxisTree(std::initializer_list<AxisTree> children) : kind_(Kind::Seq), seq_(children) {}
  explicit AxisTree(std::vector<AxisTree> children) : kind_(Kind::Seq), seq_(std::move(children)) {}
  static AxisTree map(std::map<std::string, AxisTree> entries) {
    AxisTree t(not_mapped);
    t.kind_ = Kind::Map;
    t.map_ = std::move(entries);
    return t;
  }

  enum class Kind { Leaf, Seq, Map };
  Kind kind() const { return kind_; }
  const InAxis& axis() const { return leaf_; }
  const std::vector<AxisTree>& children() const { return seq_; }
  const std::map<std::string, AxisTree>& entries() const { return map_; }
  std::string str() const;

 private:
  Kind kind_ = Kind::Leaf;
  InAxis leaf_;
  std::vector<AxisTree> seq_;
  std::map<std::string, AxisTree> map_;
};

inline std::string AxisTree::str() const {
  if (kind_ == Kind::Leaf) return leaf_ ? std::to_string(*leaf_) : "not_mapped";
  std::string s = kind_ == Kind::Seq ? "{" : "map{";
  bool first = true;
  if (kind_ == Kind::Seq)
    for (const auto& c : seq_) s += (first ? "" : ", ") + c.str(), first = false;
  else
    for (const auto& [k, c] : map_) s += (first ? "" : ", ") + k + ": " + c.str(), first = false;
  return s + "}";
}

struct VmapOptions {
  AxisTree out_axes = 0;
  Randomness randomness = Randomness::Error;
  std::int64_t chunk_size = 0;  // examples per batched evaluation (0: all at once)
};

namespace detail {

// One leaf of an argument (or output) and its axis, named for errors ("argument 1[0]").
struct LeafAxis {
  InAxis axis;
  std::string name;
};

inline std::int64_t vmap_norm_axis(const char* which, std::int64_t axis, std::int64_t rank, const std::string& what) {
  if (axis < -rank || axis >= rank)
    throw AutodiffError(std::string("vmap: ") + which + " " + std::to_string(axis) + " is out of range for " + what + " of rank " +
                        std::to_string(rank));
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

// The axis of every leaf of x, in tree order, from `spec` (an axis for a whole subtree, or a tree
// of entries following x's structure). `which` is "in_axes" or "out_axes".
template <class T>
void leaf_axes(const char* which, const T& x, const AxisTree& spec, const std::string& path, std::vector<LeafAxis>& out) {
  auto mismatch = [&](const std::string& why) {
    return AutodiffError(std::string("vmap: ") + which + " entry " + spec.str() + " for " + path + " does not match its structure " +
                         tree_structure(x) + ": " + why);
  };
  if (spec.kind() == AxisTree::Kind::Leaf) {
    tree_for_each_path(x, path, [&](const Tensor&, const std::string& name) { out.push_back({spec.axis(), name}); });
  } else if constexpr (std::is_same_v<T, Tensor>) {
    throw mismatch("a Tensor takes one axis or not_mapped");
  } else if constexpr (tree_detail::is_map<T>::value) {
    if (spec.kind() != AxisTree::Kind::Map) throw mismatch("a map takes AxisTree::map({{key, axis}, ...})");
    std::string missing, extra;
    for (const auto& [k, v] : x)
      if (!spec.entries().count(k)) missing += " " + k;
    for (const auto& [k, v] : spec.entries())
      if (!x.count(k)) extra += " " + k;
    if (!missing.empty() || !extra.empty())
      throw mismatch("keys differ (" + (missing.empty() ? "" : "missing:" + missing) + (missing.empty() || extra.empty() ? "" : "; ") +
                     (extra.empty() ? "" : "not in the argument:" + extra) + ")");
    for (const auto& [k, v] : x) leaf_axes(which, v, spec.entries().at(k), path + "[\"" + k + "\"]", out);
  } else {
    if (spec.kind() != AxisTree::Kind::Seq) throw mismatch("a map entry for a sequence, tuple or struct");
    const auto& c = spec.children();
    if constexpr (tree_detail::is_vector<T>::value || tree_detail::is_array<T>::value) {
      if (c.size() != x.size())
        throw mismatch(std::to_string(c.size()) + " entries for " + std::to_string(x.size()) + " elements");
      for (std::size_t i = 0; i < x.size(); ++i) leaf_axes(which, x[i], c[i], path + "[" + std::to_string(i) + "]", out);
    } else {
      auto fields = [&] {
        if constexpr (tree_detail::is_pair<T>::value) return std::tie(x.first, x.second);
        else if constexpr (tree_detail::is_tuple<T>::value) return std::apply([](const auto&... e) { return std::tie(e...); }, x);
        else return tree_fields(x);
      }();
      constexpr std::size_t n = std::tuple_size_v<decltype(fields)>;
      if (c.size() != n) throw mismatch(std::to_string(c.size()) + " entries for " + std::to_string(n) + " fields");
      auto key = [&](std::size_t i) {
        if constexpr (tree_detail::is_pair<T>::value || tree_detail::is_tuple<T>::value) return "[" + std::to_string(i) + "]";
        else return tree_detail::field_key(x, i);
      };
      std::size_t i = 0;
      std::apply([&](const auto&... e) {
        ((leaf_axes(which, e, c[i], path + key(i), out), ++i), ...);
      }, fields);
    }
  }
}

// The leaves' axes of argument i, normalised against each leaf's rank.
template <class T>
std::vector<LeafAxis> arg_axes(const T& x, const AxisTree& spec, std::size_t i) {
  const std::string name = "argument " + std::to_string(i);
  std::vector<LeafAxis> r;
  if constexpr (!is_tree_v<T>) {
    if (spec.kind() != AxisTree::Kind::Leaf || spec.axis())
      throw AutodiffError("vmap: " + name + " is not a tree of Tensors and must be not_mapped");
  } else {
    leaf_axes("in_axes", x, spec, name, r);
    std::size_t k = 0;
    tree_for_each(x, [&](const Tensor& leaf) {
      auto& la = r[k++];
      if (la.axis) la.axis = vmap_norm_axis("in_axes", *la.axis, static_cast<std::int64_t>(leaf.dim()), la.name);
    });
  }
  return r;
}

// The one mapped size, or an error listing every mapped leaf's size.
template <class... Args>
std::int64_t vmap_size(const std::vector<std::vector<LeafAxis>>& axes, const Args&... args) {
  std::vector<std::pair<std::string, std::int64_t>> sizes;
  std::size_t i = 0;
  auto see = [&](const auto& x) {
    if constexpr (is_tree_v<std::decay_t<decltype(x)>>) {
      std::size_t k = 0;
      tree_for_each(x, [&](const Tensor& leaf) {
        const auto& la = axes[i][k++];
        if (la.axis)
          sizes.push_back({la.name + " has size " + std::to_string(leaf.shape()[static_cast<std::size_t>(*la.axis)]) + " along axis " +
                           std::to_string(*la.axis), leaf.shape()[static_cast<std::size_t>(*la.axis)]});
      });
    }
    ++i;
  };
  (see(args), ...);
  if (sizes.empty()) throw AutodiffError("vmap: no argument is mapped (every in_axes entry is not_mapped, or mapped lists are empty)");
  bool agree = true;
  for (const auto& s : sizes) agree &= s.second == sizes[0].second;
  if (!agree) {
    std::string list;
    for (const auto& s : sizes) list += (list.empty() ? "" : ", ") + s.first;
    throw AutodiffError("vmap: mapped sizes disagree: " + list);
  }
  return sizes[0].second;
}

// x with each mapped leaf made a batch tracer of f (its axis moved to the front); vmap_slice
// cuts each mapped leaf to [start, stop) along its axis instead (a chunk).
template <class T>
T vmap_wrap(const std::shared_ptr<Frame>& f, const T& x, const std::vector<LeafAxis>& axes) {
  if constexpr (!is_tree_v<T>) {
    return x;  // a static argument (a flag, a size): passed through
  } else {
    std::size_t k = 0;
    return tree_map([&](const Tensor& leaf) {
      const auto& a = axes[k++].axis;
      return a ? make_batch_tracer(f, vmap_movedim(leaf, *a, 0)) : leaf;
    }, x);
  }
}
template <class T>
T vmap_slice(const T& x, const std::vector<LeafAxis>& axes, std::int64_t start, std::int64_t stop) {
  if constexpr (!is_tree_v<T>) {
    return x;
  } else {
    std::size_t k = 0;
    return tree_map([&](const Tensor& leaf) {
      const auto& a = axes[k++].axis;
      return a ? slice(leaf, *a, start, stop) : leaf;
    }, x);
  }
}

// The output's leaves with their batch axes moved to out_axes; vmap_join concatenates the
// chunks' outputs, each leaf along its out axis.
template <class T>
T vmap_unwrap(const std::shared_ptr<Frame>& f, const T& out, const AxisTree& out_axes) {
  std::vector<LeafAxis> axes;
  leaf_axes("out_axes", out, out_axes, "output", axes);
  std::size_t k = 0;
  return tree_map([&](const Tensor& o) {
    const auto& la = axes[k++];
    if (!la.axis) {
      if (is_traced_by(o, f.get()))
        throw AutodiffError("vmap: out_axes is not_mapped for " + la.name + ", but it depends on a mapped argument");
      return o;
    }
    Tensor b = vmap_finish(f, o);
    return vmap_movedim(b, vmap_norm_axis("out_axes", *la.axis, static_cast<std::int64_t>(b.dim()), la.name + " (batch axis included)"), 0);
  }, out);
}
template <class T>
T vmap_join(const std::vector<T>& parts, const AxisTree& out_axes) {
  std::vector<LeafAxis> axes;
  leaf_axes("out_axes", parts[0], out_axes, "output", axes);
  std::vector<std::vector<Tensor>> leaves;
  for (const auto& p : parts) leaves.push_back(tree_leaves(p));
  std::size_t k = 0;
  return tree_map([&](const Tensor& first) {
    const std::size_t j = k++;
    if (!axes[j].axis) return first;  // the same in every chunk
    std::vector<Tensor> pieces;
    for (const auto& l : leaves) pieces.push_back(l[j]);
    const auto r = static_cast<std::int64_t>(first.dim());
    return concat(pieces, *axes[j].axis < 0 ? *axes[j].axis + r : *axes[j].axis);
  }, parts[0]);
}

}  // namespace detail

namespace detail {
// vmap with one in_axes entry per argument, or (all) in_axes[0] for every argument.
template <class F>
auto vmap_with(F f, std::vector<AxisTree> in_axes_given, bool all, VmapOptions opts) {
  return [f, in_axes_given, all, opts](const auto&... args) {
    constexpr std::size_t n = sizeof...(args);
    const std::vector<AxisTree> in_axes = all ? std::vector<AxisTree>(n, in_axes_given[0]) : in_axes_given;
    if (in_axes.size() != n)
      throw AutodiffError("vmap: in_axes has " + std::to_string(in_axes.size()) + " entries but the function was called with " +
                          std::to_string(n) + " arguments");
    if (opts.chunk_size < 0)
      throw AutodiffError("vmap: chunk_size must be positive (or 0 for all at once), got " + std::to_string(opts.chunk_size));
    std::vector<std::vector<detail::LeafAxis>> axes;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (axes.push_back(detail::arg_axes(args, in_axes[I], I)), ...);
    }(std::index_sequence_for<decltype(args)...>{});
    const std::int64_t size = detail::vmap_size(axes, args...);
    // One batched evaluation of f on arguments whose mapped leaves have size b.
    auto run = [&](std::int64_t b, const auto&... xs) {
      FrameScope scope(TraceKind::Batch, b);
      scope.frame()->randomness = opts.randomness;
      auto wrapped = [&]<std::size_t... I>(std::index_sequence<I...>) {
        return std::tuple<std::decay_t<decltype(args)>...>{detail::vmap_wrap(scope.frame(), xs, axes[I])...};
      }(std::index_sequence_for<decltype(args)...>{});
      auto out = std::apply(f, wrapped);
      return detail::vmap_unwrap(scope.frame(), out, opts.out_axes);
    };
    const std::int64_t chunk = opts.chunk_size;
    if (chunk == 0 || chunk >= size) return run(size, args...);
    std::vector<decltype(run(size, args...))> parts;
    for (std::int64_t start = 0; start < size; start += chunk) {
      const std::int64_t stop = std::min(size, start + chunk);
      auto sliced = [&]<std::size_t... I>(std::index_sequence<I...>) {
        return std::tuple<std::decay_t<decltype(args)>...>{detail::vmap_slice(args, axes[I], start, stop)...};
      }(std::index_sequence_for<decltype(args)...>{});
      parts.push_back(std::apply([&](const auto&... xs) { return run(stop - start, xs...); }, sliced));
    }
    return detail::vmap_join(parts, opts.out_axes);
  };
}
}  // namespace detail

// vmap(f, in_axes, options)(args...): see the top of this file.
template <class F>
auto vmap(F f, std::vector<AxisTree> in_axes, VmapOptions opts) {
  return detail::vmap_with(std::move(f), std::move(in_axes), false, std::move(opts));
}
// vmap(f, 0)(a, b, ...): one axis (or not_mapped) for every leaf of every argument, as JAX's
// vmap(f, in_axes=0). A template, so that a braced list still means one entry per argument.
template <class F, class A>
  requires std::integral<A> || std::same_as<A, InAxis> || std::same_as<A, std::nullopt_t>
auto vmap(F f, A axis, VmapOptions opts) {
  return detail::vmap_with(std::move(f), {AxisTree(InAxis(axis))}, true, std::move(opts));
}
template <class F, class A>
  requires std::integral<A> || std::same_as<A, InAxis> || std::same_as<A, std::nullopt_t>
auto vmap(F f, A axis, AxisTree out_axes = 0, Randomness randomness = Randomness::Error) {
  return vmap(std::move(f), axis, VmapOptions{std::move(out_axes), randomness, 0});
}

// vmap(f, in_axes, out_axes, randomness)(args...), JAX's positional form.
template <class F>
auto vmap(F f, std::vector<AxisTree> in_axes, AxisTree out_axes = 0, Randomness randomness = Randomness::Error) {
  return vmap(std::move(f), std::move(in_axes), VmapOptions{std::move(out_axes), randomness, 0});
}

// A runtime std::vector<InAxis> (one plain entry per argument) works as before. A template, so
// that a braced list never deduces it and `{0, not_mapped}` stays unambiguous.
template <class F, class V>
  requires std::same_as<V, std::vector<InAxis>>
auto vmap(F f, const V& in_axes, AxisTree out_axes = 0, Randomness randomness = Randomness::Error) {
  return vmap(std::move(f), std::vector<AxisTree>(in_axes.begin(), in_axes.end()), VmapOptions{std::move(out_axes), randomness, 0});
}

}  // namespace chainrule
