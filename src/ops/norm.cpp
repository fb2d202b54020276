// Training-mode batch normalisation, fused (PyTorch's native_batch_norm and its backward).
//
// Four primitives over x [..., N, C, *] (channel axis 1 of the last `rank` axes; M = N·prod(*)
// values per channel):
//   batch_norm_stats(x) = [mean; var]                               [..., 2, C]
//   batch_norm_train(x, stats, w, b) = (x - mean) · invstd · w + b   invstd = 1/sqrt(var + eps)
//   batch_norm_backward(dy, x, stats, w) = w · D_x(dy)               the VJP of train in x
//   batch_norm_backward_reduce(dy, x, stats) = [sum(dy·xhat); sum(dy)]  the VJP in w and b
// where D_x(u) = invstd · (u - mean(u) - xhat · mean(xhat · u)) is the derivative of
// xhat = (x - mean) · invstd. D_x is self-adjoint, so the JVP of train in x and its VJP are both
// batch_norm_backward, and batch_norm_backward is its own VJP in dy.
//
// `stats` is a cache, not an argument: the public functions always pass batch_norm_stats(x), so
// the forward kernels read the mean and variance instead of recomputing them, and the rules treat
// the output as a function of x alone (no derivative flows into `stats`; the rules' derivatives
// in x include the statistics' dependence on x). The rules of batch_norm_backward(_reduce) in x
// are compositions of these primitives and ordinary ops, so derivatives of every order follow.
// Every input has the same leading axes as x (Batching::Materialize), so vmap is one call.
#include "chainrule/ops/norm.h"

#include <fmt/format.h>

#include <cmath>
#include <string>
#include <type_traits>

#include "chainrule/ops/ops.h"
#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

extern const Primitive batch_norm_stats_p;
extern const Primitive batch_norm_train_p;
extern const Primitive batch_norm_backward_p;
extern const Primitive batch_norm_backward_reduce_p;

// Per-channel loops over one contiguous run of x (vectorised: eight partial sums in double, so
// that the adds do not form one dependent chain and float32 sums stay accurate). A plain sum is
// kernels::sum_row, shared with the reductions.
namespace kernels::bn {

template <class T>
inline double sqdev_run(const T* x, std::int64_t n, double mu) {
  double lanes[8] = {};
  std::int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) {
      const double d = static_cast<double>(x[j + l]) - mu;
      lanes[l] += d * d;
    }
  double s = 0;
  for (; j < n; ++j) {
    const double d = static_cast<double>(x[j]) - mu;
    s += d * d;
  }
  for (double l : lanes) s += l;
  return s;
}
// s1 += sum(x - k), s2 += sum((x - k)²): one pass for the mean and variance of float32 data,
// shifted by a value k of the channel itself so that the sums, in double, do not cancel.
template <class T>
inline void shifted_moments_run(const T* x, std::int64_t n, double k, double& s1, double& s2) {
  double l1[8] = {}, l2[8] = {};
  std::int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) {
      const double d = static_cast<double>(x[j + l]) - k;
      l1[l] += d;
      l2[l] += d * d;
    }
  for (; j < n; ++j) {
    const double d = static_cast<double>(x[j]) - k;
    s1 += d;
    s2 += d * d;
  }
  for (int l = 0; l < 8; ++l) {
    s1 += l1[l];
    s2 += l2[l];
  }
}
// s1 += sum(dy), s2 += sum(dy · (x - mu)).
template <class T>
inline void dot_run(const T* dy, const T* x, std::int64_t n, double mu, double& s1, double& s2) {
  double l1[8] = {}, l2[8] = {};
  std::int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) {
      const double g = static_cast<double>(dy[j + l]);
      l1[l] += g;
      l2[l] += g * (static_cast<double>(x[j + l]) - mu);
    }
  for (; j < n; ++j) {
    const double g = static_cast<double>(dy[j]);
    s1 += g;
    s2 += g * (static_cast<double>(x[j]) - mu);
  }
  for (int l = 0; l < 8; ++l) {
    s1 += l1[l];
    s2 += l2[l];
  }
}
// y = (x - mu) · a + b.
template <class T>
inline void affine_run(const T* x, T* y, std::int64_t n, T mu, T a, T b) {
  for (std::int64_t j = 0; j < n; ++j) y[j] = (x[j] - mu) * a + b;
}
// dx = a · dy - (k · (x - mu) + e).
template <class T>
inline void backward_run(const T* dy, const T* x, T* dx, std::int64_t n, T mu, T a, T k, T e) {
  for (std::int64_t j = 0; j < n; ++j) dx[j] = a * dy[j] - (k * (x[j] - mu) + e);
}

// The same two on one channels-last row of c values, with per-channel coefficients.
template <class T>
inline void affine_row_run(const T* x, T* y, std::int64_t c, const T* mu, const T* a, const T* b) {
  for (std::int64_t j = 0; j < c; ++j) y[j] = (x[j] - mu[j]) * a[j] + b[j];
}
template <class T>
inline void backward_row_run(const T* dy, const T* x, T* dx, std::int64_t c, const T* mu, const T* a, const T* k, const T* e) {
  for (std::int64_t j = 0; j < c; ++j) dx[j] = a[j] * dy[j] - (k[j] * (x[j] - mu[j]) + e[j]);
}

