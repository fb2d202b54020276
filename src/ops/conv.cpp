// Convolution. conv2d is three bilinear primitives that are each other's derivatives:
//   conv2d(x, w) = y,  conv2d_input_grad(dy, w) = dx (the transposed convolution),
//   conv2d_weight_grad(x, dy) = dw,
// all three being the partial adjoints of one trilinear form <conv2d(x, w), y>. So each JVP is the
// primitive itself applied to a tangent, and each VJP is one of the other two: derivatives of
// every order follow. Forward kernels: oneDNN in float32, im2col + GEMM in float64 (kernels/conv.h).
// Under vmap a batched image folds into the image axis, a batched weight into the groups (one
// call, no loop over the batch): each primitive's batch rule below. conv_transpose2d is
// conv2d_input_grad. im2col and col2im (unfold/fold) stay as primitives of their own: linear,
// each the other's adjoint; average pooling uses im2col.
// Static parameters are a typed struct carried in Params::typed (primitive.h).
#include <fmt/format.h>

#include <string>

#include "chainrule/ops/conv.h"
#include "kernels/conv.h"
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

// The kernel-side shape of one image's windows over c channels.
kernels::ConvShape window_shape(const Window& g, std::int64_t c) {
  return {1, c, g.h, g.w, 0, g.kh, g.kw, g.oh(), g.ow(), g.o.stride,
          g.o.padding, {g.o.padding[0] + g.extra[0], g.o.padding[1] + g.extra[1]}, g.o.dilation, 1};
}
template <class F>
void windows(const Window& g, std::int64_t c, F&& f) {
  kernels::conv_windows(window_shape(g, c), c, f);
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


// ---- conv2d and its two adjoints ---------------------------------------------------------------

// A convolution's geometry: its window (input image size, kernel, options with the groups) and
// channel counts, so each of the three primitives knows the shape of what it makes.
struct ConvGeom {
  Window win;
  std::int64_t c, o;  // input and output channels
  // Channels-last batch rules only (kernels::ConvShape::folded): the images of `folded` examples
  // folded into the channels and groups without moving. The image tensors are then [folded·N,
  // H, W, C/folded] (example-major), the weight [O, C/groups, kH, kW] as always.
  std::int64_t folded = 1;

  // n: the image tensors' leading size (folded·N images when folded).
  kernels::ConvShape kernel_shape(std::int64_t n) const {
    return {n / folded, c, win.h, win.w, o, win.kh, win.kw, win.oh(), win.ow(), win.o.stride, win.o.padding,
            {win.o.padding[0] + win.extra[0], win.o.padding[1] + win.extra[1]}, win.o.dilation, win.o.groups, win.o.bf16, win.o.channels_last,
            folded};
  }
  bool channels_last() const { return win.o.channels_last; }
  Shape image() const { return channels_last() ? Shape{win.h, win.w, c / folded} : Shape{c, win.h, win.w}; }
  Shape output() const { return channels_last() ? Shape{win.oh(), win.ow(), o / folded} : Shape{o, win.oh(), win.ow()}; }
  Shape weight() const { return {o, c / win.o.groups, win.kh, win.kw}; }
  // The same convolution with other channel counts and groups (a batch folded into the groups).
  ConvGeom with(std::int64_t c2, std::int64_t o2, std::int64_t groups) const {
    ConvGeom g = *this;
    g.c = c2, g.o = o2, g.win.o.groups = groups;
    return g;
  }
};

}  // namespace
extern const Primitive conv2d_p;
extern const Primitive conv2d_input_grad_p;
extern const Primitive conv2d_weight_grad_p;
namespace {

Tensor conv_b(const Tensor& x, const Tensor& w, const ConvGeom& g) { return bind(conv2d_p, {x, w}, Params::with_attrs(g)); }
Tensor input_grad_b(const Tensor& dy, const Tensor& w, const ConvGeom& g) {
  return bind(conv2d_input_grad_p, {dy, w}, Params::with_attrs(g));
}
Tensor weight_grad_b(const Tensor& x, const Tensor& dy, const ConvGeom& g) {
  return bind(conv2d_weight_grad_p, {x, dy}, Params::with_attrs(g));
}

void expect(std::string_view op, std::string_view what, const Tensor& t, const Shape& want) {
  if (t.shape() != want)
    throw ShapeError(fmt::format("{}: {} must be {}, got {}", op, what, want.str(), t.shape().str()));
}
std::int64_t images(std::string_view op, std::string_view what, const Tensor& t, const Shape& per_image) {
  if (t.dim() != 4) throw ShapeError(fmt::format("{}: {} must be [N, {}], got {}", op, what, per_image.str(), t.shape().str()));
  const std::int64_t n = t.shape()[0];
  expect(op, what, t, Shape{n} + per_image);
  return n;
}

// Runs one of the three kernels on two validated inputs into an output of shape `out`.
template <class Kernel>
Tensor run_kernel(std::string_view op, std::span<const Tensor> x, const Shape& out, const ConvGeom& g, std::int64_t n, Kernel kernel) {
  Tensor y = empty(out, x[0].dtype());
  kernels::dispatch_float(x[0].dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    kernel(g.kernel_shape(n), kernels::in<T>(x[0]), kernels::in<T>(x[1]), kernels::out<T>(y));
    return 0;
  });
  return y;
}

