#pragma once
// Typed wrappers over the Fortran LAPACK routines that Debian's OpenBLAS exports (dgetrf_,
// sgetrf_, ...), declared here rather than through LAPACKE. Every matrix is column-major with
// its leading dimension equal to its row count; the callers in ops/linalg_lapack.cpp convert
// from and to chainrule's row-major layout. Each returns LAPACK's `info` (0: success, > 0: the
// routine's numerical failure, such as a zero pivot).
namespace chainrule::kernels::lapack {

// LU with partial pivoting of an n×n matrix, in place; ipiv holds n pivots (1-based).
int getrf(int n, float* a, int* ipiv);
int getrf(int n, double* a, int* ipiv);
// Solves op(A) X = B from getrf's factors; B is n×nrhs, overwritten by X. trans: 'N' or 'T'.
int getrs(char trans, int n, int nrhs, const float* lu, const int* ipiv, float* b);
int getrs(char trans, int n, int nrhs, const double* lu, const int* ipiv, double* b);
// Cholesky factor of the `uplo` ('L' or 'U') triangle of an n×n matrix, in place; info = k > 0:
// the leading minor of order k is not positive definite.
int potrf(char uplo, int n, float* a);
int potrf(char uplo, int n, double* a);
// Solves op(A) X = B for a triangular n×n A; diag 'U' for a unit diagonal, else 'N'; info = k > 0:
// A[k-1, k-1] is zero.
int trtrs(char uplo, char trans, char diag, int n, int nrhs, const float* a, float* b);
int trtrs(char uplo, char trans, char diag, int n, int nrhs, const double* a, double* b);
// Householder QR of an m×n matrix: R in the upper triangle, the reflectors below with tau
// (min(m, n) of them); orgqr then turns the first k reflectors into Q's first k columns (m×k).
int geqrf(int m, int n, float* a, float* tau);
int geqrf(int m, int n, double* a, double* tau);
int orgqr(int m, int k, float* a, const float* tau);
int orgqr(int m, int k, double* a, const double* tau);
// The same with n >= k columns (n = m: the complete Q, m×m, in an array of m×m).
int orgqr(int m, int n, int k, float* a, const float* tau);
int orgqr(int m, int n, int k, double* a, const double* tau);
// Eigenvalues (ascending, into w) and eigenvectors (the columns of a) of the symmetric matrix
// whose lower triangle a holds (divide and conquer).
int syevd(int n, float* a, float* w);
int syevd(int n, double* a, double* w);
// Thin SVD of an m×n matrix (divide and conquer), a destroyed: jobz 'S' gives U (m×k, ldu = m)
// and Vᵀ (k×n, ldvt = k), jobz 'N' only the singular values s (k = min(m, n), descending).
int gesdd(char jobz, int m, int n, float* a, float* s, float* u, float* vt);
int gesdd(char jobz, int m, int n, double* a, double* s, double* u, double* vt);

}  // namespace chainrule::kernels::lapack
