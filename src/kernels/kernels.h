#pragma once
// Loops shared by the forward kernels of the primitives: dtype dispatch, broadcasting iteration,
// maps and reductions. Kernels see concrete tensors only, possibly with extra leading dimensions.
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include "chainrule/autodiff/primitive.h"
#include "chainrule/tensor/tensor.h"

namespace chainrule::kernels {

template <class Fn>
decltype(auto) dispatch_float(DType t, std::string_view op, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
    default:
      throw DTypeError(fmt::format("{}: expected float32 or float64, got {}", op, dtype_name(t)));
  }
}
// float32, float64 and int64: the arithmetic that integers have too (add, sub, mul, max, min).
template <class Fn>
decltype(auto) dispatch_numeric(DType t, std::string_view op, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
    case DType::i64: return fn(std::int64_t{});
    default:
      throw DTypeError(fmt::format("{}: expected a number type (float32, float64, int64), got {}", op, dtype_name(t)));
  }
}
template <class Fn>
decltype(auto) dispatch_all(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
    case DType::i64: return fn(std::int64_t{});
    case DType::b8: break;
    case DType::bf16:
    case DType::f16:  // bind gives these kernels float32 (dispatch.cpp); only half_kernels see halves
      throw DTypeError(fmt::format("unsupported dtype {} for this kernel", dtype_name(t)));
  }
  return fn(bool{});
}

template <class T> const T* in(const Tensor& t) {
  return static_cast<const T*>(t.impl()->storage->data) + t.impl()->offset;
}
template <class T> T* out(const Tensor& t) { return static_cast<T*>(t.impl()->storage->data) + t.impl()->offset; }

// Normalises an axis against a rank, naming the operation on error.
inline std::int64_t norm_axis(std::string_view op, std::int64_t axis, std::size_t rank) {
  auto r = static_cast<std::int64_t>(rank);
  if (axis < -r || axis >= r) throw ShapeError(fmt::format("{}: axis {} out of range for rank {}", op, axis, r));
  return axis < 0 ? axis + r : axis;
}

// The (outer, n, inner) lanes of length n along axis `a` of a row-major tensor with `shape`.
struct Lanes {
  std::int64_t outer = 1, n = 1, inner = 1;
  Lanes(const Shape& shape, std::size_t a) {
    for (std::size_t i = 0; i < a; ++i) outer *= shape[i];
    n = shape[a];
    for (std::size_t i = a + 1; i < shape.size(); ++i) inner *= shape[i];
  }
};
// The axis a primitive's Params refer to (negative, from the end), as an index into x's shape.
inline std::size_t axis_of(std::string_view op, const Tensor& x, const Params& p) {
  return static_cast<std::size_t>(norm_axis(op, p.axis, x.shape().size()));
}

// NumPy broadcasting of two shapes.
Shape broadcast_shapes(std::string_view op, const Shape& a, const Shape& b);

// Element strides of an operand of shape `s` read as `out` (right-aligned; 0 where broadcast).
Shape broadcast_strides(const Shape& s, const Shape& out);
Shape contiguous_strides(const Shape& s);

