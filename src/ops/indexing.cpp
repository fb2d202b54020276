// Indexing. Two primitives: strided_slice (the elements start + k·step of one axis) and its
// adjoint strided_slice_backward (zeros with those elements filled in), each linear and the
// other's VJP, so derivatives of every order follow, as with slice <-> pad. The indexer is a plan
// of steps built from the index items: basic steps (a slice, a selected integer, a new axis)
// and at most one advanced step (the integer arrays, gathered as one flat index along one axis).
// Reading x[items] runs the plan; the functional updates run its transpose (pad, the strided
// backward, scatter_add), which is also what their derivatives are made of.
#include "chainrule/ops/indexing.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "chainrule/autodiff/frame.h"
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

// The elements start + k·step (k < count) of an axis of length n; step != 0.
struct StridedAxis {
  std::int64_t start = 0, step = 1, count = 0, n = 0;
};

Tensor strided_slice(const Tensor& x, std::int64_t axis, const StridedAxis& r);
Tensor strided_slice_backward(const Tensor& ct, std::int64_t axis, const StridedAxis& r);

// Copies blocks of `inner` elements: dst[q, to(k)] = src[q, from(k)] for k < count.
template <class From, class To>
void copy_lanes(const Tensor& src, std::int64_t src_n, const Tensor& dst, std::int64_t dst_n, const Lanes& L,
                std::int64_t count, From from, To to) {
  const std::size_t es = itemsize(src.dtype());
  const char* s = static_cast<const char*>(src.impl()->storage->data) + src.impl()->offset * es;
  char* d = static_cast<char*>(dst.impl()->storage->data) + dst.impl()->offset * es;
  const std::size_t block = static_cast<std::size_t>(L.inner) * es;
  if (block == 0) return;
  for (std::int64_t q = 0; q < L.outer; ++q)
    for (std::int64_t k = 0; k < count; ++k)
      std::memcpy(d + static_cast<std::size_t>(q * dst_n + to(k)) * block, s + static_cast<std::size_t>(q * src_n + from(k)) * block,
                  block);
}

std::vector<OpCase> strided_cases(bool backward) {
  using cases::sample;
  // label, shape of x, axis, range
  struct C {
    const char* label;
    Shape shape;
    std::int64_t axis;
    StridedAxis r;
  };
  const C cs[] = {
      {"[7] 1:6:2", {7}, 0, {1, 2, 3, 7}},
      {"[3,8] axis-1 7:0:-3", {3, 8}, -1, {7, -3, 3, 8}},
      {"[5] ::-1", {5}, 0, {4, -1, 5, 5}},
      {"[0,4] axis1 ::2", {0, 4}, 1, {0, 2, 2, 4}},
      {"[1,5] axis0 ::-2", {1, 5}, 0, {0, -2, 1, 1}},
      {"[2,6,1] axis1 5::-4", {2, 6, 1}, 1, {5, -4, 2, 6}},
      {"[16,10] axis0 1::2", {16, 10}, 0, {1, 2, 8, 16}},
  };
  std::vector<OpCase> out;
  std::uint64_t seed = 1;
  for (const auto& c : cs) {
    Shape in = c.shape;
    if (backward) in[static_cast<std::size_t>(norm_axis("strided_slice", c.axis, in.size()))] = c.r.count;
    out.push_back(cases::single(c.label, {sample(in, Domain::Real, seed++)}, [c, backward](std::span<const Tensor> x) {
      return backward ? strided_slice_backward(x[0], c.axis, c.r) : strided_slice(x[0], c.axis, c.r);
    }));
  }
  return out;
}

}  // namespace

