#pragma once
// Convolution (issue 16, first slice): conv2d as im2col + matmul, both differentiable.
#include <array>
#include <cstdint>

#include "chainrule/tensor/tensor.h"

namespace chainrule {

// 2-D geometry of a sliding window over the last two axes.
struct Conv2dOptions {
  std::array<std::int64_t, 2> stride{1, 1};
  std::array<std::int64_t, 2> padding{0, 0};
  std::array<std::int64_t, 2> dilation{1, 1};
};

// x [..., C, H, W] -> columns [..., C*kH*kW, oH*oW] (PyTorch's unfold). Linear; its adjoint is fold.
Tensor im2col(const Tensor& x, std::int64_t kh, std::int64_t kw, const Conv2dOptions& o = {});
// columns [..., C*kH*kW, oH*oW] -> [..., C, H, W], summing overlapping windows (PyTorch's fold).
Tensor col2im(const Tensor& cols, std::int64_t h, std::int64_t w, std::int64_t kh, std::int64_t kw, const Conv2dOptions& o = {});
// x [..., C, H, W], weight [O, C, kH, kW], optional bias [O] -> [..., O, oH, oW] (groups = 1).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const Conv2dOptions& o = {});

}  // namespace chainrule