// Calls f(offsets, n, inner_strides) once per innermost row of `shape`, where offsets[k] is the
// element offset of operand k at the row's start and inner_strides[k] its stride along the row.
template <std::size_t K, class F>
void for_each_row(const Shape& shape, const std::array<const Shape*, K>& strides, F&& f) {
  const std::size_t rank = shape.size();
  if (shape.numel() == 0) return;
  std::array<std::int64_t, K> off{}, inner{};
  if (rank == 0) {
    f(off, std::int64_t{1}, inner);
    return;
  }
  for (std::size_t k = 0; k < K; ++k) inner[k] = (*strides[k])[rank - 1];
  const std::int64_t n = shape[rank - 1];
  const std::int64_t rows = shape.numel() / n;
  Shape idx = Shape::filled(rank, 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    f(off, n, inner);
    for (std::size_t d = rank - 1; d-- > 0;) {
      if (++idx[d] < shape[d]) {
        for (std::size_t k = 0; k < K; ++k) off[k] += (*strides[k])[d];
        break;
      }
      for (std::size_t k = 0; k < K; ++k) off[k] -= (*strides[k])[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

// Loops compiled for AVX-512, AVX2 and baseline x86-64, one picked at load time by an ifunc
// resolver (the library is built without -march). Floating-point contraction is off in ISO C++
// mode, so every version gives the same bits. Not under ThreadSanitizer: the resolvers run
// before its runtime is up, and its instrumentation of them crashes the program at load.
#if defined(__SANITIZE_THREAD__)
#define CHAINRULE_VECTOR_CLONES
#else
#define CHAINRULE_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

// Below this many elements a loop runs on one thread: starting the team costs more than it saves.
constexpr std::int64_t kParallelGrain = 1 << 15;

// Runs body(begin, end) over [0, n): on the OpenMP team when n is large, else inline (an `if`
// clause alone still pays for entering the parallel region).
// `work` is the cost of one index in elements (a column of `work` rows, say).
template <class Body>
void parallel_range(std::int64_t n, Body body, std::int64_t work = 1) {
  if (n * work < kParallelGrain || n < 2) {
    body(std::int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    const std::int64_t chunk = (n + omp_get_num_threads() - 1) / omp_get_num_threads();
    const std::int64_t begin = std::min(n, chunk * omp_get_thread_num());
    body(begin, std::min(n, begin + chunk));
  }
}

template <class T, class R = T, class Op>
Tensor map_unary(const Tensor& x, Op op) {
  Tensor o = empty(x.shape(), dtype_of<R>());
  const T* a = in<T>(x);
  R* d = out<R>(o);
  parallel_range(x.numel(), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) d[i] = op(a[i]);
  });
  return o;
}

// A float elementwise function of one float tensor, in the tensor's own dtype.
template <class Op>
Tensor unary_forward(std::string_view name, const Tensor& x, Op op) {
  return dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    return map_unary<T>(x, [&](T a) -> T { return op(a); });
  });
}

// The same for float32, float64 and int64 (neg, abs, sign: integers have them too).
template <class Op>
Tensor numeric_unary_forward(std::string_view name, const Tensor& x, Op op) {
  return dispatch_numeric(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    return map_unary<T>(x, [&](T a) -> T { return op(a); });
  });
}
// -a, wrapping for the most negative int64 as NumPy and PyTorch do (no signed overflow).
template <class T>
T wrapping_neg(T a) {
  if constexpr (std::is_same_v<T, std::int64_t>) return static_cast<std::int64_t>(std::uint64_t{0} - static_cast<std::uint64_t>(a));
  else return -a;
}
template <class T>
T wrapping_abs(T a) {
  if constexpr (std::is_same_v<T, std::int64_t>) return a < 0 ? wrapping_neg(a) : a;
  else return std::abs(a);  // clears the sign of -0 and NaN, as IEEE's abs
}