Tensor conv_forward(std::span<const Tensor> x, const Params& p) {
  const ConvGeom& g = p.attrs<ConvGeom>();
  const std::int64_t n = images("conv2d", "x", x[0], g.image());
  expect("conv2d", "weight", x[1], g.weight());
  return run_kernel("conv2d", x, Shape{n} + g.output(), g, n, [](const auto&... a) { kernels::conv2d_forward(a...); });
}
Tensor input_grad_forward(std::span<const Tensor> x, const Params& p) {
  const ConvGeom& g = p.attrs<ConvGeom>();
  const std::int64_t n = images("conv2d_input_grad", "dy", x[0], g.output());
  expect("conv2d_input_grad", "weight", x[1], g.weight());
  return run_kernel("conv2d_input_grad", x, Shape{n} + g.image(), g, n, [](const auto&... a) { kernels::conv2d_backward_data(a...); });
}
Tensor weight_grad_forward(std::span<const Tensor> x, const Params& p) {
  const ConvGeom& g = p.attrs<ConvGeom>();
  const std::int64_t n = images("conv2d_weight_grad", "x", x[0], g.image());
  expect("conv2d_weight_grad", "dy", x[1], Shape{n} + g.output());
  return run_kernel("conv2d_weight_grad", x, g.weight(), g, n, [](const auto&... a) { kernels::conv2d_backward_weights(a...); });
}

// Batch-rule helpers; t's batch axis is in front.
constexpr bool bit(std::uint32_t batched, int i) { return (batched >> i) & 1u; }
// [B, N, C, H, W] -> [B*N, C, H, W]: the examples become more images.
Tensor fold_into_images(const Tensor& t) {
  const Shape& s = t.shape();
  return reshape(t, {s[0] * s[1], s[2], s[3], s[4]});
}
Tensor unfold_images(const Tensor& t, std::int64_t b, std::int64_t n) {
  const Shape& s = t.shape();
  return reshape(t, {b, n, s[1], s[2], s[3]});
}
// [B, N, C, H, W] -> [N, B*C, H, W]: each example's channels become a group of their own.
// With one image per example (per-example gradients) the permutes move nothing: reshapes only.
Tensor fold_into_channels(const Tensor& t) {
  const Shape& s = t.shape();
  const Shape folded{s[1], s[0] * s[2], s[3], s[4]};
  return s[1] == 1 ? reshape(t, folded) : reshape(permute(t, {1, 0, 2, 3, 4}), folded);
}
Tensor unfold_channels(const Tensor& t, std::int64_t b, std::int64_t c) {
  const Shape& s = t.shape();
  return s[0] == 1 ? reshape(t, {b, 1, c, s[2], s[3]}) : permute(reshape(t, {s[0], b, c, s[2], s[3]}), {1, 0, 2, 3, 4});
}
Tensor with_batch(const Tensor& t, bool batched, std::int64_t b) { return batched ? t : broadcast_to(t, Shape{b} + t.shape()); }
// [B, O, C/g, kH, kW] -> [B*O, C/g, kH, kW], and back.
Tensor fold_weight(const Tensor& w) {
  const Shape& s = w.shape();
  return reshape(w, {s[0] * s[1], s[2], s[3], s[4]});
}
Tensor unfold_weight(const Tensor& w, std::int64_t b, std::int64_t o) {
  const Shape& s = w.shape();
  return reshape(w, {b, o, s[1], s[2], s[3]});
}

