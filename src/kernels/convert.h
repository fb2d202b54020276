#pragma once
// Element conversion between any two dtypes (the `cast` primitive's kernel, and the float32
// round trip that level-0 bind gives bfloat16/float16 inputs of kernels without half support).
#include "chainrule/tensor/tensor.h"

namespace chainrule::kernels {

// A new concrete tensor of x's shape in dtype `to`. Floats round to nearest even (float64 and
// float32 to a half type in one rounding), NaN stays NaN; float to int64 truncates, as static_cast.
Tensor convert(const Tensor& x, DType to);

}  // namespace chainrule::kernels
