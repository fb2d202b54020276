// Convolution (issue 16, first slice): conv2d against a direct loop, its errors, and the
// transforms through it (the generated tests check im2col/col2im and conv2d cases themselves).
#include <gtest/gtest.h>

#include <cmath>

#include "chainrule/autodiff/check.h"
#include "chainrule/autodiff/vmap.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"

using namespace chainrule;

namespace {

Tensor rnd(Shape s, std::uint64_t seed, DType dt = DType::f64) {
  Generator g(seed);
  return randn(s, g, dt);
}

// y[n,o,i,j] = b[o] + Σ_c,u,v x[n,c,i*s-p+u*d, j*s-p+v*d] w[o,c,u,v], with zero padding.
std::vector<double> direct(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o) {
  auto xv = cast(x, DType::f64).to_vector<double>(), wv = cast(w, DType::f64).to_vector<double>();
  auto bv = cast(b, DType::f64).to_vector<double>();
  const auto N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  const auto O = w.shape()[0], KH = w.shape()[2], KW = w.shape()[3];
  const auto OH = (H + 2 * o.padding[0] - o.dilation[0] * (KH - 1) - 1) / o.stride[0] + 1;
  const auto OW = (W + 2 * o.padding[1] - o.dilation[1] * (KW - 1) - 1) / o.stride[1] + 1;
  std::vector<double> y;
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t oc = 0; oc < O; ++oc)
      for (std::int64_t i = 0; i < OH; ++i)
        for (std::int64_t j = 0; j < OW; ++j) {
          double acc = bv[static_cast<std::size_t>(oc)];
          for (std::int64_t c = 0; c < C; ++c)
            for (std::int64_t u = 0; u < KH; ++u)
              for (std::int64_t v = 0; v < KW; ++v) {
                const auto iy = i * o.stride[0] - o.padding[0] + u * o.dilation[0];
                const auto ix = j * o.stride[1] - o.padding[1] + v * o.dilation[1];
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += xv[static_cast<std::size_t>(((n * C + c) * H + iy) * W + ix)] *
                       wv[static_cast<std::size_t>(((oc * C + c) * KH + u) * KW + v)];
              }
          y.push_back(acc);
        }
  return y;
}

TEST(Conv2d, MatchesDirectLoopInBothDtypes) {
  Conv2dOptions o;
  o.stride = {2, 1};
  o.padding = {1, 2};
  o.dilation = {1, 2};
  for (DType dt : {DType::f64, DType::f32}) {
    Tensor x = rnd({2, 3, 7, 6}, 1, dt), w = rnd({4, 3, 3, 2}, 2, dt), b = rnd({4}, 3, dt);
    Tensor y = conv2d(x, w, b, o);
    EXPECT_EQ(y.shape(), (Shape{2, 4, 4, 8}));
    auto want = direct(x, w, b, o);
    auto got = cast(y, DType::f64).to_vector<double>();
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], dt == DType::f64 ? 1e-12 : 1e-4) << i;
  }
}

