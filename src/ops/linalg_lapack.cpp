// chainrule::linalg: inverses, solves, determinants and the factorisations (Cholesky, QR, eigh,
// SVD) on LAPACK (kernels/lapack.h). Matrices are the last two axes, leading axes a batch. Every
// rule is written with chainrule ops, the factorisations' own included, so derivatives nest; the
// formulas are JAX's and PyTorch's. Multi-output factorisations are one primitive whose output
// packs the factors along its last axis (qr: Q then R flattened; eigh: [..., n + 1, n], the
// eigenvalues then the eigenvectors; svd: U, S, Vh flattened); the public functions slice them
// apart, and a factor left unused gets a zero cotangent through the slice.
#include <fmt/format.h>

#include <cmath>
#include <string>
#include <vector>

#include "chainrule/autodiff/frame.h"
#include "chainrule/ops/linalg.h"
#include "kernels/kernels.h"
#include "kernels/lapack.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

namespace {
// The spacing of floats at 1 in the tensor's dtype (the default rtol of pinv and matrix_rank).
double machine_eps(DType t) {
  return t == DType::f32 ? 1.1920929e-7 : t == DType::bf16 ? 0x1p-7 : t == DType::f16 ? 0x1p-10 : 2.220446049250313e-16;
}
}  // namespace


extern const Primitive inv_p, solve_p, solve_triangular_p, det_p, slogdet_p, cholesky_p;
extern const Primitive qr_p, qr_complement_p, eigh_p, eigvalsh_p, svd_p, svdvals_p, vector_norm_p;

namespace {

namespace lapack = kernels::lapack;

// ---- shapes and layout -------------------------------------------------------------------

std::int64_t rows(const Shape& s) { return s[s.size() - 2]; }
std::int64_t cols(const Shape& s) { return s[s.size() - 1]; }
Shape lead(const Shape& s, std::size_t trailing = 2) { return s.slice(0, s.size() - trailing); }

void need_matrix(std::string_view op, const Tensor& a) {
  if (a.dim() < 2)
    throw ShapeError(fmt::format("linalg.{}: expected a matrix or a batch of matrices [..., m, n], got {}", op, a.shape().str()));
}
void need_square(std::string_view op, const Tensor& a) {
  if (a.dim() < 2 || rows(a.shape()) != cols(a.shape()))
    throw ShapeError(fmt::format("linalg.{}: expected a square matrix or a batch of them [..., n, n], got {}", op, a.shape().str()));
}
int lapack_int(std::string_view op, std::int64_t v) {
  if (v > std::numeric_limits<int>::max())
    throw ValueError(fmt::format("linalg.{}: dimension {} is too large for LAPACK's 32-bit integers", op, v));
  return static_cast<int>(v);
}

// Row-major [m, n] to column-major and back (LAPACK's layout).
template <class T>
void to_col(const T* src, T* dst, std::int64_t m, std::int64_t n) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) dst[j * m + i] = src[i * n + j];
}
template <class T>
void from_col(const T* src, T* dst, std::int64_t m, std::int64_t n) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) dst[i * n + j] = src[j * m + i];
}
// (A + Aᵀ) / 2 of a row-major n×n matrix: symmetric, so the same in either layout.
template <class T>
void symmetrize(const T* src, T* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) dst[i * n + j] = (src[i * n + j] + src[j * n + i]) / T(2);
}

// Calls f(entry, offset of a's matrix, offset of b's matrix) for every entry of the broadcast
// batch of a [..., p, q] and b [..., r, s]; returns that batch.
template <class F>
Shape for_each_pair(std::string_view op, const Shape& as, const Shape& bs, F&& f) {
  const Shape ab = lead(as), bb = lead(bs);
  const Shape batch = kernels::broadcast_shapes(op, ab, bb);
  const Shape sa = kernels::broadcast_strides(ab, batch), sb = kernels::broadcast_strides(bb, batch);
  const std::int64_t na = rows(as) * cols(as), nb = rows(bs) * cols(bs);
  Shape idx = Shape::filled(batch.size(), 0);
  for (std::int64_t i = 0; i < batch.numel(); ++i) {
    std::int64_t oa = 0, ob = 0;
    for (std::size_t d = 0; d < batch.size(); ++d) oa += idx[d] * sa[d], ob += idx[d] * sb[d];
    f(i, oa * na, ob * nb);
    for (std::size_t d = batch.size(); d-- > 0;) {
      if (++idx[d] < batch[d]) break;
      idx[d] = 0;
    }
  }
  return batch;
}

std::string entry(const Shape& batch, std::int64_t i) {
  return batch.empty() ? std::string() : fmt::format(" (batch entry {} of {})", i, batch.str());
}

// ---- differentiable helpers for the rules ------------------------------------------------

Tensor mT(const Tensor& x) { return transpose(x, -2, -1); }
Tensor eye_for(std::int64_t n, const Tensor& like) { return eye(n, like.dtype()); }
// A constant [n, n] mask: 1 where j - i >= k (upper) or j - i <= k (lower), `diag` on the diagonal.
Tensor band_mask(std::int64_t n, bool upper, std::int64_t k, DType dtype, double diag = -1) {
  std::vector<double> v(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      bool in = upper ? j - i >= k : j - i <= k;
      double x = in ? 1.0 : 0.0;
      if (i == j && diag >= 0) x = diag;
      v[static_cast<std::size_t>(i * n + j)] = x;
    }
  return tensor(v, {n, n}, dtype);
}
Tensor lower_part(const Tensor& x, std::int64_t k = 0) { return mul(x, band_mask(cols(x.shape()), false, k, x.dtype())); }
Tensor upper_part(const Tensor& x, std::int64_t k = 0) { return mul(x, band_mask(cols(x.shape()), true, k, x.dtype())); }
Tensor sym(const Tensor& x) { return add(x, mT(x)) * 0.5; }
Tensor diag_matrix(const Tensor& v) { return mul(unsqueeze(v, -1), eye_for(cols(v.shape()), v)); }
Tensor diag_of(const Tensor& x) { return sum(mul(x, eye_for(cols(x.shape()), x)), {-1}); }
Tensor trace_of(const Tensor& x) { return sum(mul(x, eye_for(cols(x.shape()), x)), {-2, -1}); }
// [..., p, q] -> [..., p*q] and back: the packing of multi-output factorisations.
Tensor flat2(const Tensor& x) { return reshape(x, lead(x.shape()) + Shape{rows(x.shape()) * cols(x.shape())}); }
Tensor part(const Tensor& packed, std::int64_t start, Shape trailing) {
  return reshape(slice(packed, -1, start, start + trailing.numel()), lead(packed.shape(), 1) + trailing);
}

Tensor solve_matrix(const Tensor& a, const Tensor& b) { return bind(solve_p, {a, b}); }

struct Tri {
  bool upper, left, unit;
};
Tensor solve_tri(const Tensor& a, const Tensor& b, Tri t) { return bind(solve_triangular_p, {a, b}, Params::with_attrs(t)); }
// The triangle of A that solve_triangular reads (the diagonal left out when it is unit).
Tensor triangle(const Tensor& x, Tri t) { return t.upper ? upper_part(x, t.unit ? 1 : 0) : lower_part(x, t.unit ? -1 : 0); }

using cases::Domain;

// ---- forward kernels ---------------------------------------------------------------------

// Row-major A is column-major Aᵀ: LU of Aᵀ gives det A and, solved transposed, A X = B.
Tensor inv_forward(std::span<const Tensor> x, const Params&) {
  const Tensor& a = x[0];
  need_square("inv", a);
  const std::int64_t n = rows(a.shape()), nb = lead(a.shape()).numel();
  Tensor o = empty(a.shape(), a.dtype());
  kernels::dispatch_float(a.dtype(), "linalg.inv", [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> lu(static_cast<std::size_t>(n * n));
    std::vector<int> piv(static_cast<std::size_t>(n));
    for (std::int64_t b = 0; b < nb; ++b) {
      const T* src = kernels::in<T>(a) + b * n * n;
      T* dst = kernels::out<T>(o) + b * n * n;
      std::copy(src, src + n * n, lu.begin());
      if (int info = lapack::getrf(lapack_int("inv", n), lu.data(), piv.data()); info > 0)
        throw ValueError(fmt::format("linalg.inv: the matrix is singular (pivot {} of its LU factorisation is zero), input {}{}",
                                     info - 1, a.shape().str(), entry(lead(a.shape()), b)));
      // (Aᵀ)⁻¹ in column-major order is A⁻¹ in row-major order.
      std::fill(dst, dst + n * n, T(0));
      for (std::int64_t i = 0; i < n; ++i) dst[i * n + i] = T(1);
      lapack::getrs('N', static_cast<int>(n), static_cast<int>(n), lu.data(), piv.data(), dst);
    }
    return 0;
  });
  return o;
}

