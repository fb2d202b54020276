#pragma once
// chainrule::linalg: the array API's linear-algebra extension (torch.linalg, jax.numpy.linalg),
// differentiable to any order. Matrices are the last two axes; leading axes are a batch (and
// broadcast between the two operands of solve and solve_triangular). float32 and float64, on the
// LAPACK inside OpenBLAS. Factorisations of a matrix that has none (a singular matrix in inv or
// solve, a matrix that is not positive definite in cholesky) raise ValueError naming the op, the
// shape, the batch entry and the failing index.
#include <cstdint>
#include <limits>
#include <string_view>

#include "chainrule/ops/ops.h"
#include "chainrule/tensor/tensor.h"

namespace chainrule::linalg {

// A⁻¹ of A [..., n, n].
Tensor inv(const Tensor& a);
// X with A X = B: A [..., n, n], B [..., n, k] (or B [n], a vector, as the array API says).
Tensor solve(const Tensor& a, const Tensor& b);
// X with A X = B (left) or X A = B (right), reading only A's upper or lower triangle
// (torch.linalg.solve_triangular); unitriangular takes A's diagonal to be ones.
Tensor solve_triangular(const Tensor& a, const Tensor& b, bool upper, bool left = true, bool unitriangular = false);
Tensor det(const Tensor& a);
struct SlogdetResult {
  Tensor sign;       // -1, 0 or 1 (no derivative)
  Tensor logabsdet;  // log |det A|
};
SlogdetResult slogdet(const Tensor& a);
// L lower with L Lᵀ = A for A symmetric positive definite [..., n, n] (upper: U = Lᵀ with
// Uᵀ U = A). A is symmetrised, (A + Aᵀ) / 2, as JAX does, so the derivative is exact in every
// direction.
Tensor cholesky(const Tensor& a, bool upper = false);

// QR of A [..., m, n], k = min(m, n). mode "reduced": Q [..., m, k] with orthonormal columns, R
// [..., k, n] upper triangular; derivatives for m >= n (as JAX). "complete": Q [..., m, m], R
// [..., m, n] (zero rows below k); for m <= n the reduced factors, for m > n no derivative (an
// AutodiffError, as PyTorch). "r": R only, Q an empty tensor [0] (PyTorch's mode "r").
struct QRResult {
  Tensor Q, R;
};
QRResult qr(const Tensor& a, std::string_view mode = "reduced");
// Eigenvalues in ascending order [..., n] and eigenvectors (columns) [..., n, n] of the symmetric
// matrix (A + Aᵀ) / 2.
struct EighResult {
  Tensor eigenvalues, eigenvectors;
};
EighResult eigh(const Tensor& a);
Tensor eigvalsh(const Tensor& a);
// SVD A = U diag(S) Vh: U [..., m, k], S [..., k] descending, Vh [..., k, n], k = min(m, n)
// (full_matrices = false, the default here). full_matrices: U [..., m, m] and Vh [..., n, n], the
// extra columns of U (rows of Vh) an orthonormal basis of the complement whose gradients are
// ignored, as PyTorch's (derivatives flow through the reduced part).
struct SVDResult {
  Tensor U, S, Vh;
};
SVDResult svd(const Tensor& a, bool full_matrices = false);
Tensor svdvals(const Tensor& a);

// Norms. vector_norm: (Σ |x|^ord)^(1/ord) over `axes` (all when empty); ord 2, 1, inf, -inf, 0
// (the count of non-zeros, no derivative) or any other p. matrix_norm over the last two axes:
// "fro" or "nuc", or ord 1, -1, 2, -2, inf, -inf as the array API defines them.
constexpr double inf = std::numeric_limits<double>::infinity();
Tensor vector_norm(const Tensor& x, double ord = 2, const Axes& axes = {}, bool keepdims = false);
Tensor matrix_norm(const Tensor& x, std::string_view ord = "fro", bool keepdims = false);
Tensor matrix_norm(const Tensor& x, double ord, bool keepdims = false);
// Moore-Penrose pseudo-inverse by the SVD; singular values at most rtol * max(S) count as zero
// (rtol < 0: max(m, n) * machine epsilon, as the array API).
Tensor pinv(const Tensor& a, double rtol = -1);

// The array API's other linear-algebra functions, as compositions.
using chainrule::matmul;
Tensor matrix_power(const Tensor& a, std::int64_t n);  // by repeated squaring; n < 0 powers inv(a)
// The number of singular values above rtol * max(S) (rtol < 0: max(m, n) * eps), int64.
Tensor matrix_rank(const Tensor& a, double rtol = -1);
Tensor cross(const Tensor& a, const Tensor& b, std::int64_t axis = -1);  // 3-vectors along axis
Tensor matrix_transpose(const Tensor& x);                              // swaps the last two axes
Tensor outer(const Tensor& a, const Tensor& b);                        // a [m], b [n] -> [m, n]
Tensor diagonal(const Tensor& x, std::int64_t offset = 0);             // [..., m, n] -> [..., k]
Tensor trace(const Tensor& x, std::int64_t offset = 0);                // Σ diagonal
Tensor vecdot(const Tensor& a, const Tensor& b, std::int64_t axis = -1);  // Σ a b along axis, broadcast
// Contracts a's last `axes` axes with b's first `axes` axes, or the listed pairs of axes.
Tensor tensordot(const Tensor& a, const Tensor& b, std::int64_t axes = 2);
Tensor tensordot(const Tensor& a, const Tensor& b, const Axes& a_axes, const Axes& b_axes);

}  // namespace chainrule::linalg
