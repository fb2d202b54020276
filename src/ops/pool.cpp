// Pooling and nearest-neighbour upsampling over the last two axes of x [..., C, H, W].
//
// Max pooling is three primitives. `max_pool2d_indices` finds each window's argmax (a flat index
// into its H·W plane, PyTorch's return_indices); it is piecewise constant, so it has no
// derivative. `max_pool2d` gathers x at given indices and `max_pool2d_backward` scatter-adds a
// cotangent back to them. Both are linear in their float input and each is the other's adjoint,
// so the JVP of max pooling gathers the tangent at the argmax, its VJP scatters the cotangent,
// and derivatives of every order follow with the indices held fixed (a max is locally linear).
//
// Average pooling, adaptive average pooling and upsampling are linear composites of existing
// primitives (im2col + mean, two matmuls with constant averaging matrices, broadcast_to), so
// their rules are those of the primitives they use.
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <string>

#include "chainrule/ops/conv.h"
#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

extern const Primitive max_pool2d_indices_p;
extern const Primitive max_pool2d_p;
extern const Primitive max_pool2d_backward_p;

namespace {

using Pair = std::array<std::int64_t, 2>;

// Geometry of a pooling window over an h x w plane (PyTorch's rules, ceil_mode = false).
struct PoolWindow {
  std::int64_t h, w;
  Pair kernel, stride, padding;
  std::int64_t oh() const { return (h + 2 * padding[0] - kernel[0]) / stride[0] + 1; }
  std::int64_t ow() const { return (w + 2 * padding[1] - kernel[1]) / stride[1] + 1; }
  std::string str() const {
    return fmt::format("input {}x{}, kernel ({}, {}), stride ({}, {}), padding ({}, {})", h, w, kernel[0], kernel[1], stride[0],
                       stride[1], padding[0], padding[1]);
  }
};

PoolWindow pool_window(std::string_view op, const Tensor& x, Pair kernel, Pair stride, Pair padding) {
  if (x.dim() < 3) throw ShapeError(fmt::format("{}: needs x [..., C, H, W], got {}", op, x.shape().str()));
  const Shape& s = x.shape();
  for (int d = 0; d < 2; ++d)
    if (stride[d] == 0) stride[d] = kernel[d];  // PyTorch's stride=None
  const PoolWindow g{s[s.size() - 2], s[s.size() - 1], kernel, stride, padding};
  for (int d = 0; d < 2; ++d) {
    if (kernel[d] <= 0 || stride[d] <= 0 || padding[d] < 0)
      throw ShapeError(fmt::format("{}: kernel and stride must be positive and padding non-negative, got {}", op, g.str()));
    // As PyTorch: every window then holds at least one element of the input.
    if (2 * padding[d] > kernel[d])
      throw ShapeError(fmt::format("{}: padding must be at most half the kernel size, got {}", op, g.str()));
  }
  if (g.h + 2 * padding[0] < kernel[0] || g.w + 2 * padding[1] < kernel[1])
    throw ShapeError(fmt::format("{}: kernel larger than the padded input (non-positive output size), x {}, {}", op, s.str(), g.str()));
  return g;
}

// Number of H x W planes of x [..., H, W].
std::int64_t planes(const Shape& s) { return s.numel() == 0 ? 0 : s.numel() / (s[s.size() - 2] * s[s.size() - 1]); }

Tensor indices_forward(std::span<const Tensor> x, const Params& p) {
  const PoolWindow& g = p.attrs<PoolWindow>();
  const Tensor& in = x[0];
  const Shape& s = in.shape();
  if (in.dim() < 3 || s[s.size() - 2] != g.h || s[s.size() - 1] != g.w)
    throw ShapeError(fmt::format("max_pool2d_indices: needs x [..., C, {}, {}], got {}", g.h, g.w, s.str()));
  const std::int64_t oh = g.oh(), ow = g.ow(), n = planes(s);
  Tensor o = empty(s.slice(0, s.size() - 2) + Shape{oh, ow}, DType::i64);
  auto* po = kernels::out<std::int64_t>(o);
  kernels::dispatch_float(in.dtype(), "max_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* pi = kernels::in<T>(in);
    for (std::int64_t b = 0; b < n; ++b) {
      const T* src = pi + b * g.h * g.w;
      for (std::int64_t y = 0; y < oh; ++y)
        for (std::int64_t xo = 0; xo < ow; ++xo) {
          const std::int64_t y0 = y * g.stride[0] - g.padding[0], x0 = xo * g.stride[1] - g.padding[1];
          const std::int64_t ya = std::max<std::int64_t>(y0, 0), yb = std::min(y0 + g.kernel[0], g.h);
          const std::int64_t xa = std::max<std::int64_t>(x0, 0), xb = std::min(x0 + g.kernel[1], g.w);
          // The first maximal element in row-major order wins a tie; a NaN counts as maximal.
          std::int64_t best = ya * g.w + xa;
          for (std::int64_t iy = ya; iy < yb; ++iy)
            for (std::int64_t ix = xa; ix < xb; ++ix) {
              const T v = src[iy * g.w + ix], m = src[best];
              if (v > m || (std::isnan(v) && !std::isnan(m))) best = iy * g.w + ix;
            }
          po[(b * oh + y) * ow + xo] = best;
        }
    }
    return 0;
  });
  return o;
}