Tensor solve_forward(std::span<const Tensor> x, const Params&) {
  const Tensor& a = x[0];
  const Tensor& b = x[1];
  check_same_dtype("linalg.solve", a, b);
  need_square("solve", a);
  if (b.dim() < 2 || rows(b.shape()) != rows(a.shape()))
    throw ShapeError(fmt::format("linalg.solve: A {} and B {} do not match (B must be [..., n, k] or [n] for A [..., n, n])",
                                 a.shape().str(), b.shape().str()));
  const std::int64_t n = rows(a.shape()), k = cols(b.shape());
  Shape batch = kernels::broadcast_shapes("linalg.solve", lead(a.shape()), lead(b.shape()));
  Tensor o = empty(batch + Shape{n, k}, a.dtype());
  kernels::dispatch_float(a.dtype(), "linalg.solve", [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> lu(static_cast<std::size_t>(n * n)), rhs(static_cast<std::size_t>(n * k));
    std::vector<int> piv(static_cast<std::size_t>(n));
    for_each_pair("linalg.solve", a.shape(), b.shape(), [&](std::int64_t i, std::int64_t oa, std::int64_t ob) {
      const T* pa = kernels::in<T>(a) + oa;
      std::copy(pa, pa + n * n, lu.begin());
      if (int info = lapack::getrf(lapack_int("solve", n), lu.data(), piv.data()); info > 0)
        throw ValueError(fmt::format("linalg.solve: A is singular (pivot {} of its LU factorisation is zero), A {}, B {}{}",
                                     info - 1, a.shape().str(), b.shape().str(), entry(batch, i)));
      to_col(kernels::in<T>(b) + ob, rhs.data(), n, k);
      lapack::getrs('T', static_cast<int>(n), lapack_int("solve", k), lu.data(), piv.data(), rhs.data());  // (Aᵀ)ᵀ X = B
      from_col(rhs.data(), kernels::out<T>(o) + i * n * k, n, k);
    });
    return 0;
  });
  return o;
}

Tensor solve_triangular_forward(std::span<const Tensor> x, const Params& p) {
  const Tensor& a = x[0];
  const Tensor& b = x[1];
  const Tri t = p.attrs<Tri>();
  check_same_dtype("linalg.solve_triangular", a, b);
  need_square("solve_triangular", a);
  const std::int64_t n = rows(a.shape());
  if (b.dim() < 2 || (t.left ? rows(b.shape()) : cols(b.shape())) != n)
    throw ShapeError(fmt::format("linalg.solve_triangular: A {} and B {} do not match (B must be [..., {}] for left={})",
                                 a.shape().str(), b.shape().str(), t.left ? "n, k" : "k, n", t.left));
  const std::int64_t r = rows(b.shape()), c = cols(b.shape()), k = t.left ? c : r;
  Shape batch = kernels::broadcast_shapes("linalg.solve_triangular", lead(a.shape()), lead(b.shape()));
  Tensor o = empty(batch + Shape{r, c}, a.dtype());
  // Row-major A is column-major Aᵀ, whose triangle is the other one.
  const char uplo = t.upper ? 'L' : 'U', diag = t.unit ? 'U' : 'N';
  kernels::dispatch_float(a.dtype(), "linalg.solve_triangular", [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> rhs(static_cast<std::size_t>(r * c));
    for_each_pair("linalg.solve_triangular", a.shape(), b.shape(), [&](std::int64_t i, std::int64_t oa, std::int64_t ob) {
      const T* pb = kernels::in<T>(b) + ob;
      T* po = kernels::out<T>(o) + i * r * c;
      int info = 0;
      if (t.left) {  // (Aᵀ)ᵀ X = B with B, X column-major
        to_col(pb, rhs.data(), r, c);
        info = lapack::trtrs(uplo, 'T', diag, lapack_int("solve_triangular", n), lapack_int("solve_triangular", k),
                             kernels::in<T>(a) + oa, rhs.data());
        from_col(rhs.data(), po, r, c);
      } else {  // X A = B is Aᵀ Xᵀ = Bᵀ, and row-major B, X are column-major Bᵀ, Xᵀ
        std::copy(pb, pb + r * c, po);
        info = lapack::trtrs(uplo, 'N', diag, lapack_int("solve_triangular", n), lapack_int("solve_triangular", k),
                             kernels::in<T>(a) + oa, po);
      }
      if (info > 0)
        throw ValueError(fmt::format("linalg.solve_triangular: A is singular (its diagonal entry {} is zero), A {}, B {}{}", info - 1,
                                     a.shape().str(), b.shape().str(), entry(batch, i)));
    });
    return 0;
  });
  return o;
}

// The LU factors of every matrix of a [..., n, n]: f(entry, factors, pivots).
template <class T, class F>
void each_lu(std::string_view op, const Tensor& a, F&& f) {
  need_square(op, a);
  const std::int64_t n = rows(a.shape()), nb = lead(a.shape()).numel();
  std::vector<T> lu(static_cast<std::size_t>(n * n));
  std::vector<int> piv(static_cast<std::size_t>(n));
  for (std::int64_t b = 0; b < nb; ++b) {
    const T* src = kernels::in<T>(a) + b * n * n;
    std::copy(src, src + n * n, lu.begin());
    lapack::getrf(lapack_int(op, n), lu.data(), piv.data());  // a zero pivot shows as a zero factor
    // det A = det Aᵀ = ±Π U_ii, the sign from the row exchanges.
    int sign = 1;
    for (std::int64_t i = 0; i < n; ++i)
      if (piv[static_cast<std::size_t>(i)] != i + 1) sign = -sign;
    f(b, lu.data(), n, sign);
  }
}

Tensor det_forward(std::span<const Tensor> x, const Params&) {
  const Tensor& a = x[0];
  need_square("det", a);
  Tensor o = empty(lead(a.shape()), a.dtype());
  kernels::dispatch_float(a.dtype(), "linalg.det", [&](auto tag) {
    using T = decltype(tag);
    each_lu<T>("det", a, [&](std::int64_t b, const T* lu, std::int64_t n, int sign) {
      T d = T(sign);
      for (std::int64_t i = 0; i < n; ++i) d *= lu[i * n + i];
      kernels::out<T>(o)[b] = d;
    });
    return 0;
  });
  return o;
}

Tensor slogdet_forward(std::span<const Tensor> x, const Params&) {
  const Tensor& a = x[0];
  need_square("slogdet", a);
  Tensor o = empty(lead(a.shape()) + Shape{2}, a.dtype());
  kernels::dispatch_float(a.dtype(), "linalg.slogdet", [&](auto tag) {
    using T = decltype(tag);
    each_lu<T>("slogdet", a, [&](std::int64_t b, const T* lu, std::int64_t n, int sign) {
      T s = T(sign), l = T(0);
      for (std::int64_t i = 0; i < n; ++i) {
        const T u = lu[i * n + i];
        if (u < 0) s = -s;
        if (u == 0) s = 0;
        l += std::log(std::abs(u));
      }
      kernels::out<T>(o)[2 * b] = s;
      kernels::out<T>(o)[2 * b + 1] = l;  // -inf for a singular matrix, as NumPy
    });
    return 0;
  });
  return o;
}