// out[q, k] = x[q, start + k·step] along the axis.
const Primitive strided_slice_p{
    .name = "strided_slice",
    .forward = [](auto x, auto& p) {
      const auto a = axis_of("strided_slice", x[0], p);
      const auto& r = p.template attrs<StridedAxis>();
      const Lanes L(x[0].shape(), a);
      if (L.n != r.n)
        throw ShapeError(fmt::format("strided_slice: axis {} of shape {} has length {}, expected {}", p.axis, x[0].shape().str(), L.n, r.n));
      Shape oshape = x[0].shape();
      oshape[a] = r.count;
      Tensor o = empty(oshape, x[0].dtype());
      copy_lanes(x[0], r.n, o, r.count, L, r.count, [&](std::int64_t k) { return r.start + k * r.step; }, [](std::int64_t k) { return k; });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return strided_slice(t, c.p.axis, c.p.attrs<StridedAxis>()); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return strided_slice_backward(ct, c.p.axis, c.p.attrs<StridedAxis>()); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] { return strided_cases(false); },
};

// Zeros of length n along the axis with out[q, start + k·step] = ct[q, k]: strided_slice's adjoint.
const Primitive strided_slice_backward_p{
    .name = "strided_slice_backward",
    .forward = [](auto x, auto& p) {
      const auto a = axis_of("strided_slice_backward", x[0], p);
      const auto& r = p.template attrs<StridedAxis>();
      if (x[0].shape()[a] != r.count)
        throw ShapeError(fmt::format("strided_slice_backward: axis {} of shape {} has length {}, expected {}", p.axis,
                                     x[0].shape().str(), x[0].shape()[a], r.count));
      Shape oshape = x[0].shape();
      oshape[a] = r.n;
      Tensor o = zeros(oshape, x[0].dtype());
      copy_lanes(x[0], r.count, o, r.n, Lanes(x[0].shape(), a), r.count, [](std::int64_t k) { return k; },
                 [&](std::int64_t k) { return r.start + k * r.step; });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return strided_slice_backward(t, c.p.axis, c.p.attrs<StridedAxis>()); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return strided_slice(ct, c.p.axis, c.p.attrs<StridedAxis>()); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] { return strided_cases(true); },
};

namespace {

// axis: negative (from the end), as the primitives' parameters.
Tensor strided_slice(const Tensor& x, std::int64_t axis, const StridedAxis& r) {
  const auto a = norm_axis("strided_slice", axis, x.shape().size());
  if (r.step == 1) return slice(x, a, r.start, r.start + r.count);
  if (r.count == 0) return slice(x, a, 0, 0);
  Params p = Params::with_attrs(r);
  p.axis = a - x.dim();
  return bind(strided_slice_p, {x}, p);
}
Tensor strided_slice_backward(const Tensor& ct, std::int64_t axis, const StridedAxis& r) {
  const auto a = norm_axis("strided_slice_backward", axis, ct.shape().size());
  if (r.step == 1 || r.count == 0) {
    if (ct.shape()[static_cast<std::size_t>(a)] != r.count)
      throw ShapeError(fmt::format("strided_slice_backward: axis {} of shape {} has length {}, expected {}", axis, ct.shape().str(),
                                   ct.shape()[static_cast<std::size_t>(a)], r.count));
    const std::int64_t start = r.count == 0 ? 0 : r.start;
    return pad(ct, a, start, r.n - start - r.count);
  }
  Params p = Params::with_attrs(r);
  p.axis = a - ct.dim();
  return bind(strided_slice_backward_p, {ct}, p);
}

// Python's slice.indices(n) followed by the element count.
StridedAxis normalize_slice(std::int64_t n, std::optional<std::int64_t> start, std::optional<std::int64_t> stop,
                            std::int64_t step, std::string_view op) {
  if (step == 0) throw ShapeError(fmt::format("{}: slice step cannot be zero", op));
  auto bound = [&](std::optional<std::int64_t> v, std::int64_t dflt) {
    if (!v) return dflt;
    std::int64_t b = *v;
    if (b < 0) {
      b += n;
      if (b < 0) b = step < 0 ? -1 : 0;
    } else if (b >= n) {
      b = step < 0 ? n - 1 : n;
    }
    return b;
  };
  StridedAxis r;
  r.n = n;
  r.step = step;
  r.start = bound(start, step < 0 ? n - 1 : 0);
  const std::int64_t e = bound(stop, step < 0 ? -1 : n);
  if (step > 0) r.count = e > r.start ? (e - r.start + step - 1) / step : 0;
  else r.count = r.start > e ? (r.start - e + (-step) - 1) / (-step) : 0;
  if (r.count == 0) r.start = 0;
  return r;
}

}  // namespace

