// chainrule::linalg (src/ops/linalg_lapack.cpp): the factorisations against the identities that
// define them (A A⁻¹ = I, Q R = A, V diag(w) Vᵀ = A, U S Vh = A), determinants against hand
// computations, batched and in both float dtypes, and the errors for bad input. The derivative
// rules are checked by test_core_primitives.cpp with every other primitive; a few closed forms
// are checked here too.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "chainrule/autodiff/check.h"
#include "chainrule/chainrule.h"

using namespace chainrule;

namespace {

Tensor random_matrix(Shape s, std::uint64_t seed, DType dt) {
  Generator g(seed);
  return randn(s, g, dt);
}
// M + n I: far from singular for M with N(0, 1) entries of moderate size.
Tensor well_conditioned(Shape s, std::uint64_t seed, DType dt) {
  const std::int64_t n = s.back();
  return add(random_matrix(s, seed, dt), mul(eye(n, dt), scalar_tensor(static_cast<double>(n) + 2, dt)));
}
// M Mᵀ + n I: symmetric positive definite.
Tensor spd(Shape s, std::uint64_t seed, DType dt) {
  Tensor m = random_matrix(s, seed, dt);
  return add(matmul(m, m, false, true), mul(eye(s.back(), dt), scalar_tensor(static_cast<double>(s.back()), dt)));
}
double tol(DType dt) { return dt == DType::f32 ? 1e-4 : 1e-10; }

// Reference loops, independent of the kernels under test.
std::vector<double> ref_matmul(const std::vector<double>& a, const std::vector<double>& b, std::int64_t m, std::int64_t k,
                               std::int64_t n) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t p = 0; p < k; ++p) c[static_cast<std::size_t>(i * n + j)] += a[static_cast<std::size_t>(i * k + p)] * b[static_cast<std::size_t>(p * n + j)];
  return c;
}
std::vector<double> values(const Tensor& t) { return cast(t.detach(), DType::f64).to_vector<double>(); }
// max |a - b| over every entry
double diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}
std::vector<double> identity(std::int64_t n, std::int64_t batch) {
  std::vector<double> v;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j) v.push_back(i == j ? 1.0 : 0.0);
  return v;
}
// Product of each matrix pair of two batches (row-major, reference loop).
std::vector<double> batched_product(const Tensor& a, const Tensor& b) {
  const Shape& as = a.shape();
  const Shape& bs = b.shape();
  const std::int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
  auto va = values(a), vb = values(b);
  const std::int64_t batch = static_cast<std::int64_t>(va.size()) / (m * k);
  std::vector<double> out;
  for (std::int64_t i = 0; i < batch; ++i) {
    std::vector<double> x(va.begin() + i * m * k, va.begin() + (i + 1) * m * k), y(vb.begin() + i * k * n, vb.begin() + (i + 1) * k * n);
    auto c = ref_matmul(x, y, m, k, n);
    out.insert(out.end(), c.begin(), c.end());
  }
  return out;
}
Tensor mT(const Tensor& x) { return transpose(x, -2, -1); }

class Linalg : public ::testing::TestWithParam<DType> {};

TEST_P(Linalg, InverseTimesMatrixIsIdentityBatched) {
  const DType dt = GetParam();
  Tensor a = well_conditioned({2, 3, 4, 4}, 1, dt);
  Tensor ai = linalg::inv(a);
  EXPECT_EQ(ai.shape(), a.shape());
  EXPECT_EQ(ai.dtype(), dt);
  EXPECT_LT(diff(batched_product(a, ai), identity(4, 6)), tol(dt));
  EXPECT_LT(diff(batched_product(ai, a), identity(4, 6)), tol(dt));
}

TEST_P(Linalg, SolveMatchesTheEquationForMatricesVectorsAndBroadcastBatches) {
  const DType dt = GetParam();
  Tensor a = well_conditioned({2, 3, 3}, 2, dt);
  Tensor b = random_matrix({3, 2}, 3, dt);  // shared by both batch entries
  Tensor x = linalg::solve(a, b);
  ASSERT_EQ(x.shape(), (Shape{2, 3, 2}));
  EXPECT_LT(diff(batched_product(a, x), values(broadcast_to(b, {2, 3, 2}))), tol(dt));
  // b [n] is one vector (the array API's rule), broadcast over A's batch
  Tensor v = random_matrix({3}, 4, dt);
  Tensor xv = linalg::solve(a, v);
  ASSERT_EQ(xv.shape(), (Shape{2, 3}));
  EXPECT_LT(diff(batched_product(a, unsqueeze(xv, -1)), values(broadcast_to(unsqueeze(v, -1), {2, 3, 1}))), tol(dt));
}