// Plane sizes for the gather and the scatter: the input's h x w.
struct Planes {
  std::int64_t h, w;
};

void check_pair(std::string_view op, const Tensor& v, const Tensor& idx, const Planes& g, bool v_is_image) {
  const Shape& vs = v.shape();
  const Shape& is = idx.shape();
  if (idx.dtype() != DType::i64)
    throw DTypeError(fmt::format("{}: indices must be int64, got {} {}", op, dtype_name(idx.dtype()), is.str()));
  const bool ok = v.dim() >= 3 && v.dim() == idx.dim() && vs.slice(0, vs.size() - 2) == is.slice(0, is.size() - 2) &&
                  (!v_is_image || (vs[vs.size() - 2] == g.h && vs[vs.size() - 1] == g.w)) && (v_is_image || vs == is);
  if (!ok)
    throw ShapeError(fmt::format("{}: needs {} [..., C, {}] and indices [..., C, oH, oW] with the same leading axes, got {} and {}",
                                 op, v_is_image ? "x" : "grad_output",
                                 v_is_image ? fmt::format("{}, {}", g.h, g.w) : std::string("oH, oW"), vs.str(), is.str()));
  const auto* d = kernels::in<std::int64_t>(idx);
  for (std::int64_t j = 0; j < idx.numel(); ++j)
    if (d[j] < 0 || d[j] >= g.h * g.w)
      throw ValueError(fmt::format("{}: index {} at position {} is outside a {}x{} plane", op, d[j], j, g.h, g.w));
}

// out[p, k] = x[p, idx[p, k]] for every plane p.
Tensor gather_forward(std::span<const Tensor> x, const Params& p) {
  const Planes& g = p.attrs<Planes>();
  check_pair("max_pool2d", x[0], x[1], g, true);
  const Shape& is = x[1].shape();
  const std::int64_t n = planes(is), k = is[is.size() - 2] * is[is.size() - 1];
  Tensor o = empty(is, x[0].dtype());
  const auto* idx = kernels::in<std::int64_t>(x[1]);
  kernels::dispatch_float(o.dtype(), "max_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* src = kernels::in<T>(x[0]);
    T* dst = kernels::out<T>(o);
    for (std::int64_t b = 0; b < n; ++b)
      for (std::int64_t j = 0; j < k; ++j) dst[b * k + j] = src[b * g.h * g.w + idx[b * k + j]];
    return 0;
  });
  return o;
}

// out[p, idx[p, k]] += ct[p, k]: overlapping windows that share a maximum add up.
Tensor scatter_forward(std::span<const Tensor> x, const Params& p) {
  const Planes& g = p.attrs<Planes>();
  check_pair("max_pool2d_backward", x[0], x[1], g, false);
  const Shape& is = x[1].shape();
  const std::int64_t n = planes(is), k = is[is.size() - 2] * is[is.size() - 1];
  Tensor o = zeros(is.slice(0, is.size() - 2) + Shape{g.h, g.w}, x[0].dtype());
  const auto* idx = kernels::in<std::int64_t>(x[1]);
  kernels::dispatch_float(o.dtype(), "max_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* src = kernels::in<T>(x[0]);
    T* dst = kernels::out<T>(o);
    for (std::int64_t b = 0; b < n; ++b)
      for (std::int64_t j = 0; j < k; ++j) dst[b * g.h * g.w + idx[b * k + j]] += src[b * k + j];
    return 0;
  });
  return o;
}

