// Sorting and searching. argsort and searchsorted give int64 indices and have no derivative;
// the differentiable part is take_along_axis (x[..., idx[..., j], ...] along one axis, NumPy's
// name; torch.gather) and its adjoint scatter_add_along_axis, each linear and the other's VJP.
// sort and topk are composites: the values are x taken along the permutation, so their
// derivative routes the cotangent back through the same permutation. Ties keep their order
// (a stable sort), so at ties the derivative goes to the element that lands in each position.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "chainrule/ops/array_api.h"
#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

using kernels::axis_of;
using kernels::Lanes;
using kernels::norm_axis;
using cases::Domain;

namespace {



// x and the int64 index agree on every axis but `a`; the index values lie in [0, size).
void check_along(std::string_view op, const Tensor& x, const Tensor& idx, std::size_t a, std::int64_t size) {
  if (idx.dtype() != DType::i64)
    throw DTypeError(fmt::format("{}: index must be int64, got {} {}", op, dtype_name(idx.dtype()), idx.shape().str()));
  bool ok = idx.shape().size() == x.shape().size();
  for (std::size_t d = 0; ok && d < x.shape().size(); ++d) ok = d == a || idx.shape()[d] == x.shape()[d];
  if (!ok)
    throw ShapeError(fmt::format("{}: index of shape {} must match {} on every axis but {}", op, idx.shape().str(),
                                 x.shape().str(), static_cast<std::int64_t>(a)));
  const auto* d = kernels::in<std::int64_t>(idx);
  for (std::int64_t j = 0; j < idx.numel(); ++j)
    if (d[j] < 0 || d[j] >= size)
      throw ValueError(fmt::format("{}: index {} at position {} is out of range for an axis of size {}", op, d[j], j, size));
}

Params along_params(std::string_view op, const Tensor& x, std::int64_t axis) {
  Params p;
  p.axis = norm_axis(op, axis, x.shape().size()) - x.dim();
  return p;
}

// Ascending with NaN last (NumPy's order); descending keeps NaN last too. std::stable_sort keeps
// equal elements in their original order.
template <class T>
void argsort_lanes(const T* x, std::int64_t* out, const Lanes& L, bool descending) {
  std::vector<std::int64_t> perm(static_cast<std::size_t>(L.n));
  for (std::int64_t o = 0; o < L.outer; ++o)
    for (std::int64_t i = 0; i < L.inner; ++i) {
      const T* lane = x + o * L.n * L.inner + i;
      std::iota(perm.begin(), perm.end(), 0);
      auto key = [&](std::int64_t j) { return lane[j * L.inner]; };
      std::stable_sort(perm.begin(), perm.end(), [&](std::int64_t a, std::int64_t b) {
        const T va = key(a), vb = key(b);
        if (std::isnan(va) || std::isnan(vb)) return !std::isnan(va) && std::isnan(vb);
        return descending ? vb < va : va < vb;
      });
      for (std::int64_t j = 0; j < L.n; ++j) out[o * L.n * L.inner + i + j * L.inner] = perm[static_cast<std::size_t>(j)];
    }
}

std::vector<OpCase> along_cases(bool take) {
  using cases::sample;
  auto idx = [](std::vector<std::int64_t> v, Shape s) { return from_vector(v, s); };
  // take: x [.., n, ..] and index [.., k, ..]; scatter: src [.., k, ..], the same index, size n.
  auto f = [take](std::int64_t axis, std::int64_t n) {
    return [take, axis, n](std::span<const Tensor> x) {
      return take ? take_along_axis(x[0], x[1], axis) : scatter_add_along_axis(x[0], x[1], axis, n);
    };
  };
  std::vector<std::int64_t> big;
  for (int j = 0; j < 72; ++j) big.push_back((j * 7 + 3) % 12);
  return {
      cases::single("[5] idx[4,0,4]", {sample(take ? Shape{5} : Shape{3}, Domain::Real, 1), idx({4, 0, 4}, {3})}, f(0, 5)),
      cases::single("[2,3] axis1 idx[2,2]",
                    {sample(take ? Shape{2, 3} : Shape{2, 2}, Domain::Real, 2), idx({2, 0, 1, 1}, {2, 2})}, f(1, 3)),
      cases::single("[3,2] axis0 idx[4,2]",
                    {sample(take ? Shape{3, 2} : Shape{4, 2}, Domain::Real, 3), idx({0, 2, 1, 1, 2, 0, 0, 0}, {4, 2})}, f(0, 3)),
      cases::single("[0,3] axis-1 idx[0,2]", {sample(take ? Shape{0, 3} : Shape{0, 2}, Domain::Real, 4), idx({}, {0, 2})}, f(-1, 3)),
      cases::single("[1,1] idx[1,1]", {sample({1, 1}, Domain::Real, 5), idx({0}, {1, 1})}, f(-1, 1)),
      cases::single("[6,12] axis-1 idx[6,12]", {sample({6, 12}, Domain::Real, 6), idx(big, {6, 12})}, f(-1, 12)),
  };
}

}  // namespace