Tensor cholesky_forward(std::span<const Tensor> x, const Params&) {
  const Tensor& a = x[0];
  need_square("cholesky", a);
  const std::int64_t n = rows(a.shape()), nb = lead(a.shape()).numel();
  Tensor o = empty(a.shape(), a.dtype());
  kernels::dispatch_float(a.dtype(), "linalg.cholesky", [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> w(static_cast<std::size_t>(n * n));
    for (std::int64_t b = 0; b < nb; ++b) {
      symmetrize(kernels::in<T>(a) + b * n * n, w.data(), n);
      if (int info = lapack::potrf('L', lapack_int("cholesky", n), w.data()); info > 0)
        throw ValueError(fmt::format("linalg.cholesky: the input {} is not positive definite: its leading minor of order {} "
                                     "(rows and columns 0..{}) is not{}",
                                     a.shape().str(), info, info - 1, entry(lead(a.shape()), b)));
      T* dst = kernels::out<T>(o) + b * n * n;
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < n; ++j) dst[i * n + j] = j <= i ? w[static_cast<std::size_t>(j * n + i)] : T(0);
    }
    return 0;
  });
  return o;
}

// Packed [..., m*k + k*n]: Q [m, k] then R [k, n], k = min(m, n).
Tensor qr_forward(std::span<const Tensor> x, const Params&) {
  const Tensor& a = x[0];
  need_matrix("qr", a);
  const std::int64_t m = rows(a.shape()), n = cols(a.shape()), k = std::min(m, n), nb = lead(a.shape()).numel();
  Tensor o = empty(lead(a.shape()) + Shape{m * k + k * n}, a.dtype());
  kernels::dispatch_float(a.dtype(), "linalg.qr", [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> w(static_cast<std::size_t>(m * n)), tau(static_cast<std::size_t>(std::max<std::int64_t>(k, 1)));
    for (std::int64_t b = 0; b < nb; ++b) {
      T* q = kernels::out<T>(o) + b * (m * k + k * n);
      T* r = q + m * k;
      to_col(kernels::in<T>(a) + b * m * n, w.data(), m, n);
      lapack::geqrf(lapack_int("qr", m), lapack_int("qr", n), w.data(), tau.data());
      for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t j = 0; j < n; ++j) r[i * n + j] = j >= i ? w[static_cast<std::size_t>(j * m + i)] : T(0);
      if (k > 0) lapack::orgqr(static_cast<int>(m), static_cast<int>(k), w.data(), tau.data());
      from_col(w.data(), q, m, k);  // the first k columns
    }
    return 0;
  });
  return o;
}

// The last m - k columns of the complete Householder Q of A [..., m, n], k = min(m, n): an
// orthonormal basis of the complement of A's first k columns' span ([..., m, 0] when m <= n).
// The same geqrf as qr_forward on the same data, so these extend its reduced Q exactly.
Tensor qr_complement_forward(std::span<const Tensor> x, const Params&) {
  const Tensor& a = x[0];
  need_matrix("qr", a);
  const std::int64_t m = rows(a.shape()), n = cols(a.shape()), k = std::min(m, n), nb = lead(a.shape()).numel();
  Tensor o = empty(lead(a.shape()) + Shape{m, m - k}, a.dtype());
  if (m == k || nb == 0) return o;
  kernels::dispatch_float(a.dtype(), "linalg.qr", [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> w(static_cast<std::size_t>(m * m)), tau(static_cast<std::size_t>(std::max<std::int64_t>(k, 1)));
    std::vector<T> q(static_cast<std::size_t>(m * m));
    for (std::int64_t b = 0; b < nb; ++b) {
      to_col(kernels::in<T>(a) + b * m * n, w.data(), m, n);  // the first n columns of the m×m array
      lapack::geqrf(lapack_int("qr", m), lapack_int("qr", n), w.data(), tau.data());
      lapack::orgqr(static_cast<int>(m), static_cast<int>(m), static_cast<int>(k), w.data(), tau.data());
      from_col(w.data(), q.data(), m, m);
      T* d = kernels::out<T>(o) + b * m * (m - k);
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = k; j < m; ++j) d[i * (m - k) + (j - k)] = q[static_cast<std::size_t>(i * m + j)];
    }
    return 0;
  });
  return o;
}

// Packed [..., n + 1, n]: the eigenvalues (ascending), then the eigenvectors as columns.
Tensor eigh_forward(std::span<const Tensor> x, const Params& p) {
  const Tensor& a = x[0];
  const bool vectors = p.code == 0;
  const char* op = vectors ? "eigh" : "eigvalsh";
  need_square(op, a);
  const std::int64_t n = rows(a.shape()), nb = lead(a.shape()).numel();
  Tensor o = empty(lead(a.shape()) + (vectors ? Shape{n + 1, n} : Shape{n}), a.dtype());
  kernels::dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> w(static_cast<std::size_t>(n * n));
    for (std::int64_t b = 0; b < nb; ++b) {
      T* dst = kernels::out<T>(o) + b * (vectors ? (n + 1) * n : n);
      symmetrize(kernels::in<T>(a) + b * n * n, w.data(), n);
      if (int info = lapack::syevd(lapack_int(op, n), w.data(), dst); info > 0)
        throw ValueError(fmt::format("linalg.{}: the eigenvalue algorithm did not converge (LAPACK info {}), input {}{}", op, info,
                                     a.shape().str(), entry(lead(a.shape()), b)));
      if (vectors) from_col(w.data(), dst + n, n, n);
    }
    return 0;
  });
  return o;
}

// Packed [..., m*k + k + k*n]: U [m, k], S [k], Vh [k, n]; or only S (code 1, svdvals).
// Row-major A is column-major Aᵀ = V S Uᵀ: LAPACK's "U" of it, column-major n×k, is row-major
// Vh, and its "Vᵀ", column-major k×m, is row-major U. No transposes are needed.
Tensor svd_forward(std::span<const Tensor> x, const Params& p) {
  const Tensor& a = x[0];
  const bool vectors = p.code == 0;
  const char* op = vectors ? "svd" : "svdvals";
  need_matrix(op, a);
  const std::int64_t m = rows(a.shape()), n = cols(a.shape()), k = std::min(m, n), nb = lead(a.shape()).numel();
  const std::int64_t size = vectors ? m * k + k + k * n : k;
  Tensor o = empty(lead(a.shape()) + Shape{size}, a.dtype());
  kernels::dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> w(static_cast<std::size_t>(m * n));
    for (std::int64_t b = 0; b < nb; ++b) {
      T* u = kernels::out<T>(o) + b * size;
      T* s = vectors ? u + m * k : u;
      T* vh = s + k;
      const T* src = kernels::in<T>(a) + b * m * n;
      std::copy(src, src + m * n, w.begin());
      if (k == 0) continue;
      if (int info = lapack::gesdd(vectors ? 'S' : 'N', lapack_int(op, n), lapack_int(op, m), w.data(), s, vh, u); info > 0)
        throw ValueError(fmt::format("linalg.{}: the SVD did not converge (LAPACK info {}), input {}{}", op, info, a.shape().str(),
                                     entry(lead(a.shape()), b)));
    }
    return 0;
  });
  return o;
}

// ---- unpacking -----------------------------------------------------------------------------

struct QRParts {
  Tensor q, r;
};
QRParts qr_parts(const Tensor& packed, std::int64_t m, std::int64_t n) {
  const std::int64_t k = std::min(m, n);
  return {part(packed, 0, {m, k}), part(packed, m * k, {k, n})};
}
struct EighParts {
  Tensor w, v;
};
EighParts eigh_parts(const Tensor& packed) {
  const std::int64_t n = cols(packed.shape());
  return {squeeze(slice(packed, -2, 0, 1), -2), slice(packed, -2, 1, n + 1)};
}
struct SVDParts {
  Tensor u, s, vh;
};
SVDParts svd_parts(const Tensor& packed, std::int64_t m, std::int64_t n) {
  const std::int64_t k = std::min(m, n);
  return {part(packed, 0, {m, k}), slice(packed, -1, m * k, m * k + k), part(packed, m * k + k, {k, n})};
}

// ---- rules -----------------------------------------------------------------------------------

