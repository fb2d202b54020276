#pragma once
// 2-D convolution kernels on raw NCHW / OIHW buffers: forward, backward-data (the transposed
// convolution) and backward-weights. float32 runs on oneDNN's convolution primitives, created
// once per shape and cached; float64 runs on the reference path, im2col + GEMM per image.
#include <array>
#include <cstdint>
#include <vector>

namespace chainrule::kernels {

// x [n, c, h, w] * weight [o, c/groups, kh, kw] -> y [n, o, oh, ow] (or NHWC: channels_last).
struct ConvShape {
  std::int64_t n, c, h, w;
  std::int64_t o, kh, kw;
  std::int64_t oh, ow;
  std::array<std::int64_t, 2> stride, pad_begin, pad_end, dilation;
  std::int64_t groups;
  bool bf16 = false;           // float32 buffers, bfloat16 products (Conv2dOptions::bf16)
  bool channels_last = false;  // x [n, h, w, c] and y [n, oh, ow, o] (NHWC); the weight OIHW either way
  // Channels-last only: the images of `folded` vmapped examples folded into the channels (and
  // groups) without moving: x [folded, n, h, w, c/folded], y [folded, n, oh, ow, o/folded], each
  // example's block of channels a channels-last image of its own (example f owns channels
  // [f·c/folded, (f+1)·c/folded)). Per-example weight gradients run on this layout directly.
  std::int64_t folded = 1;
  bool operator==(const ConvShape&) const = default;
};

// Visits (row r of the im2col matrix times its column count plus column l, input offset or -1
// for padding) for channels [0, c) of one image: the loop order of im2col and col2im.
template <class F>
void conv_windows(const ConvShape& s, std::int64_t c, F&& f) {
  for (std::int64_t ch = 0; ch < c; ++ch)
    for (std::int64_t i = 0; i < s.kh; ++i)
      for (std::int64_t j = 0; j < s.kw; ++j) {
        const std::int64_t r = (ch * s.kh + i) * s.kw + j;
        for (std::int64_t y = 0; y < s.oh; ++y) {
          const std::int64_t iy = y * s.stride[0] - s.pad_begin[0] + i * s.dilation[0];
          for (std::int64_t x = 0; x < s.ow; ++x) {
            const std::int64_t ix = x * s.stride[1] - s.pad_begin[1] + j * s.dilation[1];
            const bool inside = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
            f(r * s.oh * s.ow + y * s.ow + x, inside ? (ch * s.h + iy) * s.w + ix : -1);
          }
        }
      }
}

void conv2d_forward(const ConvShape& s, const float* x, const float* w, float* y);
void conv2d_forward(const ConvShape& s, const double* x, const double* w, double* y);
// dy [n, o, oh, ow], weight -> dx [n, c, h, w].
void conv2d_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx);
void conv2d_backward_data(const ConvShape& s, const double* dy, const double* w, double* dx);
// x, dy -> dweight [o, c/groups, kh, kw] (summed over the images).
void conv2d_backward_weights(const ConvShape& s, const float* x, const float* dy, float* dw);
void conv2d_backward_weights(const ConvShape& s, const double* x, const double* dy, double* dw);

// oneDNN's own speed on the convolutions this thread has planned (at its current thread count):
// for each plan, the time of a call as the kernels above make it (reorders from and to the plain
// layouts included) and of the oneDNN primitive alone in its chosen layouts, each the median of
// repeated calls running for about min_seconds. What `chainrule bench` reports as the share of
// the convolution peak.
struct ConvPlanTiming {
  const char* kind;  // "forward", "backward-data", "backward-weights"
  ConvShape shape;
  std::uint64_t madds;
  std::uint64_t calls;  // since the plans were last cleared
  double call_s, primitive_s;
  bool reordered;  // some operand is reordered around the primitive
};
std::vector<ConvPlanTiming> time_conv_plans(double min_seconds);
// Forgets this thread's plans (and their call counts).
void clear_conv_plans();

}  // namespace chainrule::kernels