TEST_P(Linalg, SolveTriangularReadsOnlyItsTriangleOnBothSides) {
  const DType dt = GetParam();
  Tensor full = well_conditioned({3, 3}, 5, dt);  // the other triangle is garbage to ignore
  std::vector<double> fv = values(full), up = fv, lo = fv;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      if (j < i) up[static_cast<std::size_t>(i * 3 + j)] = 0;
      if (j > i) lo[static_cast<std::size_t>(i * 3 + j)] = 0;
    }
  Tensor b = random_matrix({3, 2}, 6, dt), bt = random_matrix({2, 3}, 7, dt);
  Tensor x = linalg::solve_triangular(full, b, /*upper=*/true);
  EXPECT_LT(diff(ref_matmul(up, values(x), 3, 3, 2), values(b)), tol(dt));
  Tensor xr = linalg::solve_triangular(full, bt, /*upper=*/false, /*left=*/false);  // X A = B
  EXPECT_LT(diff(ref_matmul(values(xr), lo, 2, 3, 3), values(bt)), tol(dt));
  // unitriangular: the diagonal is taken to be ones
  std::vector<double> unit = lo;
  for (int i = 0; i < 3; ++i) unit[static_cast<std::size_t>(i * 4)] = 1;
  Tensor xu = linalg::solve_triangular(full, b, false, true, true);
  EXPECT_LT(diff(ref_matmul(unit, values(xu), 3, 3, 2), values(b)), tol(dt));
}

TEST_P(Linalg, DeterminantOfAHandComputed3x3AndSlogdet) {
  const DType dt = GetParam();
  // det [[2, -1, 0], [1, 3, 2], [0, 1, 4]] = 2 (12 - 2) + 1 (4 - 0) = 24; rows swapped: -24.
  Tensor a = tensor({2, -1, 0, 1, 3, 2, 0, 1, 4, 1, 3, 2, 2, -1, 0, 0, 1, 4}, {2, 3, 3}, dt);
  auto d = values(linalg::det(a));
  EXPECT_NEAR(d[0], 24, 1e-5);
  EXPECT_NEAR(d[1], -24, 1e-5);
  auto [sign, logabs] = linalg::slogdet(a);
  EXPECT_EQ(values(sign), (std::vector<double>{1, -1}));
  EXPECT_NEAR(values(logabs)[0], std::log(24.0), 1e-6);
  EXPECT_NEAR(values(logabs)[1], std::log(24.0), 1e-6);
  // A random batch: slogdet agrees with log |det|.
  Tensor r = well_conditioned({4, 5, 5}, 8, dt);
  auto [s2, l2] = linalg::slogdet(r);
  auto dr = values(linalg::det(r));
  for (std::size_t i = 0; i < dr.size(); ++i) {
    EXPECT_NEAR(values(l2)[i], std::log(std::abs(dr[i])), 1e-5);
    EXPECT_EQ(values(s2)[i], dr[i] > 0 ? 1.0 : -1.0);
  }
  // Singular: det 0, sign 0, log |det| = -inf (NumPy's answer).
  Tensor sing = tensor({1, 2, 2, 4}, {2, 2}, dt);
  EXPECT_EQ(linalg::det(sing).item(), 0.0);
  EXPECT_EQ(linalg::slogdet(sing).sign.item(), 0.0);
  EXPECT_EQ(linalg::slogdet(sing).logabsdet.item(), -std::numeric_limits<double>::infinity());
}

TEST_P(Linalg, CholeskyIsLowerAndReproducesTheMatrix) {
  const DType dt = GetParam();
  Tensor a = spd({3, 4, 4}, 9, dt);
  Tensor l = linalg::cholesky(a);
  auto lv = values(l);
  for (std::int64_t b = 0; b < 3; ++b)
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        if (j > i) {
          EXPECT_EQ(lv[static_cast<std::size_t>(b * 16 + i * 4 + j)], 0.0);
        }
        if (j == i) {
          EXPECT_GT(lv[static_cast<std::size_t>(b * 16 + i * 4 + j)], 0.0);
        }
      }
  EXPECT_LT(diff(batched_product(l, mT(l)), values(a)), tol(dt) * 10);
  EXPECT_EQ(values(linalg::cholesky(a, /*upper=*/true)), values(mT(l)));
}