// F_ij = 1 / (λ_j - λ_i) off the diagonal, 0 on it (JAX's Fmat): the eigenvector (and singular
// vector) derivatives' divided differences; infinite for repeated values.
Tensor divided_differences(const Tensor& lambda_diff) {
  const Tensor i = eye_for(cols(lambda_diff.shape()), lambda_diff);
  return sub(div(scalar_tensor(1.0, lambda_diff.dtype()), add(lambda_diff, i)), i);
}

Tensor eigh_jvp(const Tensor& a_t, const Tensor& w, const Tensor& v, bool vectors) {
  Tensor s = matmul(matmul(v, sym(a_t), true, false), v);  // Vᵀ dA V
  Tensor w_t = diag_of(s);
  if (!vectors) return w_t;
  Tensor f = divided_differences(sub(unsqueeze(w, -2), unsqueeze(w, -1)));
  return concat({unsqueeze(w_t, -2), matmul(v, mul(f, s))}, -2);
}

Tensor eigh_vjp(const Tensor& ct, const Tensor& w, const Tensor& v) {
  auto [w_ct, v_ct] = eigh_parts(ct);
  Tensor f = divided_differences(sub(unsqueeze(w, -2), unsqueeze(w, -1)));
  Tensor g = add(diag_matrix(w_ct), mul(f, matmul(v, v_ct, true, false)));
  return sym(matmul(matmul(v, g), v, false, true));
}

Tensor svd_jvp(const Tensor& a_t, const SVDParts& f, std::int64_t m, std::int64_t n) {
  const Tensor v = mT(f.vh);
  Tensor ds = matmul(matmul(f.u, a_t, true, false), v);  // Uᵀ dA V [k, k]
  Tensor s_t = diag_of(ds);
  const Tensor s_row = unsqueeze(f.s, -2), s_col = unsqueeze(f.s, -1);  // s_j and s_i at (i, j)
  Tensor F = divided_differences(mul(add(s_row, s_col), sub(s_row, s_col)));  // 1 / (s_j² - s_i²)
  Tensor dss = mul(ds, s_row), sds = mul(s_col, ds);
  Tensor u_t = matmul(f.u, mul(F, add(dss, mT(dss))));
  Tensor v_t = matmul(v, mul(F, add(sds, mT(sds))));
  if (m > n) {
    Tensor dav = matmul(a_t, v);
    u_t = add(u_t, div(sub(dav, matmul(f.u, matmul(f.u, dav, true, false))), s_row));
  }
  if (n > m) {
    Tensor datu = matmul(a_t, f.u, true, false);
    v_t = add(v_t, div(sub(datu, matmul(v, matmul(v, datu, true, false))), s_row));
  }
  return concat({flat2(u_t), s_t, flat2(mT(v_t))}, -1);
}

Tensor svd_vjp(const Tensor& ct, const SVDParts& f, std::int64_t m, std::int64_t n) {
  auto [u_ct, s_ct, vh_ct] = svd_parts(ct, m, n);
  const Tensor v = mT(f.vh), v_ct = mT(vh_ct);
  const Tensor s_row = unsqueeze(f.s, -2), s_col = unsqueeze(f.s, -1);
  Tensor F = divided_differences(mul(add(s_row, s_col), sub(s_row, s_col)));
  Tensor utgu = matmul(f.u, u_ct, true, false), vtgv = matmul(v, v_ct, true, false);
  Tensor j = mul(F, utgu), k = mul(F, vtgv);
  Tensor g = add(add(diag_matrix(s_ct), mul(add(j, mT(j)), s_row)), mul(s_col, add(k, mT(k))));
  Tensor a_ct = matmul(matmul(f.u, g), f.vh);
  if (m > n) a_ct = add(a_ct, matmul(div(sub(u_ct, matmul(f.u, utgu)), s_row), f.vh));
  if (n > m) a_ct = add(a_ct, matmul(f.u, mT(div(sub(v_ct, matmul(v, vtgv)), s_row))));
  return a_ct;
}

void qr_derivative_shape(const Shape& a) {
  if (rows(a) < cols(a))
    throw ValueError(fmt::format("linalg.qr: the derivative is implemented for m >= n only (as JAX), got input {}", a.str()));
}

// ---- cases ---------------------------------------------------------------------------------

// Entries in [-0.9, 0.9] plus a constant: with n·I (or a rectangular diagonal 2, 4, 6, ...)
// added, every sample is far from singular (Gershgorin), also when a derived case repeats a row.
Tensor unit_sample(Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Unit, seed); }
Tensor spread_diagonal(std::int64_t m, std::int64_t n, double step, double first) {
  std::vector<double> v(static_cast<std::size_t>(m * n), 0.0);
  for (std::int64_t i = 0; i < std::min(m, n); ++i) v[static_cast<std::size_t>(i * n + i)] = first + step * static_cast<double>(i);
  return tensor(v, {m, n}, DType::f64);
}
Tensor shifted(const Tensor& x, double shift) {
  const Shape& s = x.shape();
  return add(x, cast(spread_diagonal(rows(s), cols(s), 0.0, shift), x.dtype()));
}
Tensor spread(const Tensor& x, double step = 2.0) {
  const Shape& s = x.shape();
  return add(x, cast(spread_diagonal(rows(s), cols(s), step, step), x.dtype()));
}
Tensor well_conditioned(const Tensor& x) { return shifted(x, static_cast<double>(cols(x.shape()))); }

// Cases over square matrices: the largest small one has a leading batch axis of 2, so the
// derived broadcast case repeats a batch entry, not a row.
std::vector<OpCase> square_cases(cases::Fn fn, std::uint64_t seed) {
  auto c = [&](std::string label, Shape s) { return cases::single(std::move(label), {unit_sample(s, seed++)}, fn); };
  return {c("[1,1]", {1, 1}), c("[3,3]", {3, 3}), c("[2,4,4] batched", {2, 4, 4}), c("[0,2,2] empty batch", {0, 2, 2}),
          c("[9,9] medium", {9, 9})};
}

}  // namespace

// ---- primitives ------------------------------------------------------------------------------

const Primitive inv_p{
    .name = "linalg_inv",
    .forward = inv_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) { return neg(matmul(matmul(c.out, t), c.out)); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return neg(matmul(matmul(c.out, ct, true, false), c.out, false, true)); },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] { return square_cases([](auto x) { return linalg::inv(well_conditioned(x[0])); }, 300); },
    .kinks = "singular A: no inverse (raises ValueError)",
};

const Primitive solve_p{
    .name = "linalg_solve",
    .forward = solve_forward,
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      return i == 1 ? solve_matrix(c.x[0], t) : neg(solve_matrix(c.x[0], matmul(t, c.out)));
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      Tensor b_ct = solve_matrix(mT(c.x[0]), ct);
      return i == 1 ? b_ct : neg(matmul(b_ct, c.out, false, true));
    },
    .batching = Batching::Broadcast,
    .saves = kSaveInputs | kSaveOutput,
    .cases = [] {
      auto f = [](std::span<const Tensor> x) { return linalg::solve(well_conditioned(x[0]), x[1]); };
      auto s = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); };
      return std::vector<OpCase>{
          cases::single("[3,3] x [3,2]", {unit_sample({3, 3}, 310), s({3, 2}, 311)}, f),
          cases::single("[3,3] x [3] vector", {unit_sample({3, 3}, 312), s({3}, 313)}, f),
          cases::single("[2,3,3] x [3,1] broadcast B", {unit_sample({2, 3, 3}, 314), s({3, 1}, 315)}, f),
          cases::single("[3,3] x [2,3,2] broadcast A", {unit_sample({3, 3}, 316), s({2, 3, 2}, 317)}, f),
          cases::single("[1,1] x [1,1]", {unit_sample({1, 1}, 318), s({1, 1}, 319)}, f),
          cases::single("[0,2,2] x [0,2,1] empty", {unit_sample({0, 2, 2}, 320), s({0, 2, 1}, 321)}, f),
          cases::single("[9,9] x [9,3] medium", {unit_sample({9, 9}, 322), s({9, 3}, 323)}, f),
      };
    },
    .kinks = "singular A: no solution (raises ValueError)",
};