// Batched weights fold into the groups, and oneDNN has no fast grouped channels-last kernel for
// B·G groups of a few channels (its reference one ran 5x slower than the NCHW grouped call). So
// channels-last batch rules with batched weights run channels-first (inputs permuted to NCHW,
// the NCHW rule, the result back), except where both image operands are batched: [B, N, H, W, C]
// is then already B·N images of the folded layout (ConvGeom::folded), which oneDNN reads as its
// blocked nChw16c or reorders itself. Per-example gradients take that path with no data moved.
Tensor to_channels_first(const Tensor& t, bool batched) { return permute(t, batched ? Axes{0, 1, 4, 2, 3} : Axes{0, 3, 1, 2}); }
Tensor to_channels_last(const Tensor& t) { return permute(t, {0, 1, 3, 4, 2}); }  // a batched [B, N, C, H, W]
template <class Rule>
Tensor channels_first_rule(Rule rule, std::span<const Tensor> x, std::uint32_t batched, const ConvGeom& g, const bool image_input[2]) {
  ConvGeom f = g;
  f.win.o.channels_last = false;
  std::vector<Tensor> in;
  for (int i = 0; i < 2; ++i) in.push_back(image_input[i] ? to_channels_first(x[i], bit(batched, i)) : x[i]);
  return rule(std::span<const Tensor>(in), batched, Params::with_attrs(f));
}
ConvGeom folded_geometry(const ConvGeom& g, std::int64_t b) {
  ConvGeom f = g.with(b * g.c, b * g.o, b * g.win.o.groups);
  f.folded = b;
  return f;
}
// A folded primitive under another vmap: its folded images [(B,) F·N, H, W, C/F] as plain
// channels-last ones [(B,) N, H, W, C], the plain rule, the result folded back.
Tensor folded_to_plain(const Tensor& t, std::int64_t f, bool batched) {
  const Shape& s = t.shape();
  const std::size_t r = s.size();
  const Shape lead = s.slice(0, batched ? 1 : 0);
  const std::int64_t n = s[r - 4] / f, cb = s[r - 1];
  const Tensor moved = permute(reshape(t, lead + Shape{f, n, s[r - 3] * s[r - 2], cb}), batched ? Axes{0, 2, 3, 1, 4} : Axes{1, 2, 0, 3});
  return reshape(moved, lead + Shape{n, s[r - 3], s[r - 2], f * cb});
}
Tensor plain_to_folded(const Tensor& t, std::int64_t f) {  // a batched [B, N, H, W, F·C]
  const Shape& s = t.shape();
  const Tensor moved = permute(reshape(t, {s[0], s[1], s[2] * s[3], f, s[4] / f}), {0, 3, 1, 2, 4});
  return reshape(moved, {s[0], f * s[1], s[2], s[3], s[4] / f});
}
template <class Rule>
Tensor unfolded_rule(Rule rule, std::span<const Tensor> x, std::uint32_t batched, const ConvGeom& g, const bool image_input[2], bool image_output) {
  ConvGeom plain = g;
  plain.folded = 1;
  std::vector<Tensor> in;
  for (int i = 0; i < 2; ++i) in.push_back(image_input[i] ? folded_to_plain(x[i], g.folded, bit(batched, i)) : x[i]);
  const Tensor out = rule(std::span<const Tensor>(in), batched, Params::with_attrs(plain));
  return image_output ? plain_to_folded(out, g.folded) : out;
}