Tensor slice(const Tensor& x, std::int64_t axis, std::optional<std::int64_t> start, std::optional<std::int64_t> stop,
             std::int64_t step) {
  const auto a = norm_axis("slice", axis, x.shape().size());
  const StridedAxis r = normalize_slice(x.shape()[static_cast<std::size_t>(a)], start, stop, step, "slice");
  return strided_slice(x, a, r);
}

// ---- the indexer ------------------------------------------------------------------------------

namespace {

// The tensor underneath every transform's tracers: a batch tracer's primal holds all examples.
// Only for checks of index values and for masks, never for a result that flows on.
Tensor value_underneath(const Tensor& t) {
  Tensor c = t;
  while (c.impl()->frame) c = c.impl()->primal;
  return c;
}
bool batched(const Tensor& t) {
  for (const TensorImpl* c = t.impl(); c->frame; c = c->primal.impl())
    if (c->frame->kind == TraceKind::Batch) return true;
  return false;
}

Tensor i64_scalar(std::int64_t v) { return scalar_tensor(static_cast<double>(v), DType::i64); }

// A basic step applied to the current tensor y, with its transpose.
struct BasicStep {
  enum class Kind : std::uint8_t { Slice, Select, NewAxis } kind;
  std::int64_t axis = 0;  // of y, from the front
  StridedAxis range;      // Slice
  std::int64_t k = 0, n = 0;  // Select: element k of an axis of length n
};

// The integer arrays of NumPy's advanced indexing, on axes of y (ascending), broadcast together.
struct Advanced {
  std::vector<std::int64_t> axes;
  std::vector<Tensor> indices;  // int64, non-negative, broadcast to `shape`
  Shape shape;                  // the broadcast shape B of the indices
  bool adjacent = true;         // result axes where the first array stood (else in front)
};

struct Plan {
  std::vector<BasicStep> steps;
  Shape y_shape;  // after the basic steps
  std::optional<Advanced> adv;
};

std::string where_in(const Shape& x_shape, std::int64_t x_axis) {
  return fmt::format("axis {} of x {}", x_axis, x_shape.str());
}

Plan make_plan(const Tensor& x, const std::vector<TensorIndex>& items) {
  using K = TensorIndex::Kind;
  Plan plan;
  const auto rank = x.dim();
  std::int64_t consumed = 0, ellipses = 0;
  bool any_array = false;
  for (const auto& it : items) {
    switch (it.kind()) {
      case K::Integer:
      case K::Slice: ++consumed; break;
      case K::Ellipsis: ++ellipses; break;
      case K::None: break;
      case K::Boolean: any_array = true; break;  // a 0-d mask: an advanced index (NumPy)
      case K::Tensor: {
        const Tensor& t = it.tensor();
        if (t.dtype() == DType::b8) {
          consumed += t.dim();
          any_array = true;
        } else if (t.dtype() == DType::i64) {
          ++consumed;
          any_array = true;
        } else {
          throw DTypeError(fmt::format("index: index tensors must be int64 or bool, got {} {}", dtype_name(t.dtype()), t.shape().str()));
        }
        break;
      }
    }
  }
  if (ellipses > 1) throw ShapeError("index: an index can have only one Ellipsis");
  if (consumed > rank)
    throw ShapeError(fmt::format("index: too many indices for x of shape {}: {} axes indexed", x.shape().str(), consumed));

  Shape y = x.shape();
  std::int64_t ax = 0, xa = 0;  // the current axis of y, and of x
  std::vector<std::int64_t> adv_axes;
  std::vector<Tensor> adv_idx;
  std::vector<std::size_t> adv_item;  // which item each array came from (adjacency)
  auto push = [&](BasicStep s) {
    plan.steps.push_back(s);
    const auto a = static_cast<std::size_t>(s.axis);
    switch (s.kind) {
      case BasicStep::Kind::Slice: y[a] = s.range.count; break;
      case BasicStep::Kind::Select: y.erase(a); break;
      case BasicStep::Kind::NewAxis: y.insert(a, 1); break;
    }
  };
  auto check_range = [&](std::int64_t v, std::int64_t n) {
    if (v < -n || v >= n)
      throw ValueError(fmt::format("index: index {} is out of range for {} (size {})", v, where_in(x.shape(), xa), n));
  };
  // NumPy's scalar bool (a 0-d mask): a new axis of size 1 indexed by the array [0] (true) or []
  // (false), so that it broadcasts with the other arrays.
  auto scalar_mask = [&](bool b, std::size_t i) {
    push({BasicStep::Kind::NewAxis, ax});
    adv_axes.push_back(ax++);
    adv_idx.push_back(from_vector(b ? std::vector<std::int64_t>{0} : std::vector<std::int64_t>{}));
    adv_item.push_back(i);
  };
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    switch (it.kind()) {
      case K::Ellipsis:  // full slices over the axes the other items leave
        ax += rank - consumed;
        xa += rank - consumed;
        break;
      case K::None: push({BasicStep::Kind::NewAxis, ax++}); break;
      case K::Boolean: scalar_mask(it.boolean(), i); break;
      case K::Slice: {
        const auto& s = it.slice();
        push({.kind = BasicStep::Kind::Slice, .axis = ax,
              .range = normalize_slice(y[static_cast<std::size_t>(ax)], s.start, s.stop, s.step, "index")});
        ++ax, ++xa;
        break;
      }
      case K::Integer: {
        const std::int64_t n = y[static_cast<std::size_t>(ax)], v = it.integer();
        check_range(v, n);
        const std::int64_t k = v < 0 ? v + n : v;
        if (any_array) {  // NumPy: beside an array an integer is a 0-d array index
          adv_axes.push_back(ax++);
          adv_idx.push_back(i64_scalar(k));
          adv_item.push_back(i);
        } else {
          push({.kind = BasicStep::Kind::Select, .axis = ax, .k = k, .n = n});
        }
        ++xa;
        break;
      }
      case K::Tensor: {
        const Tensor& t = it.tensor();
        if (t.dtype() == DType::i64) {
          const std::int64_t n = y[static_cast<std::size_t>(ax)];
          const Tensor v = value_underneath(t);
          const auto* d = v.data<std::int64_t>();
          bool negative = false;
          for (std::int64_t j = 0; j < v.numel(); ++j) {
            check_range(d[j], n);
            negative |= d[j] < 0;
          }
          adv_axes.push_back(ax++);
          adv_idx.push_back(negative ? where(less(t, i64_scalar(0)), add(t, i64_scalar(n)), t) : t);
          adv_item.push_back(i);
          ++xa;
        } else if (t.dim() == 0) {  // a 0-d mask is the scalar bool
          if (batched(t))
            throw AutodiffError("index: a batched 0-d bool mask inside vmap has a data-dependent shape");
          scalar_mask(value_underneath(t).item() != 0.0, i);
        } else {
          const auto d = static_cast<std::size_t>(t.dim());
          const Shape covered = y.slice(static_cast<std::size_t>(ax), static_cast<std::size_t>(ax) + d);
          if (covered != t.shape())
            throw ShapeError(fmt::format("index: bool mask of shape {} does not match axes {}..{} of x {} (shape {})", t.shape().str(),
                                         xa, xa + t.dim() - 1, x.shape().str(), covered.str()));
          if (batched(t))
            throw AutodiffError(fmt::format(
                "index: a bool mask batched by vmap selects a data-dependent number of elements (mask {}); use where(mask, x, "
                "0) or integer indices of a fixed size instead",
                t.shape().str()));
          const Tensor m = value_underneath(t);
          const bool* md = m.data<bool>();
          std::vector<std::vector<std::int64_t>> coords(d);
          const Shape strides = kernels::contiguous_strides(t.shape());
          for (std::int64_t j = 0; j < m.numel(); ++j)
            if (md[j])
              for (std::size_t q = 0; q < d; ++q) coords[q].push_back((j / strides[q]) % t.shape()[q]);
          for (std::size_t q = 0; q < d; ++q) {
            adv_axes.push_back(ax++);
            adv_idx.push_back(from_vector(coords[q]));
            adv_item.push_back(i);
          }
          xa += t.dim();
        }
        break;
      }
    }
  }
  plan.y_shape = y;
  if (!adv_axes.empty()) {
    Advanced adv;
    adv.axes = adv_axes;
    for (const auto& t : adv_idx) adv.shape = kernels::broadcast_shapes("index", adv.shape, t.shape());
    for (const auto& t : adv_idx) adv.indices.push_back(broadcast_to(t, adv.shape));
    // Adjacent as items (NumPy: an Ellipsis between two arrays separates them even when it
    // stands for no axis); a mask is one item however many axes it covers.
    std::vector<std::size_t> uniq = adv_item;
    uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
    adv.adjacent = uniq.back() - uniq.front() + 1 == uniq.size();
    plan.adv = std::move(adv);
  }
  return plan;
}