const Primitive solve_triangular_p{
    .name = "linalg_solve_triangular",
    .forward = solve_triangular_forward,
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      const Tri tr = c.p.attrs<Tri>();
      if (i == 1) return solve_tri(c.x[0], t, tr);
      Tensor a_t = triangle(t, tr);
      return neg(solve_tri(c.x[0], tr.left ? matmul(a_t, c.out) : matmul(c.out, a_t), tr));
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      const Tri tr = c.p.attrs<Tri>();
      Tensor b_ct = solve_tri(mT(c.x[0]), ct, {!tr.upper, tr.left, tr.unit});
      if (i == 1) return b_ct;
      return neg(triangle(tr.left ? matmul(b_ct, c.out, false, true) : matmul(c.out, b_ct, true, false), tr));
    },
    .batching = Batching::Broadcast,
    .saves = kSaveInputs | kSaveOutput,
    .cases = [] {
      auto s = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); };
      auto st = [](bool upper, bool left, bool unit) {
        return [=](std::span<const Tensor> x) { return linalg::solve_triangular(well_conditioned(x[0]), x[1], upper, left, unit); };
      };
      return std::vector<OpCase>{
          cases::single("upper left [3,3] x [3,2]", {unit_sample({3, 3}, 330), s({3, 2}, 331)}, st(true, true, false)),
          cases::single("lower left [2,3,3] x [3,2]", {unit_sample({2, 3, 3}, 332), s({3, 2}, 333)}, st(false, true, false)),
          cases::single("upper right [2,3] x [3,3]", {unit_sample({3, 3}, 334), s({2, 3}, 335)}, st(true, false, false)),
          cases::single("lower right unit [2,3,3] x [2,2,3]", {unit_sample({2, 3, 3}, 336), s({2, 2, 3}, 337)}, st(false, false, true)),
          cases::single("upper left unit [1,1] x [1,1]", {unit_sample({1, 1}, 338), s({1, 1}, 339)}, st(true, true, true)),
          cases::single("lower left [0,2,2] x [2,1] empty", {unit_sample({0, 2, 2}, 340), s({2, 1}, 341)}, st(false, true, false)),
          cases::single("lower left [9,9] x [9,3] medium", {unit_sample({9, 9}, 342), s({9, 3}, 343)}, st(false, true, false)),
      };
    },
    .kinks = "a zero diagonal entry: singular (raises ValueError)",
};

const Primitive det_p{
    .name = "linalg_det",
    .forward = det_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) { return mul(c.out, trace_of(solve_matrix(c.x[0], t))); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      return mul(unsqueeze(unsqueeze(mul(ct, c.out), -1), -1), mT(linalg::inv(c.x[0])));
    },
    .batching = Batching::Leading,
    .saves = kSaveInputs | kSaveOutput,
    .cases = [] {
      auto cs = square_cases([](auto x) { return linalg::det(well_conditioned(x[0])); }, 350);
      // A negative determinant: rows 0 and 1 exchanged.
      cs.push_back(cases::single("[3,3] negative", {unit_sample({3, 3}, 356)}, [](auto x) {
        Tensor a = well_conditioned(x[0]);
        return linalg::det(concat({slice(a, 0, 1, 2), slice(a, 0, 0, 1), slice(a, 0, 2, 3)}, 0));
      }));
      return cs;
    },
    .kinks = "singular A: the derivative (the adjugate) is not computed; the rule's inverse raises ValueError",
};

const Primitive slogdet_p{
    .name = "linalg_slogdet",
    .forward = slogdet_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      return pad(unsqueeze(trace_of(solve_matrix(c.x[0], t)), -1), -1, 1, 0);  // the sign is constant
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      return mul(unsqueeze(slice(ct, -1, 1, 2), -1), mT(linalg::inv(c.x[0])));
    },
    .batching = Batching::Leading,
    .saves = kSaveInputs,
    .cases = [] {
      auto cs = square_cases([](auto x) { return linalg::slogdet(well_conditioned(x[0])).logabsdet; }, 360);
      cs.push_back(cases::single("[3,3] negative, sign and log", {unit_sample({3, 3}, 366)}, [](auto x) {
        Tensor a = neg(well_conditioned(x[0]));
        auto [s, l] = linalg::slogdet(a);
        return stack({s, l});
      }));
      return cs;
    },
    .kinks = "sign: piecewise constant (zero derivative); singular A: logabsdet = -inf, its derivative not computed (the "
             "rule's inverse raises ValueError)",
};

const Primitive cholesky_p{
    .name = "linalg_cholesky",
    .forward = cholesky_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      // dL = L Φ(L⁻¹ sym(dA) L⁻ᵀ), Φ: the lower triangle with the diagonal halved (Murray 2016).
      const Tensor& l = c.out;
      const std::int64_t n = cols(l.shape());
      Tensor p = solve_tri(mT(l), solve_tri(l, sym(t), {false, true, false}), {true, false, false});
      return matmul(l, mul(p, band_mask(n, false, 0, l.dtype(), 0.5)));
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      // The adjoint of the JVP: sym(L⁻ᵀ Φ(Lᵀ Ḡ) L⁻¹).
      const Tensor& l = c.out;
      const std::int64_t n = cols(l.shape());
      Tensor z = mul(matmul(l, ct, true, false), band_mask(n, false, 0, l.dtype(), 0.5));
      return sym(solve_tri(l, solve_tri(mT(l), z, {true, true, false}), {false, false, false}));
    },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] { return square_cases([](auto x) { return linalg::cholesky(well_conditioned(x[0])); }, 370); },
    .kinks = "defined on symmetric positive-definite A (symmetrised first, as JAX); not positive definite: raises ValueError",
};

const Primitive qr_p{
    .name = "linalg_qr",
    .forward = qr_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      // JAX's qr_jvp_rule (m >= n): C = Qᵀ dA R⁻¹, Ω = tril(C, -1) - tril(C, -1)ᵀ,
      // dQ = Q (Ω - C) + dA R⁻¹, dR = (C - Ω) R.
      const Shape& s = c.shape(0);
      qr_derivative_shape(s);
      auto [q, r] = qr_parts(c.out, rows(s), cols(s));
      Tensor dx = solve_tri(r, t, {true, false, false});
      Tensor cm = matmul(q, dx, true, false);
      Tensor lo = lower_part(cm, -1);
      Tensor omega = sub(lo, mT(lo));
      Tensor q_t = add(matmul(q, sub(omega, cm)), dx);
      Tensor r_t = matmul(sub(cm, omega), r);
      return concat({flat2(q_t), flat2(r_t)}, -1);
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      // The adjoint: M = Qᵀ Q̄ - R̄ Rᵀ, Ā = (Q̄ + Q (tril(M - Mᵀ, -1) - M)) R⁻ᵀ.
      const Shape& s = c.shape(0);
      qr_derivative_shape(s);
      auto [q, r] = qr_parts(c.out, rows(s), cols(s));
      auto [q_ct, r_ct] = qr_parts(ct, rows(s), cols(s));
      Tensor mm = sub(matmul(q, q_ct, true, false), matmul(r_ct, r, false, true));
      Tensor nn = sub(lower_part(sub(mm, mT(mm)), -1), mm);
      return solve_tri(mT(r), add(q_ct, matmul(q, nn)), {false, false, false});
    },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] {
      auto f = [](std::span<const Tensor> x) {
        auto [q, r] = linalg::qr(spread(x[0]));
        return concat({flat2(q), flat2(r)}, -1);
      };
      return std::vector<OpCase>{
          cases::single("[3,3]", {unit_sample({3, 3}, 380)}, f),       cases::single("[4,2] tall", {unit_sample({4, 2}, 381)}, f),
          cases::single("[2,5,3] batched", {unit_sample({2, 5, 3}, 382)}, f), cases::single("[1,1]", {unit_sample({1, 1}, 383)}, f),
          cases::single("[0,3,2] empty batch", {unit_sample({0, 3, 2}, 384)}, f), cases::single("[10,8] medium", {unit_sample({10, 8}, 385)}, f),
      };
    },
    .kinks = "rank-deficient A: R is singular and the derivative infinite; m < n: no derivative (raises, as JAX)",
};

