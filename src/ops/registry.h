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
std::span<const Primitive* const> linalg_lapack_primitives();
std::span<const Primitive* const> loss_primitives();
std::span<const Primitive* const> conv_primitives();
}  // namespace chainrule
