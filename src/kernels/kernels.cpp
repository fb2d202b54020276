#include "kernels/kernels.h"

#include <immintrin.h>

#include "chainrule/ops/ops.h"

namespace chainrule::kernels {

namespace {
// d[j * ld + i] = s[i * ls + j] for an 8x8 block: rows interleaved in pairs, then in fours, then
// the 128-bit halves swapped (the usual unpack / shuffle / permute sequence).
__attribute__((target("avx2"), always_inline)) inline void transpose8x8(const float* s, std::int64_t ls, float* d, std::int64_t ld) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * ls);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(d + i * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(d + (i + 4) * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}
// Rows [i0, i1) of one rows x cols matrix, into its transpose.
__attribute__((target("avx2"))) void transpose_rows_avx2(const float* s, float* d, std::int64_t rows, std::int64_t cols,
                                                         std::int64_t i0, std::int64_t i1) {
  for (std::int64_t j0 = 0; j0 < cols; j0 += 8) {
    const std::int64_t j1 = std::min(cols, j0 + 8);
    for (std::int64_t i = i0; i < i1; i += 8) {
      if (j1 - j0 == 8 && i + 8 <= i1) {
        transpose8x8(s + i * cols + j0, cols, d + j0 * rows + i, rows);
        continue;
      }
      for (std::int64_t ii = i; ii < std::min(i1, i + 8); ++ii)
        for (std::int64_t j = j0; j < j1; ++j) d[j * rows + ii] = s[ii * cols + j];
    }
  }
}
}  // namespace

bool transpose_matrices_4byte(const void* src, void* dst, std::int64_t mats, std::int64_t rows, std::int64_t cols) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (!avx2 || rows < 8 || cols < 8) return false;
  const auto* s = static_cast<const float*>(src);
  auto* d = static_cast<float*>(dst);
  constexpr std::int64_t kTile = 32;  // rows per task
  const std::int64_t row_tiles = (rows + kTile - 1) / kTile;
  parallel_range(mats * row_tiles, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const std::int64_t m = t / row_tiles, i0 = (t % row_tiles) * kTile;
      transpose_rows_avx2(s + m * rows * cols, d + m * rows * cols, rows, cols, i0, std::min(rows, i0 + kTile));
    }
  }, kTile * cols);
  return true;
}

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
void set_num_threads(int n) {
  if (n < 1) throw ValueError(fmt::format("set_num_threads: need at least one thread, got {}", n));
  omp_set_num_threads(n);
}
int get_num_threads() { return omp_get_max_threads(); }
}  // namespace chainrule

namespace chainrule::kernels {

CHAINRULE_VECTOR_CLONES
void accumulate_row(double* acc, const float* x, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) acc[j] += static_cast<double>(x[j]);
}
CHAINRULE_VECTOR_CLONES
void accumulate_row(double* acc, const double* x, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) acc[j] += x[j];
}

// Eight partial sums, so that the additions vectorise (one running sum is a chain of dependent
// adds, four cycles each).
template <class T>
double sum_lanes(const T* x, std::int64_t n) {
  double lanes[8] = {};
  std::int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += static_cast<double>(x[j + l]);
  double s = 0;
  for (; j < n; ++j) s += static_cast<double>(x[j]);
  for (double v : lanes) s += v;
  return s;
}
CHAINRULE_VECTOR_CLONES
double sum_row(const float* x, std::int64_t n) { return sum_lanes(x, n); }
CHAINRULE_VECTOR_CLONES
double sum_row(const double* x, std::int64_t n) { return sum_lanes(x, n); }

}  // namespace chainrule::kernels