// ---- the advanced step: y seen as w, with the arrays' positions as one flat index along g_axis ----

struct Flat {
  Tensor w;                 // y, or y with the indexed axes moved to the front and merged
  std::int64_t g_axis = 0;  // the axis of w the flat index runs along
  std::int64_t n = 0;       // its length
  Tensor index;             // [P] int64
};

Axes adv_perm(const Advanced& adv, std::size_t rank) {
  Axes perm;
  for (auto a : adv.axes) perm.push_back(a);
  for (std::size_t i = 0; i < rank; ++i)
    if (std::find(adv.axes.begin(), adv.axes.end(), static_cast<std::int64_t>(i)) == adv.axes.end())
      perm.push_back(static_cast<std::int64_t>(i));
  return perm;
}
Axes inverse(const Axes& perm) {
  Axes inv(perm.size());
  for (std::size_t i = 0; i < perm.size(); ++i) inv[static_cast<std::size_t>(perm[i])] = static_cast<std::int64_t>(i);
  return inv;
}
// The shape of w for a y of shape ys (the flat axis of length N).
Shape w_shape(const Advanced& adv, const Shape& ys, std::int64_t* n) {
  if (adv.axes.size() == 1) {
    *n = ys[static_cast<std::size_t>(adv.axes[0])];
    return ys;
  }
  Shape w{1};
  for (auto a : adv.axes) w[0] *= ys[static_cast<std::size_t>(a)];
  const Axes perm = adv_perm(adv, ys.size());
  for (std::size_t i = adv.axes.size(); i < perm.size(); ++i) w.push_back(ys[static_cast<std::size_t>(perm[i])]);
  *n = w[0];
  return w;
}
Tensor flat_index(const Advanced& adv, const Shape& ys) {
  const std::int64_t p = adv.shape.numel();
  Tensor f;
  std::int64_t stride = 1;
  for (std::size_t j = adv.axes.size(); j-- > 0;) {
    Tensor term = reshape(adv.indices[j], {p});
    if (stride != 1) term = mul(term, i64_scalar(stride));
    f = f.defined() ? add(f, term) : term;
    stride *= ys[static_cast<std::size_t>(adv.axes[j])];
  }
  return f;
}
// The shape of the gathered w: w's shape with P along g_axis.
Shape gathered_shape(const Shape& ws, std::int64_t g_axis, std::int64_t p) {
  Shape s = ws;
  s[static_cast<std::size_t>(g_axis)] = p;
  return s;
}
// The gathered w [.., P, ..] to the result's layout, and back.
Tensor gathered_to_out(const Advanced& adv, const Tensor& g, const Shape& ys) {
  const Shape& b = adv.shape;
  if (adv.axes.size() == 1) {
    const auto a = static_cast<std::size_t>(adv.axes[0]);
    return reshape(g, ys.slice(0, a) + b + ys.slice(a + 1));
  }
  Tensor h = reshape(g, b + g.shape().slice(1));
  const auto a1 = adv.axes[0];
  if (!adv.adjacent || a1 == 0 || b.empty()) return h;
  const auto nb = static_cast<std::int64_t>(b.size());
  Axes perm;
  for (std::int64_t i = 0; i < a1; ++i) perm.push_back(nb + i);
  for (std::int64_t i = 0; i < nb; ++i) perm.push_back(i);
  for (std::int64_t i = nb + a1; i < h.dim(); ++i) perm.push_back(i);
  return permute(h, perm);
}
Tensor out_to_gathered(const Advanced& adv, const Tensor& v, const Shape& gs) {
  if (adv.axes.size() == 1) return reshape(v, gs);
  const auto nb = static_cast<std::int64_t>(adv.shape.size());
  const auto a1 = adv.axes[0];
  Tensor h = v;
  if (adv.adjacent && a1 != 0 && nb > 0) {
    Axes perm;
    for (std::int64_t i = 0; i < a1; ++i) perm.push_back(nb + i);
    for (std::int64_t i = 0; i < nb; ++i) perm.push_back(i);
    for (std::int64_t i = nb + a1; i < v.dim(); ++i) perm.push_back(i);
    h = permute(v, inverse(perm));
  }
  return reshape(h, gs);
}
Tensor y_to_w(const Advanced& adv, const Tensor& y, const Shape& ws) {
  if (adv.axes.size() == 1) return y;
  return reshape(permute(y, adv_perm(adv, y.shape().size())), ws);
}
Tensor w_to_y(const Advanced& adv, const Tensor& w, const Shape& ys) {
  if (adv.axes.size() == 1) return w;
  const Axes perm = adv_perm(adv, ys.size());
  Shape moved;
  for (auto a : perm) moved.push_back(ys[static_cast<std::size_t>(a)]);
  return permute(reshape(w, moved), inverse(perm));
}