// out[i] = op(a[i], b[i]) with broadcasting; the row loops are specialised on unit/zero strides
// so that the common cases vectorise.
template <class T, class R = T, class Op>
Tensor map_binary(std::string_view name, const Tensor& x, const Tensor& y, Op op) {
  Shape shape = broadcast_shapes(name, x.shape(), y.shape());
  Tensor o = empty(shape, dtype_of<R>());
  const T* a = in<T>(x);
  const T* b = in<T>(y);
  R* d = out<R>(o);
  if (x.shape() == y.shape()) {
    parallel_range(o.numel(), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) d[i] = op(a[i], b[i]);
    });
    return o;
  }
  // One operand is the other's trailing axes (a bias row added to every row): rows in parallel.
  auto is_suffix = [&](const Shape& s) {
    return s.size() <= shape.size() && s.numel() > 0 && shape.slice(shape.size() - s.size()) == s;
  };
  if ((x.shape() == shape && is_suffix(y.shape())) || (y.shape() == shape && is_suffix(x.shape()))) {
    const bool row_is_y = x.shape() == shape;
    const std::int64_t cols = (row_is_y ? y : x).numel(), rows = o.numel() / cols;
    parallel_range(rows, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t r = lo; r < hi; ++r) {
        R* pd = d + r * cols;
        if (row_is_y) {
          const T* pa = a + r * cols;
          for (std::int64_t j = 0; j < cols; ++j) pd[j] = op(pa[j], b[j]);
        } else {
          const T* pb = b + r * cols;
          for (std::int64_t j = 0; j < cols; ++j) pd[j] = op(a[j], pb[j]);
        }
      }
    }, cols);
    return o;
  }
  // One operand varies along one contiguous block of the other's axes only (a per-channel
  // [C, 1, 1] statistic against [N, C, H, W], or a scalar): rows of the trailing extent, each
  // against one value of the small operand, in parallel.
  if (x.shape() == shape || y.shape() == shape) {
    const bool small_is_y = x.shape() == shape;
    const Shape& small = small_is_y ? y.shape() : x.shape();
    const std::size_t r = shape.size(), off = r - small.size();
    std::size_t p = r, q = 0;  // [p, q): the axes along which the small operand varies
    for (std::size_t k = 0; k < small.size(); ++k)
      if (small[k] != 1) p = std::min(p, k + off), q = k + off + 1;
    if (p >= q) p = q = 0;  // a scalar
    bool block = small.numel() > 0;
    for (std::size_t k = p; k < q && block; ++k) block = small[k - off] == shape[k];
    const std::int64_t mid = shape.slice(p, q).numel(), inner = shape.slice(q).numel();
    if (block && small.numel() == 1) {  // a scalar: every element against the one value
      const T v = small_is_y ? b[0] : a[0];
      const T* pf = small_is_y ? a : b;
      parallel_range(o.numel(), [&](std::int64_t lo, std::int64_t hi) {
        if (small_is_y)
          for (std::int64_t i = lo; i < hi; ++i) d[i] = op(pf[i], v);
        else
          for (std::int64_t i = lo; i < hi; ++i) d[i] = op(v, pf[i]);
      });
      return o;
    }
    if (block && inner > 1) {
      const std::int64_t rows = o.numel() / inner;
      parallel_range(rows, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t row = lo; row < hi; ++row) {
          R* pd = d + row * inner;
          if (small_is_y) {
            const T v = b[row % mid];
            const T* pa = a + row * inner;
            for (std::int64_t j = 0; j < inner; ++j) pd[j] = op(pa[j], v);
          } else {
            const T v = a[row % mid];
            const T* pb = b + row * inner;
            for (std::int64_t j = 0; j < inner; ++j) pd[j] = op(v, pb[j]);
          }
        }
      }, inner);
      return o;
    }
  }
  Shape sa = broadcast_strides(x.shape(), shape), sb = broadcast_strides(y.shape(), shape), so = contiguous_strides(shape);
  for_each_row<3>(shape, {&sa, &sb, &so}, [&](const auto& off, std::int64_t n, const auto& inner) {
    const T* pa = a + off[0];
    const T* pb = b + off[1];
    R* pd = d + off[2];
    if (inner[0] == 1 && inner[1] == 1) for (std::int64_t i = 0; i < n; ++i) pd[i] = op(pa[i], pb[i]);
    else if (inner[0] == 1 && inner[1] == 0) { T vb = *pb; for (std::int64_t i = 0; i < n; ++i) pd[i] = op(pa[i], vb); }
    else if (inner[0] == 0 && inner[1] == 1) { T va = *pa; for (std::int64_t i = 0; i < n; ++i) pd[i] = op(va, pb[i]); }
    else for (std::int64_t i = 0; i < n; ++i) pd[i] = op(pa[i * inner[0]], pb[i * inner[1]]);
  });
  return o;
}

