// Pooling, upsampling, grouped / "same" convolution and transposed convolution (issue 16): values
// against reference loops written here (PyTorch's definitions), the tie rule of max pooling,
// derivative checks of the composites, errors, and the layers. The primitives' own derivative
// checks come from their cases (tests/test_core_primitives.cpp, `chainrule check`).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "chainrule/autodiff/check.h"
#include "chainrule/chainrule.h"
#include "chainrule/nn/layers.h"

using namespace chainrule;

namespace {

using Pair = std::array<std::int64_t, 2>;

Tensor rnd(Shape s, std::uint64_t seed, DType dt = DType::f64) {
  Generator g(seed);
  return randn(s, g, dt);
}

std::vector<double> vals(const Tensor& t) { return cast(t, DType::f64).to_vector<double>(); }

void expect_close(const Tensor& got, const std::vector<double>& want, double tol = 1e-12) {
  auto g = vals(got);
  ASSERT_EQ(g.size(), want.size());
  for (std::size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], want[i], tol) << "element " << i;
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

// Plain [P, H, W] views of x for the reference loops: P = all leading axes together.
struct Img {
  std::vector<double> v;
  std::int64_t p, h, w;
  double at(std::int64_t q, std::int64_t y, std::int64_t x) const { return v[static_cast<std::size_t>((q * h + y) * w + x)]; }
};
Img img(const Tensor& t) {
  const Shape& s = t.shape();
  const std::int64_t h = s[s.size() - 2], w = s[s.size() - 1];
  return {vals(t), t.numel() / (h * w), h, w};
}

// PyTorch's max_pool2d: window rows y*s-p .. y*s-p+k-1 clipped to the image, -inf padding,
// the first maximum in row-major order.
std::pair<std::vector<double>, std::vector<std::int64_t>> ref_max_pool(const Img& x, Pair k, Pair s, Pair p) {
  const std::int64_t oh = (x.h + 2 * p[0] - k[0]) / s[0] + 1, ow = (x.w + 2 * p[1] - k[1]) / s[1] + 1;
  std::vector<double> out;
  std::vector<std::int64_t> idx;
  for (std::int64_t q = 0; q < x.p; ++q)
    for (std::int64_t i = 0; i < oh; ++i)
      for (std::int64_t j = 0; j < ow; ++j) {
        double best = -std::numeric_limits<double>::infinity();
        std::int64_t bi = -1;
        for (std::int64_t u = 0; u < k[0]; ++u)
          for (std::int64_t v = 0; v < k[1]; ++v) {
            const std::int64_t y = i * s[0] - p[0] + u, xx = j * s[1] - p[1] + v;
            if (y < 0 || y >= x.h || xx < 0 || xx >= x.w) continue;
            if (bi < 0 || x.at(q, y, xx) > best) best = x.at(q, y, xx), bi = y * x.w + xx;
          }
        out.push_back(best);
        idx.push_back(bi);
      }
  return {out, idx};
}

// avg_pool2d with count_include_pad: the sum over the window's image elements over kH·kW.
std::vector<double> ref_avg_pool(const Img& x, Pair k, Pair s, Pair p) {
  const std::int64_t oh = (x.h + 2 * p[0] - k[0]) / s[0] + 1, ow = (x.w + 2 * p[1] - k[1]) / s[1] + 1;
  std::vector<double> out;
  for (std::int64_t q = 0; q < x.p; ++q)
    for (std::int64_t i = 0; i < oh; ++i)
      for (std::int64_t j = 0; j < ow; ++j) {
        double acc = 0;
        for (std::int64_t u = 0; u < k[0]; ++u)
          for (std::int64_t v = 0; v < k[1]; ++v) {
            const std::int64_t y = i * s[0] - p[0] + u, xx = j * s[1] - p[1] + v;
            if (y >= 0 && y < x.h && xx >= 0 && xx < x.w) acc += x.at(q, y, xx);
          }
        out.push_back(acc / static_cast<double>(k[0] * k[1]));
      }
  return out;
}

std::vector<double> ref_adaptive(const Img& x, Pair o) {
  std::vector<double> out;
  for (std::int64_t q = 0; q < x.p; ++q)
    for (std::int64_t i = 0; i < o[0]; ++i)
      for (std::int64_t j = 0; j < o[1]; ++j) {
        const auto y0 = static_cast<std::int64_t>(std::floor(static_cast<double>(i * x.h) / static_cast<double>(o[0])));
        const auto y1 = static_cast<std::int64_t>(std::ceil(static_cast<double>((i + 1) * x.h) / static_cast<double>(o[0])));
        const auto x0 = static_cast<std::int64_t>(std::floor(static_cast<double>(j * x.w) / static_cast<double>(o[1])));
        const auto x1 = static_cast<std::int64_t>(std::ceil(static_cast<double>((j + 1) * x.w) / static_cast<double>(o[1])));
        double acc = 0;
        for (std::int64_t y = y0; y < y1; ++y)
          for (std::int64_t xx = x0; xx < x1; ++xx) acc += x.at(q, y, xx);
        out.push_back(acc / static_cast<double>((y1 - y0) * (x1 - x0)));
      }
  return out;
}

TEST(MaxPool2d, MatchesAReferenceLoopWithIndices) {
  struct Geo {
    Shape s;
    Pair k, st, p;
  };
  for (const Geo& g : {Geo{{2, 3, 6, 6}, {2, 2}, {0, 0}, {0, 0}}, Geo{{1, 2, 5, 7}, {3, 3}, {2, 1}, {1, 1}},
                       Geo{{3, 4, 4}, {3, 2}, {1, 1}, {0, 1}}, Geo{{1, 1, 2, 3, 5}, {2, 3}, {1, 2}, {1, 0}}}) {
    Tensor x = rnd(g.s, 1);
    auto [y, idx] = max_pool2d_with_indices(x, g.k, g.st, g.p);
    const Pair st = {g.st[0] == 0 ? g.k[0] : g.st[0], g.st[1] == 0 ? g.k[1] : g.st[1]};
    auto [want, want_idx] = ref_max_pool(img(x), g.k, st, g.p);
    expect_close(y, want, 0);
    EXPECT_EQ(idx.dtype(), DType::i64);
    EXPECT_EQ(idx.to_vector<std::int64_t>(), want_idx);
    EXPECT_EQ(idx.shape(), y.shape());
    expect_close(cast(max_pool2d(cast(x, DType::f32), g.k, g.st, g.p), DType::f64), want, 1e-6);
  }
}

TEST(MaxPool2d, TiesSendTheGradientToTheFirstMaximumInBothModes) {
  // A constant image: every element of a window ties; PyTorch picks the first (top-left).
  Tensor x = full({1, 1, 4, 4}, 2.0, DType::f64);
  auto f = [](const Tensor& v) { return sum(max_pool2d(v, {2, 2})); };
  std::vector<double> want(16, 0.0);
  for (int i : {0, 2, 8, 10}) want[static_cast<std::size_t>(i)] = 1.0;
  expect_close(grad(f)(x), want, 0);
  // Forward mode agrees: the tangent e_i moves the output only where i is a window's first element.
  for (std::int64_t i = 0; i < 16; ++i) {
    std::vector<double> e(16, 0.0);
    e[static_cast<std::size_t>(i)] = 1.0;
    EXPECT_EQ(jvp(f, x, from_vector(e, Shape{1, 1, 4, 4})).second.item(), want[static_cast<std::size_t>(i)]) << i;
  }
  // Overlapping windows sharing one maximum add their cotangents there.
  Tensor peak = from_vector(std::vector<double>{0, 0, 0, 0, 5, 0, 0, 0, 0}, Shape{1, 1, 3, 3});
  expect_close(grad([](const Tensor& v) { return sum(max_pool2d(v, {2, 2}, {1, 1})); })(peak), {0, 0, 0, 0, 4, 0, 0, 0, 0}, 0);
}

TEST(MaxPool2d, NaNIsMaximalAndMinusInfinityWindowsPickTheirFirstElement) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  Tensor x = from_vector(std::vector<double>{1, nan, 3, 2, -inf, -inf, -inf, -inf}, Shape{2, 1, 4});  // two 1x4 planes
  auto [y, idx] = max_pool2d_with_indices(x, {1, 2});
  auto v = vals(y);
  EXPECT_TRUE(std::isnan(v[0]));  // as PyTorch, a NaN propagates
  EXPECT_EQ(v[1], 3);
  EXPECT_EQ(v[2], -inf);
  EXPECT_EQ(idx.to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 2, 0, 2}));
}