// No derivative (the complement's basis is not unique: any rotation of it serves), so it is a
// constant to every transform: svd's full_matrices ignores the gradients of U's extra columns and
// Vh's extra rows, as PyTorch; qr's mode "complete" for m > n refuses differentiation first.
const Primitive qr_complement_p{
    .name = "linalg_qr_complement",
    .forward = qr_complement_forward,
    .batching = Batching::Leading,
    .kinks = "no derivative: the complement's basis is not unique (full_matrices SVD ignores its gradients; "
             "complete QR with m > n raises an AutodiffError when differentiated, as PyTorch)",
};

const Primitive eigh_p{
    .name = "linalg_eigh",
    .forward = eigh_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      auto [w, v] = eigh_parts(c.out);
      return eigh_jvp(t, w, v, true);
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      auto [w, v] = eigh_parts(c.out);
      return eigh_vjp(ct, w, v);
    },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] {
      // Eigenvectors only up to sign: the cases look at V ⊙ V, which is not affected by it.
      return square_cases(
          [](auto x) {
            auto [w, v] = linalg::eigh(spread(x[0], 3.0));
            return concat({w, flat2(mul(v, v))}, -1);
          },
          390);
    },
    .kinks = "repeated eigenvalues: the eigenvectors' derivative is undefined (1 / (λ_j - λ_i) gives inf/nan, as JAX)",
};

const Primitive eigvalsh_p{
    .name = "linalg_eigvalsh",
    .forward = eigh_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      auto [w, v] = linalg::eigh(c.x[0]);
      return eigh_jvp(t, w, v, false);
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      Tensor v = linalg::eigh(c.x[0]).eigenvectors;
      return matmul(mul(v, unsqueeze(ct, -2)), v, false, true);  // V diag(w̄) Vᵀ
    },
    .batching = Batching::Leading,
    .saves = kSaveInputs,
    .cases = [] { return square_cases([](auto x) { return linalg::eigvalsh(spread(x[0], 3.0)); }, 400); },
    .kinks = "repeated eigenvalues: not differentiable; the rule gives a finite one-sided choice",
};

const Primitive svd_p{
    .name = "linalg_svd",
    .forward = svd_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      const Shape& s = c.shape(0);
      return svd_jvp(t, svd_parts(c.out, rows(s), cols(s)), rows(s), cols(s));
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      const Shape& s = c.shape(0);
      return svd_vjp(ct, svd_parts(c.out, rows(s), cols(s)), rows(s), cols(s));
    },
    .batching = Batching::Leading,
    .saves = kSaveOutput,
    .cases = [] {
      // Singular vectors only up to a joint sign: the cases look at U ⊙ U, Vh ⊙ Vh and U Vh.
      auto f = [](std::span<const Tensor> x) {
        auto [u, s, vh] = linalg::svd(spread(x[0]));
        return concat({s, flat2(mul(u, u)), flat2(mul(vh, vh)), flat2(matmul(u, vh))}, -1);
      };
      return std::vector<OpCase>{
          cases::single("[3,3]", {unit_sample({3, 3}, 410)}, f),         cases::single("[4,2] tall", {unit_sample({4, 2}, 411)}, f),
          cases::single("[2,3,5] wide batched", {unit_sample({2, 3, 5}, 412)}, f), cases::single("[1,1]", {unit_sample({1, 1}, 413)}, f),
          cases::single("[0,2,3] empty batch", {unit_sample({0, 2, 3}, 414)}, f), cases::single("[9,8] medium", {unit_sample({9, 8}, 415)}, f),
      };
    },
    .kinks = "repeated or zero singular values: the singular vectors' derivative is undefined (inf/nan, as JAX)",
};

const Primitive svdvals_p{
    .name = "linalg_svdvals",
    .forward = svd_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      auto [u, s, vh] = linalg::svd(c.x[0]);
      return sum(mul(u, matmul(t, vh, false, true)), {-2});  // diag(Uᵀ dA V)
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      auto [u, s, vh] = linalg::svd(c.x[0]);
      return matmul(mul(u, unsqueeze(ct, -2)), vh);  // U diag(s̄) Vh
    },
    .batching = Batching::Leading,
    .saves = kSaveInputs,
    .cases = [] {
      auto f = [](std::span<const Tensor> x) { return linalg::svdvals(spread(x[0])); };
      return std::vector<OpCase>{
          cases::single("[3,3]", {unit_sample({3, 3}, 420)}, f),       cases::single("[2,4,2] tall batched", {unit_sample({2, 4, 2}, 421)}, f),
          cases::single("[2,5] wide", {unit_sample({2, 5}, 422)}, f),   cases::single("[0,2,2] empty batch", {unit_sample({0, 2, 2}, 423)}, f),
          cases::single("[9,8] medium", {unit_sample({9, 8}, 424)}, f),
      };
    },
    .kinks = "repeated singular values: not differentiable (the rule picks one pairing of the vectors); zero singular "
             "values: |x|-like kink",
};

// ---- vector_norm ---------------------------------------------------------------------------
// One primitive for every ord; its rules are the gradient g(x) = ∂‖x‖/∂x times the tangent or
// cotangent, g written with differentiable ops so second derivatives work.
namespace {

Params norm_params(const Tensor& x, double ord, const Axes& axes, bool keepdims) {
  Params p;
  const auto r = x.shape().size();
  Shape norm;
  if (axes.empty())
    for (std::size_t i = 0; i < r; ++i) norm.push_back(static_cast<std::int64_t>(i));
  else
    for (auto a : axes) norm.push_back(kernels::norm_axis("linalg.vector_norm", a, r));
  std::sort(norm.begin(), norm.end());
  for (std::size_t i = 1; i < norm.size(); ++i)
    if (norm[i] == norm[i - 1])
      throw ShapeError(fmt::format("linalg.vector_norm: axis {} repeated for shape {}", norm[i], x.shape().str()));
  for (auto a : norm) p.axes.push_back(a - static_cast<std::int64_t>(r));
  p.keepdims = keepdims;
  p.scalar = ord;
  return p;
}
Axes axes_of(const Params& p) {
  Axes a;
  for (auto v : p.axes) a.push_back(v);
  return a;
}
// The output with its reduced axes kept (size 1), to broadcast against the input.
Tensor kept(const Tensor& out, const Shape& in, const Params& p) {
  if (p.keepdims) return out;
  Shape s = in;
  for (auto a : p.axes) s[static_cast<std::size_t>(a + static_cast<std::int64_t>(in.size()))] = 1;
  return reshape(out, s);
}

Tensor vector_norm_forward(std::span<const Tensor> x, const Params& p) {
  kernels::dispatch_float(x[0].dtype(), "linalg.vector_norm", [](auto) { return 0; });
  NoGradGuard no_grad;  // concrete values: plain reductions, nothing recorded
  const Tensor& v = x[0];
  const double ord = p.scalar;
  const Axes ax = axes_of(p);
  Tensor a = abs(v);
  if (ord == 2) return sqrt(sum(mul(v, v), ax, p.keepdims));
  if (ord == 1) return sum(a, ax, p.keepdims);
  if (ord == linalg::inf) return max(a, ax, p.keepdims);
  if (ord == -linalg::inf) return neg(max(neg(a), ax, p.keepdims));
  return pow(sum(pow(a, ord), ax, p.keepdims), 1.0 / ord);
}

// ∂‖x‖/∂x, 0 where ‖x‖ = 0 (PyTorch's choice of subgradient).
Tensor norm_gradient(const Tensor& x, const Tensor& out, const Params& p) {
  const double ord = p.scalar;
  if (ord == 1) return sign(x);
  const Tensor n = kept(out, x.shape(), p);
  const Tensor zero = scalar_tensor(0.0, x.dtype()), one = scalar_tensor(1.0, x.dtype());
  if (ord == linalg::inf || ord == -linalg::inf) {
    // Ties at the maximum (minimum) share the gradient equally.
    Tensor at = cast(equal(abs(x), n), x.dtype());
    return div(mul(sign(x), at), sum(at, axes_of(p), true));
  }
  const Tensor safe = where(equal(n, zero), one, n);  // finite in both branches: no NaN through where
  if (ord == 2) return div(x, safe);
  return mul(sign(x), div(pow(abs(x), ord - 1), pow(safe, ord - 1)));
}

}  // namespace