Tensor conv_batch(std::span<const Tensor> x, std::uint32_t batched, const Params& p) {
  const ConvGeom& g = p.attrs<ConvGeom>();
  const std::int64_t groups = g.win.o.groups;
  constexpr bool images[2] = {true, false};
  if (g.folded > 1) return unfolded_rule(conv_batch, x, batched, g, images, true);
  if (g.channels_last() && bit(batched, 1)) {
    const std::int64_t b = x[1].shape()[0];
    if (bit(batched, 0)) return unfold_images(conv_b(fold_into_images(x[0]), fold_weight(x[1]), folded_geometry(g, b)), b, x[0].shape()[1]);
    return to_channels_last(channels_first_rule(conv_batch, x, batched, g, images));
  }
  if (!bit(batched, 1)) return unfold_images(conv_b(fold_into_images(x[0]), x[1], g), x[0].shape()[0], x[0].shape()[1]);
  const std::int64_t b = x[1].shape()[0];
  if (!bit(batched, 0) && groups == 1)  // every example's filters over the same images: one wider conv
    return unfold_channels(conv_b(x[0], fold_weight(x[1]), g.with(g.c, b * g.o, 1)), b, g.o);
  return unfold_channels(conv_b(fold_into_channels(with_batch(x[0], bit(batched, 0), b)), fold_weight(x[1]),
                                g.with(b * g.c, b * g.o, b * groups)),
                         b, g.o);
}
Tensor input_grad_batch(std::span<const Tensor> x, std::uint32_t batched, const Params& p) {
  const ConvGeom& g = p.attrs<ConvGeom>();
  constexpr bool images[2] = {true, false};
  if (g.folded > 1) return unfolded_rule(input_grad_batch, x, batched, g, images, true);
  if (g.channels_last() && bit(batched, 1)) {
    const std::int64_t b = x[1].shape()[0];
    if (bit(batched, 0))
      return unfold_images(input_grad_b(fold_into_images(x[0]), fold_weight(x[1]), folded_geometry(g, b)), b, x[0].shape()[1]);
    return to_channels_last(channels_first_rule(input_grad_batch, x, batched, g, images));
  }
  if (!bit(batched, 1)) return unfold_images(input_grad_b(fold_into_images(x[0]), x[1], g), x[0].shape()[0], x[0].shape()[1]);
  const std::int64_t b = x[1].shape()[0];
  return unfold_channels(input_grad_b(fold_into_channels(with_batch(x[0], bit(batched, 0), b)), fold_weight(x[1]),
                                      g.with(b * g.c, b * g.o, b * g.win.o.groups)),
                         b, g.c);
}
Tensor weight_grad_batch(std::span<const Tensor> x, std::uint32_t batched, const Params& p) {
  const ConvGeom& g = p.attrs<ConvGeom>();
  const bool bx = bit(batched, 0), bdy = bit(batched, 1);
  constexpr bool images[2] = {true, true};
  if (g.folded > 1) return unfolded_rule(weight_grad_batch, x, batched, g, images, false);
  if (g.channels_last()) {
    if (bx && bdy) {  // per-example gradients
      const std::int64_t b = x[0].shape()[0];
      return unfold_weight(weight_grad_b(fold_into_images(x[0]), fold_into_images(x[1]), folded_geometry(g, b)), b, g.o);
    }
    return channels_first_rule(weight_grad_batch, x, batched, g, images);
  }
  const std::int64_t b = bx ? x[0].shape()[0] : x[1].shape()[0];
  if (g.win.o.groups == 1 && !bx)  // one image batch, each example's output channels apart
    return unfold_weight(weight_grad_b(x[0], fold_into_channels(x[1]), g.with(g.c, b * g.o, 1)), b, g.o);
  if (g.win.o.groups == 1 && !bdy) {  // [O, B*C, kH, kW] -> [B, O, C, kH, kW]
    const Tensor dw = weight_grad_b(fold_into_channels(x[0]), x[1], g.with(b * g.c, g.o, 1));
    return permute(reshape(dw, {g.o, b, g.c, g.win.kh, g.win.kw}), {1, 0, 2, 3, 4});
  }
  return unfold_weight(weight_grad_b(fold_into_channels(with_batch(x[0], bx, b)), fold_into_channels(with_batch(x[1], bdy, b)),
                                     g.with(b * g.c, b * g.o, b * g.win.o.groups)),
                       b, g.o);
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
          cases::single("[0,1,3,3] empty batch", {s({0, 1, 3, 3}, 8)}, [](auto x) { return im2col(x[0], 2, 2); }),
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
          cases::single("[8,16] -> [2,8,8] k2 stride2 medium", {s({8, 16}, 15)}, [](auto x) {
            Conv2dOptions o;
            o.stride = {2, 2};
            return col2im(x[0], 8, 8, 2, 2, o);
          }),
      };
    },
};