Tensor gather_w(const Tensor& x, const Tensor& idx, Planes g) { return bind(max_pool2d_p, {x, idx}, Params::with_attrs(g)); }
Tensor scatter_w(const Tensor& ct, const Tensor& idx, Planes g) {
  return bind(max_pool2d_backward_p, {ct, idx}, Params::with_attrs(g));
}

Tensor indices(const Tensor& x, const PoolWindow& g) { return bind(max_pool2d_indices_p, {x}, Params::with_attrs(g)); }

using cases::Domain;
Tensor sample(Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); }

}  // namespace

const Primitive max_pool2d_indices_p{
    .name = "max_pool2d_indices",
    .forward = indices_forward,
    .batching = Batching::Leading,
};

// Materialize: under vmap the image (or cotangent) and the indices may be batched apart (a
// batch of tangents through fixed indices, or a batch of images through one cotangent).
const Primitive max_pool2d_p{
    .name = "max_pool2d",
    .forward = gather_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) { return gather_w(t, c.x[1], c.p.attrs<Planes>()); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return scatter_w(ct, c.x[1], c.p.attrs<Planes>()); },
    .batching = Batching::Materialize,
    .cases = [] {
      auto mp = [](Pair k, Pair st, Pair pad) { return [=](auto x) { return max_pool2d(x[0], k, st, pad); }; };
      return std::vector<OpCase>{
          cases::single("[2,5,5] k2", {sample({2, 5, 5}, 1)}, mp({2, 2}, {0, 0}, {0, 0})),
          cases::single("[1,2,5,4] k3 stride(2,1) pad1", {sample({1, 2, 5, 4}, 2)}, mp({3, 3}, {2, 1}, {1, 1})),
          cases::single("[1,1,4,4] k3 stride1 overlapping", {sample({1, 1, 4, 4}, 3)}, mp({3, 3}, {1, 1}, {0, 0})),
          cases::single("[0,1,4,4] empty batch", {sample({0, 1, 4, 4}, 4)}, mp({2, 2}, {0, 0}, {0, 0})),
          cases::single("[1,1,1,1] k1", {sample({1, 1, 1, 1}, 5)}, mp({1, 1}, {0, 0}, {0, 0})),
          cases::single("[2,3,8,8] k2 medium", {sample({2, 3, 8, 8}, 6)}, mp({2, 2}, {0, 0}, {0, 0})),
          cases::single("[1,2,6,5] k(2,3) stride(2,2) pad(1,1)", {sample({1, 2, 6, 5}, 7)}, mp({2, 3}, {2, 2}, {1, 1})),
      };
    },
    .kinks = "the derivative goes to the first maximal element of each window in row-major order (as PyTorch); a NaN "
             "counts as maximal",
};

const Primitive max_pool2d_backward_p{
    .name = "max_pool2d_backward",
    .forward = scatter_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) { return scatter_w(t, c.x[1], c.p.attrs<Planes>()); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return gather_w(ct, c.x[1], c.p.attrs<Planes>()); },
    .batching = Batching::Materialize,
    .cases = [] {
      // Indices of real poolings (overlapping windows make several cotangents land on one element).
      auto mk = [](std::string label, Shape xs, Pair k, Pair st, Pair pad, std::uint64_t seed) {
        Tensor x = sample(xs, seed);
        const PoolWindow g = pool_window("max_pool2d", x, k, st, pad);
        Tensor idx = indices(x, g);
        const Planes pl{g.h, g.w};
        return cases::single(std::move(label), {sample(idx.shape(), seed + 100), idx},
                             [pl](auto v) { return scatter_w(v[0], v[1], pl); });
      };
      return std::vector<OpCase>{
          mk("[2,2,2] into [2,5,5] k2", {2, 5, 5}, {2, 2}, {0, 0}, {0, 0}, 11),
          mk("[1,1,2,2] into [1,1,4,4] k3 stride1", {1, 1, 4, 4}, {3, 3}, {1, 1}, {0, 0}, 12),
          mk("[1,2,3,4] into [1,2,5,4] k3 stride(2,1) pad1", {1, 2, 5, 4}, {3, 3}, {2, 1}, {1, 1}, 13),
          mk("[0,1,2,2] empty", {0, 1, 4, 4}, {2, 2}, {0, 0}, {0, 0}, 14),
          mk("[1,1,1,1] k1", {1, 1, 1, 1}, {1, 1}, {0, 0}, {0, 0}, 15),
          mk("[2,3,4,4] into [2,3,8,8] k2 medium", {2, 3, 8, 8}, {2, 2}, {0, 0}, {0, 0}, 16),
      };
    },
};

