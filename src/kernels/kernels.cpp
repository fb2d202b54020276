#include "kernels/kernels.h"

#include "chainrule/ops/ops.h"

#include <cblas.h>
#include <dnnl.h>

namespace chainrule::kernels {

Shape broadcast_shapes(std::string_view op, const Shape& a, const Shape& b) {
  const std::size_t r = std::max(a.size(), b.size());
  Shape s = Shape::filled(r, 1);
  for (std::size_t i = 0; i < r; ++i) {
    std::int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    std::int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1)
      throw ShapeError(fmt::format("{}: shapes {} and {} cannot be broadcast together (axis {}: {} != {})", op, a.str(),
                                   b.str(), i, da, db));
    s[i] = da == 1 ? db : da;
  }
  return s;
}

Shape contiguous_strides(const Shape& s) {
  Shape st = Shape::filled(s.size(), 1);
  for (std::size_t i = s.size(); i-- > 1;) st[i - 1] = st[i] * s[i];
  return st;
}

Shape broadcast_strides(const Shape& s, const Shape& out) {
  Shape cs = contiguous_strides(s);
  Shape st = Shape::filled(out.size(), 0);
  const std::size_t lead = out.size() - s.size();
  for (std::size_t i = 0; i < s.size(); ++i) st[lead + i] = s[i] == 1 ? 0 : cs[i];
  return st;
}

Shape resolve_axes(std::string_view op, const Shape& neg_axes, std::size_t rank) {
  Shape axes;
  for (auto a : neg_axes) axes.push_back(norm_axis(op, a, rank));
  std::sort(axes.begin(), axes.end());
  return axes;
}

Shape drop_axes(const Shape& shape, const Shape& axes) {
  Shape s;
  for (std::size_t i = 0; i < shape.size(); ++i)
    if (std::find(axes.begin(), axes.end(), static_cast<std::int64_t>(i)) == axes.end()) s.push_back(shape[i]);
  return s;
}

std::uint64_t& gemm_madds() {
  static thread_local std::uint64_t count = 0;
  return count;
}
}  // namespace chainrule::kernels

namespace chainrule {
std::uint64_t matmul_multiply_adds() { return kernels::gemm_madds(); }
}  // namespace chainrule

namespace chainrule::kernels {

// float32 goes to oneDNN, which measured faster than OpenBLAS here (see docs/performance.md).
void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
          const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  gemm_madds() += static_cast<std::uint64_t>(m * n * k);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  auto st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success) throw Error(fmt::format("matmul: oneDNN sgemm failed with status {} for [{}, {}] @ [{}, {}]", static_cast<int>(st), m, k, k, n));
}

void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
          std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc) {
  gemm_madds() += static_cast<std::uint64_t>(m * n * k);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0 ? 0.0 : beta * c[i * ldc + j];
    return;
  }
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
              static_cast<int>(ldc));
}

}  // namespace chainrule::kernels