const Primitive take_along_axis_p{
    .name = "take_along_axis",
    .forward = [](auto x, auto& p) {
      const auto a = axis_of("take_along_axis", x[0], p);
      check_along("take_along_axis", x[0], x[1], a, x[0].shape()[a]);
      Tensor o = empty(x[1].shape(), x[0].dtype());
      const Lanes L(x[0].shape(), a), K(x[1].shape(), a);
      const auto* idx = kernels::in<std::int64_t>(x[1]);
      kernels::dispatch_all(o.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* s = kernels::in<T>(x[0]);
        T* d = kernels::out<T>(o);
        for (std::int64_t o2 = 0; o2 < K.outer; ++o2)
          for (std::int64_t j = 0; j < K.n; ++j)
            for (std::int64_t i = 0; i < K.inner; ++i) {
              const std::int64_t at = (o2 * K.n + j) * K.inner + i;
              d[at] = s[(o2 * L.n + idx[at]) * L.inner + i];
            }
        return 0;
      });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return take_along_axis(t, c.x[1], c.p.axis); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      const auto& s = c.shape(0);
      return scatter_add_along_axis(ct, c.x[1], c.p.axis, s[static_cast<std::size_t>(static_cast<std::int64_t>(s.size()) + c.p.axis)]);
    },
    .batching = Batching::Materialize,
    .cases = [] { return along_cases(true); },
};

const Primitive scatter_add_along_axis_p{
    .name = "scatter_add_along_axis",
    .forward = [](auto x, auto& p) {
      const auto a = axis_of("scatter_add_along_axis", x[0], p);
      if (x[1].shape() != x[0].shape())
        throw ShapeError(fmt::format("scatter_add_along_axis: index {} and source {} must have the same shape",
                                     x[1].shape().str(), x[0].shape().str()));
      check_along("scatter_add_along_axis", x[0], x[1], a, p.size);
      Shape oshape = x[0].shape();
      oshape[a] = p.size;
      Tensor o = zeros(oshape, x[0].dtype());
      const Lanes L(oshape, a), K(x[0].shape(), a);
      const auto* idx = kernels::in<std::int64_t>(x[1]);
      kernels::dispatch_float(o.dtype(), "scatter_add_along_axis", [&](auto tag) {
        using T = decltype(tag);
        const T* s = kernels::in<T>(x[0]);
        T* d = kernels::out<T>(o);
        for (std::int64_t o2 = 0; o2 < K.outer; ++o2)
          for (std::int64_t j = 0; j < K.n; ++j)
            for (std::int64_t i = 0; i < K.inner; ++i) {
              const std::int64_t at = (o2 * K.n + j) * K.inner + i;
              d[(o2 * L.n + idx[at]) * L.inner + i] += s[at];
            }
        return 0;
      });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return scatter_add_along_axis(t, c.x[1], c.p.axis, c.p.size); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return take_along_axis(ct, c.x[1], c.p.axis); },
    .batching = Batching::Materialize,
    .cases = [] { return along_cases(false); },
};

