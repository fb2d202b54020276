#pragma once
// Each family of primitives lists its definitions; all_primitives() concatenates the lists.
#include <span>

#include "chainrule/autodiff/primitive.h"

namespace chainrule {
std::span<const Primitive* const> elementwise_primitives();
std::span<const Primitive* const> math_primitives();
std::span<const Primitive* const> shape_primitives();
std::span<const Primitive* const> reduce_primitives();
std::span<const Primitive* const> linalg_primitives();
std::span<const Primitive* const> loss_primitives();
std::span<const Primitive* const> conv_primitives();
std::span<const Primitive* const> scan_primitives();  // issue 21: cumulative ops
std::span<const Primitive* const> sort_primitives();  // issue 21: sorting and searching
std::span<const Primitive* const> manip_primitives();  // issue 21: flip
std::span<const Primitive* const> special_primitives();  // issue 21: lgamma, polygamma
}  // namespace chainrule
