// The array API's manipulation functions. flip is a primitive (linear and its own adjoint); the
// rest are exact composites of the structural primitives (reshape, permute, broadcast_to, slice,
// concat), so their derivatives are those primitives' transposes and cost nothing extra.
#include <cmath>
#include <cstring>
#include <string_view>
#include <vector>

#include "chainrule/ops/array_api.h"
#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

using kernels::norm_axis;
using cases::Domain;

// Reverses one axis: out[o, j, i] = x[o, n-1-j, i]. Several axes flip one after the other.
const Primitive flip_p{
    .name = "flip",
    .forward = [](auto x, auto& p) {
      const Shape& s = x[0].shape();
      const auto a = static_cast<std::size_t>(norm_axis("flip", p.axis, s.size()));
      std::int64_t outer = 1, inner = 1;
      for (std::size_t i = 0; i < a; ++i) outer *= s[i];
      for (std::size_t i = a + 1; i < s.size(); ++i) inner *= s[i];
      const std::int64_t n = s[a];
      Tensor o = empty(s, x[0].dtype());
      const std::size_t es = itemsize(x[0].dtype());
      const char* src = static_cast<const char*>(x[0].impl()->storage->data) + x[0].impl()->offset * es;
      char* dst = static_cast<char*>(o.impl()->storage->data) + o.impl()->offset * es;
      const std::size_t block = static_cast<std::size_t>(inner) * es;
      if (block > 0)
        for (std::int64_t q = 0; q < outer; ++q)
          for (std::int64_t j = 0; j < n; ++j)
            std::memcpy(dst + static_cast<std::size_t>(q * n + j) * block, src + static_cast<std::size_t>(q * n + n - 1 - j) * block, block);
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return flip(t, {c.p.axis}); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return flip(ct, {c.p.axis}); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      using cases::sample;
      return std::vector<OpCase>{
          cases::single("[5] axis0", {sample({5}, Domain::Real, 1)}, [](auto x) { return flip(x[0], {0}); }),
          cases::single("[3,4] axis-1", {sample({3, 4}, Domain::Real, 2)}, [](auto x) { return flip(x[0], {-1}); }),
          cases::single("[3,4] both axes", {sample({3, 4}, Domain::Real, 3)}, [](auto x) { return flip(x[0]); }),
          cases::single("[2,1,3] axis1", {sample({2, 1, 3}, Domain::Real, 4)}, [](auto x) { return flip(x[0], {1}); }),
          cases::single("[0,3] axis0", {sample({0, 3}, Domain::Real, 5)}, [](auto x) { return flip(x[0], {0}); }),
          cases::single("[10,12] axis0", {sample({10, 12}, Domain::Real, 6)}, [](auto x) { return flip(x[0], {0}); }),
      };
    },
};

Tensor flip(const Tensor& x, const Axes& axes) {
  const auto r = x.shape().size();
  std::vector<bool> seen(r, false);
  Tensor y = x;
  for (std::size_t i = 0; i < (axes.empty() ? r : axes.size()); ++i) {
    auto a = axes.empty() ? static_cast<std::int64_t>(i) : norm_axis("flip", axes[i], r);
    if (seen[static_cast<std::size_t>(a)])
      throw ShapeError(fmt::format("flip: axis {} repeated for shape {}", a, x.shape().str()));
    seen[static_cast<std::size_t>(a)] = true;
    if (x.shape()[static_cast<std::size_t>(a)] <= 1) continue;
    Params p;
    p.axis = a - x.dim();
    y = bind(flip_p, {y}, p);
  }
  return y;
}

Tensor roll(const Tensor& x, std::int64_t shift, std::int64_t axis) {
  const auto a = norm_axis("roll", axis, x.shape().size());
  const auto n = x.shape()[static_cast<std::size_t>(a)];
  if (n == 0) return x;
  const auto s = ((shift % n) + n) % n;
  if (s == 0) return x;
  return concat({slice(x, a, n - s, n), slice(x, a, 0, n - s)}, a);
}

// NumPy's tile: reps and the shape are padded with leading ones to one length; then x viewed as
// [1, s0, 1, s1, ...] is broadcast to [r0, s0, r1, s1, ...] and flattened pairwise.
Tensor tile(const Tensor& x, const std::vector<std::int64_t>& reps) {
  for (auto r : reps)
    if (r < 0) throw ValueError(fmt::format("tile: negative repetition {} for shape {}", r, x.shape().str()));
  const std::size_t d = std::max(reps.size(), x.shape().size());
  Shape s = Shape::filled(d - x.shape().size(), 1) + x.shape();
  std::vector<std::int64_t> r(d - reps.size(), 1);
  r.insert(r.end(), reps.begin(), reps.end());
  Shape pairs, big, out;
  for (std::size_t i = 0; i < d; ++i) {
    pairs.push_back(1);
    pairs.push_back(s[i]);
    big.push_back(r[i]);
    big.push_back(s[i]);
    out.push_back(r[i] * s[i]);
  }
  return reshape(broadcast_to(reshape(x, pairs), big), out);
}