TEST_P(Linalg, QRHasOrthonormalQUpperRAndReproducesTallAndWideMatrices) {
  const DType dt = GetParam();
  for (Shape s : {Shape{2, 5, 3}, Shape{3, 3}, Shape{2, 4}}) {
    Tensor a = random_matrix(s, 10, dt);
    auto [q, r] = linalg::qr(a);
    const std::int64_t m = s[s.size() - 2], n = s.back(), k = std::min(m, n), batch = a.numel() / (m * n);
    ASSERT_EQ(q.shape().back(), k);
    ASSERT_EQ(r.shape()[r.shape().size() - 2], k);
    EXPECT_LT(diff(batched_product(q, r), values(a)), tol(dt) * 10) << s.str();
    EXPECT_LT(diff(batched_product(mT(q), q), identity(k, batch)), tol(dt) * 10) << s.str();
    auto rv = values(r);
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t j = 0; j < i && j < n; ++j) EXPECT_EQ(rv[static_cast<std::size_t>(b * k * n + i * n + j)], 0.0);
  }
}

TEST_P(Linalg, EighGivesAscendingEigenvaluesAndOrthonormalEigenvectors) {
  const DType dt = GetParam();
  // [[2, 1], [1, 2]]: eigenvalues 1 and 3.
  auto [w2, v2] = linalg::eigh(tensor({2, 1, 1, 2}, {2, 2}, dt));
  EXPECT_NEAR(values(w2)[0], 1, 1e-6);
  EXPECT_NEAR(values(w2)[1], 3, 1e-6);
  Tensor m = random_matrix({2, 5, 5}, 11, dt);
  Tensor a = add(m, mT(m));
  auto [w, v] = linalg::eigh(a);
  ASSERT_EQ(w.shape(), (Shape{2, 5}));
  auto wv = values(w);
  for (std::size_t i = 0; i + 1 < wv.size(); ++i)
    if (i % 5 != 4) {
          EXPECT_LE(wv[i], wv[i + 1]);
        }
  EXPECT_LT(diff(batched_product(mul(v, unsqueeze(w, -2)), mT(v)), values(a)), tol(dt) * 10);  // V diag(w) Vᵀ
  EXPECT_LT(diff(batched_product(mT(v), v), identity(5, 2)), tol(dt) * 10);
  EXPECT_LT(diff(values(linalg::eigvalsh(a)), wv), tol(dt) * 10);
}

TEST_P(Linalg, SVDReproducesTheMatrixWithDescendingSingularValues) {
  const DType dt = GetParam();
  for (Shape s : {Shape{2, 5, 3}, Shape{3, 6}, Shape{4, 4}}) {
    Tensor a = random_matrix(s, 12, dt);
    auto [u, sv, vh] = linalg::svd(a);
    const std::int64_t m = s[s.size() - 2], n = s.back(), k = std::min(m, n), batch = a.numel() / (m * n);
    EXPECT_LT(diff(batched_product(mul(u, unsqueeze(sv, -2)), vh), values(a)), tol(dt) * 10) << s.str();
    EXPECT_LT(diff(batched_product(mT(u), u), identity(k, batch)), tol(dt) * 10);
    EXPECT_LT(diff(batched_product(vh, mT(vh)), identity(k, batch)), tol(dt) * 10);
    auto svv = values(sv);
    for (std::size_t i = 0; i + 1 < svv.size(); ++i)
      if (static_cast<std::int64_t>(i) % k != k - 1) {
          EXPECT_GE(svv[i], svv[i + 1]);
        }
    EXPECT_LT(diff(values(linalg::svdvals(a)), svv), tol(dt) * 10);
  }
  // diag(3, -2) has singular values 3 and 2.
  EXPECT_LT(diff(values(linalg::svdvals(tensor({3, 0, 0, -2}, {2, 2}, dt))), {3, 2}), 1e-6);
}