TEST(Conv2d, GradientsMatchFiniteDifferencesToSecondOrder) {
  Conv2dOptions o;
  o.padding = {1, 0};
  o.stride = {1, 2};
  auto f = [o](std::span<const Tensor> x) { return conv2d(x[0], x[1], x[2], o); };
  CheckReport r = check_grads(f, {rnd({2, 2, 4, 5}, 4), rnd({3, 2, 2, 3}, 5), rnd({3}, 6)});
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(Conv2d, VmapOfJacrevOverInputMatchesALoop) {
  Tensor w = rnd({2, 2, 2, 2}, 7);
  auto f = [w](const Tensor& x) { return conv2d(x, w); };
  Tensor xs = rnd({3, 1, 2, 3, 3}, 8);
  Tensor batched = vmap([&](const Tensor& x) { return jacrev(f)(x); })(xs);
  for (std::int64_t b = 0; b < 3; ++b) {
    Tensor one = jacrev(f)(squeeze(slice(xs, 0, b, b + 1), 0));
    EXPECT_LT(max_abs_diff(squeeze(slice(batched, 0, b, b + 1), 0), one), 1e-12);
  }
}

TEST(Conv2d, VmapOverBatchedWeightMatchesALoop) {
  Tensor x = rnd({1, 2, 4, 4}, 9);
  Tensor ws = rnd({3, 2, 2, 3, 3}, 10);
  Conv2dOptions o;
  o.padding = {1, 1};
  Tensor batched = vmap([&](const Tensor& w) { return conv2d(x, w, Tensor{}, o); })(ws);
  for (std::int64_t b = 0; b < 3; ++b)
    EXPECT_LT(max_abs_diff(squeeze(slice(batched, 0, b, b + 1), 0), conv2d(x, squeeze(slice(ws, 0, b, b + 1), 0), Tensor{}, o)),
              1e-12);
}

template <class F>
std::string shape_error(F&& f) {
  try {
    f();
  } catch (const ShapeError& e) {
    return e.what();
  }
  return "<no ShapeError>";
}

TEST(Conv2d, BadShapesAreShapeErrorsNamingOpShapesAndParameters) {
  Tensor x = rnd({1, 3, 4, 4}, 11);
  std::string e = shape_error([&] { conv2d(x, rnd({2, 2, 3, 3}, 12)); });
  EXPECT_NE(e.find("conv2d"), std::string::npos) << e;
  EXPECT_NE(e.find("[1, 3, 4, 4]"), std::string::npos) << e;
  EXPECT_NE(e.find("[2, 2, 3, 3]"), std::string::npos) << e;
  e = shape_error([&] { conv2d(x, rnd({2, 3, 3, 3}, 12), rnd({3}, 13)); });
  EXPECT_NE(e.find("bias [3]"), std::string::npos) << e;
  Conv2dOptions o;
  o.padding = {1, 1};
  e = shape_error([&] { conv2d(x, rnd({2, 3, 7, 3}, 14), Tensor{}, o); });
  EXPECT_NE(e.find("conv2d: kernel larger than the padded input"), std::string::npos) << e;
  EXPECT_NE(e.find("kernel 7x3"), std::string::npos) << e;
  EXPECT_NE(e.find("padding (1, 1)"), std::string::npos) << e;
  o.stride = {0, 1};
  e = shape_error([&] { conv2d(x, rnd({2, 3, 3, 3}, 15), Tensor{}, o); });
  EXPECT_NE(e.find("stride"), std::string::npos) << e;
  e = shape_error([&] { im2col(rnd({4, 4}, 16), 2, 2); });
  EXPECT_NE(e.find("im2col"), std::string::npos) << e;
}

}  // namespace

#include "chainrule/nn/layers.h"

