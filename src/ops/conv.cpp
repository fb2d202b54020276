// Convolution: the sliding-window primitives im2col (unfold) and col2im (fold).
// Both are linear and each is the other's adjoint, so their JVPs apply themselves to the tangent
// and their VJPs apply the other: derivatives of every order follow. conv2d is a composition,
// im2col then matmul with the weights reshaped to [O, C*kH*kW], so its VJP w.r.t. x is col2im of
// a matmul (the transposed convolution) and w.r.t. w a matmul of the cotangent with the columns.
// Groups are a batched matmul over the groups; conv_transpose2d is matmul then col2im.
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
  std::array<std::int64_t, 2> extra{0, 0};  // padding at the bottom/right beyond o.padding ("same", even kernels)
  std::int64_t oh() const { return (h + 2 * o.padding[0] + extra[0] - o.dilation[0] * (kh - 1) - 1) / o.stride[0] + 1; }
  std::int64_t ow() const { return (w + 2 * o.padding[1] + extra[1] - o.dilation[1] * (kw - 1) - 1) / o.stride[1] + 1; }
  std::string str() const {
    return fmt::format("input {}x{}, kernel {}x{}, stride ({}, {}), padding ({}, {}{}), dilation ({}, {})", h, w, kh, kw,
                       o.stride[0], o.stride[1], o.padding[0], o.padding[1],
                       extra[0] || extra[1] ? fmt::format(", +{} bottom, +{} right", extra[0], extra[1]) : "", o.dilation[0],
                       o.dilation[1]);
  }
};

void validate(std::string_view op, const Window& g) {
  for (int d = 0; d < 2; ++d) {
    if (g.o.stride[d] <= 0 || g.o.dilation[d] <= 0 || g.o.padding[d] < 0)
      throw ShapeError(fmt::format("{}: stride and dilation must be positive and padding non-negative, got {}", op, g.str()));
  }
  if (g.kh <= 0 || g.kw <= 0) throw ShapeError(fmt::format("{}: kernel must be positive, got {}", op, g.str()));
  const std::int64_t eh = g.h + 2 * g.o.padding[0] + g.extra[0] - g.o.dilation[0] * (g.kh - 1) - 1;
  const std::int64_t ew = g.w + 2 * g.o.padding[1] + g.extra[1] - g.o.dilation[1] * (g.kw - 1) - 1;
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
          cases::single("conv2d groups2 [1,4,4,4] w[6,2,3,2] b[6]", {s({1, 4, 4, 4}, 20), s({6, 2, 3, 2}, 21), s({6}, 22)},
                        [](auto x) {
                          Conv2dOptions o;
                          o.groups = 2;
                          o.stride = {1, 2};
                          return conv2d(x[0], x[1], x[2], o);
                        }),
          cases::single("conv2d same [1,2,4,5] w[2,1,2,3] groups2 dil(2,1)", {s({1, 2, 4, 5}, 23), s({2, 1, 2, 3}, 24)},
                        [](auto x) {
                          Conv2dOptions o;
                          o.groups = 2;
                          o.same_padding = true;
                          o.dilation = {2, 1};
                          return conv2d(x[0], x[1], Tensor{}, o);
                        }),
          cases::single("avg_pool2d [2,5,5] k3 stride2 pad1", {s({2, 5, 5}, 25)},
                        [](auto x) { return avg_pool2d(x[0], {3, 3}, {2, 2}, {1, 1}); }),
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
          cases::single("conv_transpose2d [1,2,3,3] w[2,2,3,3] b[2] stride2 pad1 out_pad1",
                        {s({1, 2, 3, 3}, 16), s({2, 2, 3, 3}, 17), s({2}, 18)}, [](auto x) {
                          ConvTranspose2dOptions o;
                          o.stride = {2, 2};
                          o.padding = {1, 1};
                          o.output_padding = {1, 0};
                          return conv_transpose2d(x[0], x[1], x[2], o);
                        }),
          cases::single("conv_transpose2d [4,2,3] w[4,1,2,2] groups2 dil(1,2)", {s({4, 2, 3}, 19), s({4, 1, 2, 2}, 20)}, [](auto x) {
            ConvTranspose2dOptions o;
            o.groups = 2;
            o.dilation = {1, 2};
            return conv_transpose2d(x[0], x[1], Tensor{}, o);
          }),
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
  return im2col_w(x, Window{sh[sh.size() - 2], sh[sh.size() - 1], kh, kw, o, {0, 0}});
}

