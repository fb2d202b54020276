// A true linearize (one recorded evaluation, JVP rules replayed without primal work) and
// linear_transpose, against jvp and vjp (issue 17, item 4).
#include <gtest/gtest.h>

#include "chainrule/autodiff/vmap.h"
#include "chainrule/chainrule.h"
#include "chainrule/tensor/allocator.h"

using namespace chainrule;

namespace {

void expect_close(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_TRUE(allclose(a, b, 1e-12, 1e-14)) << max_abs_diff(a, b);
}

struct Net {
  Generator g{4};
  Tensor W1 = randn({6, 5}, g, DType::f64), W2 = randn({3, 6}, g, DType::f64);
  Tensor x = randn({5}, g, DType::f64);
  Tensor operator()(const Tensor& v) const { return matmul(W2, tanh(matmul(W1, exp(sin(v))))); }
};

TEST(Linearize, AgreesWithJvpForManyDirections) {
  Net f;
  auto [y, lin] = linearize(f, f.x);
  expect_close(y, f(f.x));
  for (int k = 0; k < 3; ++k) {
    Tensor u = randn({5}, f.g, DType::f64);
    expect_close(lin(u), jvp(f, f.x, u).second);
  }
  // Linear: lin(a u + b w) = a lin(u) + b lin(w).
  Tensor u = randn({5}, f.g, DType::f64), w = randn({5}, f.g, DType::f64);
  expect_close(lin(add(mul(u, scalar_tensor(2.0, DType::f64)), w)), add(mul(lin(u), scalar_tensor(2.0, DType::f64)), lin(w)));
}

TEST(Linearize, ReplaysOnlyTheTangentWork) {
  // f(x) = A (A x): the primal does two GEMVs and so does the tangent. A linear map that re-ran f
  // in forward mode would do four; the recorded one does the tangent's two.
  Generator g(2);
  const std::int64_t n = 7;
  Tensor A = randn({n, n}, g, DType::f64), x = randn({n}, g, DType::f64), u = randn({n}, g, DType::f64);
  auto f = [&](const Tensor& v) { return matmul(A, matmul(A, v)); };
  auto [y, lin] = linearize(f, x);
  std::uint64_t before = matmul_multiply_adds();
  Tensor ju = lin(u);
  EXPECT_EQ(matmul_multiply_adds() - before, static_cast<std::uint64_t>(2 * n * n));
  expect_close(ju, matmul(A, matmul(A, u)));
}

TEST(Linearize, TransposeAgreesWithVjp) {
  Net f;
  auto [y, lin] = linearize(f, f.x);
  auto lin_t = linear_transpose(lin, f.x);
  auto [y2, pullback] = vjp(f, f.x);
  for (int k = 0; k < 3; ++k) {
    Tensor ct = randn(y.shape(), f.g, DType::f64);
    expect_close(lin_t(ct), pullback(ct));
  }
  // <v, J u> = <Jᵀ v, u> across the two maps.
  Tensor u = randn({5}, f.g, DType::f64), v = randn(y.shape(), f.g, DType::f64);
  EXPECT_NEAR(sum(mul(v, lin(u))).item<double>(), sum(mul(lin_t(v), u)).item<double>(), 1e-10);
}

TEST(Linearize, NestsInsideOtherTransformsAndHandlesConstants) {
  // d/dx of <1, J(x) u> through the linear map equals the second derivative by jvp of grad.
  Generator g(3);
  Tensor x = randn({4}, g, DType::f64), u = randn({4}, g, DType::f64);
  auto f = [](const Tensor& v) { return sum(mul(sin(v), v)); };
  Tensor via_lin = grad([&](const Tensor& v) { return linearize(f, v).second(u); })(x);
  Tensor via_hvp = hvp(f)(x, u);
  expect_close(via_lin, via_hvp);
  // vmap of the linear map over directions: the Jacobian's rows.
  auto [y, lin] = linearize([](const Tensor& v) { return mul(v, v); }, x);
  Tensor J = vmap(lin)(reshape(eye(4, DType::f64), {4, 4}));
  expect_close(J, mul(eye(4, DType::f64), mul(x, scalar_tensor(2.0, DType::f64))));
  // A function that ignores its input has the zero map; identity gives u back.
  auto [c, zero_map] = linearize([&](const Tensor&) { return exp(u); }, x);
  expect_close(zero_map(u), zeros({4}, DType::f64));
  expect_close(linearize([](const Tensor& v) { return v; }, x).second(u), u);
  EXPECT_THROW((void)lin(zeros({3}, DType::f64)), std::exception);  // a tangent of the wrong shape
}

TEST(ChunkedJacobians, SameResultLessPeakMemory) {
  // y = tanh(W x) with x of 64 and y of 256: each direction carries [256] or [64] values plus
  // the intermediate [256]; all directions at once hold n of them, a chunk of 4 holds 4.
  Generator g(6);
  Tensor W = randn({256, 64}, g, DType::f64), x = randn({64}, g, DType::f64);
  auto f = [&](const Tensor& v) { return tanh(matmul(W, v)); };
  Tensor full_rev = jacrev(f)(x), full_fwd = jacfwd(f)(x);
  expect_close(full_fwd, full_rev);
  std::size_t peak_all = 0, peak_chunked = 0;
  for (std::int64_t chunk : {0, 4}) {
    memory::reset_peak();
    std::size_t base = memory::stats().bytes_in_use;
    Tensor J = jacrev(f, chunk)(x);
    (chunk == 0 ? peak_all : peak_chunked) = memory::stats().peak_bytes - base;
    expect_close(J, full_rev);
  }
  EXPECT_LT(peak_chunked * 2, peak_all) << peak_chunked << " vs " << peak_all;
  for (std::int64_t chunk : {1, 5, 64, 1000}) {
    expect_close(jacfwd(f, chunk)(x), full_rev);
    expect_close(jacrev(f, chunk)(x), full_rev);
  }
  auto h = [](const Tensor& v) { return sum(mul(sin(v), v)); };
  Tensor x8 = slice(x, 0, 0, 8);
  expect_close(hessian(h, 3)(x8), hessian(h)(x8));
  JacobianOptions opts;
  opts.chunk_size = 7;
  expect_close(jacobian(f, x, opts).jacobian, full_rev);
  EXPECT_THROW((void)jacrev(f, -1)(x), AutodiffError);
}

}  // namespace