TEST(MaxPool2d, DerivativesToSecondOrderAndUnderVmap) {
  auto f = [](std::span<const Tensor> x) { return max_pool2d(x[0], {3, 2}, {2, 1}, {1, 1}); };
  CheckReport r = check_grads(f, {rnd({2, 2, 5, 4}, 2)});
  EXPECT_TRUE(r.pass) << r.failure;
  // Per-example gradients of a pooled loss: vmap(grad) against a loop.
  Tensor xs = rnd({3, 2, 4, 4}, 3), w = rnd({2, 2, 2}, 4);
  auto loss = [w](const Tensor& x) { return sum(mul(max_pool2d(x, {2, 2}), w)); };
  Tensor batched = vmap([&](const Tensor& x) { return grad(loss)(x); })(xs);
  for (std::int64_t b = 0; b < 3; ++b)
    EXPECT_LT(max_abs_diff(squeeze(slice(batched, 0, b, b + 1), 0), grad(loss)(squeeze(slice(xs, 0, b, b + 1), 0))), 1e-15);
}

TEST(AvgPool2d, MatchesAReferenceLoopCountingPadding) {
  struct Geo {
    Shape s;
    Pair k, st, p;
  };
  for (const Geo& g : {Geo{{2, 3, 6, 6}, {2, 2}, {0, 0}, {0, 0}}, Geo{{1, 2, 5, 7}, {3, 3}, {2, 1}, {1, 1}},
                       Geo{{3, 4, 4}, {3, 2}, {1, 1}, {1, 1}}}) {
    Tensor x = rnd(g.s, 5);
    const Pair st = {g.st[0] == 0 ? g.k[0] : g.st[0], g.st[1] == 0 ? g.k[1] : g.st[1]};
    expect_close(avg_pool2d(x, g.k, g.st, g.p), ref_avg_pool(img(x), g.k, st, g.p));
  }
  auto f = [](std::span<const Tensor> x) { return avg_pool2d(x[0], {3, 3}, {2, 2}, {1, 1}); };
  CheckReport r = check_grads(f, {rnd({2, 2, 5, 5}, 6)});
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(AdaptiveAvgPool2d, MatchesPyTorchsWindowsAndTheGlobalMean) {
  for (auto [s, o] : std::vector<std::pair<Shape, Pair>>{{{2, 3, 5, 7}, {3, 4}},
                                                           {{1, 2, 6, 6}, {3, 2}},
                                                           {{2, 2, 3}, {4, 5}},  // more outputs than inputs: windows repeat
                                                           {{1, 1, 7, 5}, {7, 1}}}) {
    Tensor x = rnd(s, 7);
    Tensor y = adaptive_avg_pool2d(x, o);
    Shape want_shape = s;
    want_shape[s.size() - 2] = o[0];
    want_shape[s.size() - 1] = o[1];
    EXPECT_EQ(y.shape(), want_shape);
    expect_close(y, ref_adaptive(img(x), o));
  }
  Tensor x = rnd({2, 3, 4, 5}, 8);
  Tensor g = adaptive_avg_pool2d(x, {1, 1});
  EXPECT_EQ(g.shape(), (Shape{2, 3, 1, 1}));
  expect_close(g, ref_adaptive(img(x), {1, 1}));
  for (Pair o : {Pair{3, 2}, Pair{1, 1}}) {
    auto f = [o](std::span<const Tensor> v) { return adaptive_avg_pool2d(v[0], o); };
    CheckReport r = check_grads(f, {rnd({2, 2, 5, 4}, 9)});
    EXPECT_TRUE(r.pass) << r.failure;
  }
}

TEST(Upsample2d, RepeatsPixelsAndItsGradientSumsEachBlock) {
  Tensor x = rnd({2, 3, 2, 3}, 10);
  Tensor y = upsample2d(x, {2, 3});
  EXPECT_EQ(y.shape(), (Shape{2, 3, 4, 9}));
  const Img xi = img(x);
  std::vector<double> want;
  for (std::int64_t q = 0; q < xi.p; ++q)
    for (std::int64_t i = 0; i < 4; ++i)
      for (std::int64_t j = 0; j < 9; ++j) want.push_back(xi.at(q, i / 2, j / 3));  // PyTorch: src = floor(dst / scale)
  expect_close(y, want, 0);
  Tensor w = rnd({2, 3, 4, 9}, 11);
  Tensor gx = grad([w](const Tensor& v) { return sum(mul(upsample2d(v, {2, 3}), w)); })(x);
  const Img wi = img(w);
  std::vector<double> blocks;
  for (std::int64_t q = 0; q < wi.p; ++q)
    for (std::int64_t i = 0; i < 2; ++i)
      for (std::int64_t j = 0; j < 3; ++j) {
        double acc = 0;
        for (std::int64_t u = 0; u < 2; ++u)
          for (std::int64_t v = 0; v < 3; ++v) acc += wi.at(q, i * 2 + u, j * 3 + v);
        blocks.push_back(acc);
      }
  expect_close(gx, blocks);
  CheckReport r = check_grads([](std::span<const Tensor> v) { return upsample2d(v[0], {2, 1}); }, {rnd({1, 2, 3, 2}, 12)});
  EXPECT_TRUE(r.pass) << r.failure;
}

// y[n, o, i, j] = b[o] + Σ x[n, c, i·s - p_top + u·d, j·s - p_left + v·d] w[o, c - g·C/G, u, v],
// c over the input channels of o's group g, zero outside the image.
std::vector<double> ref_conv(const Tensor& x, const Tensor& w, const Tensor& b, Pair s, Pair p_top, Pair p_total, Pair d,
                             std::int64_t groups) {
  auto xv = vals(x), wv = vals(w);
  std::vector<double> bv = b.defined() ? vals(b) : std::vector<double>(static_cast<std::size_t>(w.shape()[0]), 0.0);
  const auto N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  const auto O = w.shape()[0], CG = w.shape()[1], KH = w.shape()[2], KW = w.shape()[3];
  const auto OH = (H + p_total[0] - d[0] * (KH - 1) - 1) / s[0] + 1, OW = (W + p_total[1] - d[1] * (KW - 1) - 1) / s[1] + 1;
  std::vector<double> y;
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t oc = 0; oc < O; ++oc)
      for (std::int64_t i = 0; i < OH; ++i)
        for (std::int64_t j = 0; j < OW; ++j) {
          double acc = bv[static_cast<std::size_t>(oc)];
          const std::int64_t grp = oc / (O / groups);
          for (std::int64_t cl = 0; cl < CG; ++cl)
            for (std::int64_t u = 0; u < KH; ++u)
              for (std::int64_t v = 0; v < KW; ++v) {
                const auto iy = i * s[0] - p_top[0] + u * d[0], ix = j * s[1] - p_top[1] + v * d[1];
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                const std::int64_t c = grp * CG + cl;
                acc += xv[static_cast<std::size_t>(((n * C + c) * H + iy) * W + ix)] *
                       wv[static_cast<std::size_t>(((oc * CG + cl) * KH + u) * KW + v)];
              }
          y.push_back(acc);
        }
  (void)C;
  return y;
}