std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, Pair kernel, Pair stride, Pair padding) {
  const PoolWindow g = pool_window("max_pool2d", x, kernel, stride, padding);
  Tensor idx = indices(x, g);
  return {gather_w(x, idx, Planes{g.h, g.w}), idx};
}

Tensor max_pool2d(const Tensor& x, Pair kernel, Pair stride, Pair padding) {
  return max_pool2d_with_indices(x, kernel, stride, padding).first;
}

// im2col gives each window as a column (zeros in the padding), so the mean over a window's
// kH·kW rows counts the padding, as PyTorch's count_include_pad=true.
Tensor avg_pool2d(const Tensor& x, Pair kernel, Pair stride, Pair padding) {
  const PoolWindow g = pool_window("avg_pool2d", x, kernel, stride, padding);
  Conv2dOptions o;
  o.stride = g.stride;
  o.padding = g.padding;
  const Shape& s = x.shape();
  const Shape lead = s.slice(0, s.size() - 2);  // [..., C]
  Tensor cols = im2col(x, kernel[0], kernel[1], o);  // [..., C*kH*kW, oH*oW]
  cols = reshape(cols, lead + Shape{kernel[0] * kernel[1], g.oh() * g.ow()});
  return reshape(mean(cols, {-2}), lead + Shape{g.oh(), g.ow()});
}

namespace {
// A[i, j] = 1/len(window i) for j in window i = [floor(i·n/m), ceil((i+1)·n/m)): PyTorch's
// adaptive windows over an axis of n elements into m outputs.
Tensor adaptive_matrix(std::int64_t n, std::int64_t m, DType dt) {
  std::vector<double> a(static_cast<std::size_t>(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i) {
    const std::int64_t lo = (i * n) / m, hi = ((i + 1) * n + m - 1) / m;
    for (std::int64_t j = lo; j < hi; ++j) a[static_cast<std::size_t>(i * n + j)] = 1.0 / static_cast<double>(hi - lo);
  }
  return cast(from_vector(a, Shape{m, n}), dt);
}
}  // namespace

Tensor adaptive_avg_pool2d(const Tensor& x, Pair output_size) {
  const Shape& s = x.shape();
  if (x.dim() < 3 || output_size[0] <= 0 || output_size[1] <= 0 || s[s.size() - 2] <= 0 || s[s.size() - 1] <= 0)
    throw ShapeError(fmt::format("adaptive_avg_pool2d: needs x [..., C, H, W] with H, W > 0 and a positive output size, got x {}, "
                                 "output size ({}, {})",
                                 s.str(), output_size[0], output_size[1]));
  if (output_size[0] == 1 && output_size[1] == 1) return mean(x, {-2, -1}, true);  // global average pooling
  const std::int64_t h = s[s.size() - 2], w = s[s.size() - 1];
  // Rows averaged by A_h [oH, H], columns by A_w [oW, W]: y = A_h x A_wᵀ, linear in x.
  Tensor y = matmul(adaptive_matrix(h, output_size[0], x.dtype()), x);
  return matmul(y, adaptive_matrix(w, output_size[1], x.dtype()), false, true);
}

// Nearest neighbour by integer factors: each pixel becomes an sH x sW block (a broadcast), so
// the VJP sums each block.
Tensor upsample2d(const Tensor& x, Pair scale_factor) {
  const Shape& s = x.shape();
  if (x.dim() < 3 || scale_factor[0] <= 0 || scale_factor[1] <= 0)
    throw ShapeError(fmt::format("upsample2d: needs x [..., C, H, W] and positive integer scale factors, got x {}, scale ({}, {})",
                                 s.str(), scale_factor[0], scale_factor[1]));
  const Shape lead = s.slice(0, s.size() - 2);
  const std::int64_t h = s[s.size() - 2], w = s[s.size() - 1];
  Tensor b = broadcast_to(reshape(x, lead + Shape{h, 1, w, 1}), lead + Shape{h, scale_factor[0], w, scale_factor[1]});
  return reshape(b, lead + Shape{h * scale_factor[0], w * scale_factor[1]});
}

const Primitive* const kPoolPrimitives[] = {&max_pool2d_indices_p, &max_pool2d_p, &max_pool2d_backward_p};
std::span<const Primitive* const> pool_primitives() { return kPoolPrimitives; }

}  // namespace chainrule