TEST_P(Linalg, NormsAgainstTheirDefinitions) {
  const DType dt = GetParam();
  Tensor x = tensor({3, -4, 0, 1, -2, 2}, {2, 3}, dt);
  EXPECT_NEAR(linalg::vector_norm(x).item(), std::sqrt(34.0), 1e-5);
  EXPECT_EQ(values(linalg::vector_norm(x, 1, {1})), (std::vector<double>{7, 5}));
  EXPECT_EQ(values(linalg::vector_norm(x, linalg::inf, {0})), (std::vector<double>{3, 4, 2}));
  EXPECT_EQ(values(linalg::vector_norm(x, -linalg::inf, {0})), (std::vector<double>{1, 2, 0}));
  EXPECT_EQ(values(linalg::vector_norm(x, 0, {1})), (std::vector<double>{2, 3}));
  EXPECT_NEAR(values(linalg::vector_norm(x, 3, {1}))[0], std::cbrt(27.0 + 64.0), 1e-5);
  EXPECT_EQ(linalg::vector_norm(x, 2, {1}, true).shape(), (Shape{2, 1}));
  // matrix norms: [[3, -4, 0], [1, -2, 2]]
  EXPECT_NEAR(linalg::matrix_norm(x).item(), std::sqrt(34.0), 1e-5);
  EXPECT_NEAR(linalg::matrix_norm(x, 1).item(), 6, 1e-6);            // largest column sum |−4| + |−2|
  EXPECT_NEAR(linalg::matrix_norm(x, linalg::inf).item(), 7, 1e-6);  // largest row sum
  auto s = values(linalg::svdvals(x));
  EXPECT_NEAR(linalg::matrix_norm(x, "nuc").item(), s[0] + s[1], 1e-5);
  EXPECT_NEAR(linalg::matrix_norm(x, 2).item(), s[0], 1e-5);
  EXPECT_NEAR(linalg::matrix_norm(x, -2).item(), s[1], 1e-5);
}

TEST_P(Linalg, PinvSatisfiesThePenroseConditions) {
  const DType dt = GetParam();
  Tensor a = random_matrix({2, 5, 3}, 13, dt);
  Tensor p = linalg::pinv(a);
  ASSERT_EQ(p.shape(), (Shape{2, 3, 5}));
  Tensor apa = matmul(matmul(a, p), a);
  EXPECT_LT(diff(values(apa), values(a)), tol(dt) * 10);
  EXPECT_LT(diff(values(matmul(matmul(p, a), p)), values(p)), tol(dt) * 10);
  // A rank-1 matrix: [[1, 2], [2, 4]] / 25 is its pseudo-inverse.
  auto pr = values(linalg::pinv(tensor({1, 2, 2, 4}, {2, 2}, dt)));
  auto want = std::vector<double>{0.04, 0.08, 0.08, 0.16};
  EXPECT_LT(diff(pr, want), 1e-6);
}

// full_matrices SVD and complete QR: square orthogonal factors that reproduce A, whose first k
// columns (rows of Vh) are the reduced factors; mode "r" is the reduced R alone.
TEST_P(Linalg, FullSVDAndCompleteQRGiveSquareOrthogonalFactors) {
  const DType dt = GetParam();
  for (Shape s : {Shape{2, 5, 3}, Shape{3, 6}, Shape{4, 4}, Shape{2, 1, 4}}) {
    Tensor a = random_matrix(s, 16, dt);
    const std::int64_t m = s[s.size() - 2], n = s.back(), k = std::min(m, n), batch = a.numel() / (m * n);
    auto [u, sv, vh] = linalg::svd(a, /*full_matrices=*/true);
    auto [ur, svr, vhr] = linalg::svd(a);
    ASSERT_EQ(u.shape().back(), m) << s.str();
    ASSERT_EQ(vh.shape()[vh.shape().size() - 2], n) << s.str();
    EXPECT_LT(diff(batched_product(mT(u), u), identity(m, batch)), tol(dt) * 10) << s.str();
    EXPECT_LT(diff(batched_product(vh, mT(vh)), identity(n, batch)), tol(dt) * 10) << s.str();
    EXPECT_EQ(values(slice(u, -1, 0, k)), values(ur)) << s.str();
    EXPECT_EQ(values(slice(vh, -2, 0, k)), values(vhr)) << s.str();
    EXPECT_EQ(values(sv), values(svr));
    EXPECT_LT(diff(batched_product(mul(slice(u, -1, 0, k), unsqueeze(sv, -2)), slice(vh, -2, 0, k)), values(a)), tol(dt) * 10);

    auto [q, r] = linalg::qr(a, "complete");
    auto [qr_, rr] = linalg::qr(a);
    ASSERT_EQ(q.shape().back(), m) << s.str();
    ASSERT_EQ(r.shape()[r.shape().size() - 2], m) << s.str();
    ASSERT_EQ(r.shape().back(), n) << s.str();
    EXPECT_LT(diff(batched_product(q, r), values(a)), tol(dt) * 10) << s.str();
    EXPECT_LT(diff(batched_product(mT(q), q), identity(m, batch)), tol(dt) * 10) << s.str();
    EXPECT_EQ(values(slice(q, -1, 0, k)), values(qr_)) << s.str();
    EXPECT_EQ(values(slice(r, -2, 0, k)), values(rr)) << s.str();
    auto rv = values(r);
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < i && j < n; ++j) EXPECT_EQ(rv[static_cast<std::size_t>(b * m * n + i * n + j)], 0.0) << s.str();
    auto [q0, r0] = linalg::qr(a, "r");
    EXPECT_EQ(q0.numel(), 0);
    EXPECT_EQ(values(r0), values(rr));
  }
  EXPECT_THROW(linalg::qr(random_matrix({3, 2}, 17, dt), "full"), ValueError);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Linalg, ::testing::Values(DType::f32, DType::f64),
                         [](const auto& info) { return std::string(info.param == DType::f32 ? "f32" : "f64"); });