TEST(Conv2dGroups, MatchesAReferenceLoop) {
  for (std::int64_t groups : {1, 2, 4}) {
    Conv2dOptions o;
    o.groups = groups;
    o.stride = {2, 1};
    o.padding = {1, 0};
    o.dilation = {1, 2};
    Tensor x = rnd({2, 4, 6, 7}, 20), w = rnd({8, 4 / groups, 3, 2}, 21), b = rnd({8}, 22);
    expect_close(conv2d(x, w, b, o), ref_conv(x, w, b, o.stride, o.padding, {2, 0}, o.dilation, groups));
  }
  // Depthwise (groups = channels), float32 too.
  Conv2dOptions o;
  o.groups = 3;
  Tensor x = rnd({1, 3, 5, 5}, 23), w = rnd({6, 1, 3, 3}, 24);
  auto want = ref_conv(x, w, Tensor{}, {1, 1}, {0, 0}, {0, 0}, {1, 1}, 3);
  expect_close(conv2d(x, w, Tensor{}, o), want);
  expect_close(conv2d(cast(x, DType::f32), cast(w, DType::f32), Tensor{}, o), want, 1e-4);
}

TEST(Conv2dSame, KeepsTheSizeAndPadsOddTotalsAtTheBottomRight) {
  for (auto [k, d] : std::vector<std::pair<Pair, Pair>>{{{3, 3}, {1, 1}}, {{2, 4}, {1, 1}}, {{2, 3}, {3, 2}}, {{1, 1}, {1, 1}}}) {
    Conv2dOptions o;
    o.same_padding = true;
    o.dilation = d;
    Tensor x = rnd({2, 2, 5, 6}, 25), w = rnd({3, 2, k[0], k[1]}, 26), b = rnd({3}, 27);
    Tensor y = conv2d(x, w, b, o);
    EXPECT_EQ(y.shape(), (Shape{2, 3, 5, 6}));
    const Pair total = {d[0] * (k[0] - 1), d[1] * (k[1] - 1)};
    expect_close(y, ref_conv(x, w, b, {1, 1}, {total[0] / 2, total[1] / 2}, total, d, 1));
  }
  Conv2dOptions o;
  o.same_padding = true;
  o.groups = 2;
  auto f = [o](std::span<const Tensor> v) { return conv2d(v[0], v[1], v[2], o); };
  CheckReport r = check_grads(f, {rnd({1, 2, 4, 4}, 28), rnd({4, 1, 2, 3}, 29), rnd({4}, 30)});
  EXPECT_TRUE(r.pass) << r.failure;
}

