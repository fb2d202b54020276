#include "kernels/lapack.h"

#include <algorithm>
#include <cstddef>
#include <vector>

// The Fortran symbols of the LAPACK inside libopenblas (32-bit integers, as Debian builds it).
// Character arguments carry a hidden length after all others; passing it is right for the
// gfortran-compiled routines and harmless for OpenBLAS's own C ones.
extern "C" {
void sgetrf_(const int* m, const int* n, float* a, const int* lda, int* ipiv, int* info);
void dgetrf_(const int* m, const int* n, double* a, const int* lda, int* ipiv, int* info);
void sgetrs_(const char* trans, const int* n, const int* nrhs, const float* a, const int* lda, const int* ipiv, float* b,
             const int* ldb, int* info, std::size_t);
void dgetrs_(const char* trans, const int* n, const int* nrhs, const double* a, const int* lda, const int* ipiv, double* b,
             const int* ldb, int* info, std::size_t);
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info, std::size_t);
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, std::size_t);
void strtrs_(const char* uplo, const char* trans, const char* diag, const int* n, const int* nrhs, const float* a, const int* lda,
             float* b, const int* ldb, int* info, std::size_t, std::size_t, std::size_t);
void dtrtrs_(const char* uplo, const char* trans, const char* diag, const int* n, const int* nrhs, const double* a,
             const int* lda, double* b, const int* ldb, int* info, std::size_t, std::size_t, std::size_t);
void sgeqrf_(const int* m, const int* n, float* a, const int* lda, float* tau, float* work, const int* lwork, int* info);
void dgeqrf_(const int* m, const int* n, double* a, const int* lda, double* tau, double* work, const int* lwork, int* info);
void sorgqr_(const int* m, const int* n, const int* k, float* a, const int* lda, const float* tau, float* work,
             const int* lwork, int* info);
void dorgqr_(const int* m, const int* n, const int* k, double* a, const int* lda, const double* tau, double* work,
             const int* lwork, int* info);
void ssyevd_(const char* jobz, const char* uplo, const int* n, float* a, const int* lda, float* w, float* work,
             const int* lwork, int* iwork, const int* liwork, int* info, std::size_t, std::size_t);
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w, double* work,
             const int* lwork, int* iwork, const int* liwork, int* info, std::size_t, std::size_t);
void sgesdd_(const char* jobz, const int* m, const int* n, float* a, const int* lda, float* s, float* u, const int* ldu,
             float* vt, const int* ldvt, float* work, const int* lwork, int* iwork, int* info, std::size_t);
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s, double* u, const int* ldu,
             double* vt, const int* ldvt, double* work, const int* lwork, int* iwork, int* info, std::size_t);
}