Tensor col2im(const Tensor& cols, std::int64_t h, std::int64_t w, std::int64_t kh, std::int64_t kw, const Conv2dOptions& o) {
  return col2im_w(cols, Window{h, w, kh, kw, o, {0, 0}});
}

namespace {
std::string bias_str(const Tensor& b) { return b.defined() ? b.shape().str() : std::string("none"); }
}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opts) {
  const Shape& xs = x.shape();
  const Shape& ws = weight.shape();
  const std::int64_t g = opts.groups;
  auto describe = [&] {
    return fmt::format("x {}, weight {}, bias {} (stride ({}, {}), padding {}, dilation ({}, {}), groups {})", xs.str(), ws.str(),
                       bias_str(bias), opts.stride[0], opts.stride[1],
                       opts.same_padding ? std::string("\"same\"") : fmt::format("({}, {})", opts.padding[0], opts.padding[1]),
                       opts.dilation[0], opts.dilation[1], g);
  };
  if (x.dim() < 3 || weight.dim() != 4)
    throw ShapeError(fmt::format("conv2d: needs x [..., C, H, W] and weight [O, C/groups, kH, kW], got {}", describe()));
  const std::int64_t c = xs[xs.size() - 3], out_c = ws[0];
  if (g <= 0 || c % g != 0 || out_c % g != 0)
    throw ShapeError(fmt::format("conv2d: groups must be positive and divide the input channels ({}) and the output channels ({}), "
                                 "got {}",
                                 c, out_c, describe()));
  if (ws[1] * g != c || (bias.defined() && (bias.dim() != 1 || bias.shape()[0] != out_c)))
    throw ShapeError(fmt::format("conv2d: needs x [..., C, H, W], weight [O, C/groups, kH, kW] and bias [O] with matching C and "
                                 "O, got {}",
                                 describe()));
  Window win{xs[xs.size() - 2], xs[xs.size() - 1], ws[2], ws[3], opts, {0, 0}};
  if (opts.same_padding) {
    if (opts.stride[0] != 1 || opts.stride[1] != 1)
      throw ShapeError(fmt::format("conv2d: padding=\"same\" needs stride 1, got {}", describe()));
    // Total padding d·(k-1) keeps the size; PyTorch puts the odd row/column at the bottom/right.
    for (int d = 0; d < 2; ++d) {
      const std::int64_t total = opts.dilation[d] * (ws[2 + d] - 1);
      win.o.padding[d] = total / 2;
      win.extra[d] = total % 2;
    }
  }
  validate("conv2d", win);
  const Shape lead = xs.slice(0, xs.size() - 3);
  const std::int64_t kk = ws[1] * ws[2] * ws[3], l = win.oh() * win.ow();
  Tensor cols = im2col_w(x, win);  // [..., C*kH*kW, L], rows channel-major, so each group's rows are contiguous
  Tensor y;
  if (g == 1) {
    y = matmul(reshape(weight, {out_c, kk}), cols);  // [..., O, L]
  } else {
    // [g, O/g, K] @ [..., g, K, L] -> [..., g, O/g, L]: one GEMM per group.
    y = matmul(reshape(weight, {g, out_c / g, kk}), reshape(cols, lead + Shape{g, kk, l}));
  }
  y = reshape(y, lead + Shape{out_c, win.oh(), win.ow()});
  if (bias.defined()) y = add(y, reshape(bias, {out_c, 1, 1}));
  return y;
}