// PyTorch's definition: every input pixel scatters its weighted kernel into the output,
// y[n, g·Co/G + oc, i·s - p + u·d, j·s - p + v·d] += x[n, ic, i, j] w[ic, oc, u, v].
std::vector<double> ref_conv_t(const Tensor& x, const Tensor& w, const Tensor& b, const ConvTranspose2dOptions& o) {
  auto xv = vals(x), wv = vals(w);
  const auto N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  const auto CO = w.shape()[1], KH = w.shape()[2], KW = w.shape()[3], G = o.groups;
  const auto OH = (H - 1) * o.stride[0] - 2 * o.padding[0] + o.dilation[0] * (KH - 1) + o.output_padding[0] + 1;
  const auto OW = (W - 1) * o.stride[1] - 2 * o.padding[1] + o.dilation[1] * (KW - 1) + o.output_padding[1] + 1;
  const auto O = CO * G;
  std::vector<double> y(static_cast<std::size_t>(N * O * OH * OW), 0.0);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t ic = 0; ic < C; ++ic)
      for (std::int64_t i = 0; i < H; ++i)
        for (std::int64_t j = 0; j < W; ++j)
          for (std::int64_t oc = 0; oc < CO; ++oc)
            for (std::int64_t u = 0; u < KH; ++u)
              for (std::int64_t v = 0; v < KW; ++v) {
                const auto yy = i * o.stride[0] - o.padding[0] + u * o.dilation[0];
                const auto xx = j * o.stride[1] - o.padding[1] + v * o.dilation[1];
                if (yy < 0 || yy >= OH || xx < 0 || xx >= OW) continue;
                const std::int64_t c = ic / (C / G) * CO + oc;
                y[static_cast<std::size_t>(((n * O + c) * OH + yy) * OW + xx)] +=
                    xv[static_cast<std::size_t>(((n * C + ic) * H + i) * W + j)] *
                    wv[static_cast<std::size_t>(((ic * CO + oc) * KH + u) * KW + v)];
              }
  if (b.defined()) {
    auto bv = vals(b);
    for (std::size_t k = 0; k < y.size(); ++k) y[k] += bv[(k / static_cast<std::size_t>(OH * OW)) % static_cast<std::size_t>(O)];
  }
  return y;
}