namespace chainrule::kernels::lapack {

namespace {

// The Fortran routines for float and double, picked by overload.
struct F {
  static void getrf(const int* m, const int* n, float* a, const int* lda, int* p, int* i) { sgetrf_(m, n, a, lda, p, i); }
  static void getrf(const int* m, const int* n, double* a, const int* lda, int* p, int* i) { dgetrf_(m, n, a, lda, p, i); }
  template <class... A> static void getrs(const char* t, const int* n, const int* r, const float* a, A... rest) {
    sgetrs_(t, n, r, a, rest..., 1);
  }
  template <class... A> static void getrs(const char* t, const int* n, const int* r, const double* a, A... rest) {
    dgetrs_(t, n, r, a, rest..., 1);
  }
  static void potrf(const char* u, const int* n, float* a, const int* l, int* i) { spotrf_(u, n, a, l, i, 1); }
  static void potrf(const char* u, const int* n, double* a, const int* l, int* i) { dpotrf_(u, n, a, l, i, 1); }
  template <class... A> static void trtrs(const char* u, const char* t, const char* d, const int* n, const int* r, const float* a, A... rest) {
    strtrs_(u, t, d, n, r, a, rest..., 1, 1, 1);
  }
  template <class... A> static void trtrs(const char* u, const char* t, const char* d, const int* n, const int* r, const double* a, A... rest) {
    dtrtrs_(u, t, d, n, r, a, rest..., 1, 1, 1);
  }
  template <class... A> static void geqrf(const int* m, const int* n, float* a, A... rest) { sgeqrf_(m, n, a, rest...); }
  template <class... A> static void geqrf(const int* m, const int* n, double* a, A... rest) { dgeqrf_(m, n, a, rest...); }
  template <class... A> static void orgqr(const int* m, const int* n, const int* k, float* a, A... rest) { sorgqr_(m, n, k, a, rest...); }
  template <class... A> static void orgqr(const int* m, const int* n, const int* k, double* a, A... rest) { dorgqr_(m, n, k, a, rest...); }
  template <class... A> static void syevd(const char* j, const char* u, const int* n, float* a, A... rest) {
    ssyevd_(j, u, n, a, rest..., 1, 1);
  }
  template <class... A> static void syevd(const char* j, const char* u, const int* n, double* a, A... rest) {
    dsyevd_(j, u, n, a, rest..., 1, 1);
  }
  template <class... A> static void gesdd(const char* j, const int* m, const int* n, float* a, A... rest) {
    sgesdd_(j, m, n, a, rest..., 1);
  }
  template <class... A> static void gesdd(const char* j, const int* m, const int* n, double* a, A... rest) {
    dgesdd_(j, m, n, a, rest..., 1);
  }
};

// A workspace size as LAPACK reports it from a query (lwork = -1), at least `minimum`.
template <class T>
int work_size(T queried, int minimum) { return std::max(minimum, static_cast<int>(queried) + 1); }

template <class T>
int getrf_t(int n, T* a, int* ipiv) {
  int info = 0, lda = std::max(1, n);
  F::getrf(&n, &n, a, &lda, ipiv, &info);
  return info;
}
template <class T>
int getrs_t(char trans, int n, int nrhs, const T* lu, const int* ipiv, T* b) {
  int info = 0, ld = std::max(1, n);
  F::getrs(&trans, &n, &nrhs, lu, &ld, ipiv, b, &ld, &info);
  return info;
}
template <class T>
int potrf_t(char uplo, int n, T* a) {
  int info = 0, ld = std::max(1, n);
  F::potrf(&uplo, &n, a, &ld, &info);
  return info;
}
template <class T>
int trtrs_t(char uplo, char trans, char diag, int n, int nrhs, const T* a, T* b) {
  int info = 0, ld = std::max(1, n);
  F::trtrs(&uplo, &trans, &diag, &n, &nrhs, a, &ld, b, &ld, &info);
  return info;
}
template <class T>
int geqrf_t(int m, int n, T* a, T* tau) {
  int info = 0, lda = std::max(1, m), lwork = -1;
  T q{};
  F::geqrf(&m, &n, a, &lda, tau, &q, &lwork, &info);
  lwork = work_size(q, std::max(1, n));
  std::vector<T> work(static_cast<std::size_t>(lwork));
  F::geqrf(&m, &n, a, &lda, tau, work.data(), &lwork, &info);
  return info;
}
template <class T>
int orgqr_t(int m, int n, int k, T* a, const T* tau) {
  int info = 0, lda = std::max(1, m), lwork = -1;
  T q{};
  F::orgqr(&m, &n, &k, a, &lda, tau, &q, &lwork, &info);
  lwork = work_size(q, std::max(1, n));
  std::vector<T> work(static_cast<std::size_t>(lwork));
  F::orgqr(&m, &n, &k, a, &lda, tau, work.data(), &lwork, &info);
  return info;
}
template <class T>
int syevd_t(int n, T* a, T* w) {
  const char jobz = 'V', uplo = 'L';
  int info = 0, lda = std::max(1, n), lwork = -1, liwork = -1, iq = 0;
  T q{};
  F::syevd(&jobz, &uplo, &n, a, &lda, w, &q, &lwork, &iq, &liwork, &info);
  lwork = work_size(q, 1 + 6 * n + 2 * n * n);
  liwork = std::max(iq, 3 + 5 * n);
  std::vector<T> work(static_cast<std::size_t>(lwork));
  std::vector<int> iwork(static_cast<std::size_t>(liwork));
  F::syevd(&jobz, &uplo, &n, a, &lda, w, work.data(), &lwork, iwork.data(), &liwork, &info);
  return info;
}
template <class T>
int gesdd_t(char jobz, int m, int n, T* a, T* s, T* u, T* vt) {
  const int k = std::min(m, n);
  int info = 0, lda = std::max(1, m), ldu = std::max(1, m), ldvt = std::max(1, k), lwork = -1;
  std::vector<int> iwork(static_cast<std::size_t>(std::max(1, 8 * k)));
  T q{}, dummy{};
  if (jobz == 'N') u = vt = &dummy;
  F::gesdd(&jobz, &m, &n, a, &lda, s, u, &ldu, vt, &ldvt, &q, &lwork, iwork.data(), &info);
  lwork = work_size(q, 1);
  std::vector<T> work(static_cast<std::size_t>(lwork));
  F::gesdd(&jobz, &m, &n, a, &lda, s, u, &ldu, vt, &ldvt, work.data(), &lwork, iwork.data(), &info);
  return info;
}

}  // namespace

int getrf(int n, float* a, int* ipiv) { return getrf_t(n, a, ipiv); }
int getrf(int n, double* a, int* ipiv) { return getrf_t(n, a, ipiv); }
int getrs(char t, int n, int r, const float* lu, const int* p, float* b) { return getrs_t(t, n, r, lu, p, b); }
int getrs(char t, int n, int r, const double* lu, const int* p, double* b) { return getrs_t(t, n, r, lu, p, b); }
int potrf(char u, int n, float* a) { return potrf_t(u, n, a); }
int potrf(char u, int n, double* a) { return potrf_t(u, n, a); }
int trtrs(char u, char t, char d, int n, int r, const float* a, float* b) { return trtrs_t(u, t, d, n, r, a, b); }
int trtrs(char u, char t, char d, int n, int r, const double* a, double* b) { return trtrs_t(u, t, d, n, r, a, b); }
int geqrf(int m, int n, float* a, float* tau) { return geqrf_t(m, n, a, tau); }
int geqrf(int m, int n, double* a, double* tau) { return geqrf_t(m, n, a, tau); }
int orgqr(int m, int k, float* a, const float* tau) { return orgqr_t(m, k, k, a, tau); }
int orgqr(int m, int k, double* a, const double* tau) { return orgqr_t(m, k, k, a, tau); }
int orgqr(int m, int n, int k, float* a, const float* tau) { return orgqr_t(m, n, k, a, tau); }
int orgqr(int m, int n, int k, double* a, const double* tau) { return orgqr_t(m, n, k, a, tau); }
int syevd(int n, float* a, float* w) { return syevd_t(n, a, w); }
int syevd(int n, double* a, double* w) { return syevd_t(n, a, w); }
int gesdd(char j, int m, int n, float* a, float* s, float* u, float* vt) { return gesdd_t(j, m, n, a, s, u, vt); }
int gesdd(char j, int m, int n, double* a, double* s, double* u, double* vt) { return gesdd_t(j, m, n, a, s, u, vt); }

}  // namespace chainrule::kernels::lapack