CHAINRULE_VECTOR_CLONES void affine_row(const float* x, float* y, std::int64_t c, const float* mu, const float* a, const float* b) {
  affine_row_run(x, y, c, mu, a, b);
}
CHAINRULE_VECTOR_CLONES void affine_row(const double* x, double* y, std::int64_t c, const double* mu, const double* a, const double* b) {
  affine_row_run(x, y, c, mu, a, b);
}
CHAINRULE_VECTOR_CLONES void backward_row(const float* dy, const float* x, float* dx, std::int64_t c, const float* mu, const float* a,
                                          const float* k, const float* e) {
  backward_row_run(dy, x, dx, c, mu, a, k, e);
}
CHAINRULE_VECTOR_CLONES void backward_row(const double* dy, const double* x, double* dx, std::int64_t c, const double* mu,
                                          const double* a, const double* k, const double* e) {
  backward_row_run(dy, x, dx, c, mu, a, k, e);
}

CHAINRULE_VECTOR_CLONES double sqdev(const float* x, std::int64_t n, double mu) { return sqdev_run(x, n, mu); }
CHAINRULE_VECTOR_CLONES void shifted_moments(const float* x, std::int64_t n, double k, double& s1, double& s2) {
  shifted_moments_run(x, n, k, s1, s2);
}
CHAINRULE_VECTOR_CLONES double sqdev(const double* x, std::int64_t n, double mu) { return sqdev_run(x, n, mu); }
CHAINRULE_VECTOR_CLONES void dot(const float* dy, const float* x, std::int64_t n, double mu, double& s1, double& s2) {
  dot_run(dy, x, n, mu, s1, s2);
}
CHAINRULE_VECTOR_CLONES void dot(const double* dy, const double* x, std::int64_t n, double mu, double& s1, double& s2) {
  dot_run(dy, x, n, mu, s1, s2);
}
CHAINRULE_VECTOR_CLONES void affine(const float* x, float* y, std::int64_t n, float mu, float a, float b) {
  affine_run(x, y, n, mu, a, b);
}
CHAINRULE_VECTOR_CLONES void affine(const double* x, double* y, std::int64_t n, double mu, double a, double b) {
  affine_run(x, y, n, mu, a, b);
}
CHAINRULE_VECTOR_CLONES void backward(const float* dy, const float* x, float* dx, std::int64_t n, float mu, float a, float k,
                                      float e) {
  backward_run(dy, x, dx, n, mu, a, k, e);
}
CHAINRULE_VECTOR_CLONES void backward(const double* dy, const double* x, double* dx, std::int64_t n, double mu, double a,
                                      double k, double e) {
  backward_run(dy, x, dx, n, mu, a, k, e);
}

}  // namespace kernels::bn

namespace {

// Static parameters: the rank of x's logical shape (the channel is axis 1 of its last `rank`
// axes), eps, and whether a weight (and for train a bias) is among the inputs.
struct BatchNormAttrs {
  std::int64_t rank = 2;
  double eps = 1e-5;
  bool affine = true;
  // batch_norm_backward with a weight: input 4 holds the channel sums that batch_norm_backward_reduce
  // computed from the same dy, x and stats, so the kernel skips its own pass over dy and x. Like
  // stats it is a cache, not an argument: no derivative flows to it.
  bool sums = false;
};

// x [lead..., n, c, spatial...] with s = prod(spatial) as loops see it.
struct Layout {
  Shape lead_shape;
  std::int64_t lead = 1, n = 1, c = 1, s = 1;
  std::int64_t m() const { return n * s; }
  Shape stats_shape() const { return lead_shape + Shape{2, c}; }
  Shape channel_shape() const { return lead_shape + Shape{c}; }
};

Layout layout(std::string_view op, const Shape& xs, std::int64_t rank) {
  const auto nd = static_cast<std::int64_t>(xs.size());
  if (rank < 2 || nd < rank)
    throw ShapeError(fmt::format("{}: needs x [N, C, *] (rank at least 2), got {} for rank {}", op, xs.str(), rank));
  Layout l;
  const auto first = static_cast<std::size_t>(nd - rank);
  l.lead_shape = xs.slice(0, first);
  for (std::size_t i = 0; i < first; ++i) l.lead *= xs[i];
  l.n = xs[first];
  l.c = xs[first + 1];
  for (auto i = first + 2; i < xs.size(); ++i) l.s *= xs[i];
  return l;
}

void expect_shape(std::string_view op, std::string_view what, const Tensor& t, const Shape& want, const Tensor& x) {
  if (t.shape() != want)
    throw ShapeError(fmt::format("{}: {} must be {} for x {}, got {}", op, what, want.str(), x.shape().str(), t.shape().str()));
  if (t.dtype() != x.dtype())
    throw DTypeError(fmt::format("{}: {} is {} but x is {}", op, what, dtype_name(t.dtype()), dtype_name(x.dtype())));
}

// Runs body(channel q, l, c, base offset of the channel's first run) over every channel, in
// parallel; a channel's runs are the N contiguous blocks of s values at base + i·c·s.
template <class Body>
void for_channels(const Layout& l, Body body) {
  kernels::parallel_range(
      l.lead * l.c,
      [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t q = lo; q < hi; ++q) {
          const std::int64_t li = q / l.c, ci = q % l.c;
          body(q, li, ci, (li * l.n * l.c + ci) * l.s);
        }
      },
      l.m());
}

// Channels-last data (s = 1: x is [lead..., n, c], the channel the fastest axis, as BatchNorm2d on
// NHWC images viewed as [N*H*W, C], or BatchNorm1d): for_channels would visit one value at a time,
// so these loops run over rows of c values instead. Sums go over fixed chunks of rows (the order,
// and so the result, does not depend on the thread count) whose partials are added in order.
constexpr std::int64_t kRowsPerChunk = 256;