TEST(LinalgCompositions, TraceDiagonalOuterVecdotTensordot) {
  Tensor x = tensor({1, 2, 3, 4, 5, 6}, {2, 3}, DType::f64);
  EXPECT_EQ(values(linalg::diagonal(x)), (std::vector<double>{1, 5}));
  EXPECT_EQ(values(linalg::diagonal(x, 1)), (std::vector<double>{2, 6}));
  EXPECT_EQ(values(linalg::diagonal(x, -1)), (std::vector<double>{4}));
  EXPECT_EQ(linalg::trace(x).item(), 6.0);
  EXPECT_EQ(linalg::matrix_transpose(x).shape(), (Shape{3, 2}));
  EXPECT_EQ(values(linalg::outer(tensor({1, 2}, {2}, DType::f64), tensor({3, 4, 5}, {3}, DType::f64))),
            (std::vector<double>{3, 4, 5, 6, 8, 10}));
  EXPECT_EQ(values(linalg::vecdot(x, tensor({1, 0, -1}, {3}, DType::f64))), (std::vector<double>{-2, -2}));
  // tensordot with one axis is the matrix product; with two, the Frobenius inner product.
  Tensor y = tensor({1, 0, 2, 1, 0, 3}, {3, 2}, DType::f64);
  EXPECT_EQ(values(linalg::tensordot(x, y, 1)), batched_product(x, y));
  EXPECT_EQ(linalg::tensordot(x, x, 2).item(), 91.0);
  EXPECT_EQ(values(linalg::tensordot(x, y, {0}, {1})), batched_product(mT(x), mT(y)));
  // cross: e_x × e_y = e_z, and (1, 2, 3) × (4, 5, 6) = (-3, 6, -3), broadcast over rows
  Tensor u = tensor({1, 0, 0, 1, 2, 3}, {2, 3}, DType::f64);
  EXPECT_EQ(values(linalg::cross(u, tensor({0, 1, 0, 4, 5, 6}, {2, 3}, DType::f64))), (std::vector<double>{0, 0, 1, -3, 6, -3}));
  // matrix_power: [[1, 1], [0, 1]]^n = [[1, n], [0, 1]], n = -2 included; n = 0 the identity
  Tensor j = tensor({1, 1, 0, 1}, {2, 2}, DType::f64);
  EXPECT_EQ(values(linalg::matrix_power(j, 5)), (std::vector<double>{1, 5, 0, 1}));
  EXPECT_LT(diff(values(linalg::matrix_power(j, -2)), {1, -2, 0, 1}), 1e-12);
  EXPECT_EQ(values(linalg::matrix_power(j, 0)), (std::vector<double>{1, 0, 0, 1}));
  // matrix_rank: a rank-1 3×3 and a full-rank one, batched
  Tensor r = stack({tensor({1, 2, 3, 2, 4, 6, 3, 6, 9}, {3, 3}, DType::f64), eye(3, DType::f64)});
  Tensor rank = linalg::matrix_rank(r);
  EXPECT_EQ(rank.dtype(), DType::i64);
  EXPECT_EQ(rank.to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 3}));
}