Tensor run_basic(const Plan& plan, const Tensor& x) {
  Tensor y = x;
  for (const auto& s : plan.steps) switch (s.kind) {
      case BasicStep::Kind::Slice: y = strided_slice(y, s.axis, s.range); break;
      case BasicStep::Kind::Select: y = squeeze(slice(y, s.axis, s.k, s.k + 1), s.axis); break;
      case BasicStep::Kind::NewAxis: y = unsqueeze(y, s.axis); break;
    }
  return y;
}
Tensor transpose_basic(const Plan& plan, const Tensor& ct) {
  Tensor y = ct;
  for (auto s = plan.steps.rbegin(); s != plan.steps.rend(); ++s) switch (s->kind) {
      case BasicStep::Kind::Slice: y = strided_slice_backward(y, s->axis, s->range); break;
      case BasicStep::Kind::Select: y = pad(unsqueeze(y, s->axis), s->axis, s->k, s->n - s->k - 1); break;
      case BasicStep::Kind::NewAxis: y = squeeze(y, s->axis); break;
    }
  return y;
}

Tensor run_plan(const Plan& plan, const Tensor& x) {
  Tensor y = run_basic(plan, x);
  if (!plan.adv) return y;
  const Advanced& adv = *plan.adv;
  std::int64_t n = 0;
  const Shape ws = w_shape(adv, plan.y_shape, &n);
  const std::int64_t g_axis = adv.axes.size() == 1 ? adv.axes[0] : 0;
  Tensor g = gather(y_to_w(adv, y, ws), flat_index(adv, plan.y_shape), g_axis);
  return gathered_to_out(adv, g, plan.y_shape);
}