namespace {
ConvGeom conv_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opts);
ConvGeom transpose_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvTranspose2dOptions& o);
// A sample for one of conv2d's adjoints: the conv2d of an x of shape xs and a weight of shape ws
// fixes the geometry; the case's inputs are two of (x, w, dy), chosen by `pick`.
template <class Make>
OpCase adjoint_case(std::string label, Shape xs, Shape ws, Conv2dOptions o, std::uint64_t seed, Make make) {
  const Tensor x = s(xs, seed), w = s(ws, seed + 1);
  const ConvGeom g = conv_geometry(x, w, Tensor{}, o);
  const Tensor dy = s(Shape{xs[0]} + g.output(), seed + 2);
  return make(std::move(label), x, w, dy, g);
}
OpCase input_grad_case(std::string label, Shape xs, Shape ws, Conv2dOptions o, std::uint64_t seed) {
  return adjoint_case(std::move(label), xs, ws, o, seed, [](std::string l, const Tensor&, const Tensor& w, const Tensor& dy, const ConvGeom& g) {
    return cases::single(std::move(l), {dy, w}, [g](auto in) { return input_grad_b(in[0], in[1], g); });
  });
}
OpCase weight_grad_case(std::string label, Shape xs, Shape ws, Conv2dOptions o, std::uint64_t seed) {
  return adjoint_case(std::move(label), xs, ws, o, seed, [](std::string l, const Tensor& x, const Tensor&, const Tensor& dy, const ConvGeom& g) {
    return cases::single(std::move(l), {x, dy}, [g](auto in) { return weight_grad_b(in[0], in[1], g); });
  });
}
Conv2dOptions options(std::array<std::int64_t, 2> stride, std::array<std::int64_t, 2> padding, std::array<std::int64_t, 2> dilation,
                      std::int64_t groups, bool same = false, bool channels_last = false) {
  Conv2dOptions o;
  o.stride = stride, o.padding = padding, o.dilation = dilation, o.groups = groups, o.same_padding = same;
  o.channels_last = channels_last;
  return o;
}
// The folded layout of the per-example batch rules (ConvGeom::folded): the channels-last images
// of `f` examples of xs [N, H, W, C] as one tensor [f·N, H, W, C], weights [f·O, C/groups, kH, kW].
template <class Pick>
OpCase folded_case(std::string label, Shape xs, Shape ws, Conv2dOptions o, std::int64_t f, std::uint64_t seed, Pick pick) {
  o.channels_last = true;
  const ConvGeom g = folded_geometry(conv_geometry(s(xs, seed), s(ws, seed + 1), Tensor{}, o), f);
  const Tensor x = s(Shape{f * xs[0]} + xs.slice(1, 4), seed + 2), w = s(Shape{f * ws[0]} + ws.slice(1, 4), seed + 3);
  const Tensor dy = s(Shape{f * xs[0]} + g.output(), seed + 4);
  return pick(std::move(label), x, w, dy, g);
}
}  // namespace

const Primitive conv2d_p{
    .name = "conv2d",
    .forward = conv_forward,
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      const ConvGeom& g = c.p.attrs<ConvGeom>();
      return i == 0 ? conv_b(t, c.x[1], g) : conv_b(c.x[0], t, g);
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      const ConvGeom& g = c.p.attrs<ConvGeom>();
      return i == 0 ? input_grad_b(ct, c.x[1], g) : weight_grad_b(c.x[0], ct, g);
    },
    .batching = Batching::Rule,
    .batch_rule = conv_batch,
    .saves = kSaveInputs,
    .cases = [] {
      Conv2dOptions pad1;
      pad1.padding = {1, 1};
      Conv2dOptions strided;
      strided.stride = {2, 1};
      strided.dilation = {1, 2};
      strided.padding = {0, 1};
      return std::vector<OpCase>{
          cases::single("conv2d [2,2,4,4] w[3,2,3,3] b[3] pad1", {s({2, 2, 4, 4}, 3), s({3, 2, 3, 3}, 4), s({3}, 5)},
                        [pad1](auto x) { return conv2d(x[0], x[1], x[2], pad1); }),
          cases::single("conv2d [1,1,5,4] w[2,1,3,2] strided dilated", {s({1, 1, 5, 4}, 6), s({2, 1, 3, 2}, 7)},
                        [strided](auto x) { return conv2d(x[0], x[1], Tensor{}, strided); }),
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
          cases::single("conv2d [0,1,3,3] empty batch w[2,1,2,2]", {s({0, 1, 3, 3}, 26), s({2, 1, 2, 2}, 27)},
                        [](auto x) { return conv2d(x[0], x[1]); }),
          cases::single("conv2d channels-last [2,4,5,2] w[3,2,3,3] b[3] pad1 stride(2,1)", {s({2, 4, 5, 2}, 28), s({3, 2, 3, 3}, 29), s({3}, 30)},
                        [](auto x) { return conv2d(x[0], x[1], x[2], options({2, 1}, {1, 1}, {1, 1}, 1, false, true)); }),
          cases::single("conv2d channels-last groups2 [1,4,4,4] w[4,2,2,3]", {s({1, 4, 4, 4}, 31), s({4, 2, 2, 3}, 32)},
                        [](auto x) { return conv2d(x[0], x[1], Tensor{}, options({1, 1}, {0, 1}, {1, 1}, 2, false, true)); }),
          folded_case("conv2d folded: 2 examples of x[1,4,4,3] w[2,3,3,3] pad1", {1, 4, 4, 3}, {2, 3, 3, 3}, options({1, 1}, {1, 1}, {1, 1}, 1), 2,
                      33, [](std::string l, const Tensor& x, const Tensor& w, const Tensor&, const ConvGeom& g) {
                        return cases::single(std::move(l), {x, w}, [g](auto in) { return conv_b(in[0], in[1], g); });
                      }),
      };
    },
};