TEST(ConvTranspose2d, MatchesAReferenceLoopAndIsTheAdjointOfConv2d) {
  for (std::int64_t groups : {1, 2}) {
    ConvTranspose2dOptions o;
    o.stride = {2, 3};
    o.padding = {1, 0};
    o.output_padding = {1, 2};
    o.dilation = {1, 2};
    o.groups = groups;
    Tensor x = rnd({2, 4, 3, 4}, 31), w = rnd({4, 6 / groups, 3, 2}, 32), b = rnd({6}, 33);
    Tensor y = conv_transpose2d(x, w, b, o);
    EXPECT_EQ(y.shape(), (Shape{2, 6, 6, 14}));
    expect_close(y, ref_conv_t(x, w, b, o));
    // <conv_transpose2d(x, w), z> = <x, conv2d(z, w)>: PyTorch's transposed layout [C_in, C_out/G, kH, kW]
    // is the weight of the conv2d from C_out to C_in channels that it is the adjoint of (no
    // output_padding, so that conv2d maps z's size back to x's).
    o.output_padding = {0, 0};
    Tensor yt = conv_transpose2d(x, w, Tensor{}, o);
    Tensor z = rnd(yt.shape(), 34);
    Conv2dOptions c;
    c.stride = o.stride;
    c.padding = o.padding;
    c.dilation = o.dilation;
    c.groups = groups;
    const double lhs = sum(mul(yt, z)).item(), rhs = sum(mul(x, conv2d(z, w, Tensor{}, c))).item();
    EXPECT_NEAR(lhs, rhs, 1e-10 * std::abs(lhs));
  }
  ConvTranspose2dOptions o;
  o.stride = {2, 2};
  o.padding = {1, 1};
  o.output_padding = {1, 1};
  auto f = [o](std::span<const Tensor> v) { return conv_transpose2d(v[0], v[1], v[2], o); };
  CheckReport r = check_grads(f, {rnd({1, 2, 3, 3}, 35), rnd({2, 3, 3, 3}, 36), rnd({3}, 37)});
  EXPECT_TRUE(r.pass) << r.failure;
}