// How the advanced step's scatter combines positions named more than once.
enum class Combine : std::uint8_t { Sum, Last, Product };

// Whether some position in [0, n) occurs twice among the index's values. Under vmap the values
// underneath hold every example's, so no repeat among them means none within any example.
bool has_repeats(const Tensor& index, std::int64_t n) {
  const Tensor v = value_underneath(index);
  const auto* d = v.data<std::int64_t>();
  std::vector<bool> seen(static_cast<std::size_t>(n), false);
  for (std::int64_t j = 0; j < v.numel(); ++j) {
    if (seen[static_cast<std::size_t>(d[j])]) return true;
    seen[static_cast<std::size_t>(d[j])] = true;
  }
  return false;
}

// u [.., P, ..] (along g_axis) scattered to length n at `index`, combining repeats.
Tensor scatter_flat(const Tensor& u, const Tensor& index, std::int64_t g_axis, std::int64_t n, Combine how) {
  const std::int64_t p = u.shape()[static_cast<std::size_t>(g_axis)];
  if (how == Combine::Sum || p == 0 || !has_repeats(index, n)) return scatter_add(u, index, g_axis, n);
  // Sort the positions (stably, so repeats keep their order); the last of each run of equal
  // positions carries the run's value: its own (Last) or the product of the run (Product, by
  // the scan h_i = [same as i-1] h_{i-1} v_i + [new run] v_i).
  const Tensor order = argsort(index, 0);
  const Tensor sorted = take_along_axis(index, order, 0);
  const Tensor next = concat({slice(sorted, 0, 1, p), full({1}, -1.0, DType::i64)}, 0);
  Shape along = Shape::filled(static_cast<std::size_t>(u.dim()), 1);
  along[static_cast<std::size_t>(g_axis)] = p;
  const Tensor last = reshape(1.0 - cast(equal(sorted, next), u.dtype()), along);
  Tensor us = gather(u, order, g_axis);
  if (how == Combine::Product) {
    const Tensor prev = concat({full({1}, -1.0, DType::i64), slice(sorted, 0, 0, p - 1)}, 0);
    const Tensor same = reshape(cast(equal(sorted, prev), u.dtype()), along);
    us = linear_scan(mul(us, same), mul(us, 1.0 - same), g_axis);
  }
  return scatter_add(mul(us, last), sorted, g_axis, n);
}