namespace {

TEST(Conv2dLayer, ShapesNamesInitAndATinyNetsGradient) {
  nn::Conv2dLayerOptions o;
  o.padding = {1, 1};
  o.stride = {2, 2};
  o.dtype = DType::f64;
  o.seed = 3;
  auto conv = std::make_shared<nn::Conv2d>(2, 3, std::array<std::int64_t, 2>{3, 3}, o);
  EXPECT_EQ(conv->weight.shape(), (Shape{3, 2, 3, 3}));
  EXPECT_EQ(conv->bias.shape(), (Shape{3}));
  std::vector<std::string> names;
  for (auto& [n, t] : conv->named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias"}));
  const double bound = 1.0 / std::sqrt(18.0);
  for (double v : conv->weight.to_vector<double>()) EXPECT_LE(std::abs(v), bound);
  for (double v : conv->bias.to_vector<double>()) EXPECT_LE(std::abs(v), bound);
  Tensor x = rnd({2, 2, 5, 5}, 20);
  EXPECT_EQ(conv->forward(x).shape(), (Shape{2, 3, 3, 3}));
  EXPECT_EQ(conv->forward(rnd({2, 5, 5}, 21)).shape(), (Shape{3, 3, 3}));
  nn::Flatten flat;
  EXPECT_EQ(flat.forward(conv->forward(x)).shape(), (Shape{2, 27}));
  // A tiny conv net: conv -> relu -> flatten -> sum of squares, its gradient in the weights
  // against finite differences in float64.
  auto f = [&](std::span<const Tensor> p) {
    Conv2dOptions co;
    co.padding = {1, 1};
    co.stride = {2, 2};
    Tensor h = relu(conv2d(cast(x, p[0].dtype()), p[0], p[1], co));  // the float32 check casts the inputs
    Tensor y = flat.forward(h);
    return sum(mul(y, y));
  };
  CheckReport r = check_grads(f, {conv->weight.detach(), conv->bias.detach()});
  EXPECT_TRUE(r.pass) << r.failure;
}

}  // namespace

// float32 runs on oneDNN (forward, backward-data, backward-weights), float64 on im2col + GEMM:
// the two paths agree on the value and on both gradients, over geometries that exercise each
// of oneDNN's parameters (groups, stride, dilation, asymmetric "same" padding, a 1-channel image).
TEST(Conv2d, OneDnnFloat32MatchesFloat64ReferenceInValueAndGradients) {
  struct Geometry {
    Shape x, w;
    Conv2dOptions o;
  };
  Conv2dOptions strided, grouped, same, dilated;
  strided.stride = {2, 2};
  strided.padding = {1, 1};
  grouped.groups = 4;
  grouped.padding = {1, 0};
  same.same_padding = true;  // an even kernel: the extra row/column goes bottom/right
  dilated.dilation = {2, 3};
  dilated.padding = {2, 1};
  const std::vector<Geometry> geometries = {
      {{4, 16, 12, 12}, {16, 16, 3, 3}, strided}, {{2, 8, 9, 7}, {12, 2, 3, 2}, grouped},
      {{3, 5, 8, 8}, {6, 5, 2, 4}, same},          {{2, 1, 11, 10}, {8, 1, 3, 3}, dilated},
  };
  std::uint64_t seed = 100;
  for (const Geometry& g : geometries) {
    const Tensor x = rnd(g.x, seed++), w = rnd(g.w, seed++);
    const Tensor y64 = conv2d(x, w, Tensor{}, g.o);
    const Tensor ct = rnd(y64.shape(), seed++);
    auto grads = [&](DType dt) {
      auto [y, pull] = vjp([&](const std::vector<Tensor>& a) { return conv2d(a[0], a[1], Tensor{}, g.o); },
                           std::vector<Tensor>{cast(x, dt), cast(w, dt)});
      const std::vector<Tensor> gs = pull(cast(ct, dt));
      return std::vector<Tensor>{y, gs[0], gs[1]};
    };
    const auto want = grads(DType::f64), got = grads(DType::f32);
    for (int i = 0; i < 3; ++i) {
      const double scale = max_abs_diff(want[static_cast<std::size_t>(i)], zeros_like(want[static_cast<std::size_t>(i)]));
      EXPECT_LT(max_abs_diff(cast(got[static_cast<std::size_t>(i)], DType::f64), want[static_cast<std::size_t>(i)]), 1e-5 * scale)
          << "output " << i << " of x " << g.x.str() << " w " << g.w.str();
    }
  }
}

// Per-example gradients of a conv layer: vmap(grad) folds the examples into the groups of one
// weight-gradient call; it equals a loop of grad, in float32 (oneDNN) and float64.
TEST(Conv2d, PerExampleWeightGradientsEqualALoopOfGrad) {
  for (DType dt : {DType::f64, DType::f32}) {
    const Tensor w = cast(rnd({6, 3, 3, 3}, 40), dt), xs = cast(rnd({5, 3, 8, 8}, 41), dt);
    Conv2dOptions o;
    o.padding = {1, 1};
    auto loss = [o](const Tensor& ww, const Tensor& x) { return sum(square(tanh(conv2d(x, ww, Tensor{}, o)))); };
    const Tensor per_example = vmap(grad(loss), {not_mapped, 0})(w, xs);
    ASSERT_EQ(per_example.shape(), (Shape{5, 6, 3, 3, 3}));
    for (std::int64_t b = 0; b < 5; ++b) {
      const Tensor one = grad(loss)(w, squeeze(slice(xs, 0, b, b + 1), 0));
      EXPECT_LT(max_abs_diff(cast(squeeze(slice(per_example, 0, b, b + 1), 0), DType::f64), cast(one, DType::f64)),
                dt == DType::f64 ? 1e-12 : 1e-4)
          << b;
    }
  }
}

// The same on channels-last images, where the batch rules run on the folded layout (examples'
// images as blocks of channels, no copies): 1, 16 and 32 channels per example (oneDNN's gemm
// path, nChw16c as it stands, a reorder from blocks of 32), groups, a stride; and vmap over
// images and weights together (the folded forward and input-gradient convolutions).
TEST(ConvChannelsLast, FoldedPerExampleGradientsEqualALoopOfGrad) {
  struct Case {
    std::int64_t c, o, groups, stride;
  };
  for (DType dt : {DType::f64, DType::f32}) {
    for (Case k : {Case{1, 16, 1, 1}, Case{16, 16, 1, 1}, Case{32, 16, 2, 2}, Case{3, 5, 1, 1}}) {
      const Tensor w = cast(rnd({k.o, k.c / k.groups, 3, 3}, 50 + k.c), dt), xs = cast(rnd({4, 9, 9, k.c}, 51 + k.c), dt);
      Conv2dOptions o;
      o.padding = {1, 1}, o.stride = {k.stride, k.stride}, o.groups = k.groups, o.channels_last = true;
      auto loss = [o](const Tensor& ww, const Tensor& x) { return sum(square(tanh(conv2d(x, ww, Tensor{}, o)))); };
      const Tensor per_example = vmap(grad(loss), {not_mapped, 0})(w, xs);
      ASSERT_EQ(per_example.shape(), (Shape{4} + w.shape()));
      const double tol = dt == DType::f64 ? 1e-12 : 1e-3;
      for (std::int64_t b = 0; b < 4; ++b) {
        const Tensor one = grad(loss)(w, squeeze(slice(xs, 0, b, b + 1), 0));
        EXPECT_LT(max_abs_diff(cast(squeeze(slice(per_example, 0, b, b + 1), 0), DType::f64), cast(one, DType::f64)), tol)
            << "c " << k.c << " example " << b;
      }
      // Each example's images under its own weights, and the gradient of that with respect to the images.
      const Tensor ws = cast(rnd({4, k.o, k.c / k.groups, 3, 3}, 52 + k.c), dt);
      auto conv = [o](const Tensor& x, const Tensor& ww) { return conv2d(x, ww, Tensor{}, o); };
      auto image_loss = [o](const Tensor& x, const Tensor& ww) { return sum(square(tanh(conv2d(x, ww, Tensor{}, o)))); };
      const Tensor ys = vmap(conv, {0, 0})(xs, ws), dxs = vmap(grad(image_loss), {0, 0})(xs, ws);
      for (std::int64_t b = 0; b < 4; ++b) {
        const Tensor xb = squeeze(slice(xs, 0, b, b + 1), 0), wb = squeeze(slice(ws, 0, b, b + 1), 0);
        EXPECT_LT(max_abs_diff(cast(squeeze(slice(ys, 0, b, b + 1), 0), DType::f64), cast(conv(xb, wb), DType::f64)), tol) << k.c;
        EXPECT_LT(max_abs_diff(cast(squeeze(slice(dxs, 0, b, b + 1), 0), DType::f64), cast(grad(image_loss)(xb, wb), DType::f64)), tol)
            << k.c;
      }
    }
  }
}

namespace {
// Channels-last (Conv2dOptions::channels_last) in float32 runs oneDNN on NHWC buffers directly; it
// must agree with the NCHW convolution of the permuted tensors, forward and both gradients, and
// under vmap (per-example weights fold into the groups, per-example images into the batch).
TEST(ConvChannelsLast, Float32AgreesWithNchwForwardGradientsAndVmap) {
  Generator g(21);
  for (std::int64_t groups : {1, 2}) {
    SCOPED_TRACE(groups);
    Conv2dOptions nchw;
    nchw.stride = {2, 1}, nchw.padding = {1, 1}, nchw.groups = groups;
    Conv2dOptions nhwc = nchw;
    nhwc.channels_last = true;
    const Tensor x = randn({5, 8, 9, 7}, g).requires_grad_(), w = randn({12, 8 / groups, 3, 3}, g).requires_grad_();
    const Tensor b = randn({12}, g).requires_grad_();
    const Tensor xl = permute(x.detach(), {0, 2, 3, 1}).requires_grad_(), wl = w.detach().requires_grad_(), bl = b.detach().requires_grad_();
    const Tensor y = conv2d(x, w, b, nchw), yl = conv2d(xl, wl, bl, nhwc);
    ASSERT_EQ(yl.shape(), Shape({5, 5, 7, 12}));
    EXPECT_LT(max_abs_diff(permute(yl, {0, 3, 1, 2}), y), 1e-4);
    const Tensor r = randn(y.shape(), g);
    sum(mul(y, r)).backward();
    sum(mul(yl, permute(r, {0, 2, 3, 1}))).backward();
    EXPECT_LT(max_abs_diff(permute(xl.grad(), {0, 3, 1, 2}), x.grad()), 1e-4);
    EXPECT_LT(max_abs_diff(wl.grad(), w.grad()), 1e-3);
    EXPECT_LT(max_abs_diff(bl.grad(), b.grad()), 1e-3);
    // vmap over per-example weights and images: each slice is its own channels-last conv.
    const Tensor ws = randn({3, 12, 8 / groups, 3, 3}, g), xs = randn({3, 2, 9, 7, 8}, g);
    const Tensor batched = vmap([&](const Tensor& xi, const Tensor& wi) { return conv2d(xi, wi, Tensor{}, nhwc); }, {0, 0})(xs, ws);
    for (std::int64_t k = 0; k < 3; ++k) {
      const Tensor one = conv2d(squeeze(slice(xs, 0, k, k + 1), 0), squeeze(slice(ws, 0, k, k + 1), 0), Tensor{}, nhwc);
      EXPECT_LT(max_abs_diff(squeeze(slice(batched, 0, k, k + 1), 0), one), 1e-4) << k;
    }
  }
}

// BatchNorm2d channels-last: the statistics over N, H and W of [N, H, W, C], the same output,
// gradients and running statistics as on [N, C, H, W] (float32: its one-pass shifted statistics).
TEST(ConvChannelsLast, BatchNorm2dAgreesWithNchw) {
  Generator g(22);
  nn::BatchNorm2d a(6), b(6);
  b.channels_last = true;
  a.weight = randn({6}, g).requires_grad_();
  a.bias = randn({6}, g).requires_grad_();
  b.weight = a.weight.detach().requires_grad_();
  b.bias = a.bias.detach().requires_grad_();
  const Tensor x = add(mul(randn({4, 6, 5, 3}, g), scalar_tensor(3.0)), scalar_tensor(50.0)).detach().requires_grad_();
  const Tensor xl = permute(x.detach(), {0, 2, 3, 1}).requires_grad_();
  const Tensor y = a.forward(x), yl = b.forward(xl);
  EXPECT_LT(max_abs_diff(permute(yl, {0, 3, 1, 2}), y), 1e-4);
  const Tensor r = randn(y.shape(), g);
  sum(mul(y, r)).backward();
  sum(mul(yl, permute(r, {0, 2, 3, 1}))).backward();
  EXPECT_LT(max_abs_diff(permute(xl.grad(), {0, 3, 1, 2}), x.grad()), 1e-4);
  EXPECT_LT(max_abs_diff(b.weight.grad(), a.weight.grad()), 1e-3);
  EXPECT_LT(max_abs_diff(b.bias.grad(), a.bias.grad()), 1e-3);
  EXPECT_LT(max_abs_diff(b.running_mean, a.running_mean), 1e-4);
  EXPECT_LT(max_abs_diff(b.running_var, a.running_var), 1e-4);
  a.eval(), b.eval();
  EXPECT_LT(max_abs_diff(permute(b.forward(xl), {0, 3, 1, 2}), a.forward(x)), 1e-4);
  EXPECT_THROW(b.forward(x), ShapeError);  // [N, C, H, W] given to a channels-last layer: C = 6 is not the last axis
}
}  // namespace

// permute merges the axes it keeps together and runs a batch of matrix transposes on the tiled
// (float32: AVX2 8x8) kernel where it can (NHWC <-> NCHW); every path against an index gather.
TEST(Permute, MergedAxesAndTransposeKernelsMatchAnIndexGather) {
  const std::vector<std::pair<Shape, Axes>> cases = {
      {{64, 1, 28, 28, 16}, {0, 1, 4, 2, 3}}, {{3, 37, 21}, {0, 2, 1}}, {{2, 9, 1, 13, 8}, {0, 3, 4, 1, 2}},
      {{5, 7, 11}, {2, 0, 1}},                {{4, 1, 6}, {1, 0, 2}},  {{2, 3, 4, 5}, {3, 1, 0, 2}},
      {{16, 8}, {1, 0}},                      {{1, 1, 1}, {2, 0, 1}},  {{7, 8, 9, 10}, {0, 1, 3, 2}},
  };
  for (DType dt : {DType::f32, DType::f64, DType::i64}) {
    for (const auto& [shape, perm] : cases) {
      const Tensor x = arange(shape.numel(), DType::f64).reshape(shape).to(dt);
      const Tensor y = permute(x, perm);
      const std::vector<double> in = x.to(DType::f64).to_vector<double>(), out = y.to(DType::f64).to_vector<double>();
      Shape os;
      for (auto a : perm) os.push_back(shape[static_cast<std::size_t>(a)]);
      ASSERT_EQ(y.shape(), os);
      Shape is = Shape::filled(shape.size(), 1);  // the input's contiguous strides
      for (std::size_t d = shape.size(); d-- > 1;) is[d - 1] = is[d] * shape[d];
      Shape idx = Shape::filled(os.size(), 0);
      for (std::int64_t k = 0; k < os.numel(); ++k) {
        std::int64_t src = 0;
        for (std::size_t d = 0; d < os.size(); ++d) src += idx[d] * is[static_cast<std::size_t>(perm[d])];
        ASSERT_EQ(out[static_cast<std::size_t>(k)], in[static_cast<std::size_t>(src)]) << shape.str() << " at " << k;
        for (std::size_t d = os.size(); d-- > 0;)
          if (++idx[d] < os[d]) break;
          else idx[d] = 0;
      }
    }
  }
}
