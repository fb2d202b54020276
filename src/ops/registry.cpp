#include "ops/registry.h"

#include <vector>

namespace chainrule {

std::span<const Primitive* const> all_primitives() {
  static const std::vector<const Primitive*> all = [] {
    std::vector<const Primitive*> v;
    for (auto family : {elementwise_primitives(), math_primitives(), shape_primitives(), reduce_primitives(),
                        linalg_primitives(), linalg_lapack_primitives(), loss_primitives(), conv_primitives()})
      v.insert(v.end(), family.begin(), family.end());
    return v;
  }();
  return all;
}

const Primitive* find_primitive(std::string_view name) {
  for (const auto* p : all_primitives())
    if (p->name == name) return p;
  return nullptr;
}

}  // namespace chainrule
