#include "ops/registry.h"

#include <vector>

namespace chainrule {

std::span<const PrimitiveFamily> primitive_families() {
  static const std::vector<PrimitiveFamily> families = {
      {"elementwise", elementwise_primitives()}, {"math", math_primitives()},   {"shape", shape_primitives()},
      {"reduce", reduce_primitives()},           {"linalg", linalg_primitives()}, {"loss", loss_primitives()},
      {"conv", conv_primitives()},               {"scan", scan_primitives()},     {"sort", sort_primitives()},
      {"manip", manip_primitives()},             {"special", special_primitives()}, {"pool", pool_primitives()},
      {"linalg_lapack", linalg_lapack_primitives()}, {"indexing", indexing_primitives()}, {"norm", norm_primitives()},
  };
  return families;
}

std::span<const Primitive* const> all_primitives() {
  static const std::vector<const Primitive*> all = [] {
    std::vector<const Primitive*> v;
    for (const auto& family : primitive_families()) v.insert(v.end(), family.primitives.begin(), family.primitives.end());
    return v;
  }();
  return all;
}

std::string_view family_of(const Primitive& p) {
  for (const auto& family : primitive_families())
    for (const auto* q : family.primitives)
      if (q == &p) return family.name;
  return "";
}

const Primitive* find_primitive(std::string_view name) {
  for (const auto* p : all_primitives())
    if (p->name == name) return p;
  return nullptr;
}

}  // namespace chainrule