// For each lead li: out[li][k][ci] (k < 2) = the sums that acc(row pointer offset, li, a) adds into
// a[k * c + ci] over the rows of that lead.
template <class Acc>
std::vector<double> channel_last_sums(const Layout& l, Acc acc) {
  const std::int64_t chunks = (l.n + kRowsPerChunk - 1) / kRowsPerChunk, c = l.c;
  std::vector<double> partial(static_cast<std::size_t>(l.lead * chunks * 2 * c), 0.0);
  kernels::parallel_range(
      l.lead * chunks,
      [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t q = lo; q < hi; ++q) {
          const std::int64_t li = q / chunks, k = q % chunks;
          double* a = partial.data() + q * 2 * c;
          for (std::int64_t i = k * kRowsPerChunk; i < std::min(l.n, (k + 1) * kRowsPerChunk); ++i) acc((li * l.n + i) * c, li, a);
        }
      },
      kRowsPerChunk * c);
  std::vector<double> out(static_cast<std::size_t>(l.lead * 2 * c), 0.0);
  for (std::int64_t li = 0; li < l.lead; ++li)
    for (std::int64_t k = 0; k < chunks; ++k)
      for (std::int64_t j = 0; j < 2 * c; ++j) out[li * 2 * c + j] += partial[(li * chunks + k) * 2 * c + j];
  return out;
}

// Runs row(offset of the row's first value, li) over every row, in parallel.
template <class Row>
void for_rows(const Layout& l, Row row) {
  kernels::parallel_range(
      l.lead * l.n,
      [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t r = lo; r < hi; ++r) row(r * l.c, r / l.n);
      },
      l.c);
}

// ---- forward kernels ------------------------------------------------------------------------

Tensor stats_forward(std::span<const Tensor> x, const Params& p) {
  const Layout l = layout("batch_norm_stats", x[0].shape(), p.attrs<BatchNormAttrs>().rank);
  Tensor o = empty(l.stats_shape(), x[0].dtype());
  kernels::dispatch_float(x[0].dtype(), "batch_norm_stats", [&](auto tag) {
    using T = decltype(tag);
    const T* px = kernels::in<T>(x[0]);
    T* po = kernels::out<T>(o);
    const auto m = static_cast<double>(l.m());
    if (l.s == 1) {  // channels-last: the same one (float32) or two (float64) passes, row by row
      const std::int64_t c = l.c;
      std::vector<double> shift(static_cast<std::size_t>(l.lead * c), 0.0);
      if (l.n > 0)
        for (std::int64_t li = 0; li < l.lead; ++li)
          for (std::int64_t ci = 0; ci < c; ++ci) shift[li * c + ci] = static_cast<double>(px[li * l.n * c + ci]);
      if constexpr (!std::is_same_v<T, float>) {  // float64: the mean first
        const auto sums = channel_last_sums(l, [&](std::int64_t at, std::int64_t, double* a) {
          for (std::int64_t ci = 0; ci < c; ++ci) a[ci] += static_cast<double>(px[at + ci]);
        });
        for (std::int64_t li = 0; li < l.lead; ++li)
          for (std::int64_t ci = 0; ci < c; ++ci) shift[li * c + ci] = sums[li * 2 * c + ci] / m;
      }
      const auto sums = channel_last_sums(l, [&](std::int64_t at, std::int64_t li, double* a) {
        const double* k = shift.data() + li * c;
        for (std::int64_t ci = 0; ci < c; ++ci) {
          const double d = static_cast<double>(px[at + ci]) - k[ci];
          a[ci] += d;
          a[c + ci] += d * d;
        }
      });
      for (std::int64_t li = 0; li < l.lead; ++li)
        for (std::int64_t ci = 0; ci < c; ++ci) {
          const double d = sums[li * 2 * c + ci] / m;
          po[li * 2 * c + ci] = static_cast<T>(shift[li * c + ci] + d);
          po[(li * 2 + 1) * c + ci] = static_cast<T>(std::max(sums[li * 2 * c + c + ci] / m - d * d, 0.0));
        }
      return 0;
    }
    for_channels(l, [&](std::int64_t, std::int64_t li, std::int64_t ci, std::int64_t base) {
      double mu = 0, var = 0;
      if constexpr (std::is_same_v<T, float>) {
        // One pass, in double, shifted by the channel's first value: the 53-bit sums keep the
        // float32 result exact to rounding unless |mean - x0| exceeds about 1e4 standard deviations.
        const double k = l.m() > 0 ? static_cast<double>(px[base]) : 0.0;
        double s1 = 0, s2 = 0;
        for (std::int64_t i = 0; i < l.n; ++i) kernels::bn::shifted_moments(px + base + i * l.c * l.s, l.s, k, s1, s2);
        const double d = s1 / m;
        mu = k + d, var = std::max(s2 / m - d * d, 0.0);
      } else {
        // float64: two passes, the sum of squared deviations, which does not cancel as E[x²] - E[x]² can.
        double s = 0;
        for (std::int64_t i = 0; i < l.n; ++i) s += kernels::sum_row(px + base + i * l.c * l.s, l.s);
        mu = s / m;
        double q = 0;
        for (std::int64_t i = 0; i < l.n; ++i) q += kernels::bn::sqdev(px + base + i * l.c * l.s, l.s, mu);
        var = q / m;
      }
      po[li * 2 * l.c + ci] = static_cast<T>(mu);
      po[(li * 2 + 1) * l.c + ci] = static_cast<T>(var);
    });
    return 0;
  });
  return o;
}

