// Numerical safety: stable softmax family at extreme logits, and anomaly mode.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "chainrule/chainrule.h"

using namespace chainrule;

namespace {

const double kInf = std::numeric_limits<double>::infinity();

bool all_finite(const Tensor& t) {
  for (double v : cast(t, DType::f64).to_vector<double>())
    if (!std::isfinite(v)) return false;
  return true;
}

TEST(Stability, SoftmaxFamilyAtExtremeLogits) {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor z = tensor({1e4, -1e4, 0, -1e4, 1e4, 1e4}, {2, 3}, dt);
    Tensor labels = from_vector<std::int64_t>({1, 0});
    EXPECT_TRUE(all_finite(softmax(z)));
    EXPECT_TRUE(all_finite(log_softmax(z)));
    EXPECT_TRUE(all_finite(logsumexp(z, {-1})));
    Tensor ce = cross_entropy(z, labels, Reduction::None);
    EXPECT_TRUE(all_finite(ce));
    EXPECT_NEAR(cast(ce, DType::f64).to_vector<double>()[0], 2e4, 1e-2);
    Tensor g = grad([&](const Tensor& v) { return cross_entropy(v, labels); })(z);
    EXPECT_TRUE(all_finite(g));
  }
}

TEST(Stability, RowsOfMinusInfinity) {
  Tensor z = tensor({-kInf, -kInf, -kInf, 0.0, -kInf, 1.0}, {2, 3}, DType::f64);
  auto lse = logsumexp(z, {-1}).to_vector<double>();
  EXPECT_EQ(lse[0], -kInf);  // log of an empty sum
  EXPECT_NEAR(lse[1], std::log(1 + std::exp(1.0)), 1e-15);
  auto ls = log_softmax(z).to_vector<double>();
  EXPECT_EQ(ls[3 + 1], -kInf);
  EXPECT_NEAR(ls[3 + 2], 1 - lse[1], 1e-15);
  // A finite label in a row with some -inf logits has a finite loss.
  Tensor ce = cross_entropy(slice(z, 0, 1, 2), from_vector<std::int64_t>({2}), Reduction::None);
  EXPECT_TRUE(all_finite(ce));
}

// Gradients too, not only values: every reverse-mode derivative of the family at ±1e4.
TEST(Stability, SoftmaxFamilyGradientsAtExtremeLogits) {
  for (DType dt : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor z = tensor({1e4, -1e4, 0, -1e4, 1e4, 1e4, 1e4, 1e4, 1e4}, {3, 3}, dt);
    Tensor w = tensor({0.3, -1.2, 2.0, 0.7, 0.1, -0.4, 1.0, 1.0, -1.0}, {3, 3}, dt);  // a generic cotangent
    Tensor labels = from_vector<std::int64_t>({1, 0, 2});
    EXPECT_TRUE(all_finite(grad([&](const Tensor& v) { return sum(softmax(v) * w); })(z)));
    EXPECT_TRUE(all_finite(grad([&](const Tensor& v) { return sum(log_softmax(v) * w); })(z)));
    EXPECT_TRUE(all_finite(grad([&](const Tensor& v) { return sum(logsumexp(v, {-1}) * slice(w, 1, 0, 1).reshape({3})); })(z)));
    EXPECT_TRUE(all_finite(grad([&](const Tensor& v) { return cross_entropy(v, labels); })(z)));
    // The values are the exact ones: a row [1e4, 1e4, 1e4] is uniform, [1e4, -1e4, 0] is one-hot.
    auto p = cast(softmax(z), DType::f64).to_vector<double>();
    EXPECT_NEAR(p[0], 1.0, 1e-12);
    EXPECT_NEAR(p[6], 1.0 / 3, 1e-6);
    EXPECT_NEAR(cast(logsumexp(z, {-1}), DType::f64).to_vector<double>()[2], 1e4 + std::log(3.0), dt == DType::f32 ? 1e-3 : 1e-9);
  }
}