// dx from dy and the weights: the transposed convolution (conv_transpose2d is this primitive).
const Primitive conv2d_input_grad_p{
    .name = "conv2d_input_grad",
    .forward = input_grad_forward,
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      const ConvGeom& g = c.p.attrs<ConvGeom>();
      return i == 0 ? input_grad_b(t, c.x[1], g) : input_grad_b(c.x[0], t, g);
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      const ConvGeom& g = c.p.attrs<ConvGeom>();
      return i == 0 ? conv_b(ct, c.x[1], g) : weight_grad_b(ct, c.x[0], g);
    },
    .batching = Batching::Rule,
    .batch_rule = input_grad_batch,
    .saves = kSaveInputs,
    .cases = [] {
      return std::vector<OpCase>{
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
          input_grad_case("dy of x[2,3,5,5] w[4,3,3,3] pad1 medium", {2, 3, 5, 5}, {4, 3, 3, 3}, options({1, 1}, {1, 1}, {1, 1}, 1), 40),
          input_grad_case("dy of x[0,2,4,4] w[3,2,2,2] empty batch", {0, 2, 4, 4}, {3, 2, 2, 2}, {}, 43),
          input_grad_case("dy of x[1,6,5,5] w[3,2,3,3] groups3 stride2", {1, 6, 5, 5}, {3, 2, 3, 3}, options({2, 2}, {0, 0}, {1, 1}, 3), 46),
          input_grad_case("dy of x[1,2,4,5] w[2,2,2,2] same", {1, 2, 4, 5}, {2, 2, 2, 2}, options({1, 1}, {0, 0}, {1, 1}, 1, true), 49),
          input_grad_case("dy of channels-last x[2,5,5,3] w[4,3,3,3] stride2 pad1", {2, 5, 5, 3}, {4, 3, 3, 3},
                          options({2, 2}, {1, 1}, {1, 1}, 1, false, true), 58),
          folded_case("dy folded: 3 examples of x[2,5,4,4] w[4,2,3,2] groups2 stride(2,1)", {2, 5, 4, 4}, {4, 2, 3, 2},
                      options({2, 1}, {1, 0}, {1, 1}, 2), 3, 65, [](std::string l, const Tensor&, const Tensor& w, const Tensor& dy, const ConvGeom& g) {
                        return cases::single(std::move(l), {dy, w}, [g](auto in) { return input_grad_b(in[0], in[1], g); });
                      }),
          cases::single("conv_transpose2d channels-last [1,3,3,2] w[2,2,3,3] b[2] stride2", {s({1, 3, 3, 2}, 61), s({2, 2, 3, 3}, 62), s({2}, 63)},
                        [](auto x) {
                          ConvTranspose2dOptions o;
                          o.stride = {2, 2};
                          o.channels_last = true;
                          return conv_transpose2d(x[0], x[1], x[2], o);
                        }),
      };
    },
};