// Each element `repeats` times in a row along the axis: [..., n, 1, ...] broadcast to
// [..., n, repeats, ...], then merged.
Tensor repeat(const Tensor& x, std::int64_t repeats, std::int64_t axis) {
  if (repeats < 0) throw ValueError(fmt::format("repeat: negative repeats {}", repeats));
  const auto a = static_cast<std::size_t>(norm_axis("repeat", axis, x.shape().size()));
  Shape expanded = x.shape();
  expanded.insert(a + 1, repeats);
  Shape out = x.shape();
  out[a] *= repeats;
  return reshape(broadcast_to(unsqueeze(x, static_cast<std::int64_t>(a) + 1), expanded), out);
}
Tensor repeat_interleave(const Tensor& x, std::int64_t repeats, std::int64_t axis) { return repeat(x, repeats, axis); }

Tensor moveaxis(const Tensor& x, std::int64_t source, std::int64_t destination) {
  const auto r = x.shape().size();
  const auto s = norm_axis("moveaxis", source, r), d = norm_axis("moveaxis", destination, r);
  std::vector<std::int64_t> order;
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(r); ++i)
    if (i != s) order.push_back(i);
  order.insert(order.begin() + d, s);
  return permute(x, Axes(std::span<const std::int64_t>(order)));
}

Tensor expand_dims(const Tensor& x, std::int64_t axis) { return unsqueeze(x, axis); }

Tensor squeeze(const Tensor& x, const Axes& axes) {
  const auto r = x.shape().size();
  std::vector<bool> drop(r, false);
  for (auto ax : axes) {
    auto a = static_cast<std::size_t>(norm_axis("squeeze", ax, r));
    if (drop[a]) throw ShapeError(fmt::format("squeeze: axis {} repeated for shape {}", ax, x.shape().str()));
    if (x.shape()[a] != 1) throw ShapeError(fmt::format("squeeze: axis {} of shape {} is not 1", ax, x.shape().str()));
    drop[a] = true;
  }
  Shape s;
  for (std::size_t i = 0; i < r; ++i)
    if (!drop[i]) s.push_back(x.shape()[i]);
  return reshape(x, s);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<std::int64_t>& sizes, std::int64_t axis) {
  const auto a = norm_axis("split", axis, x.shape().size());
  const auto n = x.shape()[static_cast<std::size_t>(a)];
  std::int64_t total = 0;
  for (auto s : sizes) {
    if (s < 0) throw ValueError(fmt::format("split: negative size {}", s));
    total += s;
  }
  if (total != n)
    throw ShapeError(fmt::format("split: sizes sum to {}, but axis {} of shape {} has {}", total, axis, x.shape().str(), n));
  std::vector<Tensor> out;
  std::int64_t at = 0;
  for (auto s : sizes) {
    out.push_back(slice(x, a, at, at + s));
    at += s;
  }
  return out;
}

std::vector<Tensor> unstack(const Tensor& x, std::int64_t axis) {
  const auto a = norm_axis("unstack", axis, x.shape().size());
  std::vector<Tensor> out;
  for (std::int64_t i = 0; i < x.shape()[static_cast<std::size_t>(a)]; ++i) out.push_back(squeeze(slice(x, a, i, i + 1), a));
  return out;
}

std::vector<Tensor> meshgrid(const std::vector<Tensor>& xs, std::string_view indexing) {
  if (indexing != "xy" && indexing != "ij")
    throw ValueError(fmt::format("meshgrid: indexing must be 'xy' or 'ij', got '{}'", indexing));
  Shape shape;
  for (const auto& x : xs) {
    if (x.dim() != 1) throw ShapeError(fmt::format("meshgrid: inputs must be 1-D, got shape {}", x.shape().str()));
    shape.push_back(x.numel());
  }
  const bool xy = indexing == "xy" && xs.size() >= 2;
  if (xy) std::swap(shape[0], shape[1]);
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    std::size_t at = xy && i < 2 ? 1 - i : i;  // "xy": the first input varies along axis 1
    Shape view = Shape::filled(xs.size(), 1);
    view[at] = xs[i].numel();
    out.push_back(broadcast_to(reshape(xs[i], view), shape));
  }
  return out;
}


// ---- triangles ---------------------------------------------------------------------------------