// Inputs x, stats[, w, b].
Tensor train_forward(std::span<const Tensor> x, const Params& p) {
  const auto& a = p.attrs<BatchNormAttrs>();
  const Layout l = layout("batch_norm_train", x[0].shape(), a.rank);
  expect_shape("batch_norm_train", "stats", x[1], l.stats_shape(), x[0]);
  if (a.affine) {
    expect_shape("batch_norm_train", "weight", x[2], l.channel_shape(), x[0]);
    expect_shape("batch_norm_train", "bias", x[3], l.channel_shape(), x[0]);
  }
  Tensor o = empty(x[0].shape(), x[0].dtype());
  kernels::dispatch_float(x[0].dtype(), "batch_norm_train", [&](auto tag) {
    using T = decltype(tag);
    const T* px = kernels::in<T>(x[0]);
    const T* ps = kernels::in<T>(x[1]);
    const T* pw = a.affine ? kernels::in<T>(x[2]) : nullptr;
    const T* pb = a.affine ? kernels::in<T>(x[3]) : nullptr;
    T* po = kernels::out<T>(o);
    if (l.s == 1) {  // channels-last: per-channel coefficients, then rows
      std::vector<T> mu(static_cast<std::size_t>(l.lead * l.c)), scale(mu.size()), shift(mu.size());
      for (std::int64_t li = 0; li < l.lead; ++li)
        for (std::int64_t ci = 0; ci < l.c; ++ci) {
          const std::int64_t q = li * l.c + ci;
          const T inv = static_cast<T>(1.0 / std::sqrt(static_cast<double>(ps[(li * 2 + 1) * l.c + ci]) + a.eps));
          mu[q] = ps[li * 2 * l.c + ci], scale[q] = pw ? inv * pw[q] : inv, shift[q] = pb ? pb[q] : T(0);
        }
      for_rows(l, [&](std::int64_t at, std::int64_t li) {
        kernels::bn::affine_row(px + at, po + at, l.c, mu.data() + li * l.c, scale.data() + li * l.c, shift.data() + li * l.c);
      });
      return 0;
    }
    for_channels(l, [&](std::int64_t q, std::int64_t li, std::int64_t ci, std::int64_t base) {
      const T mu = ps[li * 2 * l.c + ci];
      const T inv = static_cast<T>(1.0 / std::sqrt(static_cast<double>(ps[(li * 2 + 1) * l.c + ci]) + a.eps));
      const T scale = pw ? inv * pw[q] : inv, shift = pb ? pb[q] : T(0);
      for (std::int64_t i = 0; i < l.n; ++i)
        kernels::bn::affine(px + base + i * l.c * l.s, po + base + i * l.c * l.s, l.s, mu, scale, shift);
    });
    return 0;
  });
  return o;
}

// Per channel: invstd, sum(dy) and sum(dy · (x - mean)); `emit` gets them.
template <class T, class Emit>
void backward_sums(const Layout& l, const T* pdy, const T* px, const T* ps, double eps, Emit emit) {
  if (l.s == 1) {  // channels-last: the sums row by row, then emit per channel (with base -1: no runs)
    const std::int64_t c = l.c;
    const auto sums = channel_last_sums(l, [&](std::int64_t at, std::int64_t li, double* a) {
      const T* mu = ps + li * 2 * c;
      for (std::int64_t ci = 0; ci < c; ++ci) {
        const double g = static_cast<double>(pdy[at + ci]);
        a[ci] += g;
        a[c + ci] += g * (static_cast<double>(px[at + ci]) - static_cast<double>(mu[ci]));
      }
    });
    for (std::int64_t li = 0; li < l.lead; ++li)
      for (std::int64_t ci = 0; ci < c; ++ci) {
        const double mu = static_cast<double>(ps[li * 2 * c + ci]);
        const double inv = 1.0 / std::sqrt(static_cast<double>(ps[(li * 2 + 1) * c + ci]) + eps);
        emit(li * c + ci, li, ci, std::int64_t{-1}, mu, inv, sums[li * 2 * c + ci], sums[li * 2 * c + c + ci]);
      }
    return;
  }
  for_channels(l, [&](std::int64_t q, std::int64_t li, std::int64_t ci, std::int64_t base) {
    const double mu = static_cast<double>(ps[li * 2 * l.c + ci]);
    const double inv = 1.0 / std::sqrt(static_cast<double>(ps[(li * 2 + 1) * l.c + ci]) + eps);
    double s1 = 0, s2 = 0;
    for (std::int64_t i = 0; i < l.n; ++i) kernels::bn::dot(pdy + base + i * l.c * l.s, px + base + i * l.c * l.s, l.s, mu, s1, s2);
    emit(q, li, ci, base, mu, inv, s1, s2);
  });
}