TEST(PoolAndConvErrors, AreShapeErrorsNamingTheOpAndShapes) {
  Tensor x = rnd({1, 4, 4, 4}, 40);
  std::string e = shape_error([&] { max_pool2d(x, {5, 5}); });
  EXPECT_NE(e.find("max_pool2d: kernel larger than the padded input"), std::string::npos) << e;
  EXPECT_NE(e.find("[1, 4, 4, 4]"), std::string::npos) << e;
  e = shape_error([&] { avg_pool2d(x, {3, 3}, {1, 1}, {2, 2}); });
  EXPECT_NE(e.find("avg_pool2d: padding must be at most half the kernel size"), std::string::npos) << e;
  e = shape_error([&] { max_pool2d(rnd({4, 4}, 41), {2, 2}); });
  EXPECT_NE(e.find("max_pool2d: needs x [..., C, H, W], got [4, 4]"), std::string::npos) << e;
  e = shape_error([&] { adaptive_avg_pool2d(x, {0, 2}); });
  EXPECT_NE(e.find("adaptive_avg_pool2d"), std::string::npos) << e;
  e = shape_error([&] { upsample2d(x, {0, 2}); });
  EXPECT_NE(e.find("upsample2d"), std::string::npos) << e;
  Conv2dOptions g3;
  g3.groups = 3;
  e = shape_error([&] { conv2d(x, rnd({6, 1, 3, 3}, 42), Tensor{}, g3); });
  EXPECT_NE(e.find("conv2d: groups must be positive and divide the input channels (4)"), std::string::npos) << e;
  EXPECT_NE(e.find("groups 3"), std::string::npos) << e;
  Conv2dOptions g2;
  g2.groups = 2;
  e = shape_error([&] { conv2d(x, rnd({6, 4, 3, 3}, 43), Tensor{}, g2); });
  EXPECT_NE(e.find("weight [6, 4, 3, 3]"), std::string::npos) << e;
  Conv2dOptions same;
  same.same_padding = true;
  same.stride = {2, 2};
  e = shape_error([&] { conv2d(x, rnd({2, 4, 3, 3}, 44), Tensor{}, same); });
  EXPECT_NE(e.find("padding=\"same\" needs stride 1"), std::string::npos) << e;
  e = shape_error([&] { conv_transpose2d(x, rnd({3, 2, 3, 3}, 45)); });
  EXPECT_NE(e.find("conv_transpose2d: needs x [..., C_in, H, W], weight [C_in, C_out/groups, kH, kW]"), std::string::npos) << e;
  EXPECT_NE(e.find("weight [3, 2, 3, 3]"), std::string::npos) << e;
  ConvTranspose2dOptions big_pad;
  big_pad.padding = {3, 3};
  e = shape_error([&] { conv_transpose2d(x, rnd({4, 2, 2, 2}, 46), Tensor{}, big_pad); });
  EXPECT_NE(e.find("conv_transpose2d: non-positive output size"), std::string::npos) << e;
  ConvTranspose2dOptions op;
  op.output_padding = {1, 0};
  e = shape_error([&] { conv_transpose2d(x, rnd({4, 2, 2, 2}, 47), Tensor{}, op); });
  EXPECT_NE(e.find("output_padding in [0, stride)"), std::string::npos) << e;
  ConvTranspose2dOptions tg;
  tg.groups = 3;
  e = shape_error([&] { conv_transpose2d(x, rnd({4, 2, 2, 2}, 48), Tensor{}, tg); });
  EXPECT_NE(e.find("conv_transpose2d: groups must be positive and divide the input channels (4)"), std::string::npos) << e;
}