// Closed-form derivatives, independent of the rules: d det / dA = cof(A) for a 2×2, and
// d log det / dA = A⁻ᵀ checked through det itself by finite differences of a 3×3.
TEST(LinalgDerivatives, DeterminantGradientIsTheCofactorMatrix) {
  Tensor a = tensor({2, 1, -1, 3}, {2, 2}, DType::f64);
  Tensor g = grad([](const Tensor& m) { return linalg::det(m); })(a);
  EXPECT_LT(diff(values(g), {3, 1, -1, 2}), 1e-12);  // [[d, -c], [-b, a]]
  Tensor s = tensor({4, 1, 0, 1, 3, 1, 0, 1, 2}, {3, 3}, DType::f64);
  Tensor gs = grad([](const Tensor& m) { return linalg::slogdet(m).logabsdet; })(s);
  std::vector<double> fd(9);
  for (int i = 0; i < 9; ++i) {
    auto v = values(s);
    v[static_cast<std::size_t>(i)] += 1e-6;
    double up = std::log(linalg::det(tensor(v, {3, 3}, DType::f64)).item());
    v[static_cast<std::size_t>(i)] -= 2e-6;
    double dn = std::log(linalg::det(tensor(v, {3, 3}, DType::f64)).item());
    fd[static_cast<std::size_t>(i)] = (up - dn) / 2e-6;
  }
  EXPECT_LT(diff(values(gs), fd), 1e-7);
}

TEST(LinalgDerivatives, VmapOfInverseMatchesALoopAndEighKinkIsNotFinite) {
  Tensor a = well_conditioned({3, 3, 3}, 14, DType::f64);
  Tensor batched = vmap([](const Tensor& m) { return linalg::inv(m); })(a);
  for (std::int64_t i = 0; i < 3; ++i)
    EXPECT_LT(max_abs_diff(slice(batched, 0, i, i + 1), linalg::inv(slice(a, 0, i, i + 1))), 1e-14);
  // Repeated eigenvalues (the identity): the eigenvectors' derivative is undefined; like JAX, the
  // rule gives non-finite values rather than a wrong finite one.
  Tensor g = grad([](const Tensor& m) { return sum(linalg::eigh(m).eigenvectors); })(eye(3, DType::f64));
  bool finite = true;
  for (double v : values(g)) finite = finite && std::isfinite(v);
  EXPECT_FALSE(finite);
  // The norm at zero: gradient 0 (PyTorch's subgradient), not NaN.
  Tensor gz = grad([](const Tensor& v) { return linalg::vector_norm(v); })(zeros({3}, DType::f64));
  EXPECT_EQ(values(gz), (std::vector<double>{0, 0, 0}));
}

// The compositions have no rules of their own: their derivatives (to second order) are those of
// the primitives they are built from, checked here the same way as a primitive's.
TEST(LinalgDerivatives, CompositionsPassTheDerivativeChecks) {
  Generator g(15);
  Tensor a = add(uniform({4, 3}, -0.9, 0.9, g, DType::f64), tensor({2, 0, 0, 0, 4, 0, 0, 0, 6, 0, 0, 0}, {4, 3}, DType::f64));
  const std::pair<const char*, CheckFn> fns[] = {
      {"pinv", [](auto x) { return linalg::pinv(x[0]); }},
      {"matrix_norm nuc", [](auto x) { return linalg::matrix_norm(x[0], "nuc"); }},
      {"matrix_norm fro keepdims", [](auto x) { return linalg::matrix_norm(x[0], "fro", true); }},
      {"matrix_norm 2", [](auto x) { return linalg::matrix_norm(x[0], 2); }},
      {"diagonal offset 1, trace", [](auto x) { return add(linalg::diagonal(x[0], 1), linalg::trace(x[0])); }},
      {"tensordot", [](auto x) { return linalg::tensordot(x[0], x[0], {0}, {0}); }},
      {"matrix_power 3", [](auto x) { return linalg::matrix_power(slice(x[0], 0, 0, 3), 3); }},
      {"matrix_power -2", [](auto x) { return linalg::matrix_power(slice(x[0], 0, 0, 3), -2); }},
      {"cross", [](auto x) { return linalg::cross(slice(x[0], 0, 0, 2), slice(x[0], 0, 2, 4)); }},
      {"cholesky upper", [](auto x) { return linalg::cholesky(add(matmul(x[0], x[0], true, false), eye(3, DType::f64) * 3.0), true); }},
  };
  for (const auto& [name, fn] : fns) {
    CheckReport r = check_grads(fn, {a});
    EXPECT_TRUE(r.pass) << name << ": " << r.failure;
  }
}