// Inputs dy, x, stats[, w].
Tensor backward_forward(std::span<const Tensor> x, const Params& p) {
  const auto& a = p.attrs<BatchNormAttrs>();
  const Layout l = layout("batch_norm_backward", x[1].shape(), a.rank);
  expect_shape("batch_norm_backward", "grad_output", x[0], x[1].shape(), x[1]);
  expect_shape("batch_norm_backward", "stats", x[2], l.stats_shape(), x[1]);
  if (a.affine) expect_shape("batch_norm_backward", "weight", x[3], l.channel_shape(), x[1]);
  if (a.sums) expect_shape("batch_norm_backward", "sums", x[4], l.stats_shape(), x[1]);
  Tensor o = empty(x[1].shape(), x[1].dtype());
  kernels::dispatch_float(x[1].dtype(), "batch_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pdy = kernels::in<T>(x[0]);
    const T* px = kernels::in<T>(x[1]);
    const T* pw = a.affine ? kernels::in<T>(x[3]) : nullptr;
    T* po = kernels::out<T>(o);
    const auto m = static_cast<double>(l.m());
    const T* ps = kernels::in<T>(x[2]);
    // dx = w·inv·dy - (w·inv³·s2/M · (x - mu) + w·inv·s1/M), with s1 = sum(dy), s2 = sum(dy · (x - mu)).
    // Channels-last (s = 1): emit keeps each channel's coefficients, and rows apply them after.
    const bool rows = l.s == 1;
    std::vector<T> cmu(rows ? static_cast<std::size_t>(l.lead * l.c) : 0), ca(cmu.size()), ck(cmu.size()), ce(cmu.size());
    auto emit = [&](std::int64_t q, std::int64_t base, double mu, double inv, double s1, double inv_s2) {
      const double wi = (pw ? static_cast<double>(pw[q]) : 1.0) * inv;
      const T k = static_cast<T>(wi * inv * inv_s2 / m), e = static_cast<T>(wi * s1 / m);
      if (rows) {
        const auto at = static_cast<std::size_t>(q);
        cmu[at] = static_cast<T>(mu), ca[at] = static_cast<T>(wi), ck[at] = k, ce[at] = e;
        return;
      }
      for (std::int64_t i = 0; i < l.n; ++i)
        kernels::bn::backward(pdy + base + i * l.c * l.s, px + base + i * l.c * l.s, po + base + i * l.c * l.s, l.s,
                              static_cast<T>(mu), static_cast<T>(wi), k, e);
    };
    if (a.sums) {  // the sums are given: [inv·s2; s1] per channel, as batch_norm_backward_reduce makes them
      const T* pr = kernels::in<T>(x[4]);
      auto given = [&](std::int64_t q, std::int64_t li, std::int64_t ci, std::int64_t base) {
        const double inv = 1.0 / std::sqrt(static_cast<double>(ps[(li * 2 + 1) * l.c + ci]) + a.eps);
        emit(q, base, static_cast<double>(ps[li * 2 * l.c + ci]), inv, static_cast<double>(pr[(li * 2 + 1) * l.c + ci]),
             static_cast<double>(pr[li * 2 * l.c + ci]));
      };
      if (rows) {
        for (std::int64_t li = 0; li < l.lead; ++li)
          for (std::int64_t ci = 0; ci < l.c; ++ci) given(li * l.c + ci, li, ci, -1);
      } else {
        for_channels(l, given);
      }
    } else {
      backward_sums(l, pdy, px, ps, a.eps,
                    [&](std::int64_t q, std::int64_t, std::int64_t, std::int64_t base, double mu, double inv, double s1, double s2) {
                      emit(q, base, mu, inv, s1, inv * s2);
                    });
    }
    if (rows)
      for_rows(l, [&](std::int64_t at, std::int64_t li) {
        const std::int64_t q = li * l.c;
        kernels::bn::backward_row(pdy + at, px + at, po + at, l.c, cmu.data() + q, ca.data() + q, ck.data() + q, ce.data() + q);
      });
    return 0;
  });
  return o;
}

// Inputs dy, x, stats.
Tensor reduce_forward(std::span<const Tensor> x, const Params& p) {
  const auto& a = p.attrs<BatchNormAttrs>();
  const Layout l = layout("batch_norm_backward_reduce", x[1].shape(), a.rank);
  expect_shape("batch_norm_backward_reduce", "grad_output", x[0], x[1].shape(), x[1]);
  expect_shape("batch_norm_backward_reduce", "stats", x[2], l.stats_shape(), x[1]);
  Tensor o = empty(l.stats_shape(), x[1].dtype());
  kernels::dispatch_float(x[1].dtype(), "batch_norm_backward_reduce", [&](auto tag) {
    using T = decltype(tag);
    T* po = kernels::out<T>(o);
    backward_sums(l, kernels::in<T>(x[0]), kernels::in<T>(x[1]), kernels::in<T>(x[2]), a.eps,
                  [&](std::int64_t, std::int64_t li, std::int64_t ci, std::int64_t, double, double inv, double s1, double s2) {
                    po[li * 2 * l.c + ci] = static_cast<T>(inv * s2);
                    po[(li * 2 + 1) * l.c + ci] = static_cast<T>(s1);
                  });
    return 0;
  });
  return o;
}

// ---- the rules' building blocks (ops, shapes from the level the rule runs at) ----------------

struct View {
  Layout l;
  std::int64_t rank;
  Axes axes;  // the reduced axes, negative: N and the spatial ones
  double m;
};

View view_of(const Shape& xs, std::int64_t rank) {
  View v{layout("batch_norm", xs, rank), rank, {}, 0};
  v.axes.push_back(-rank);
  for (std::int64_t a = -(rank - 2); a < 0; ++a) v.axes.push_back(a);
  v.m = static_cast<double>(v.l.m());
  return v;
}

// A per-channel [..., C] (or [..., 1, C], or keepdims-reduced) value viewed to broadcast against x.
Tensor chan(const Tensor& t, const View& v) {
  Shape s = v.l.lead_shape + Shape{1, v.l.c};
  for (std::int64_t i = 2; i < v.rank; ++i) s.push_back(1);
  return reshape(t, s);
}
Tensor row(const Tensor& stats, std::int64_t k, const View& v) { return chan(slice(stats, -2, k, k + 1), v); }
// Two per-channel values as [..., 2, C].
Tensor rows(const Tensor& a, const Tensor& b, const View& v) {
  const Shape s = v.l.lead_shape + Shape{1, v.l.c};
  return concat({reshape(a, s), reshape(b, s)}, -2);
}
Tensor csum(const Tensor& t, const View& v) { return sum(t, v.axes, true); }
Tensor cmean(const Tensor& t, const View& v) { return mean(t, v.axes, true); }
Tensor invstd(const Tensor& stats, double eps, const View& v) {
  return div(scalar_tensor(1.0, stats.dtype()), sqrt(add(row(stats, 1, v), scalar_tensor(eps, stats.dtype()))));
}
Tensor xhat(const Tensor& x, const Tensor& stats, double eps, const View& v) {
  return mul(sub(x, row(stats, 0, v)), invstd(stats, eps, v));
}