const Primitive vector_norm_p{
    .name = "linalg_vector_norm",
    .forward = vector_norm_forward,
    .jvp = [](int, const Tensor& t, const Ctx& c) {
      return sum(mul(t, norm_gradient(c.x[0], c.out, c.p)), axes_of(c.p), c.p.keepdims);
    },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      return mul(kept(ct, c.shape(0), c.p), norm_gradient(c.x[0], c.out, c.p));
    },
    .batching = Batching::Leading,
    .saves = kSaveInputs | kSaveOutput,
    .cases = [] {
      auto s = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::AwayFromZero, seed); };
      auto nf = [](double ord, Axes axes, bool keep) {
        return [=](std::span<const Tensor> x) { return linalg::vector_norm(x[0], ord, axes, keep); };
      };
      return std::vector<OpCase>{
          cases::single("ord 2 [5]", {s({5}, 430)}, nf(2, {}, false)),
          cases::single("ord 2 [2,3] axis 1 keepdims", {s({2, 3}, 431)}, nf(2, {1}, true)),
          cases::single("ord 1 [3,4] axis 0", {s({3, 4}, 432)}, nf(1, {0}, false)),
          cases::single("ord inf [2,3,4] axes (0, 2)", {s({2, 3, 4}, 433)}, nf(linalg::inf, {0, 2}, false)),
          cases::single("ord -inf [4,3] axis -1", {s({4, 3}, 434)}, nf(-linalg::inf, {-1}, false)),
          cases::single("ord 3 [3,4] axis 1", {s({3, 4}, 435)}, nf(3, {1}, false)),
          cases::single("ord 0.5 [3,1,2]", {s({3, 1, 2}, 436)}, nf(0.5, {}, false)),
          cases::single("ord 2 [0,3] axis 1 empty", {s({0, 3}, 437)}, nf(2, {1}, false)),
          cases::single("ord 2 [12,10] axis 0 medium", {s({12, 10}, 438)}, nf(2, {0}, false)),
      };
    },
    .kinks = "x = 0: not differentiable, the rule gives 0 (PyTorch's subgradient); ord 1: sign(0) = 0; ord ±inf: ties "
             "share the gradient equally; 0 < ord < 1: infinite derivative at a zero entry",
};