// The transpose of conv2d: each input pixel's channels times the weights give a column of
// kernel-sized patches (a matmul), and col2im sums the overlapping patches into the output.
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvTranspose2dOptions& o) {
  const Shape& xs = x.shape();
  const Shape& ws = weight.shape();
  const std::int64_t g = o.groups;
  auto describe = [&] {
    return fmt::format("x {}, weight {}, bias {} (stride ({}, {}), padding ({}, {}), output_padding ({}, {}), dilation ({}, {}), "
                       "groups {})",
                       xs.str(), ws.str(), bias_str(bias), o.stride[0], o.stride[1], o.padding[0], o.padding[1],
                       o.output_padding[0], o.output_padding[1], o.dilation[0], o.dilation[1], g);
  };
  if (x.dim() < 3 || weight.dim() != 4)
    throw ShapeError(fmt::format("conv_transpose2d: needs x [..., C_in, H, W] and weight [C_in, C_out/groups, kH, kW], got {}",
                                 describe()));
  const std::int64_t c_in = xs[xs.size() - 3], h = xs[xs.size() - 2], w = xs[xs.size() - 1];
  if (g <= 0 || c_in % g != 0)
    throw ShapeError(fmt::format("conv_transpose2d: groups must be positive and divide the input channels ({}), got {}", c_in,
                                 describe()));
  const std::int64_t out_c = ws[1] * g;
  if (ws[0] != c_in || (bias.defined() && (bias.dim() != 1 || bias.shape()[0] != out_c)))
    throw ShapeError(fmt::format("conv_transpose2d: needs x [..., C_in, H, W], weight [C_in, C_out/groups, kH, kW] and bias "
                                 "[C_out] with matching C_in and C_out, got {}",
                                 describe()));
  for (int d = 0; d < 2; ++d)
    if (o.stride[d] <= 0 || o.dilation[d] <= 0 || o.padding[d] < 0 || o.output_padding[d] < 0 ||
        o.output_padding[d] >= o.stride[d])
      throw ShapeError(fmt::format("conv_transpose2d: stride and dilation must be positive, padding non-negative and "
                                   "output_padding in [0, stride), got {}",
                                   describe()));
  const std::int64_t oh = (h - 1) * o.stride[0] - 2 * o.padding[0] + o.dilation[0] * (ws[2] - 1) + o.output_padding[0] + 1;
  const std::int64_t ow = (w - 1) * o.stride[1] - 2 * o.padding[1] + o.dilation[1] * (ws[3] - 1) + o.output_padding[1] + 1;
  if (oh <= 0 || ow <= 0)
    throw ShapeError(fmt::format("conv_transpose2d: non-positive output size {}x{}, {}", oh, ow, describe()));
  Conv2dOptions co;
  co.stride = o.stride;
  co.padding = o.padding;
  co.dilation = o.dilation;
  const Window win{oh, ow, ws[2], ws[3], co, {0, 0}};  // the conv2d whose adjoint this is: oh x ow -> h x w
  validate("conv_transpose2d", win);
  const Shape lead = xs.slice(0, xs.size() - 3);
  const std::int64_t kk = ws[1] * ws[2] * ws[3];
  Tensor cols;
  if (g == 1) {
    cols = matmul(reshape(weight, {c_in, kk}), reshape(x, lead + Shape{c_in, h * w}), true, false);  // [..., C_out*kH*kW, HW]
  } else {
    // [g, C_in/g, K]ᵀ @ [..., g, C_in/g, HW] -> [..., g, K, HW]; rows group-major as col2im expects.
    cols = matmul(reshape(weight, {g, c_in / g, kk}), reshape(x, lead + Shape{g, c_in / g, h * w}), true, false);
    cols = reshape(cols, lead + Shape{g * kk, h * w});
  }
  Tensor y = col2im_w(cols, win);
  if (bias.defined()) y = add(y, reshape(bias, {out_c, 1, 1}));
  return y;
}

const Primitive* const kConvPrimitives[] = {&im2col_p, &col2im_p};
std::span<const Primitive* const> conv_primitives() { return kConvPrimitives; }

}  // namespace chainrule
