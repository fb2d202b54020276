#pragma once
// Structured arguments for the transforms, JAX's pytrees in C++. A tree is
//   - a Tensor (a leaf),
//   - a std::vector, std::array, std::pair, std::tuple or std::map<std::string, ·> of trees, or
//   - a struct that names its tree fields with CHAINRULE_TREE(Type, field, ...) at namespace scope
//     (fields not named are copied unchanged: hyperparameters, flags, names).
// Every transform flattens an argument to its leaves in one fixed order (vector and array by index,
// map by key, pair/tuple/struct fields in order), traces the leaves, and rebuilds gradients,
// tangents and batched results in the argument's own structure.
//
//   struct Mlp { Tensor w1, b1, w2, b2; };
//   CHAINRULE_TREE(Mlp, w1, b1, w2, b2)
//   Mlp g = grad(loss)(params, x, y);          // the gradient is an Mlp
#include <array>
#include <concepts>
#include <cstddef>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "chainrule/errors.h"
#include "chainrule/tensor/tensor.h"

// Declares the tree fields of a struct: tree_fields(s) gives references to them, in order, and
// tree_field_names(s) their names as written ("w1, b1"), for errors that name a leaf (".w1").
#define CHAINRULE_TREE(Type, ...)                                                                           \
  [[maybe_unused]] inline auto tree_fields(const Type& chainrule_s) { return std::tie(CHAINRULE_TREE_FIELDS_(__VA_ARGS__)); } \
  [[maybe_unused]] inline auto tree_fields(Type& chainrule_s) { return std::tie(CHAINRULE_TREE_FIELDS_(__VA_ARGS__)); } \
  [[maybe_unused]] inline const char* tree_field_names(const Type&) { return #__VA_ARGS__; }
// chainrule_s.a, chainrule_s.b, ... for up to 16 fields.
#define CHAINRULE_TREE_FIELDS_(...) CHAINRULE_TREE_PICK_(__VA_ARGS__, CHAINRULE_TREE_16_, CHAINRULE_TREE_15_, CHAINRULE_TREE_14_, \
    CHAINRULE_TREE_13_, CHAINRULE_TREE_12_, CHAINRULE_TREE_11_, CHAINRULE_TREE_10_, CHAINRULE_TREE_9_, CHAINRULE_TREE_8_,         \
    CHAINRULE_TREE_7_, CHAINRULE_TREE_6_, CHAINRULE_TREE_5_, CHAINRULE_TREE_4_, CHAINRULE_TREE_3_, CHAINRULE_TREE_2_,             \
    CHAINRULE_TREE_1_)(__VA_ARGS__)
#define CHAINRULE_TREE_PICK_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, N, ...) N
#define CHAINRULE_TREE_1_(a) chainrule_s.a
#define CHAINRULE_TREE_2_(a, ...) chainrule_s.a, CHAINRULE_TREE_1_(__VA_ARGS__)
#define CHAINRULE_TREE_3_(a, ...) chainrule_s.a, CHAINRULE_TREE_2_(__VA_ARGS__)
#define CHAINRULE_TREE_4_(a, ...) chainrule_s.a, CHAINRULE_TREE_3_(__VA_ARGS__)
#define CHAINRULE_TREE_5_(a, ...) chainrule_s.a, CHAINRULE_TREE_4_(__VA_ARGS__)
#define CHAINRULE_TREE_6_(a, ...) chainrule_s.a, CHAINRULE_TREE_5_(__VA_ARGS__)
#define CHAINRULE_TREE_7_(a, ...) chainrule_s.a, CHAINRULE_TREE_6_(__VA_ARGS__)
#define CHAINRULE_TREE_8_(a, ...) chainrule_s.a, CHAINRULE_TREE_7_(__VA_ARGS__)
#define CHAINRULE_TREE_9_(a, ...) chainrule_s.a, CHAINRULE_TREE_8_(__VA_ARGS__)
#define CHAINRULE_TREE_10_(a, ...) chainrule_s.a, CHAINRULE_TREE_9_(__VA_ARGS__)
#define CHAINRULE_TREE_11_(a, ...) chainrule_s.a, CHAINRULE_TREE_10_(__VA_ARGS__)
#define CHAINRULE_TREE_12_(a, ...) chainrule_s.a, CHAINRULE_TREE_11_(__VA_ARGS__)
#define CHAINRULE_TREE_13_(a, ...) chainrule_s.a, CHAINRULE_TREE_12_(__VA_ARGS__)
#define CHAINRULE_TREE_14_(a, ...) chainrule_s.a, CHAINRULE_TREE_13_(__VA_ARGS__)
#define CHAINRULE_TREE_15_(a, ...) chainrule_s.a, CHAINRULE_TREE_14_(__VA_ARGS__)
#define CHAINRULE_TREE_16_(a, ...) chainrule_s.a, CHAINRULE_TREE_15_(__VA_ARGS__)