// tril (code 0) or triu (code 1) of the last two axes, diagonal offset p.start: x times a fixed 0/1
// mask, so linear, and its JVP and VJP are the same triangle of the tangent or cotangent.
namespace {
Tensor triangle(const Tensor& x, std::int64_t k, bool upper);
}
const Primitive triangle_p{
    .name = "triangle",
    .forward = [](auto x, auto& p) {
      const Shape& s = x[0].shape();
      const std::int64_t rows = s[s.size() - 2], cols = s[s.size() - 1], k = p.start;
      const bool upper = p.code == 1;
      Tensor o = empty(s, x[0].dtype());
      kernels::dispatch_all(x[0].dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* a = kernels::in<T>(x[0]);
        T* d = kernels::out<T>(o);
        const std::int64_t mats = rows * cols == 0 ? 0 : x[0].numel() / (rows * cols);
        for (std::int64_t m = 0; m < mats; ++m)
          for (std::int64_t i = 0; i < rows; ++i)
            for (std::int64_t j = 0; j < cols; ++j) {
              const std::int64_t at = (m * rows + i) * cols + j;
              d[at] = (upper ? j - i >= k : j - i <= k) ? a[at] : T(0);
            }
        return 0;
      });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return triangle(t, c.p.start, c.p.code == 1); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return triangle(ct, c.p.start, c.p.code == 1); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      using cases::sample;
      return std::vector<OpCase>{
          cases::single("tril [3,4]", {sample({3, 4}, Domain::Real, 1)}, [](auto x) { return tril(x[0]); }),
          cases::single("triu [4,3] k=1", {sample({4, 3}, Domain::Real, 2)}, [](auto x) { return triu(x[0], 1); }),
          cases::single("tril [2,3,3] k=-1", {sample({2, 3, 3}, Domain::Real, 3)}, [](auto x) { return tril(x[0], -1); }),
          cases::single("triu [2,1,4,4] k=-2", {sample({2, 1, 4, 4}, Domain::Real, 4)}, [](auto x) { return triu(x[0], -2); }),
          cases::single("tril [0,3]", {sample({0, 3}, Domain::Real, 5)}, [](auto x) { return tril(x[0]); }),
          cases::single("triu [10,12] k=3", {sample({10, 12}, Domain::Real, 6)}, [](auto x) { return triu(x[0], 3); }),
      };
    },
};

namespace {
Tensor triangle(const Tensor& x, std::int64_t k, bool upper) {
  if (x.dim() < 2)
    throw ShapeError(fmt::format("{}: expected at least 2 dimensions, got shape {}", upper ? "triu" : "tril", x.shape().str()));
  Params p;
  p.start = k;
  p.code = upper ? 1 : 0;
  return bind(triangle_p, {x}, p);
}
}  // namespace
Tensor tril(const Tensor& x, std::int64_t k) { return triangle(x, k, false); }
Tensor triu(const Tensor& x, std::int64_t k) { return triangle(x, k, true); }

// ---- creation ----------------------------------------------------------------------------------

Tensor linspace(double start, double stop, std::int64_t num, DType dtype, bool endpoint) {
  if (num < 0) throw ValueError(fmt::format("linspace: num must be non-negative, got {}", num));
  if (!std::isfinite(start) || !std::isfinite(stop))
    throw ValueError(fmt::format("linspace: start and stop must be finite, got {} and {}", start, stop));
  std::vector<double> v(static_cast<std::size_t>(num));
  const std::int64_t div = endpoint ? num - 1 : num;
  const double step = div > 0 ? (stop - start) / static_cast<double>(div) : 0.0;
  for (std::int64_t i = 0; i < num; ++i) v[static_cast<std::size_t>(i)] = start + static_cast<double>(i) * step;
  if (endpoint && num > 1) v.back() = stop;
  return tensor(v, Shape{num}, dtype);
}

Tensor arange(double start, double stop, double step, DType dtype) {
  if (step == 0 || !std::isfinite(step) || !std::isfinite(start) || !std::isfinite(stop))
    throw ValueError(fmt::format("arange: start, stop and step must be finite and step nonzero, got {}, {}, {}", start, stop, step));
  const double count = std::ceil((stop - start) / step);
  if (count > 9007199254740992.0)  // 2^53: past it the values are no longer distinct doubles
    throw ValueError(fmt::format("arange: {} values from {} to {} by {} is too many", count, start, stop, step));
  const auto n = count > 0 ? static_cast<std::int64_t>(count) : 0;
  std::vector<double> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = start + static_cast<double>(i) * step;
  return tensor(v, Shape{n}, dtype);
}

Tensor full_like(const Tensor& x, double value) { return full(x.shape(), value, x.dtype()); }
Tensor full_like(const Tensor& x, double value, DType dtype) { return full(x.shape(), value, dtype); }

const Primitive* const kManipPrimitives[] = {&flip_p, &triangle_p};
std::span<const Primitive* const> manip_primitives() { return kManipPrimitives; }

}  // namespace chainrule