// Derivatives: full_matrices SVD differentiates through the reduced part (the extra columns'
// gradients are ignored, as PyTorch); complete QR equals the reduced one for m <= n and raises
// an AutodiffError naming qr and the shape for m > n.
TEST(LinalgDerivatives, FullSVDAndCompleteQR) {
  Generator g(18);
  Tensor tall = add(uniform({4, 3}, -0.9, 0.9, g, DType::f64), tensor({2, 0, 0, 0, 4, 0, 0, 0, 6, 0, 0, 0}, {4, 3}, DType::f64));
  Tensor wide = mT(tall);
  Tensor square = slice(tall, 0, 0, 3);
  auto sign_free = [](const Tensor& u, const Tensor& s, const Tensor& vh, std::int64_t k) {  // U Vh and S: sign-invariant
    return concat({flatten(matmul(slice(u, -1, 0, k), slice(vh, -2, 0, k))), s}, 0);
  };
  for (const Tensor& a : {tall, wide}) {
    CheckReport r = check_grads([&](auto x) { auto [u, s, vh] = linalg::svd(x[0], true); return sign_free(u, s, vh, 3); }, {a});
    EXPECT_TRUE(r.pass) << a.shape().str() << ": " << r.failure;
    // The same derivative as through the reduced SVD.
    Tensor gf = grad([&](const Tensor& x) { auto [u, s, vh] = linalg::svd(x, true); return sum(sign_free(u, s, vh, 3)); })(a);
    Tensor gr = grad([&](const Tensor& x) { auto [u, s, vh] = linalg::svd(x); return sum(sign_free(u, s, vh, 3)); })(a);
    EXPECT_LT(diff(values(gf), values(gr)), 1e-12);
    // The extra columns of U (rows of Vh) get no gradient.
    Tensor ge = grad([&](const Tensor& x) {
      auto [u, s, vh] = linalg::svd(x, true);
      return add(sum(slice(u, -1, 3, u.shape().back())), sum(slice(vh, -2, 3, vh.shape()[0])));
    })(a);
    EXPECT_EQ(values(ge), std::vector<double>(12, 0.0));
  }
  CheckReport rq = check_grads([](auto x) {
    auto [q, r] = linalg::qr(x[0], "complete");
    return concat({flatten(q), flatten(r)}, 0);
  }, {square});
  EXPECT_TRUE(rq.pass) << rq.failure;
  try {
    grad([](const Tensor& x) { return sum(linalg::qr(x, "complete").Q); })(tall);
    ADD_FAILURE() << "complete QR of a tall matrix differentiated";
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("linalg.qr"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(tall.shape().str()), std::string::npos) << e.what();
  }
  // Forward mode too; vmap alone differentiates nothing.
  EXPECT_THROW(jvp([](const Tensor& x) { return linalg::qr(x, "complete").R; }, tall, tall), AutodiffError);
  Tensor qs = vmap([](const Tensor& x) { return linalg::qr(x, "complete").Q; })(stack({tall, tall}));
  EXPECT_EQ(qs.shape(), (Shape{2, 4, 4}));
}

// Size-0 matrices give NumPy's answers (det of a 0×0 matrix is 1) and never reach LAPACK with an
// invalid leading dimension; vmap batches both operands of solve.
TEST(LinalgEdges, EmptyMatricesAndVmapOverBothOperandsOfSolve) {
  const DType dt = DType::f64;
  EXPECT_EQ(linalg::det(zeros({0, 0}, dt)).item(), 1.0);
  EXPECT_EQ(linalg::slogdet(zeros({0, 0}, dt)).logabsdet.item(), 0.0);
  EXPECT_EQ(linalg::inv(zeros({0, 0}, dt)).shape(), (Shape{0, 0}));
  EXPECT_EQ(linalg::solve(eye(2, dt), zeros({2, 0}, dt)).shape(), (Shape{2, 0}));
  EXPECT_EQ(linalg::cholesky(zeros({0, 0}, dt)).shape(), (Shape{0, 0}));
  auto [q, r] = linalg::qr(zeros({3, 0}, dt));
  EXPECT_EQ(q.shape(), (Shape{3, 0}));
  EXPECT_EQ(r.shape(), (Shape{0, 0}));
  auto [u, s, vh] = linalg::svd(zeros({0, 3}, dt));
  EXPECT_EQ(u.shape(), (Shape{0, 0}));
  EXPECT_EQ(s.shape(), (Shape{0}));
  EXPECT_EQ(vh.shape(), (Shape{0, 3}));
  EXPECT_EQ(linalg::eigh(zeros({0, 0}, dt)).eigenvalues.shape(), (Shape{0}));
  EXPECT_EQ(linalg::matrix_rank(zeros({2, 0}, dt)).item(), 0.0);

  Tensor a = well_conditioned({4, 3, 3}, 16, dt);
  Tensor b = random_matrix({4, 3}, 17, dt);
  Tensor x = vmap([](const Tensor& m, const Tensor& v) { return linalg::solve(m, v); }, {0, 0})(a, b);
  ASSERT_EQ(x.shape(), (Shape{4, 3}));
  for (std::int64_t i = 0; i < 4; ++i)
    EXPECT_LT(max_abs_diff(slice(x, 0, i, i + 1),
                           unsqueeze(linalg::solve(squeeze(slice(a, 0, i, i + 1), 0), squeeze(slice(b, 0, i, i + 1), 0)), 0)),
              1e-13);
}

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