// d (cols×rows) = sᵀ for each of `mats` row-major rows×cols matrices, in 32×32 tiles so that reads
// and writes both stay in cache, split over threads.
// 4-byte elements (float32, int32): 8x8 blocks in AVX2 registers where the processor has AVX2
// (NHWC <-> NCHW copies of conv nets run through here); false when it has not.
bool transpose_matrices_4byte(const void* s, void* d, std::int64_t mats, std::int64_t rows, std::int64_t cols);
template <class T>
void transpose_matrices(const T* s, T* d, std::int64_t mats, std::int64_t rows, std::int64_t cols) {
  if constexpr (sizeof(T) == 4 && std::is_trivially_copyable_v<T>)
    if (transpose_matrices_4byte(s, d, mats, rows, cols)) return;
  constexpr std::int64_t kTile = 32;
  const std::int64_t row_tiles = (rows + kTile - 1) / kTile;
  parallel_range(mats * row_tiles, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const T* sm = s + (t / row_tiles) * rows * cols;
      T* dm = d + (t / row_tiles) * rows * cols;
      const std::int64_t i0 = (t % row_tiles) * kTile, i1 = std::min(rows, i0 + kTile);
      for (std::int64_t j0 = 0; j0 < cols; j0 += kTile)
        for (std::int64_t i = i0; i < i1; ++i)
          for (std::int64_t j = j0; j < std::min(cols, j0 + kTile); ++j) dm[j * rows + i] = sm[i * cols + j];
    }
  }, kTile * cols);
}

// True when p holds the n×n identity. It stops at the first entry that differs, so a general
// matrix costs a read or two: matmul uses it to turn products with the identity seed of
// jacfwd and jacrev into copies.
template <class T>
bool is_identity(const T* p, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      if (p[i * n + j] != (i == j ? T(1) : T(0))) return false;
  return true;
}

// The sum reductions' operation, a named type so that the column-sum path can use
// accumulate_row (compiled for AVX-512 and AVX2) for it.
struct Plus {
  double operator()(double a, double b) const { return a + b; }
};
// acc[j] += x[j] for j < n.
void accumulate_row(double* acc, const float* x, std::int64_t n);
void accumulate_row(double* acc, const double* x, std::int64_t n);
// The sum of x[0..n), in double.
double sum_row(const float* x, std::int64_t n);
double sum_row(const double* x, std::int64_t n);