// The transpose of run_plan: v (the shape of x[items]) into zeros of x's shape.
Tensor transpose_plan(const Plan& plan, const Tensor& v, Combine how) {
  Tensor y = v;
  if (plan.adv) {
    const Advanced& adv = *plan.adv;
    std::int64_t n = 0;
    const Shape ws = w_shape(adv, plan.y_shape, &n);
    const std::int64_t g_axis = adv.axes.size() == 1 ? adv.axes[0] : 0;
    const Shape gs = gathered_shape(ws, g_axis, adv.shape.numel());
    const Tensor w = scatter_flat(out_to_gathered(adv, v, gs), flat_index(adv, plan.y_shape), g_axis, n, how);
    y = w_to_y(adv, w, plan.y_shape);
  }
  return transpose_basic(plan, y);
}

Shape out_shape(const Plan& plan) {
  if (!plan.adv) return plan.y_shape;
  const Advanced& adv = *plan.adv;
  const Shape& ys = plan.y_shape;
  if (adv.axes.size() == 1) {
    const auto a = static_cast<std::size_t>(adv.axes[0]);
    return ys.slice(0, a) + adv.shape + ys.slice(a + 1);
  }
  Shape rest;
  for (std::size_t i = 0; i < ys.size(); ++i)
    if (std::find(adv.axes.begin(), adv.axes.end(), static_cast<std::int64_t>(i)) == adv.axes.end()) rest.push_back(ys[i]);
  if (!adv.adjacent) return adv.shape + rest;
  const auto a1 = static_cast<std::size_t>(adv.axes[0]);
  return rest.slice(0, a1) + adv.shape + rest.slice(a1);
}