TEST(LinalgErrors, WrongRankNonSquareSingularAndNotPositiveDefinite) {
  Tensor v = zeros({3}, DType::f64);
  Tensor rect = zeros({2, 3}, DType::f64);
  std::string e = error_of<ShapeError>([&] { linalg::inv(v); });
  EXPECT_NE(e.find("linalg.inv"), std::string::npos) << e;
  EXPECT_NE(e.find("[3]"), std::string::npos) << e;
  e = error_of<ShapeError>([&] { linalg::det(rect); });
  EXPECT_NE(e.find("linalg.det"), std::string::npos) << e;
  EXPECT_NE(e.find("[2, 3]"), std::string::npos) << e;
  for (auto f : {+[](const Tensor& x) { return linalg::cholesky(x); }, +[](const Tensor& x) { return linalg::eigh(x).eigenvalues; },
                 +[](const Tensor& x) { return linalg::slogdet(x).sign; }})
    EXPECT_NE(error_of<ShapeError>([&] { f(rect); }).find("square"), std::string::npos);
  EXPECT_NE(error_of<ShapeError>([&] { linalg::svd(v); }).find("linalg.svd"), std::string::npos);
  e = error_of<ShapeError>([&] { linalg::solve(eye(3, DType::f64), zeros({2, 4}, DType::f64)); });
  EXPECT_NE(e.find("linalg.solve"), std::string::npos) << e;
  EXPECT_NE(e.find("[2, 4]"), std::string::npos) << e;
  // Singular matrices: the op, the shape and the batch entry.
  Tensor sing = stack({eye(2, DType::f64), tensor({1, 2, 2, 4}, {2, 2}, DType::f64)});  // entry 1 is singular
  e = error_of<ValueError>([&] { linalg::inv(sing); });
  EXPECT_NE(e.find("linalg.inv"), std::string::npos) << e;
  EXPECT_NE(e.find("singular"), std::string::npos) << e;
  EXPECT_NE(e.find("batch entry 1"), std::string::npos) << e;
  e = error_of<ValueError>([&] { linalg::solve(sing, ones({2, 2, 1}, DType::f64)); });
  EXPECT_NE(e.find("linalg.solve: A is singular"), std::string::npos) << e;
  e = error_of<ValueError>([&] { linalg::solve_triangular(tensor({1, 0, 5, 0}, {2, 2}, DType::f64), ones({2, 1}, DType::f64), false); });
  EXPECT_NE(e.find("diagonal entry 1 is zero"), std::string::npos) << e;
  // diag(1, -1, 1): the leading minor of order 2 is the first that is not positive.
  e = error_of<ValueError>([&] { linalg::cholesky(tensor({1, 0, 0, 0, -1, 0, 0, 0, 1}, {3, 3}, DType::f64)); });
  EXPECT_NE(e.find("linalg.cholesky"), std::string::npos) << e;
  EXPECT_NE(e.find("[3, 3]"), std::string::npos) << e;
  EXPECT_NE(e.find("not positive definite"), std::string::npos) << e;
  EXPECT_NE(e.find("order 2"), std::string::npos) << e;
  // QR's derivative exists for m >= n only (as JAX).
  e = error_of<ValueError>([&] { grad([](const Tensor& x) { return sum(linalg::qr(x).R); })(ones({2, 3}, DType::f64)); });
  EXPECT_NE(e.find("m >= n"), std::string::npos) << e;
  EXPECT_NE(error_of<DTypeError>([&] { linalg::inv(eye(2, DType::i64)); }).find("float"), std::string::npos);
  EXPECT_NE(error_of<ValueError>([&] { linalg::matrix_norm(rect, "spectral"); }).find("ord"), std::string::npos);
  EXPECT_NE(error_of<ShapeError>([&] { linalg::outer(rect, v); }).find("linalg.outer"), std::string::npos);
}

}  // namespace
