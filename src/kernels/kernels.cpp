#include "kernels/kernels.h"

#include "chainrule/ops/ops.h"


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