// Rows with some -inf logits (masked entries) keep finite values where defined and zero
// gradients at the masked entries; a row of only -inf follows PyTorch: logsumexp is -inf and
// softmax / log_softmax / cross-entropy are NaN (0/0: no distribution to normalise).
TEST(Stability, RowsOfMinusInfinityGradients) {
  Tensor z = tensor({-kInf, 0.5, -kInf, 0.0, -kInf, 1.0}, {2, 3}, DType::f64);
  Tensor w = tensor({0.3, -1.2, 2.0, 0.7, 0.1, -0.4}, {2, 3}, DType::f64);
  for (auto f : {+[](const Tensor& v) { return softmax(v); }, +[](const Tensor& v) { return log_softmax(v); }}) {
    auto g = grad([&](const Tensor& v) { return sum(where(v > -kInf, f(v), zeros_like(v)) * w); })(z).to_vector<double>();
    for (std::size_t i : {0u, 2u, 4u}) EXPECT_EQ(g[i], 0.0) << i;
    for (double v : g) EXPECT_TRUE(std::isfinite(v));
  }
  auto gl = grad([&](const Tensor& v) { return sum(logsumexp(v, {-1})); })(z).to_vector<double>();
  EXPECT_EQ(gl[0], 0.0);
  EXPECT_DOUBLE_EQ(gl[1], 1.0);  // the only finite entry of row 0
  EXPECT_NEAR(gl[3] + gl[5], 1.0, 1e-15);
  auto gc = grad([&](const Tensor& v) { return cross_entropy(v, from_vector<std::int64_t>({1, 2})); })(z).to_vector<double>();
  for (double v : gc) EXPECT_TRUE(std::isfinite(v));
  EXPECT_EQ(gc[0], 0.0);

  Tensor all = tensor({-kInf, -kInf, -kInf}, {1, 3}, DType::f64);
  EXPECT_EQ(logsumexp(all, {-1}).item(), -kInf);
  for (double v : softmax(all).to_vector<double>()) EXPECT_TRUE(std::isnan(v));
  for (double v : log_softmax(all).to_vector<double>()) EXPECT_TRUE(std::isnan(v));
  EXPECT_TRUE(std::isnan(cross_entropy(all, from_vector<std::int64_t>({0})).item()));
  // Anomaly mode names the culprit rather than letting the NaN travel on.
  DetectAnomalyGuard guard;
  EXPECT_THROW(softmax(all), NumericalError);
}

TEST(Anomaly, ReportsThePrimitiveShapesAndModule) {
  Tensor x = tensor({1, -1}, {2}, DType::f64);
  EXPECT_TRUE(std::isnan(log(x).to_vector<double>()[1]));  // off: no check
  DetectAnomalyGuard guard;
  try {
    NameScope outer("2"), inner("l1");
    log(x);
    FAIL() << "expected a NumericalError";
  } catch (const NumericalError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("'log'"), std::string::npos) << m;
    EXPECT_NE(m.find("float64 [2]"), std::string::npos) << m;
    EXPECT_NE(m.find("in module 2.l1"), std::string::npos) << m;
  }
}

TEST(Anomaly, ReportsWhereTheBackwardNodeWasCreated) {
  DetectAnomalyGuard guard;
  Tensor x = tensor({0.0, 1.0}, {2}, DType::f64).requires_grad_();
  Tensor y;
  {
    NameScope s("0");
    y = sum(sqrt(x));  // finite forward, infinite derivative at 0
  }
  try {
    y.backward();
    FAIL() << "expected a NumericalError";
  } catch (const NumericalError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("backward of 'sqrt'"), std::string::npos) << m;
    EXPECT_NE(m.find("in module 0 as node "), std::string::npos) << m;
    EXPECT_NE(m.find("inputs [2])"), std::string::npos) << m;
  }
}

}  // namespace

