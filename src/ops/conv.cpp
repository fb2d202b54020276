// Convolution, first slice: the sliding-window primitives im2col (unfold) and col2im (fold).
// Both are linear and each is the other's adjoint, so their JVPs apply themselves to the tangent
// and their VJPs apply the other: derivatives of every order follow. conv2d is a composition,
// im2col then matmul with the weights reshaped to [O, C*kH*kW], so its VJP w.r.t. x is col2im of
// a matmul (the transposed convolution) and w.r.t. w a matmul of the cotangent with the columns.
// Static parameters are a typed struct carried in Params::typed (primitive.h).
#include <fmt/format.h>

#include <string>

#include "chainrule/ops/conv.h"
#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

extern const Primitive im2col_p;
extern const Primitive col2im_p;

namespace {

struct Window {
  std::int64_t h, w;    // input spatial size (the image im2col reads, col2im writes)
  std::int64_t kh, kw;  // kernel
  Conv2dOptions o;
  std::int64_t oh() const { return (h + 2 * o.padding[0] - o.dilation[0] * (kh - 1) - 1) / o.stride[0] + 1; }
  std::int64_t ow() const { return (w + 2 * o.padding[1] - o.dilation[1] * (kw - 1) - 1) / o.stride[1] + 1; }
  std::string str() const {
    return fmt::format("input {}x{}, kernel {}x{}, stride ({}, {}), padding ({}, {}), dilation ({}, {})", h, w, kh, kw, o.stride[0],
                       o.stride[1], o.padding[0], o.padding[1], o.dilation[0], o.dilation[1]);
  }
};

void validate(std::string_view op, const Window& g) {
  for (int d = 0; d < 2; ++d) {
    if (g.o.stride[d] <= 0 || g.o.dilation[d] <= 0 || g.o.padding[d] < 0)
      throw ShapeError(fmt::format("{}: stride and dilation must be positive and padding non-negative, got {}", op, g.str()));
  }
  if (g.kh <= 0 || g.kw <= 0) throw ShapeError(fmt::format("{}: kernel must be positive, got {}", op, g.str()));
  const std::int64_t eh = g.h + 2 * g.o.padding[0] - g.o.dilation[0] * (g.kh - 1) - 1;
  const std::int64_t ew = g.w + 2 * g.o.padding[1] - g.o.dilation[1] * (g.kw - 1) - 1;
  if (eh < 0 || ew < 0)
    throw ShapeError(fmt::format("{}: kernel larger than the padded input (non-positive output size), {}", op, g.str()));
}

// Visits (channel-kernel row r, column l, input offset or -1 for padding) for one image.
template <class F>
void windows(const Window& g, std::int64_t c, F&& f) {
  const std::int64_t oh = g.oh(), ow = g.ow();
  for (std::int64_t ch = 0; ch < c; ++ch)
    for (std::int64_t i = 0; i < g.kh; ++i)
      for (std::int64_t j = 0; j < g.kw; ++j) {
        const std::int64_t r = (ch * g.kh + i) * g.kw + j;
        for (std::int64_t y = 0; y < oh; ++y) {
          const std::int64_t iy = y * g.o.stride[0] - g.o.padding[0] + i * g.o.dilation[0];
          for (std::int64_t x = 0; x < ow; ++x) {
            const std::int64_t ix = x * g.o.stride[1] - g.o.padding[1] + j * g.o.dilation[1];
            const bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
            f(r * oh * ow + y * ow + x, inside ? (ch * g.h + iy) * g.w + ix : -1);
          }
        }
      }
}

Tensor im2col_forward(std::span<const Tensor> x, const Params& p) {
  const Window& g = p.attrs<Window>();
  const Tensor& in = x[0];
  if (in.dim() < 3 || in.shape()[in.dim() - 2] != g.h || in.shape()[in.dim() - 1] != g.w)
    throw ShapeError(fmt::format("im2col: needs x [..., C, {}, {}], got {}", g.h, g.w, in.shape().str()));
  const std::size_t r = in.shape().size();
  const std::int64_t c = in.shape()[r - 3];
  const Shape lead = in.shape().slice(0, r - 3);
  const std::int64_t n = lead.numel(), rows = c * g.kh * g.kw, cols = g.oh() * g.ow();
  Tensor o = empty(lead + Shape{rows, cols}, in.dtype());
  kernels::dispatch_float(in.dtype(), "im2col", [&](auto tag) {
    using T = decltype(tag);
    const T* pi = kernels::in<T>(in);
    T* po = kernels::out<T>(o);
    for (std::int64_t b = 0; b < n; ++b) {
      const T* src = pi + b * c * g.h * g.w;
      T* dst = po + b * rows * cols;
      windows(g, c, [&](std::int64_t k, std::int64_t s) { dst[k] = s < 0 ? T(0) : src[s]; });
    }
    return 0;
  });
  return o;
}

Tensor col2im_forward(std::span<const Tensor> x, const Params& p) {
  const Window& g = p.attrs<Window>();
  const Tensor& in = x[0];
  const std::size_t r = in.shape().size();
  const std::int64_t k = g.kh * g.kw, cols = g.oh() * g.ow();
  if (r < 2 || in.shape()[r - 2] % k != 0 || in.shape()[r - 1] != cols)
    throw ShapeError(fmt::format("col2im: needs columns [..., C*{}, {}] for {}, got {}", k, cols, g.str(), in.shape().str()));
  const std::int64_t c = in.shape()[r - 2] / k;
  const Shape lead = in.shape().slice(0, r - 2);
  const std::int64_t n = lead.numel();
  Tensor o = zeros(lead + Shape{c, g.h, g.w}, in.dtype());
  kernels::dispatch_float(in.dtype(), "col2im", [&](auto tag) {
    using T = decltype(tag);
    const T* pi = kernels::in<T>(in);
    T* po = kernels::out<T>(o);
    for (std::int64_t b = 0; b < n; ++b) {
      const T* src = pi + b * c * k * cols;
      T* dst = po + b * c * g.h * g.w;
      windows(g, c, [&](std::int64_t kk, std::int64_t s) {
        if (s >= 0) dst[s] += src[kk];
      });
    }
    return 0;
  });
  return o;
}

Tensor im2col_w(const Tensor& x, const Window& g) {
  validate("im2col", g);
  return bind(im2col_p, {x}, Params::with_attrs(g));
}
Tensor col2im_w(const Tensor& x, const Window& g) {
  validate("col2im", g);
  return bind(col2im_p, {x}, Params::with_attrs(g));
}

using cases::Domain;
Tensor s(Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); }

}  // namespace

