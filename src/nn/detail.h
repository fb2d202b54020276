#pragma once
// Declarations the networks code needs from the core that ops.h does not (yet) export.
#include "chainrule/tensor/tensor.h"

namespace chainrule {
// C = op(A) op(B) with the transposes folded into the GEMM (defined in src/ops/linalg.cpp).
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b);
}  // namespace chainrule