const Primitive argsort_p{
    .name = "argsort",
    .forward = [](auto x, auto& p) {
      const auto a = axis_of("argsort", x[0], p);
      Tensor o = empty(x[0].shape(), DType::i64);
      kernels::dispatch_all(x[0].dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, bool>) {
          throw DTypeError(fmt::format("argsort: cannot sort a bool tensor {}", x[0].shape().str()));
        } else {
          argsort_lanes<T>(kernels::in<T>(x[0]), kernels::out<std::int64_t>(o), Lanes(x[0].shape(), a), p.code == 1);
        }
        return 0;
      });
      return o;
    },
    .batching = Batching::Leading,
};

// The insertion points of `values` in the 1-D ascending `sorted`: the first i with
// sorted[i] >= v (side left), or > v (right), as NumPy's searchsorted.
const Primitive searchsorted_p{
    .name = "searchsorted",
    .forward = [](auto x, auto& p) {
      const Tensor& values = x[0];
      const Tensor& sorted = x[1];
      if (sorted.dim() != 1)
        throw ShapeError(fmt::format("searchsorted: the sorted sequence must be 1-D, got shape {}", sorted.shape().str()));
      check_same_dtype("searchsorted", sorted, values);
      Tensor o = empty(values.shape(), DType::i64);
      auto* d = kernels::out<std::int64_t>(o);
      kernels::dispatch_float(values.dtype(), "searchsorted", [&](auto tag) {
        using T = decltype(tag);
        const T* s = kernels::in<T>(sorted);
        const T* v = kernels::in<T>(values);
        const std::int64_t n = sorted.numel();
        for (std::int64_t i = 0; i < values.numel(); ++i)
          d[i] = (p.code == 1 ? std::upper_bound(s, s + n, v[i]) : std::lower_bound(s, s + n, v[i])) - s;
        return 0;
      });
      return o;
    },
    .batching = Batching::Leading,
};

Tensor take_along_axis(const Tensor& x, const Tensor& indices, std::int64_t axis) {
  return bind(take_along_axis_p, {x, indices}, along_params("take_along_axis", x, axis));
}
Tensor scatter_add_along_axis(const Tensor& src, const Tensor& indices, std::int64_t axis, std::int64_t size) {
  Params p = along_params("scatter_add_along_axis", src, axis);
  p.size = size;
  return bind(scatter_add_along_axis_p, {src, indices}, p);
}
Tensor argsort(const Tensor& x, std::int64_t axis, bool descending) {
  if (x.dim() == 0) return zeros({}, DType::i64);
  Params p = along_params("argsort", x, axis);
  p.code = descending ? 1 : 0;
  return bind(argsort_p, {x}, p);
}
Tensor sort(const Tensor& x, std::int64_t axis, bool descending) {
  if (x.dim() == 0) return x;
  return take_along_axis(x, argsort(x, axis, descending), axis);
}
std::pair<Tensor, Tensor> topk(const Tensor& x, std::int64_t k, std::int64_t axis, bool largest) {
  if (x.dim() == 0) {
    if (k != 1 && k != 0) throw ValueError(fmt::format("topk: k = {} out of range for a scalar", k));
    return k == 1 ? std::pair{x, zeros({}, DType::i64)} : std::pair{reshape(x, {0}), zeros({0}, DType::i64)};
  }
  const auto a = norm_axis("topk", axis, x.shape().size());
  const auto n = x.shape()[static_cast<std::size_t>(a)];
  if (k < 0 || k > n)
    throw ValueError(fmt::format("topk: k = {} out of range for axis {} of shape {}", k, axis, x.shape().str()));
  Tensor idx = slice(argsort(x, a, largest), a, 0, k);
  return {take_along_axis(x, idx, a), idx};
}
Tensor searchsorted(const Tensor& sorted_sequence, const Tensor& values, bool right) {
  Params p;
  p.code = right ? 1 : 0;
  return bind(searchsorted_p, {values, sorted_sequence}, p);
}

const Primitive* const kSortPrimitives[] = {&take_along_axis_p, &scatter_add_along_axis_p, &argsort_p, &searchsorted_p};
std::span<const Primitive* const> sort_primitives() { return kSortPrimitives; }

}  // namespace chainrule
