#pragma once
// Convolution (issue 16): conv2d and conv_transpose2d as im2col/col2im + matmul, pooling, upsampling.
#include <array>
#include <cstdint>
#include <utility>

#include "chainrule/tensor/tensor.h"

namespace chainrule {

// 2-D geometry of a sliding window over the last two axes.
struct Conv2dOptions {
  std::array<std::int64_t, 2> stride{1, 1};
  std::array<std::int64_t, 2> padding{0, 0};
  std::array<std::int64_t, 2> dilation{1, 1};
  std::int64_t groups = 1;    // conv2d: channels split into this many independent groups
  bool same_padding = false;  // conv2d: PyTorch's padding="same" (stride 1; replaces `padding`;
                              // an odd total puts the extra row/column at the bottom/right)
  // Mixed precision (nn::AutocastGuard(bf16) sets it in nn::Conv2d): float32 operands are rounded
  // to bfloat16 inside the kernel, products accumulate and the result is returned in float32; the
  // derivatives' convolutions do the same. Float32 where the CPU lacks AVX512-BF16; float64 ignores it.
  bool bf16 = false;
  // conv2d: x is [..., H, W, C] and the result [..., oH, oW, O] (NHWC, PyTorch's channels_last as
  // an explicit layout); the weight stays [O, C/groups, kH, kW]. oneDNN's convolutions run on NHWC
  // directly, so a network kept in it pays no layout reorders around each convolution.
  bool channels_last = false;
};

// conv_transpose2d: the adjoint of conv2d with the same stride, padding, dilation and groups;
// output_padding (smaller than the stride) adds rows/columns at the bottom/right of the output.
struct ConvTranspose2dOptions {
  std::array<std::int64_t, 2> stride{1, 1};
  std::array<std::int64_t, 2> padding{0, 0};
  std::array<std::int64_t, 2> output_padding{0, 0};
  std::array<std::int64_t, 2> dilation{1, 1};
  std::int64_t groups = 1;
  bool bf16 = false;           // as Conv2dOptions::bf16
  bool channels_last = false;  // as Conv2dOptions::channels_last: x [..., H, W, C_in], result [..., oH, oW, C_out]
};

// x [..., C, H, W] -> columns [..., C*kH*kW, oH*oW] (PyTorch's unfold). Linear; its adjoint is fold.
Tensor im2col(const Tensor& x, std::int64_t kh, std::int64_t kw, const Conv2dOptions& o = {});
// columns [..., C*kH*kW, oH*oW] -> [..., C, H, W], summing overlapping windows (PyTorch's fold).
Tensor col2im(const Tensor& cols, std::int64_t h, std::int64_t w, std::int64_t kh, std::int64_t kw, const Conv2dOptions& o = {});
// x [..., C, H, W], weight [O, C/groups, kH, kW], optional bias [O] -> [..., O, oH, oW].
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const Conv2dOptions& o = {});
// x [..., C_in, H, W], weight [C_in, C_out/groups, kH, kW] (PyTorch's layout), optional bias
// [C_out] -> [..., C_out, oH, oW], oH = (H-1)·stride - 2·padding + dilation·(kH-1) + output_padding + 1.
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const ConvTranspose2dOptions& o = {});

// Pooling over the last two axes of x [..., C, H, W] (PyTorch's semantics, ceil_mode = false).
// A stride of 0 means the kernel size (PyTorch's stride=None); padding is at most half the kernel.
// Max pooling pads with -inf; its derivative goes to the first maximal element of each window.
Tensor max_pool2d(const Tensor& x, std::array<std::int64_t, 2> kernel, std::array<std::int64_t, 2> stride = {0, 0},
                  std::array<std::int64_t, 2> padding = {0, 0});
// Also the argmax of each window as a flat index into its H*W plane (return_indices=True).
std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, std::array<std::int64_t, 2> kernel,
                                                  std::array<std::int64_t, 2> stride = {0, 0},
                                                  std::array<std::int64_t, 2> padding = {0, 0});
// Average pooling; zero padding counts in the divisor (count_include_pad=True).
Tensor avg_pool2d(const Tensor& x, std::array<std::int64_t, 2> kernel, std::array<std::int64_t, 2> stride = {0, 0},
                  std::array<std::int64_t, 2> padding = {0, 0});
// Output [..., C, oH, oW]; window i covers [floor(i*H/oH), ceil((i+1)*H/oH)). {1, 1} is global average pooling.
Tensor adaptive_avg_pool2d(const Tensor& x, std::array<std::int64_t, 2> output_size);
// Nearest-neighbour upsampling by integer factors: interpolate(mode="nearest", scale_factor=s).
Tensor upsample2d(const Tensor& x, std::array<std::int64_t, 2> scale_factor);

}  // namespace chainrule