Params attrs_params(std::int64_t rank, double eps, bool affine, bool sums = false) {
  return Params::with_attrs(BatchNormAttrs{rank, eps, affine, sums});
}

Tensor bind_stats(const Tensor& x, std::int64_t rank) { return bind(batch_norm_stats_p, {x}, attrs_params(rank, 0, false)); }
Tensor bind_train(const Tensor& x, const Tensor& stats, const Tensor& w, const Tensor& b, std::int64_t rank, double eps) {
  if (!w.defined()) return bind(batch_norm_train_p, {x, stats}, attrs_params(rank, eps, false));
  return bind(batch_norm_train_p, {x, stats, w, b}, attrs_params(rank, eps, true));
}
// w · D_x(dy); w undefined means 1. `sums`, when defined (with w only), is bind_reduce(dy, x, stats).
Tensor bind_backward(const Tensor& dy, const Tensor& x, const Tensor& stats, const Tensor& w, std::int64_t rank, double eps,
                     const Tensor& sums = {}) {
  if (!w.defined()) return bind(batch_norm_backward_p, {dy, x, stats}, attrs_params(rank, eps, false));
  if (sums.defined()) return bind(batch_norm_backward_p, {dy, x, stats, w, sums}, attrs_params(rank, eps, true, true));
  return bind(batch_norm_backward_p, {dy, x, stats, w}, attrs_params(rank, eps, true));
}
Tensor bind_reduce(const Tensor& dy, const Tensor& x, const Tensor& stats, std::int64_t rank, double eps) {
  return bind(batch_norm_backward_reduce_p, {dy, x, stats}, attrs_params(rank, eps, false));
}

const BatchNormAttrs& attrs(const Ctx& c) { return c.p.attrs<BatchNormAttrs>(); }
Tensor weight_of(const Ctx& c, std::size_t i) { return attrs(c).affine ? c.x[i] : Tensor(); }

// ---- rules ------------------------------------------------------------------------------------

Tensor stats_jvp(int, const Tensor& t, const Ctx& c) {
  const View v = view_of(c.shape(0), attrs(c).rank);
  Tensor d = sub(c.x[0], row(c.out, 0, v));
  return rows(cmean(t, v), mul(scalar_tensor(2.0, t.dtype()), cmean(mul(d, t), v)), v);
}
Tensor stats_vjp(int, const Tensor& ct, const Ctx& c) {
  const View v = view_of(c.shape(0), attrs(c).rank);
  Tensor d = sub(c.x[0], row(c.out, 0, v));
  Tensor g = add(row(ct, 0, v), mul(mul(scalar_tensor(2.0, ct.dtype()), row(ct, 1, v)), d));
  return div(g, scalar_tensor(v.m, ct.dtype()));
}

// Inputs x, stats[, w, b].
Tensor train_jvp(int i, const Tensor& t, const Ctx& c) {
  const auto& a = attrs(c);
  const View v = view_of(c.shape(0), a.rank);
  switch (i) {
    case 0: return bind_backward(t, c.x[0], c.x[1], weight_of(c, 2), a.rank, a.eps);
    case 2: return mul(xhat(c.x[0], c.x[1], a.eps, v), chan(t, v));
    case 3: return chan(t, v);
    default: return {};  // stats: a cache of batch_norm_stats(x), no derivative of its own
  }
}
std::vector<Tensor> train_vjp_all(const Tensor& ct, const Ctx& c, const std::vector<bool>& needed) {
  const auto& a = attrs(c);
  std::vector<Tensor> g(needed.size());
  // The channel sums of ct and ct · xhat: the weight's and bias's gradients, and (passed on) the
  // sums that x's gradient needs too, so that dy and x are read once for both.
  Tensor r;
  if (a.affine && (needed[2] || needed[3])) {
    const View v = view_of(c.shape(0), a.rank);
    r = bind_reduce(ct, c.x[0], c.x[1], a.rank, a.eps);
    if (needed[2]) g[2] = reshape(slice(r, -2, 0, 1), v.l.channel_shape());
    if (needed[3]) g[3] = reshape(slice(r, -2, 1, 2), v.l.channel_shape());
  }
  // (Not in bfloat16/float16, whose sums would be rounded to the half type on the way.)
  if (needed[0]) g[0] = bind_backward(ct, c.x[0], c.x[1], weight_of(c, 2), a.rank, a.eps, is_half(ct.dtype()) ? Tensor() : r);
  return g;
}