// dw from the images and dy, summed over the images.
const Primitive conv2d_weight_grad_p{
    .name = "conv2d_weight_grad",
    .forward = weight_grad_forward,
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      const ConvGeom& g = c.p.attrs<ConvGeom>();
      return i == 0 ? weight_grad_b(t, c.x[1], g) : weight_grad_b(c.x[0], t, g);
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      const ConvGeom& g = c.p.attrs<ConvGeom>();
      return i == 0 ? input_grad_b(c.x[1], ct, g) : conv_b(c.x[0], ct, g);
    },
    .batching = Batching::Rule,
    .batch_rule = weight_grad_batch,
    .saves = kSaveInputs,
    .cases = [] {
      return std::vector<OpCase>{
          weight_grad_case("x[2,2,4,4] w[3,2,3,3] pad0", {2, 2, 4, 4}, {3, 2, 3, 3}, {}, 30),
          weight_grad_case("x[1,1,5,4] w[2,1,3,2] strided dilated", {1, 1, 5, 4}, {2, 1, 3, 2}, options({2, 1}, {1, 0}, {1, 2}, 1), 33),
          weight_grad_case("x[2,4,3,3] w[4,2,2,2] groups2 pad1", {2, 4, 3, 3}, {4, 2, 2, 2}, options({1, 1}, {1, 1}, {1, 1}, 2), 36),
          weight_grad_case("x[2,3,6,6] w[4,3,3,3] pad1 medium", {2, 3, 6, 6}, {4, 3, 3, 3}, options({1, 1}, {1, 1}, {1, 1}, 1), 50),
          weight_grad_case("x[0,2,4,4] w[3,2,2,2] empty batch", {0, 2, 4, 4}, {3, 2, 2, 2}, {}, 53),
          weight_grad_case("x[1,2,4,5] w[2,1,2,3] same groups2 dil(2,1)", {1, 2, 4, 5}, {2, 1, 2, 3}, options({1, 1}, {0, 0}, {2, 1}, 2, true),
                           56),
          weight_grad_case("channels-last x[2,4,5,4] w[4,2,3,2] groups2 pad1", {2, 4, 5, 4}, {4, 2, 3, 2},
                           options({1, 1}, {1, 1}, {1, 1}, 2, false, true), 64),
          folded_case("folded (per-example): 3 examples of x[1,4,4,2] w[3,2,3,3] pad1", {1, 4, 4, 2}, {3, 2, 3, 3},
                      options({1, 1}, {1, 1}, {1, 1}, 1), 3, 70, [](std::string l, const Tensor& x, const Tensor&, const Tensor& dy, const ConvGeom& g) {
                        return cases::single(std::move(l), {x, dy}, [g](auto in) { return weight_grad_b(in[0], in[1], g); });
                      }),
          folded_case("folded: 2 examples of x[2,5,4,4] w[4,2,3,2] groups2 stride(2,1)", {2, 5, 4, 4}, {4, 2, 3, 2},
                      options({2, 1}, {1, 0}, {1, 1}, 2), 2, 75, [](std::string l, const Tensor& x, const Tensor&, const Tensor& dy, const ConvGeom& g) {
                        return cases::single(std::move(l), {x, dy}, [g](auto in) { return weight_grad_b(in[0], in[1], g); });
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

namespace {
ConvGeom conv_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opts) {
  const Shape& xs = x.shape();
  const Shape& ws = weight.shape();
  const std::int64_t g = opts.groups;
  auto describe = [&] {
    return fmt::format("x {}, weight {}, bias {} (stride ({}, {}), padding {}, dilation ({}, {}), groups {}{})", xs.str(), ws.str(),
                       bias_str(bias), opts.stride[0], opts.stride[1],
                       opts.same_padding ? std::string("\"same\"") : fmt::format("({}, {})", opts.padding[0], opts.padding[1]),
                       opts.dilation[0], opts.dilation[1], g, opts.channels_last ? ", channels-last" : "");
  };
  const char* image = opts.channels_last ? "[..., H, W, C]" : "[..., C, H, W]";
  if (x.dim() < 3 || weight.dim() != 4)
    throw ShapeError(fmt::format("conv2d: needs x {} and weight [O, C/groups, kH, kW], got {}", image, describe()));
  const std::size_t r = xs.size();
  const std::int64_t c = opts.channels_last ? xs[r - 1] : xs[r - 3], out_c = ws[0];
  const std::int64_t h = opts.channels_last ? xs[r - 3] : xs[r - 2], w = opts.channels_last ? xs[r - 2] : xs[r - 1];
  if (g <= 0 || c % g != 0 || out_c % g != 0)
    throw ShapeError(fmt::format("conv2d: groups must be positive and divide the input channels ({}) and the output channels ({}), "
                                 "got {}",
                                 c, out_c, describe()));
  if (ws[1] * g != c || (bias.defined() && (bias.dim() != 1 || bias.shape()[0] != out_c)))
    throw ShapeError(fmt::format("conv2d: needs x {}, weight [O, C/groups, kH, kW] and bias [O] with matching C and "
                                 "O, got {}",
                                 image, describe()));
  Window win{h, w, ws[2], ws[3], opts, {0, 0}};
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
  return ConvGeom{win, c, out_c};
}

// conv_transpose2d(x, w) is conv2d_input_grad of the conv2d that maps its output (oH x oW, C_out
// channels) back to x (H x W, C_in channels), whose weights [C_in, C_out/groups, kH, kW] are w.
ConvGeom transpose_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvTranspose2dOptions& o) {
  const Shape& xs = x.shape();
  const Shape& ws = weight.shape();
  const std::int64_t g = o.groups;
  auto describe = [&] {
    return fmt::format("x {}, weight {}, bias {} (stride ({}, {}), padding ({}, {}), output_padding ({}, {}), dilation ({}, {}), "
                       "groups {}{})",
                       xs.str(), ws.str(), bias_str(bias), o.stride[0], o.stride[1], o.padding[0], o.padding[1],
                       o.output_padding[0], o.output_padding[1], o.dilation[0], o.dilation[1], g, o.channels_last ? ", channels-last" : "");
  };
  if (x.dim() < 3 || weight.dim() != 4)
    throw ShapeError(fmt::format("conv_transpose2d: needs x [..., C_in, H, W] and weight [C_in, C_out/groups, kH, kW], got {}",
                                 describe()));
  const std::size_t r = xs.size();
  const std::int64_t c_in = o.channels_last ? xs[r - 1] : xs[r - 3];
  const std::int64_t h = o.channels_last ? xs[r - 3] : xs[r - 2], w = o.channels_last ? xs[r - 2] : xs[r - 1];
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
  co.groups = g;
  co.stride = o.stride;
  co.padding = o.padding;
  co.dilation = o.dilation;
  co.bf16 = o.bf16;
  co.channels_last = o.channels_last;
  const Window win{oh, ow, ws[2], ws[3], co, {0, 0}};  // the conv2d whose adjoint this is: oh x ow -> h x w
  validate("conv_transpose2d", win);
  return ConvGeom{win, out_c, c_in};
}

// x [..., C, H, W] as [N, C, H, W], the primitives' layout.
Tensor as_images(const Tensor& x) {
  const Shape& s = x.shape();
  return x.dim() == 4 ? x : reshape(x, {s.slice(0, s.size() - 3).numel(), s[s.size() - 3], s[s.size() - 2], s[s.size() - 1]});
}
Tensor with_lead(const Tensor& y, const Tensor& x, const Tensor& bias, bool channels_last) {
  const Shape& s = x.shape();
  const Shape& ys = y.shape();
  Tensor out = x.dim() == 4 ? y : reshape(y, s.slice(0, s.size() - 3) + ys.slice(1, 4));
  if (!bias.defined()) return out;
  return add(out, channels_last ? bias : reshape(bias, {ys[1], 1, 1}));
}
// Mixed dtypes promote as in the other binary ops.
std::pair<Tensor, Tensor> promoted(const Tensor& x, const Tensor& w) {
  const DType t = promote_types(x.dtype(), w.dtype());
  return {x.dtype() == t ? x : cast(x, t), w.dtype() == t ? w : cast(w, t)};
}
}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opts) {
  const ConvGeom g = conv_geometry(x, weight, bias, opts);
  const auto [xp, wp] = promoted(x, weight);
  return with_lead(conv_b(as_images(xp), wp, g), x, bias, opts.channels_last);
}

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvTranspose2dOptions& o) {
  const ConvGeom g = transpose_geometry(x, weight, bias, o);
  const auto [xp, wp] = promoted(x, weight);
  return with_lead(input_grad_b(as_images(xp), wp, g), x, bias, o.channels_last);
}

const Primitive* const kConvPrimitives[] = {&im2col_p, &col2im_p, &conv2d_p, &conv2d_input_grad_p, &conv2d_weight_grad_p};
std::span<const Primitive* const> conv_primitives() { return kConvPrimitives; }

}  // namespace chainrule