namespace linalg {

Tensor inv(const Tensor& a) { return bind(inv_p, {a}); }

Tensor solve(const Tensor& a, const Tensor& b) {
  need_square("solve", a);
  if (b.dim() == 1) return squeeze(solve_matrix(a, unsqueeze(b, -1)), -1);  // the array API's vector case
  return solve_matrix(a, b);
}

Tensor solve_triangular(const Tensor& a, const Tensor& b, bool upper, bool left, bool unitriangular) {
  return solve_tri(a, b, {upper, left, unitriangular});
}

Tensor det(const Tensor& a) { return bind(det_p, {a}); }

SlogdetResult slogdet(const Tensor& a) {
  Tensor packed = bind(slogdet_p, {a});
  return {squeeze(slice(packed, -1, 0, 1), -1), squeeze(slice(packed, -1, 1, 2), -1)};
}

Tensor cholesky(const Tensor& a, bool upper) {
  Tensor l = bind(cholesky_p, {a});
  return upper ? mT(l) : l;
}

namespace {
// Whether a derivative is being taken through x: a forward or reverse tracer at some level, or an
// eager value with a node while grad mode is on (vmap alone differentiates nothing).
bool differentiated(const Tensor& x) {
  for (const TensorImpl* t = x.impl(); t != nullptr; t = t->primal.impl()) {
    if (!t->frame) return t->node != nullptr && GradMode::is_enabled();
    if (t->frame->kind != TraceKind::Batch) return true;
  }
  return false;
}
}  // namespace

QRResult qr(const Tensor& a, std::string_view mode) {
  need_matrix("qr", a);
  if (mode != "reduced" && mode != "complete" && mode != "r")
    throw ValueError(fmt::format("linalg.qr: mode must be 'reduced', 'complete' or 'r', got '{}'", mode));
  const std::int64_t m = rows(a.shape()), n = cols(a.shape());
  auto [q, r] = qr_parts(bind(qr_p, {a}), m, n);
  if (mode == "r") return {empty(Shape{0}, a.dtype()), r};  // PyTorch's empty Q
  if (mode == "complete" && m > n) {  // Q [m, m] and R [m, n] with zero rows below the reduced R
    if (differentiated(a))
      throw AutodiffError(fmt::format("linalg.qr: mode 'complete' is not differentiable for m > n (as PyTorch), got input {}; "
                                      "use mode 'reduced'", a.shape().str()));
    return {concat({q, bind(qr_complement_p, {a})}, -1), pad(r, -2, 0, m - n)};
  }
  return {q, r};  // m <= n: the complete factors are the reduced ones
}

EighResult eigh(const Tensor& a) {
  auto [w, v] = eigh_parts(bind(eigh_p, {a}));
  return {w, v};
}

Tensor eigvalsh(const Tensor& a) {
  Params p;
  p.code = 1;
  return bind(eigvalsh_p, {a}, p);
}

SVDResult svd(const Tensor& a, bool full_matrices) {
  need_matrix("svd", a);
  const std::int64_t m = rows(a.shape()), n = cols(a.shape());
  auto [u, s, vh] = svd_parts(bind(svd_p, {a}), m, n);
  if (full_matrices && m != n) {  // complete U or Vh with an orthonormal basis of the complement
    if (m > n) u = concat({u, bind(qr_complement_p, {u})}, -1);
    else vh = concat({vh, mT(bind(qr_complement_p, {mT(vh)}))}, -2);
  }
  return {u, s, vh};
}

Tensor svdvals(const Tensor& a) {
  Params p;
  p.code = 1;
  return bind(svdvals_p, {a}, p);
}

Tensor vector_norm(const Tensor& x, double ord, const Axes& axes, bool keepdims) {
  Params p = norm_params(x, ord, axes, keepdims);
  if (ord == 0) {  // the number of non-zero entries: piecewise constant
    Tensor nz = sub(scalar_tensor(1.0, x.dtype()), cast(equal(x, scalar_tensor(0.0, x.dtype())), x.dtype()));
    return sum(nz, axes_of(p), keepdims);
  }
  return bind(vector_norm_p, {x}, p);
}

Tensor matrix_norm(const Tensor& x, std::string_view ord, bool keepdims) {
  need_matrix("matrix_norm", x);
  Tensor n;
  if (ord == "fro") return vector_norm(x, 2, {-2, -1}, keepdims);
  if (ord == "nuc")
    n = sum(svdvals(x), {-1});
  else
    throw ValueError(fmt::format("linalg.matrix_norm: ord must be \"fro\", \"nuc\", 1, -1, 2, -2, inf or -inf, got \"{}\"", ord));
  return keepdims ? unsqueeze(unsqueeze(n, -1), -1) : n;
}

Tensor matrix_norm(const Tensor& x, double ord, bool keepdims) {
  need_matrix("matrix_norm", x);
  auto largest = [](const Tensor& v, bool most) { return most ? max(v, {-1}) : neg(max(neg(v), {-1})); };
  Tensor n;
  if (ord == 1 || ord == -1) n = largest(sum(abs(x), {-2}), ord > 0);  // column sums
  else if (ord == inf || ord == -inf) n = largest(sum(abs(x), {-1}), ord > 0);  // row sums
  else if (ord == 2 || ord == -2) n = largest(svdvals(x), ord > 0);
  else
    throw ValueError(fmt::format("linalg.matrix_norm: ord must be \"fro\", \"nuc\", 1, -1, 2, -2, inf or -inf, got {}", ord));
  return keepdims ? unsqueeze(unsqueeze(n, -1), -1) : n;
}

Tensor pinv(const Tensor& a, double rtol) {
  need_matrix("pinv", a);
  const std::int64_t m = rows(a.shape()), n = cols(a.shape());
  if (rtol < 0) rtol = static_cast<double>(std::max(m, n)) * machine_eps(a.dtype());
  auto [u, s, vh] = svd(a);
  if (std::min(m, n) == 0) return zeros(lead(a.shape()) + Shape{n, m}, a.dtype());
  // Singular values below the cutoff count as zero; the comparison is piecewise constant.
  Tensor cutoff = mul(max(s, {-1}, true), scalar_tensor(rtol, a.dtype()));
  Tensor keep = greater(s, cutoff);
  Tensor one = scalar_tensor(1.0, a.dtype()), zero = scalar_tensor(0.0, a.dtype());
  Tensor s_inv = where(keep, div(one, where(keep, s, one)), zero);
  return matmul(mul(mT(vh), unsqueeze(s_inv, -2)), u, false, true);  // V diag(1/s) Uᵀ
}

Tensor matrix_power(const Tensor& a, std::int64_t n) {
  need_square("matrix_power", a);
  if (n == 0) return broadcast_to(eye(rows(a.shape()), a.dtype()), a.shape());
  Tensor base = n < 0 ? inv(a) : a;
  Tensor result;
  for (std::int64_t k = n < 0 ? -n : n; k > 0; k >>= 1) {
    if (k & 1) result = result.defined() ? matmul(result, base) : base;
    if (k > 1) base = matmul(base, base);
  }
  return result;
}

Tensor matrix_rank(const Tensor& a, double rtol) {
  need_matrix("matrix_rank", a);
  const std::int64_t m = rows(a.shape()), n = cols(a.shape());
  if (std::min(m, n) == 0) return zeros(lead(a.shape()), DType::i64);
  if (rtol < 0) rtol = static_cast<double>(std::max(m, n)) * machine_eps(a.dtype());
  Tensor s = svdvals(a);
  Tensor above = greater(s, mul(max(s, {-1}, true), scalar_tensor(rtol, a.dtype())));
  return cast(sum(cast(above, a.dtype()), {-1}), DType::i64);
}

Tensor cross(const Tensor& a, const Tensor& b, std::int64_t axis) {
  const bool ok = axis < 0 && -axis <= std::min(a.dim(), b.dim()) && a.shape()[static_cast<std::size_t>(a.dim() + axis)] == 3 &&
                  b.shape()[static_cast<std::size_t>(b.dim() + axis)] == 3;
  if (!ok)
    throw ShapeError(fmt::format("linalg.cross: axis {} must be negative and of size 3 in both {} and {}", axis, a.shape().str(),
                                 b.shape().str()));
  auto at = [axis](const Tensor& x, std::int64_t i) { return slice(x, axis, i, i + 1); };
  return concat({sub(mul(at(a, 1), at(b, 2)), mul(at(a, 2), at(b, 1))), sub(mul(at(a, 2), at(b, 0)), mul(at(a, 0), at(b, 2))),
                 sub(mul(at(a, 0), at(b, 1)), mul(at(a, 1), at(b, 0)))},
                axis);
}

Tensor matrix_transpose(const Tensor& x) {
  need_matrix("matrix_transpose", x);
  return mT(x);
}

Tensor outer(const Tensor& a, const Tensor& b) {
  if (a.dim() != 1 || b.dim() != 1)
    throw ShapeError(fmt::format("linalg.outer: expected two vectors, got {} and {}", a.shape().str(), b.shape().str()));
  return mul(unsqueeze(a, -1), unsqueeze(b, 0));
}

Tensor diagonal(const Tensor& x, std::int64_t offset) {
  need_matrix("diagonal", x);
  const std::int64_t m = rows(x.shape()), n = cols(x.shape());
  const std::int64_t r0 = std::max<std::int64_t>(0, -offset), c0 = std::max<std::int64_t>(0, offset);
  const std::int64_t len = std::max<std::int64_t>(0, std::min(m - r0, n - c0));
  // The len×len block that holds the diagonal, then its main diagonal.
  Tensor block = slice(slice(x, -2, std::min(r0, m), std::min(r0, m) + len), -1, std::min(c0, n), std::min(c0, n) + len);
  return sum(mul(block, eye(len, x.dtype())), {-1});
}

Tensor trace(const Tensor& x, std::int64_t offset) { return sum(diagonal(x, offset), {-1}); }

Tensor vecdot(const Tensor& a, const Tensor& b, std::int64_t axis) {
  // The array API's rule: a negative axis within both ranks, of the same size in both.
  if (axis >= 0 || -axis > std::min(a.dim(), b.dim()) ||
      a.shape()[static_cast<std::size_t>(a.dim() + axis)] != b.shape()[static_cast<std::size_t>(b.dim() + axis)])
    throw ShapeError(fmt::format("linalg.vecdot: axis {} must be negative and of the same size in {} and {}", axis,
                                 a.shape().str(), b.shape().str()));
  return sum(mul(a, b), {axis});
}

Tensor tensordot(const Tensor& a, const Tensor& b, const Axes& a_axes, const Axes& b_axes) {
  if (a_axes.size() != b_axes.size())
    throw ShapeError(fmt::format("linalg.tensordot: {} axes of a against {} axes of b", a_axes.size(), b_axes.size()));
  std::vector<bool> ca(static_cast<std::size_t>(a.dim()), false), cb(static_cast<std::size_t>(b.dim()), false);
  Axes pa, pb, na, nb;
  std::int64_t k = 1;
  for (std::size_t i = 0; i < a_axes.size(); ++i) {
    const std::int64_t x = kernels::norm_axis("linalg.tensordot", a_axes[i], a.shape().size());
    const std::int64_t y = kernels::norm_axis("linalg.tensordot", b_axes[i], b.shape().size());
    if (ca[static_cast<std::size_t>(x)] || cb[static_cast<std::size_t>(y)] || a.shape()[static_cast<std::size_t>(x)] != b.shape()[static_cast<std::size_t>(y)])
      throw ShapeError(fmt::format("linalg.tensordot: cannot contract axis {} of {} with axis {} of {}", a_axes[i], a.shape().str(),
                                   b_axes[i], b.shape().str()));
    ca[static_cast<std::size_t>(x)] = cb[static_cast<std::size_t>(y)] = true;
    na.push_back(x);
    nb.push_back(y);
    k *= a.shape()[static_cast<std::size_t>(x)];
  }
  Shape out;
  std::int64_t m = 1, n = 1;
  for (std::int64_t i = 0; i < a.dim(); ++i)
    if (!ca[static_cast<std::size_t>(i)]) pa.push_back(i), out.push_back(a.shape()[static_cast<std::size_t>(i)]), m *= a.shape()[static_cast<std::size_t>(i)];
  for (auto x : na) pa.push_back(x);
  for (auto y : nb) pb.push_back(y);
  for (std::int64_t i = 0; i < b.dim(); ++i)
    if (!cb[static_cast<std::size_t>(i)]) pb.push_back(i), out.push_back(b.shape()[static_cast<std::size_t>(i)]), n *= b.shape()[static_cast<std::size_t>(i)];
  // Free axes of a, contracted axes last; contracted axes of b first: one matrix product.
  Tensor am = reshape(permute(a, pa), {m, k}), bm = reshape(permute(b, pb), {k, n});
  return reshape(matmul(am, bm), out);
}

Tensor tensordot(const Tensor& a, const Tensor& b, std::int64_t axes) {
  if (axes < 0 || axes > a.dim() || axes > b.dim())
    throw ShapeError(fmt::format("linalg.tensordot: cannot contract {} axes of {} and {}", axes, a.shape().str(), b.shape().str()));
  Axes aa, bb;
  for (std::int64_t i = 0; i < axes; ++i) aa.push_back(a.dim() - axes + i), bb.push_back(i);
  return tensordot(a, b, aa, bb);
}

}  // namespace linalg

const Primitive* const kLinalgLapackPrimitives[] = {&inv_p, &solve_p, &solve_triangular_p, &det_p,   &slogdet_p, &cholesky_p,
                                                    &qr_p,  &qr_complement_p, &eigh_p,  &eigvalsh_p,         &svd_p,   &svdvals_p, &vector_norm_p};
std::span<const Primitive* const> linalg_lapack_primitives() { return kLinalgLapackPrimitives; }

}  // namespace chainrule