const Primitive im2col_p{
    .name = "im2col",
    .forward = im2col_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) { return im2col_w(t, c.p.attrs<Window>()); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return col2im_w(ct, c.p.attrs<Window>()); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      Conv2dOptions pad1;
      pad1.padding = {1, 1};
      Conv2dOptions strided;
      strided.stride = {2, 1};
      strided.dilation = {1, 2};
      strided.padding = {0, 1};
      return std::vector<OpCase>{
          cases::single("[2,4,4] k2 pad1", {s({2, 4, 4}, 1)}, [pad1](auto x) { return im2col(x[0], 2, 2, pad1); }),
          cases::single("[2,1,5,4] k3x2 stride(2,1) dil(1,2)", {s({2, 1, 5, 4}, 2)},
                        [strided](auto x) { return im2col(x[0], 3, 2, strided); }),
          cases::single("conv2d [2,2,4,4] w[3,2,3,3] b[3] pad1", {s({2, 2, 4, 4}, 3), s({3, 2, 3, 3}, 4), s({3}, 5)},
                        [pad1](auto x) { return conv2d(x[0], x[1], x[2], pad1); }),
          cases::single("conv2d [1,1,5,4] w[2,1,3,2] strided dilated", {s({1, 1, 5, 4}, 6), s({2, 1, 3, 2}, 7)},
                        [strided](auto x) { return conv2d(x[0], x[1], Tensor{}, strided); }),
          cases::single("[0,1,3,3] empty batch", {s({0, 1, 3, 3}, 8)}, [](auto x) { return im2col(x[0], 2, 2); }),
          cases::single("[1,2,6,6] k2 stride2 medium", {s({1, 2, 6, 6}, 9)}, [](auto x) {
            Conv2dOptions o;
            o.stride = {2, 2};
            return im2col(x[0], 2, 2, o);
          }),
      };
    },
};