// The values as x's dtype, broadcast to x[items]'s shape.
Tensor prepare_values(std::string_view op, const Tensor& x, const Plan& plan, const Tensor& values) {
  if (!is_floating(x.dtype()))
    throw DTypeError(fmt::format("{}: x must be float32 or float64, got {} {}", op, dtype_name(x.dtype()), x.shape().str()));
  const Shape s = out_shape(plan);
  const Tensor v = cast(values, x.dtype());
  bool ok = v.shape().size() <= s.size();
  for (std::size_t i = 0; ok && i < v.shape().size(); ++i) {
    const auto d = v.shape()[i], t = s[s.size() - v.shape().size() + i];
    ok = d == 1 || d == t;
  }
  if (!ok)
    throw ShapeError(fmt::format("{}: values of shape {} cannot be broadcast to the indexed shape {} (x {})", op, v.shape().str(),
                                 s.str(), x.shape().str()));
  return broadcast_to(v, s);
}

// Where x[items] writes: true at every position the index names.
Tensor written(const Plan& plan, const Tensor& x) {
  return greater(transpose_plan(plan, ones(out_shape(plan), x.dtype()), Combine::Sum), scalar_tensor(0.5, x.dtype()));
}

}  // namespace

Tensor index(const Tensor& x, const std::vector<TensorIndex>& items) { return run_plan(make_plan(x, items), x); }

IndexUpdate at(const Tensor& x, std::vector<TensorIndex> items) { return IndexUpdate(x, std::move(items)); }

Tensor IndexUpdate::get() const { return index(x_, items_); }
Tensor IndexUpdate::set(const Tensor& values) const {
  const Plan plan = make_plan(x_, items_);
  const Tensor v = prepare_values("at(...).set", x_, plan, values);
  return where(written(plan, x_), transpose_plan(plan, v, Combine::Last), x_);
}
Tensor IndexUpdate::add(const Tensor& values) const {
  const Plan plan = make_plan(x_, items_);
  const Tensor v = prepare_values("at(...).add", x_, plan, values);
  return chainrule::add(x_, transpose_plan(plan, v, Combine::Sum));
}
Tensor IndexUpdate::multiply(const Tensor& values) const {
  const Plan plan = make_plan(x_, items_);
  const Tensor v = prepare_values("at(...).multiply", x_, plan, values);
  const Tensor factor = where(written(plan, x_), transpose_plan(plan, v, Combine::Product), scalar_tensor(1.0, x_.dtype()));
  return mul(x_, factor);
}
Tensor IndexUpdate::set(double value) const { return set(scalar_tensor(value, x_.dtype())); }
Tensor IndexUpdate::add(double value) const { return add(scalar_tensor(value, x_.dtype())); }
Tensor IndexUpdate::multiply(double value) const { return multiply(scalar_tensor(value, x_.dtype())); }

Tensor index_put(const Tensor& x, const std::vector<TensorIndex>& indices, const Tensor& values, bool accumulate) {
  return accumulate ? at(x, indices).add(values) : at(x, indices).set(values);
}

const Primitive* const kIndexingPrimitives[] = {&strided_slice_p, &strided_slice_backward_p};
std::span<const Primitive* const> indexing_primitives() { return kIndexingPrimitives; }

}  // namespace chainrule
