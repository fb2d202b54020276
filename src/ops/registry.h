#pragma once
// Each family of primitives lists its definitions; all_primitives() concatenates the lists.
#include <span>
#include <string_view>

#include "chainrule/autodiff/primitive.h"

namespace chainrule {
std::span<const Primitive* const> elementwise_primitives();
std::span<const Primitive* const> math_primitives();
std::span<const Primitive* const> shape_primitives();
std::span<const Primitive* const> reduce_primitives();
std::span<const Primitive* const> linalg_primitives();
std::span<const Primitive* const> linalg_lapack_primitives();
std::span<const Primitive* const> loss_primitives();
std::span<const Primitive* const> conv_primitives();
std::span<const Primitive* const> pool_primitives();
std::span<const Primitive* const> scan_primitives();  // issue 21: cumulative ops
std::span<const Primitive* const> sort_primitives();  // issue 21: sorting and searching
std::span<const Primitive* const> manip_primitives();  // issue 21: flip
std::span<const Primitive* const> special_primitives();  // issue 21: lgamma, polygamma
std::span<const Primitive* const> indexing_primitives();  // issue 21: strided slices
std::span<const Primitive* const> norm_primitives();  // fused batch normalisation

// Every family with its name ("elementwise", "math", ...), in registration order.
struct PrimitiveFamily {
  std::string_view name;
  std::span<const Primitive* const> primitives;
};
std::span<const PrimitiveFamily> primitive_families();
// The family a primitive is listed in ("" for one not registered).
std::string_view family_of(const Primitive& p);
}  // namespace chainrule