const Primitive col2im_p{
    .name = "col2im",
    .forward = col2im_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) { return col2im_w(t, c.p.attrs<Window>()); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return im2col_w(ct, c.p.attrs<Window>()); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      Conv2dOptions pad1;
      pad1.padding = {1, 1};
      pad1.stride = {2, 2};
      return std::vector<OpCase>{
          cases::single("[8,9] -> [2,4,4] k2 stride2 pad1", {s({8, 9}, 11)}, [pad1](auto x) { return col2im(x[0], 4, 4, 2, 2, pad1); }),
          cases::single("[2,3,6] -> [2,1,4,3] k3x1", {s({2, 3, 6}, 12)}, [](auto x) { return col2im(x[0], 4, 3, 3, 1); }),
          cases::single("[0,4,4] -> [0,1,3,3] empty", {s({0, 4, 4}, 13)}, [](auto x) { return col2im(x[0], 3, 3, 2, 2); }),
          cases::single("[1,1,9] -> [1,1,3,3] k1 size-1", {s({1, 1, 9}, 14)}, [](auto x) { return col2im(x[0], 3, 3, 1, 1); }),
          cases::single("[8,16] -> [2,8,8] k2 stride2 medium", {s({8, 16}, 15)}, [](auto x) {
            Conv2dOptions o;
            o.stride = {2, 2};
            return col2im(x[0], 8, 8, 2, 2, o);
          }),
      };
    },
};

Tensor im2col(const Tensor& x, std::int64_t kh, std::int64_t kw, const Conv2dOptions& o) {
  if (x.dim() < 3) throw ShapeError(fmt::format("im2col: needs x [..., C, H, W], got {}", x.shape().str()));
  const Shape& sh = x.shape();
  return im2col_w(x, Window{sh[sh.size() - 2], sh[sh.size() - 1], kh, kw, o});
}

Tensor col2im(const Tensor& cols, std::int64_t h, std::int64_t w, std::int64_t kh, std::int64_t kw, const Conv2dOptions& o) {
  return col2im_w(cols, Window{h, w, kh, kw, o});
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& o) {
  const Shape& xs = x.shape();
  const Shape& ws = weight.shape();
  if (x.dim() < 3 || weight.dim() != 4 || xs[xs.size() - 3] != ws[1] ||
      (bias.defined() && (bias.dim() != 1 || bias.shape()[0] != ws[0])))
    throw ShapeError(fmt::format("conv2d: needs x [..., C, H, W], weight [O, C, kH, kW] and bias [O] with matching C and O, got "
                                 "x {}, weight {}, bias {} (stride ({}, {}), padding ({}, {}), dilation ({}, {}))",
                                 xs.str(), ws.str(), bias.defined() ? bias.shape().str() : std::string("none"), o.stride[0],
                                 o.stride[1], o.padding[0], o.padding[1], o.dilation[0], o.dilation[1]));
  const Window g{xs[xs.size() - 2], xs[xs.size() - 1], ws[2], ws[3], o};
  validate("conv2d", g);
  Tensor cols = im2col_w(x, g);                                     // [..., C*kH*kW, L]
  Tensor y = matmul(reshape(weight, {ws[0], ws[1] * ws[2] * ws[3]}), cols);  // [..., O, L]
  y = reshape(y, xs.slice(0, xs.size() - 3) + Shape{ws[0], g.oh(), g.ow()});
  if (bias.defined()) y = add(y, reshape(bias, {ws[0], 1, 1}));
  return y;
}

const Primitive* const kConvPrimitives[] = {&im2col_p, &col2im_p};
std::span<const Primitive* const> conv_primitives() { return kConvPrimitives; }

}  // namespace chainrule