TEST(PoolLayers, NamesShapesInitAndNoParameters) {
  nn::MaxPool2d mp({2, 2});
  EXPECT_EQ(mp.repr(), "MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))");
  Tensor x = rnd({2, 4, 6, 6}, 50);
  EXPECT_EQ(mp.forward(x).shape(), (Shape{2, 4, 3, 3}));
  EXPECT_TRUE(mp.named_parameters().empty());
  nn::AvgPool2d ap({3, 3}, {1, 1}, {1, 1});
  EXPECT_EQ(ap.forward(x).shape(), (Shape{2, 4, 6, 6}));
  nn::AdaptiveAvgPool2d gap({1, 1});
  EXPECT_EQ(gap.forward(x).shape(), (Shape{2, 4, 1, 1}));
  EXPECT_EQ(gap.repr(), "AdaptiveAvgPool2d(output_size=(1, 1))");

  nn::Conv2dLayerOptions co;
  co.groups = 2;
  co.same_padding = true;
  co.dtype = DType::f64;
  nn::Conv2d conv(4, 6, {2, 3}, co);
  EXPECT_EQ(conv.weight.shape(), (Shape{6, 2, 2, 3}));
  for (double v : conv.weight.to_vector<double>()) EXPECT_LE(std::abs(v), 1.0 / std::sqrt(12.0));
  EXPECT_EQ(conv.forward(x).shape(), (Shape{2, 6, 6, 6}));
  EXPECT_NE(conv.repr().find("padding=same, dilation=(1, 1), groups=2"), std::string::npos) << conv.repr();

  nn::ConvTranspose2dLayerOptions to;
  to.stride = {2, 2};
  to.padding = {1, 1};
  to.output_padding = {1, 1};
  to.groups = 2;
  to.dtype = DType::f64;
  to.seed = 5;
  nn::ConvTranspose2d up(4, 6, {3, 3}, to);
  EXPECT_EQ(up.weight.shape(), (Shape{4, 3, 3, 3}));
  EXPECT_EQ(up.bias.shape(), (Shape{6}));
  std::vector<std::string> names;
  for (auto& [n, t] : up.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias"}));
  const double bound = 1.0 / std::sqrt(27.0);  // fan_in = out/groups·kH·kW
  double largest = 0;
  for (double v : up.weight.to_vector<double>()) largest = std::max(largest, std::abs(v));
  EXPECT_LE(largest, bound);
  EXPECT_GT(largest, 0.5 * bound);
  EXPECT_EQ(up.forward(x).shape(), (Shape{2, 6, 12, 12}));
  EXPECT_EQ(up.forward(rnd({4, 3, 3}, 51)).shape(), (Shape{6, 6, 6}));
  EXPECT_THROW(nn::ConvTranspose2d(4, 5, {3, 3}, to), ValueError);
}

}  // namespace