// Inputs dy, x, stats[, w]. The derivative of D_x(u) in x along t, with a = mean(xhat · t):
//   -invstd · (a · D_x(u) + D_x(t) · mean(xhat · u) + xhat · mean(D_x(t) · u)).
Tensor backward_jvp(int i, const Tensor& t, const Ctx& c) {
  const auto& a = attrs(c);
  const Tensor &dy = c.x[0], &x = c.x[1], &st = c.x[2];
  const Tensor w = weight_of(c, 3);
  switch (i) {
    case 0: return bind_backward(t, x, st, w, a.rank, a.eps);
    case 3: return bind_backward(dy, x, st, t, a.rank, a.eps);
    case 1: {
      const View v = view_of(c.shape(1), a.rank);
      Tensor xh = xhat(x, st, a.eps, v), r = invstd(st, a.eps, v);
      Tensor du = bind_backward(dy, x, st, {}, a.rank, a.eps), dt = bind_backward(t, x, st, {}, a.rank, a.eps);
      Tensor s = add(add(mul(cmean(mul(xh, t), v), du), mul(dt, cmean(mul(xh, dy), v))), mul(xh, cmean(mul(dt, dy), v)));
      Tensor out = neg(mul(r, s));
      return w.defined() ? mul(chan(w, v), out) : out;
    }
    default: return {};
  }
}
// The adjoint of the above in t, for ct' = w · ct:
//   -invstd · (mean(ct' · D_x(u)) · xhat + mean(xhat · u) · D_x(ct') + mean(ct' · xhat) · D_x(u)).
Tensor backward_vjp(int i, const Tensor& ct, const Ctx& c) {
  const auto& a = attrs(c);
  const Tensor &dy = c.x[0], &x = c.x[1], &st = c.x[2];
  const Tensor w = weight_of(c, 3);
  switch (i) {
    case 0: return bind_backward(ct, x, st, w, a.rank, a.eps);  // w · D_x is self-adjoint
    case 3: {
      const View v = view_of(c.shape(1), a.rank);
      return reshape(csum(mul(ct, bind_backward(dy, x, st, {}, a.rank, a.eps)), v), c.shape(3));
    }
    case 1: {
      const View v = view_of(c.shape(1), a.rank);
      Tensor ctw = w.defined() ? mul(chan(w, v), ct) : ct;
      Tensor xh = xhat(x, st, a.eps, v), r = invstd(st, a.eps, v);
      Tensor du = bind_backward(dy, x, st, {}, a.rank, a.eps), dc = bind_backward(ctw, x, st, {}, a.rank, a.eps);
      Tensor s = add(add(mul(cmean(mul(ctw, du), v), xh), mul(cmean(mul(xh, dy), v), dc)), mul(cmean(mul(ctw, xh), v), du));
      return neg(mul(r, s));
    }
    default: return {};
  }
}

// Inputs dy, x, stats. Row 0 sum(dy · xhat) has derivative sum(dy · D_x(t)) = sum(t · D_x(dy)) in
// x; row 1 sum(dy) none.
Tensor reduce_jvp(int i, const Tensor& t, const Ctx& c) {
  const auto& a = attrs(c);
  switch (i) {
    case 0: return bind_reduce(t, c.x[1], c.x[2], a.rank, a.eps);
    case 1: {
      const View v = view_of(c.shape(1), a.rank);
      Tensor s = csum(mul(t, bind_backward(c.x[0], c.x[1], c.x[2], {}, a.rank, a.eps)), v);
      return rows(s, zeros(s.shape(), s.dtype()), v);
    }
    default: return {};
  }
}
Tensor reduce_vjp(int i, const Tensor& ct, const Ctx& c) {
  const auto& a = attrs(c);
  const View v = view_of(c.shape(1), a.rank);
  switch (i) {
    case 0: return add(mul(row(ct, 0, v), xhat(c.x[1], c.x[2], a.eps, v)), row(ct, 1, v));
    case 1: return mul(row(ct, 0, v), bind_backward(c.x[0], c.x[1], c.x[2], {}, a.rank, a.eps));
    default: return {};
  }
}

// ---- sample cases -------------------------------------------------------------------------------

using cases::Domain;
Tensor sample(Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); }
Tensor positive(Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Positive, seed); }
constexpr double kCaseEps = 1e-3;

}  // namespace

// ---- primitives -----------------------------------------------------------------------------

const Primitive batch_norm_stats_p{
    .name = "batch_norm_stats",
    .forward = stats_forward,
    .jvp = stats_jvp,
    .vjp = stats_vjp,
    .batching = Batching::Leading,
    .saves = kSaveInputs | kSaveOutput,
    .cases = [] {
      auto f = [](auto x) { return batch_norm_stats(x[0]); };
      return std::vector<OpCase>{
          cases::single("[6,3]", {sample({6, 3}, 1)}, f),
          cases::single("[3,2,2,3]", {sample({3, 2, 2, 3}, 2)}, f),
          cases::single("[2,1,1,1]", {sample({2, 1, 1, 1}, 3)}, f),
          cases::single("[2,3,5]", {sample({2, 3, 5}, 4)}, f),
          cases::single("[3,0,2] no channels", {sample({3, 0, 2}, 5)}, f),
          cases::single("[8,3,3,3] medium", {sample({8, 3, 3, 3}, 6)}, f),
      };
    },
    .kinks = "smooth",
};

const Primitive batch_norm_train_p{
    .name = "batch_norm_train",
    .forward = train_forward,
    .jvp = train_jvp,
    .vjp_all = train_vjp_all,
    .batching = Batching::Materialize,
    .cases = [] {
      auto f = [](auto x) { return batch_norm_train(x[0], x[1], x[2], kCaseEps); };
      auto plain = [](auto x) { return batch_norm_train(x[0], {}, {}, kCaseEps); };
      return std::vector<OpCase>{
          cases::single("[6,3] (1d)", {sample({6, 3}, 11), positive({3}, 12), sample({3}, 13)}, f),
          cases::single("[3,2,2,3] (2d)", {sample({3, 2, 2, 3}, 14), positive({2}, 15), sample({2}, 16)}, f),
          cases::single("[4,3,2,2] affine=false", {sample({4, 3, 2, 2}, 17)}, plain),
          cases::single("[2,1,3,1]", {sample({2, 1, 3, 1}, 18), positive({1}, 19), sample({1}, 20)}, f),
          cases::single("[3,0,2] no channels", {sample({3, 0, 2}, 9), positive({0}, 9), sample({0}, 9)}, f),
          cases::single("[8,3,3,3] medium", {sample({8, 3, 3, 3}, 10), positive({3}, 10), sample({3}, 10)}, f),
      };
    },
    .kinks = "smooth (eps > 0 keeps 1/sqrt(var + eps) finite)",
};