// Reduction over `axes` (normalised, sorted) of x; out has the reduced axes kept as size 1.
// Accumulates in double so that float32 sums of many terms stay accurate.
template <class T, class Op>
Tensor reduce_keepdims(const Tensor& x, const Shape& axes, double init, Op op) {
  Shape oshape = x.shape();
  for (auto a : axes) oshape[static_cast<std::size_t>(a)] = 1;
  // The accumulator comes from the tensor allocator's cache (a steady-state step allocates nothing).
  Tensor acc_t = empty(oshape, DType::f64);
  std::span<double> acc(out<double>(acc_t), static_cast<std::size_t>(oshape.numel()));
  std::fill(acc.begin(), acc.end(), init);
  const T* a = in<T>(x);
  Tensor o = empty(oshape, x.dtype());
  T* d = out<T>(o);
  // Leading axes reduced, trailing kept (a bias gradient: the sum over the batch): columns of an
  // R×C matrix, in row order so that the inner loop is contiguous; split over threads by column.
  std::size_t lead = 0;
  while (lead < axes.size() && axes[lead] == static_cast<std::int64_t>(lead)) ++lead;
  if (lead == axes.size() && lead > 0 && lead < x.shape().size()) {
    const std::int64_t cols = oshape.numel(), rows = x.numel() / std::max<std::int64_t>(cols, 1);
    parallel_range(cols, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t r = 0; r < rows; ++r) {
        const T* pa = a + r * cols;
        if constexpr (std::is_same_v<Op, Plus>) {
          accumulate_row(acc.data() + lo, pa + lo, hi - lo);
        } else {
          for (std::int64_t j = lo; j < hi; ++j) acc[static_cast<std::size_t>(j)] = op(acc[static_cast<std::size_t>(j)], static_cast<double>(pa[j]));
        }
      }
      for (std::int64_t j = lo; j < hi; ++j) d[j] = static_cast<T>(acc[static_cast<std::size_t>(j)]);
    }, rows);
    return o;
  }
  // Trailing axes reduced (the last axis of a softmax; batch normalisation's N, H and W of
  // [N, C, H, W]): each contiguous trailing block is one vectorised sum, added to its output.
  std::size_t tail = axes.size();
  const auto rank = static_cast<std::int64_t>(x.shape().size());
  while (tail > 0 && axes[tail - 1] == rank - static_cast<std::int64_t>(axes.size() - tail) - 1) --tail;
  if constexpr (std::is_same_v<Op, Plus>) {
    if (tail < axes.size() && x.numel() > 0) {
      const std::size_t first = static_cast<std::size_t>(axes[tail]);  // the reduced suffix starts here
      const Shape outer = x.shape().slice(0, first);
      const std::int64_t block = x.numel() / outer.numel();
      const Shape so = broadcast_strides(oshape.slice(0, first), outer);
      Shape index = Shape::filled(first, 0);
      std::int64_t off = 0;
      for (std::int64_t r = 0; r < outer.numel(); ++r) {
        acc[static_cast<std::size_t>(off)] += sum_row(a + r * block, block);
        for (std::size_t k = first; k-- > 0;) {  // the next outer index, its output offset with it
          off += so[k];
          if (++index[k] < outer[k]) break;
          off -= so[k] * outer[k];
          index[k] = 0;
        }
      }
      for (std::size_t i = 0; i < acc.size(); ++i) d[i] = static_cast<T>(acc[i]);
      return o;
    }
  }
  Shape sx = contiguous_strides(x.shape());
  Shape so = broadcast_strides(oshape, x.shape());
  for_each_row<2>(x.shape(), {&sx, &so}, [&](const auto& off, std::int64_t n, const auto& inner) {
    const T* pa = a + off[0];
    double* po = acc.data() + off[1];
    if (inner[1] == 0) {
      double s = *po;
      for (std::int64_t i = 0; i < n; ++i) s = op(s, static_cast<double>(pa[i]));
      *po = s;
    } else {
      for (std::int64_t i = 0; i < n; ++i) po[i] = op(po[i], static_cast<double>(pa[i]));
    }
  });
  for (std::size_t i = 0; i < acc.size(); ++i) d[i] = static_cast<T>(acc[i]);
  return o;
}

// Resolves reduction parameters (negative axes, all axes when empty) against the actual rank.
Shape resolve_axes(std::string_view op, const Shape& neg_axes, std::size_t rank);
// Output shape of a reduction without keepdims.
Shape drop_axes(const Shape& shape, const Shape& axes);

// Row-major GEMM: C = alpha * op(A) op(B) + beta * C.
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc);
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
          std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc);
// C = op(A) op(B) + 1 biasᵀ (bias, n values, added to every row in the GEMM's epilogue).
void gemm_bias(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const float* a, std::int64_t lda,
               const float* b, std::int64_t ldb, const float* bias, float* c, std::int64_t ldc);
void gemm_bias(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const double* a, std::int64_t lda,
               const double* b, std::int64_t ldb, const double* bias, double* c, std::int64_t ldc);

// Multiply-add counter (for the cost experiments): GEMM adds m*n*k per call.
std::uint64_t& gemm_madds();

}  // namespace chainrule::kernels