namespace chainrule {

namespace tree_detail {
template <class T> struct is_vector : std::false_type {};
template <class T, class A> struct is_vector<std::vector<T, A>> : std::true_type {};
template <class T> struct is_array : std::false_type {};
template <class T, std::size_t N> struct is_array<std::array<T, N>> : std::true_type {};
template <class T> struct is_pair : std::false_type {};
template <class A, class B> struct is_pair<std::pair<A, B>> : std::true_type {};
template <class T> struct is_tuple : std::false_type {};
template <class... T> struct is_tuple<std::tuple<T...>> : std::true_type {};
template <class T> struct is_map : std::false_type {};
template <class V, class C, class A> struct is_map<std::map<std::string, V, C, A>> : std::true_type {};
template <class T> concept has_fields = requires(const T& t) { tree_fields(t); };
template <class T> concept has_field_names = requires(const T& t) { { tree_field_names(t) } -> std::convertible_to<const char*>; };
// ".name" of field i of a struct (from CHAINRULE_TREE's list "a, b, c"), or "[i]" without names.
template <class T>
std::string field_key(const T& t, std::size_t i) {
  if constexpr (has_field_names<T>) {
    std::string names = tree_field_names(t), name;
    std::size_t k = 0;
    for (char c : names) {
      if (c == ',') ++k;
      else if (k == i && c != ' ') name += c;
    }
    if (!name.empty()) return "." + name;
  }
  return "[" + std::to_string(i) + "]";
}
}  // namespace tree_detail

template <class T> constexpr bool is_tree_v = [] {
  using namespace tree_detail;
  if constexpr (std::is_same_v<T, Tensor>) return true;
  else if constexpr (is_vector<T>::value || is_array<T>::value) return is_tree_v<typename T::value_type>;
  else if constexpr (is_pair<T>::value) return is_tree_v<typename T::first_type> && is_tree_v<typename T::second_type>;
  else if constexpr (is_tuple<T>::value)
    return []<class... E>(std::tuple<E...>*) { return (is_tree_v<E> && ...); }(static_cast<T*>(nullptr));
  else if constexpr (is_map<T>::value) return is_tree_v<typename T::mapped_type>;
  else return has_fields<T>;
}();

// Calls f(leaf) on every leaf, in the tree's order.
template <class T, class F>
void tree_for_each(const T& t, F&& f) {
  using namespace tree_detail;
  static_assert(is_tree_v<T>, "not a tree: a Tensor, a vector/array/pair/tuple/map<string> of trees, or a CHAINRULE_TREE struct");
  if constexpr (std::is_same_v<T, Tensor>) f(t);
  else if constexpr (is_vector<T>::value || is_array<T>::value) for (const auto& e : t) tree_for_each(e, f);
  else if constexpr (is_pair<T>::value) tree_for_each(t.first, f), tree_for_each(t.second, f);
  else if constexpr (is_tuple<T>::value) std::apply([&](const auto&... e) { (tree_for_each(e, f), ...); }, t);
  else if constexpr (is_map<T>::value) for (const auto& kv : t) tree_for_each(kv.second, f);
  else std::apply([&](const auto&... e) { (tree_for_each(e, f), ...); }, tree_fields(t));
}

// The same structure with f applied to every leaf, in the tree's order.
template <class T, class F>
T tree_map(F&& f, const T& t) {
  using namespace tree_detail;
  static_assert(is_tree_v<T>, "not a tree: a Tensor, a vector/array/pair/tuple/map<string> of trees, or a CHAINRULE_TREE struct");
  if constexpr (std::is_same_v<T, Tensor>) {
    return f(t);
  } else if constexpr (is_vector<T>::value) {
    T r;
    r.reserve(t.size());
    for (const auto& e : t) r.push_back(tree_map(f, e));
    return r;
  } else if constexpr (is_array<T>::value) {
    T r;
    for (std::size_t i = 0; i < t.size(); ++i) r[i] = tree_map(f, t[i]);
    return r;
  } else if constexpr (is_pair<T>::value) {
    return T{tree_map(f, t.first), tree_map(f, t.second)};  // a braced list runs left to right
  } else if constexpr (is_tuple<T>::value) {
    return std::apply([&](const auto&... e) { return T{tree_map(f, e)...}; }, t);
  } else if constexpr (is_map<T>::value) {
    T r;
    for (const auto& kv : t) r.emplace(kv.first, tree_map(f, kv.second));
    return r;
  } else {
    T r = t;  // fields that are not tree fields are copied
    auto dst = tree_fields(r);
    auto src = tree_fields(t);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((std::get<I>(dst) = tree_map(f, std::get<I>(src))), ...);
    }(std::make_index_sequence<std::tuple_size_v<decltype(src)>>{});
    return r;
  }
}