// float32 matmul takes three routes by size (plain loops for tiny products, oneDNN's matmul
// primitive cached per shape, sgemm as fallback); every route and transpose must agree with the
// float64 product, including after the thread count changes (the cache is keyed on it).
TEST(Float32Matmul, EveryRouteMatchesFloat64) {
  Generator gen(7);
  struct Case { std::int64_t m, n, k; };
  const Case cases[] = {{32, 64, 2}, {32, 2, 64}, {2, 64, 32}, {64, 2, 32}, {1, 1, 1}, {3, 5, 7}, {7, 1, 40},
                        {32, 64, 64}, {64, 96, 48}, {128, 256, 256}, {5, 300, 33}};
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const auto& c : cases)
      for (int flags = 0; flags < 4; ++flags) {
        const bool ta = flags & 1, tb = flags & 2;
        Tensor a = randn(ta ? Shape{c.k, c.m} : Shape{c.m, c.k}, gen), b = randn(tb ? Shape{c.n, c.k} : Shape{c.k, c.n}, gen);
        Tensor got = matmul(a, b, ta, tb);
        Tensor want = matmul(cast(a, DType::f64), cast(b, DType::f64), ta, tb);
        ASSERT_EQ(got.shape(), (Shape{c.m, c.n}));
        const double err = max(abs(cast(got, DType::f64) - want)).item();
        EXPECT_LE(err, 1e-5 * std::sqrt(static_cast<double>(c.k)) * 4)
            << c.m << "x" << c.n << "x" << c.k << " ta=" << ta << " tb=" << tb << " threads=" << threads;
      }
    // The same sizes through linear (bias in the GEMM's epilogue): x [m, k], weight [n, k].
    for (const auto& c : cases) {
      Tensor x = randn({c.m, c.k}, gen), w = randn({c.n, c.k}, gen), b = randn({c.n}, gen);
      Tensor got = linear(x, w, b);
      Tensor want = linear(cast(x, DType::f64), cast(w, DType::f64), cast(b, DType::f64));
      const double err = max(abs(cast(got, DType::f64) - want)).item();
      EXPECT_LE(err, 1e-5 * std::sqrt(static_cast<double>(c.k)) * 4) << "linear " << c.m << "x" << c.n << "x" << c.k;
    }
  }
  set_num_threads(1);
}

// vmap of a matrix-vector product is one GEMM, in one of two orientations (few vectors through a
// tall matrix take op(A) Bᵀ and a transpose): both, and both transpose flags, match float64.
TEST(Float32Matmul, BatchedMatrixVectorMatchesFloat64) {
  Generator gen(11);
  for (std::int64_t nb : {3, 16, 100})
    for (bool ta : {false, true}) {
      const std::int64_t m = 256, k = 48;
      Tensor a = randn(ta ? Shape{k, m} : Shape{m, k}, gen), vs = randn({nb, k}, gen);
      auto matvec = [&](const Tensor& aa) { return [&, aa](const Tensor& v) { return matmul(aa, v, ta, false); }; };
      Tensor got = vmap(matvec(a))(vs);
      Tensor want = vmap(matvec(cast(a, DType::f64)))(cast(vs, DType::f64));
      ASSERT_EQ(got.shape(), (Shape{nb, m}));
      EXPECT_LE(max(abs(cast(got, DType::f64) - want)).item(), 1e-5 * std::sqrt(static_cast<double>(k)) * 4) << nb << " ta=" << ta;
    }
}

// A batch of vectors that is exactly the identity (the seed of jacfwd and jacrev) is copied, not
// multiplied: the result must be op(A)ᵀ exactly, for both transposes, and a batch that differs from
// the identity in one entry, anywhere, must still go through the GEMM.
TEST(Float32Matmul, IdentitySeedIsACopyAndNearIdentityIsNot) {
  Generator gen(13);
  const std::int64_t m = 40, k = 24;
  for (bool ta : {false, true}) {
    Tensor a = randn(ta ? Shape{k, m} : Shape{m, k}, gen);
    auto matvec = [&](const Tensor& aa) { return [&, aa](const Tensor& v) { return matmul(aa, v, ta, false); }; };
    Tensor at = ta ? a : transpose(a);  // op(A)ᵀ, [k, m]
    const std::uint64_t before = matmul_multiply_adds();
    Tensor got = vmap(matvec(a))(eye(k, DType::f32));
    EXPECT_EQ(matmul_multiply_adds(), before) << "the identity seed was multiplied, ta=" << ta;
    EXPECT_EQ(max(abs(got - at)).item(), 0.0) << "ta=" << ta;
    for (std::int64_t pos : {std::int64_t{0}, std::int64_t{1}, k * k / 2, k * k - 1}) {
      std::vector<float> near(static_cast<std::size_t>(k * k), 0.0f);
      for (std::int64_t i = 0; i < k; ++i) near[static_cast<std::size_t>(i * k + i)] = 1.0f;
      near[static_cast<std::size_t>(pos)] += 0.5f;
      Tensor vs = from_vector(near, {k, k});
      Tensor want = vmap(matvec(cast(a, DType::f64)))(cast(vs, DType::f64));
      EXPECT_LE(max(abs(cast(vmap(matvec(a))(vs), DType::f64) - want)).item(), 1e-5) << "entry " << pos << " ta=" << ta;
    }
  }
}