const Primitive batch_norm_backward_p{
    .name = "batch_norm_backward",
    .forward = backward_forward,
    .jvp = backward_jvp,
    .vjp = backward_vjp,
    .batching = Batching::Materialize,
    .cases = [] {
      auto f = [](auto x) { return batch_norm_backward(x[0], x[1], x[2], kCaseEps); };
      auto plain = [](auto x) { return batch_norm_backward(x[0], x[1], {}, kCaseEps); };
      return std::vector<OpCase>{
          cases::single("[6,3] (1d)", {sample({6, 3}, 21), sample({6, 3}, 22), positive({3}, 23)}, f),
          cases::single("[3,2,2,3] (2d)", {sample({3, 2, 2, 3}, 24), sample({3, 2, 2, 3}, 25), positive({2}, 26)}, f),
          cases::single("[4,3,2,2] affine=false", {sample({4, 3, 2, 2}, 27), sample({4, 3, 2, 2}, 28)}, plain),
          cases::single("[2,1,3,1]", {sample({2, 1, 3, 1}, 40), sample({2, 1, 3, 1}, 41), positive({1}, 42)}, f),
          cases::single("[3,0,2] no channels", {sample({3, 0, 2}, 29), sample({3, 0, 2}, 29), positive({0}, 29)}, f),
          cases::single("[8,3,3,3] medium", {sample({8, 3, 3, 3}, 30), sample({8, 3, 3, 3}, 30), positive({3}, 30)}, f),
      };
    },
    .kinks = "smooth (eps > 0 keeps 1/sqrt(var + eps) finite)",
};

const Primitive batch_norm_backward_reduce_p{
    .name = "batch_norm_backward_reduce",
    .forward = reduce_forward,
    .jvp = reduce_jvp,
    .vjp = reduce_vjp,
    .batching = Batching::Materialize,
    .cases = [] {
      auto f = [](auto x) { return batch_norm_backward_reduce(x[0], x[1], kCaseEps); };
      return std::vector<OpCase>{
          cases::single("[6,3] (1d)", {sample({6, 3}, 31), sample({6, 3}, 32)}, f),
          cases::single("[3,2,2,3] (2d)", {sample({3, 2, 2, 3}, 33), sample({3, 2, 2, 3}, 34)}, f),
          cases::single("[2,1,3,1]", {sample({2, 1, 3, 1}, 35), sample({2, 1, 3, 1}, 36)}, f),
          cases::single("[3,0,2] no channels", {sample({3, 0, 2}, 37), sample({3, 0, 2}, 37)}, f),
          cases::single("[8,3,3,3] medium", {sample({8, 3, 3, 3}, 38), sample({8, 3, 3, 3}, 39)}, f),
      };
    },
    .kinks = "smooth (eps > 0 keeps 1/sqrt(var + eps) finite)",
};

// ---- public functions -------------------------------------------------------------------------

namespace {
// Checks x [N, C, *] (float, at least one value per channel) and an optional [C] weight/bias.
void check_input(std::string_view op, const Tensor& x, const Tensor& w, const Tensor& b) {
  if (x.dim() < 2) throw ShapeError(fmt::format("{}: needs x [N, C, *], got {}", op, x.shape().str()));
  if (!is_floating(x.dtype()))
    throw DTypeError(fmt::format("{}: expected float32 or float64, got {}", op, dtype_name(x.dtype())));
  const Layout l = layout(op, x.shape(), x.dim());
  if (l.c > 0 && l.m() == 0)
    throw ValueError(fmt::format("{}: needs at least one value per channel, got x {}", op, x.shape().str()));
  for (const Tensor* t : {&w, &b}) {
    if (!t->defined()) continue;
    if (t->shape() != Shape{l.c})
      throw ShapeError(fmt::format("{}: weight and bias must be [{}] for x {}, got {}", op, l.c, x.shape().str(), t->shape().str()));
    if (t->dtype() != x.dtype())
      throw DTypeError(fmt::format("{}: weight/bias are {} but x is {}", op, dtype_name(t->dtype()), dtype_name(x.dtype())));
  }
}
}  // namespace

Tensor batch_norm_stats(const Tensor& x) {
  check_input("batch_norm_stats", x, {}, {});
  return bind_stats(x, x.dim());
}

std::pair<Tensor, Tensor> batch_norm_train_with_stats(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_input("batch_norm_train", x, weight, bias);
  if (weight.defined() != bias.defined())
    throw ValueError("batch_norm_train: weight and bias must both be given or both be undefined");
  if (!(eps > 0)) throw ValueError(fmt::format("batch_norm_train: eps must be positive, got {}", eps));
  Tensor stats = bind_stats(x, x.dim());
  return {bind_train(x, stats, weight, bias, x.dim(), eps), stats};
}

Tensor batch_norm_train(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return batch_norm_train_with_stats(x, weight, bias, eps).first;
}

Tensor batch_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, double eps) {
  check_input("batch_norm_backward", x, weight, {});
  if (dy.shape() != x.shape())
    throw ShapeError(fmt::format("batch_norm_backward: grad_output {} must have x's shape {}", dy.shape().str(), x.shape().str()));
  return bind_backward(dy, x, bind_stats(x, x.dim()), weight, x.dim(), eps);
}

Tensor batch_norm_backward_reduce(const Tensor& dy, const Tensor& x, double eps) {
  check_input("batch_norm_backward_reduce", x, {}, {});
  if (dy.shape() != x.shape())
    throw ShapeError(
        fmt::format("batch_norm_backward_reduce: grad_output {} must have x's shape {}", dy.shape().str(), x.shape().str()));
  return bind_reduce(dy, x, bind_stats(x, x.dim()), x.dim(), eps);
}

const Primitive* const kNormPrimitives[] = {&batch_norm_stats_p, &batch_norm_train_p, &batch_norm_backward_p,
                                            &batch_norm_backward_reduce_p};
std::span<const Primitive* const> norm_primitives() { return kNormPrimitives; }

}  // namespace chainrule