// Calls f(leaf, path) on every leaf, in the tree's order; a path is `prefix` and JAX-style keys:
// [i] for a sequence, pair or tuple element, ["key"] for a map entry, .name for a struct field.
template <class T, class F>
void tree_for_each_path(const T& t, const std::string& prefix, F&& f) {
  using namespace tree_detail;
  if constexpr (std::is_same_v<T, Tensor>) {
    f(t, prefix);
  } else if constexpr (is_vector<T>::value || is_array<T>::value) {
    for (std::size_t i = 0; i < t.size(); ++i) tree_for_each_path(t[i], prefix + "[" + std::to_string(i) + "]", f);
  } else if constexpr (is_map<T>::value) {
    for (const auto& [k, v] : t) tree_for_each_path(v, prefix + "[\"" + k + "\"]", f);
  } else if constexpr (is_pair<T>::value || is_tuple<T>::value) {
    std::size_t i = 0;
    std::apply([&](const auto&... e) { (tree_for_each_path(e, prefix + "[" + std::to_string(i++) + "]", f), ...); }, t);
  } else {
    std::size_t i = 0;
    std::apply([&](const auto&... e) { (tree_for_each_path(e, prefix + field_key(t, i++), f), ...); }, tree_fields(t));
  }
}
// The paths of the leaves, in order ("argument 0.w", "argument 0.b", ...).
template <class T>
std::vector<std::string> tree_paths(const T& t, const std::string& prefix) {
  std::vector<std::string> v;
  tree_for_each_path(t, prefix, [&](const Tensor&, const std::string& p) { v.push_back(p); });
  return v;
}

template <class T>
std::vector<Tensor> tree_leaves(const T& t) {
  std::vector<Tensor> v;
  tree_for_each(t, [&](const Tensor& x) { v.push_back(x); });
  return v;
}
// The structure of `like` with its leaves replaced, in order, by leaves[k], leaves[k+1], ...
template <class T>
T tree_unflatten(const T& like, const std::vector<Tensor>& leaves, std::size_t& k) {
  return tree_map([&](const Tensor&) { return leaves.at(k++); }, like);
}
template <class T>
T tree_unflatten(const T& like, const std::vector<Tensor>& leaves) {
  std::size_t k = 0;
  T r = tree_unflatten(like, leaves, k);
  if (k != leaves.size())
    throw AutodiffError("tree_unflatten: " + std::to_string(leaves.size()) + " leaves for a structure of " + std::to_string(k));
  return r;
}

// A short description of a tree's structure ("T" a leaf, "[T,T]" a sequence, "{b:T,w:T}" a map,
// "(T,[T])" a pair, tuple or struct), to compare structures and to name them in errors.
template <class T>
std::string tree_structure(const T& t) {
  using namespace tree_detail;
  auto join = [](const auto&... parts) {
    std::string s;
    ((s += (s.empty() ? "" : ","), s += parts), ...);
    return s;
  };
  if constexpr (std::is_same_v<T, Tensor>) {
    return "T";
  } else if constexpr (is_vector<T>::value || is_array<T>::value) {
    std::string s = "[";
    for (std::size_t i = 0; i < t.size(); ++i) s += (i ? "," : "") + tree_structure(t[i]);
    return s + "]";
  } else if constexpr (is_pair<T>::value) {
    return "(" + join(tree_structure(t.first), tree_structure(t.second)) + ")";
  } else if constexpr (is_tuple<T>::value) {
    return "(" + std::apply([&](const auto&... e) { return join(tree_structure(e)...); }, t) + ")";
  } else if constexpr (is_map<T>::value) {
    std::string s = "{";
    for (const auto& kv : t) s += (s.size() > 1 ? "," : "") + kv.first + ":" + tree_structure(kv.second);
    return s + "}";
  } else {
    return "(" + std::apply([&](const auto&... e) { return join(tree_structure(e)...); }, tree_fields(t)) + ")";
  }
}

// f(leaf of a, leaf of b) over two trees of one structure; a clear error naming `who` (and what
// a and b are, "primals and tangents") otherwise.
template <class T, class F>
T tree_map2(const char* who, F&& f, const T& a, const T& b, const char* what = nullptr) {
  if constexpr (!std::is_same_v<T, Tensor>) {
    std::string sa = tree_structure(a), sb = tree_structure(b);
    if (sa != sb)
      throw AutodiffError(std::string(who) + ": structures differ: " + sa + " and " + sb + (what ? std::string(" (") + what + ")" : ""));
  }
  auto lb = tree_leaves(b);
  std::size_t k = 0;
  return tree_map([&](const Tensor& x) { return f(x, lb[k++]); }, a);
}

}  // namespace chainrule
