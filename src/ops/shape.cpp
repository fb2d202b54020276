// Structural primitives: reshape, permute, broadcast_to, slice/pad, concat, gather/scatter_add.
// All are linear, so their JVP applies the primitive to the tangent and their VJP is the
// transposed operation (slice <-> pad, gather <-> scatter_add, broadcast_to <-> sum_to).
#include <algorithm>
#include <numeric>

#include "chainrule/tensor/allocator.h"
#include "kernels/kernels.h"
#include "ops/cases.h"
#include "ops/registry.h"

namespace chainrule {

using kernels::norm_axis;

namespace {

// A tensor seen as [outer, n, inner] around axis `a`.
struct AxisView {
  std::int64_t outer = 1, n = 1, inner = 1;
};
AxisView axis_view(const Shape& s, std::size_t a) {
  AxisView v;
  for (std::size_t i = 0; i < a; ++i) v.outer *= s[i];
  v.n = s[a];
  for (std::size_t i = a + 1; i < s.size(); ++i) v.inner *= s[i];
  return v;
}

// Copies `bytes` bytes. Runs of a few channels (a channels-last row's share of a concat) are
// common and short, so they are moved inline in 16- and 4-byte pieces instead of by a call.
inline void copy_run(char* d, const char* s, std::size_t bytes) {
  if (bytes > 256 || bytes % 4 != 0) {
    std::memcpy(d, s, bytes);
    return;
  }
  std::size_t i = 0;
  for (; i + 16 <= bytes; i += 16) std::memcpy(d + i, s + i, 16);
  for (; i < bytes; i += 4) std::memcpy(d + i, s + i, 4);
}

const char* bytes_of(const Tensor& t) { return static_cast<const char*>(t.impl()->storage->data) + t.impl()->offset * itemsize(t.dtype()); }
char* bytes_of_mut(const Tensor& t) { return static_cast<char*>(t.impl()->storage->data) + t.impl()->offset * itemsize(t.dtype()); }

// Copies rows of `inner * count` elements: dst[o, dst_off + j] = src[o, src_off + j], the rows
// split over the threads when there are many.
void copy_block(const Tensor& src, std::int64_t src_n, std::int64_t src_off, const Tensor& dst, std::int64_t dst_n,
                std::int64_t dst_off, std::int64_t count, const AxisView& v) {
  const std::size_t es = itemsize(src.dtype());
  const char* s = bytes_of(src);
  char* d = bytes_of_mut(dst);
  const std::size_t bytes = static_cast<std::size_t>(count * v.inner) * es;
  if (bytes == 0) return;
  kernels::parallel_range(
      v.outer,
      [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t o = lo; o < hi; ++o)
          copy_run(d + ((o * dst_n + dst_off) * v.inner) * es, s + ((o * src_n + src_off) * v.inner) * es, bytes);
      },
      count * v.inner);
}

Tensor view(const Tensor& x, const Shape& shape) {
  auto impl = memory::make_pooled<TensorImpl>();
  impl->shape = shape;
  impl->dtype = x.dtype();
  impl->storage = x.impl()->storage;
  impl->offset = x.impl()->offset;
  return Tensor(std::move(impl));
}

// The leading (batch) part of an input's shape beyond the `rank` trailing dimensions.
Shape lead_of(const Shape& s, std::int64_t rank, std::string_view op) {
  if (static_cast<std::int64_t>(s.size()) < rank)
    throw ShapeError(fmt::format("{}: input of shape {} has fewer than {} dimensions", op, s.str(), rank));
  return s.slice(0, s.size() - static_cast<std::size_t>(rank));
}

// The permutation of the trailing axes extended over `rank` axes (identity on the leading ones),
// or its inverse.
Axes full_perm(const Shape& trailing, std::int64_t rank, bool inverse) {
  const auto lead = rank - static_cast<std::int64_t>(trailing.size());
  Axes perm(static_cast<std::size_t>(rank));
  for (std::int64_t i = 0; i < lead; ++i) perm[static_cast<std::size_t>(i)] = i;
  for (std::size_t i = 0; i < trailing.size(); ++i) {
    auto from = lead + static_cast<std::int64_t>(i), to = lead + trailing[i];
    if (inverse) perm[static_cast<std::size_t>(to)] = from;
    else perm[static_cast<std::size_t>(from)] = to;
  }
  return perm;
}

// A permutation reduced to the axes it really moves: size-1 axes dropped, and axes that stay
// adjacent and in order merged. So NCHW <-> NHWC, [B, C, H, W] -> [B, H, W, C], is the batch of
// [C, H*W] matrix transposes it is, and runs on the tiled transpose kernel.
struct Moved {
  Shape shape;  // of the input, merged
  Axes perm;    // over the merged axes
};
Moved moved_axes(const Shape& in, const Axes& perm) {
  std::vector<std::int64_t> kept;  // input axes of size > 1, in output order
  for (auto a : perm)
    if (in[static_cast<std::size_t>(a)] != 1) kept.push_back(a);
  std::vector<std::vector<std::int64_t>> groups;  // runs of consecutive input axes, in output order
  for (auto a : kept) {
    if (!groups.empty() && groups.back().back() + 1 == a) groups.back().push_back(a);
    else groups.push_back({a});
  }
  std::vector<std::size_t> by_input(groups.size());  // the groups in input order
  std::iota(by_input.begin(), by_input.end(), std::size_t{0});
  std::sort(by_input.begin(), by_input.end(), [&](std::size_t i, std::size_t j) { return groups[i][0] < groups[j][0]; });
  Moved m;
  m.perm.resize(groups.size());
  for (std::size_t pos = 0; pos < by_input.size(); ++pos) {
    std::int64_t size = 1;
    for (auto a : groups[by_input[pos]]) size *= in[static_cast<std::size_t>(a)];
    m.shape.push_back(size);
    m.perm[by_input[pos]] = static_cast<std::int64_t>(pos);
  }
  return m;
}

using cases::Domain;

}  // namespace

const Primitive reshape_p{
    .name = "reshape",
    .forward = [](auto x, auto& p) { return view(x[0], lead_of(x[0].shape(), p.rank, "reshape") + p.shape); },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return reshape(t, c.out.shape()); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return reshape(ct, c.shape(0)); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      return std::vector<OpCase>{
          cases::single("[2,3]->[3,2]", {cases::sample({2, 3}, Domain::Real, 1)}, [](auto x) { return reshape(x[0], {3, 2}); }),
          cases::single("[]->[1,1]", {cases::sample({}, Domain::Real, 2)}, [](auto x) { return reshape(x[0], {1, 1}); }),
          cases::single("[0,4]->[4,0]", {cases::sample({0, 4}, Domain::Real, 3)}, [](auto x) { return reshape(x[0], {4, 0}); }),
          cases::single("[2,3,4]->[-1]", {cases::sample({2, 3, 4}, Domain::Real, 4)}, [](auto x) { return reshape(x[0], {-1}); }),
          cases::single("[1]->[]", {cases::sample({1}, Domain::Real, 5)}, [](auto x) { return reshape(x[0], {}); }),
          cases::single("[6,20]->[4,30]", {cases::sample({6, 20}, Domain::Real, 6)}, [](auto x) { return reshape(x[0], {4, 30}); }),
      };
    },
};

const Primitive permute_p{
    .name = "transpose",
    .forward = [](auto x, auto& p) {
      const Shape& in = x[0].shape();
      const std::size_t r = p.axes.size(), lead = in.size() - r;
      Shape oshape = in.slice(0, lead);
      for (auto a : p.axes) oshape.push_back(in[lead + static_cast<std::size_t>(a)]);
      Tensor o = empty(oshape, x[0].dtype());
      if (o.numel() == 0) return o;
      Axes full(lead);
      std::iota(full.begin(), full.end(), std::int64_t{0});
      for (auto a : p.axes) full.push_back(static_cast<std::int64_t>(lead) + a);
      const Moved m = moved_axes(in, full);
      kernels::dispatch_all(o.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* s = kernels::in<T>(x[0]);
        T* d = kernels::out<T>(o);
        const std::size_t k = m.perm.size();
        if (k <= 1) {  // nothing moves: a copy
          std::copy(s, s + o.numel(), d);
        } else if (m.perm[k - 2] == static_cast<std::int64_t>(k - 1) && m.perm[k - 1] == static_cast<std::int64_t>(k - 2) &&
                   std::is_sorted(m.perm.begin(), m.perm.end() - 2)) {  // a batch of matrix transposes
          const std::int64_t rows = m.shape[k - 2], cols = m.shape[k - 1];
          kernels::transpose_matrices(s, d, o.numel() / (rows * cols), rows, cols);
        } else {
          const Shape cs = kernels::contiguous_strides(m.shape);
          Shape ms, is;
          for (auto a : m.perm) {
            ms.push_back(m.shape[static_cast<std::size_t>(a)]);
            is.push_back(cs[static_cast<std::size_t>(a)]);
          }
          const Shape os = kernels::contiguous_strides(ms);
          kernels::for_each_row<2>(ms, {&is, &os}, [&](const auto& off, std::int64_t n, const auto& st) {
            for (std::int64_t i = 0; i < n; ++i) d[off[1] + i] = s[off[0] + i * st[0]];
          });
        }
        return 0;
      });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return permute(t, full_perm(c.p.axes, t.dim(), false)); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return permute(ct, full_perm(c.p.axes, ct.dim(), true)); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      return std::vector<OpCase>{
          cases::single("[2,3].T", {cases::sample({2, 3}, Domain::Real, 1)}, [](auto x) { return transpose(x[0]); }),
          cases::single("[2,3,4] perm 2,0,1", {cases::sample({2, 3, 4}, Domain::Real, 2)}, [](auto x) { return permute(x[0], {2, 0, 1}); }),
          cases::single("[1,5].T", {cases::sample({1, 5}, Domain::Real, 3)}, [](auto x) { return transpose(x[0]); }),
          cases::single("[0,3].T", {cases::sample({0, 3}, Domain::Real, 4)}, [](auto x) { return transpose(x[0]); }),
          cases::single("[] perm ()", {cases::sample({}, Domain::Real, 5)}, [](auto x) { return permute(x[0], {}); }),
          cases::single("[17,9].T", {cases::sample({17, 9}, Domain::Real, 6)}, [](auto x) { return transpose(x[0]); }),
          // NCHW -> NHWC and back, with a size-1 axis: the merged-axes paths (moved_axes).
          cases::single("[2,3,4,5] perm 0,2,3,1", {cases::sample({2, 3, 4, 5}, Domain::Real, 7)}, [](auto x) { return permute(x[0], {0, 2, 3, 1}); }),
          cases::single("[2,1,3,4] perm 0,3,1,2", {cases::sample({2, 1, 3, 4}, Domain::Real, 8)}, [](auto x) { return permute(x[0], {0, 3, 1, 2}); }),
          cases::single("[3,1,4] perm 1,0,2", {cases::sample({3, 1, 4}, Domain::Real, 9)}, [](auto x) { return permute(x[0], {1, 0, 2}); }),
          cases::single("[2,3,4,5] perm 3,1,0,2", {cases::sample({2, 3, 4, 5}, Domain::Real, 10)}, [](auto x) { return permute(x[0], {3, 1, 0, 2}); }),
          cases::single("[2,40,35] last two swapped (tiled)", {cases::sample({2, 40, 35}, Domain::Real, 7)},
                        [](auto x) { return permute(x[0], {0, 2, 1}); }),
      };
    },
};

const Primitive broadcast_to_p{
    .name = "broadcast_to",
    .forward = [](auto x, auto& p) {
      const Shape& in = x[0].shape();
      Shape lead = lead_of(in, p.rank, "broadcast_to");
      Shape src = lead + Shape::filled(p.shape.size() - static_cast<std::size_t>(p.rank), 1) + in.slice(lead.size());
      Shape oshape = lead + p.shape;
      for (std::size_t i = 0; i < oshape.size(); ++i)
        if (src[i] != oshape[i] && src[i] != 1)
          throw ShapeError(fmt::format("broadcast_to: cannot broadcast shape {} to {}", in.slice(lead.size()).str(), p.shape.str()));
      Tensor o = empty(oshape, x[0].dtype());
      Shape is = kernels::broadcast_strides(src, oshape), os = kernels::contiguous_strides(oshape);
      kernels::dispatch_all(o.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* s = kernels::in<T>(x[0]);
        T* d = kernels::out<T>(o);
        kernels::for_each_row<2>(oshape, {&is, &os}, [&](const auto& off, std::int64_t n, const auto& st) {
          if (st[0] == 0) std::fill_n(d + off[1], n, s[off[0]]);
          else std::copy_n(s + off[0], n, d + off[1]);
        });
        return 0;
      });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return broadcast_to(t, c.out.shape()); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return sum_to(ct, c.shape(0)); },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      return std::vector<OpCase>{
          cases::single("[]->[3]", {cases::sample({}, Domain::Real, 1)}, [](auto x) { return broadcast_to(x[0], {3}); }),
          cases::single("[3]->[2,3]", {cases::sample({3}, Domain::Real, 2)}, [](auto x) { return broadcast_to(x[0], {2, 3}); }),
          cases::single("[2,1]->[2,4]", {cases::sample({2, 1}, Domain::Real, 3)}, [](auto x) { return broadcast_to(x[0], {2, 4}); }),
          cases::single("[1,3]->[0,3]", {cases::sample({1, 3}, Domain::Real, 4)}, [](auto x) { return broadcast_to(x[0], {0, 3}); }),
          cases::single("[1]->[1]", {cases::sample({1}, Domain::Real, 5)}, [](auto x) { return broadcast_to(x[0], {1}); }),
          cases::single("[5,1,6]->[3,5,7,6]", {cases::sample({5, 1, 6}, Domain::Real, 6)}, [](auto x) { return broadcast_to(x[0], {3, 5, 7, 6}); }),
          cases::single("[9,1,8]->[9,3,8]", {cases::sample({9, 1, 8}, Domain::Real, 7)}, [](auto x) { return broadcast_to(x[0], {9, 3, 8}); }),
          cases::single("[0,1]->[2,0,4]", {cases::sample({0, 1}, Domain::Real, 8)}, [](auto x) { return broadcast_to(x[0], {2, 0, 4}); }),
      };
    },
};

const Primitive slice_p{
    .name = "slice",
    .forward = [](auto x, auto& p) {
      auto a = static_cast<std::size_t>(norm_axis("slice", p.axis, x[0].dim()));
      Shape oshape = x[0].shape();
      oshape[a] = p.stop - p.start;
      Tensor o = empty(oshape, x[0].dtype());
      copy_block(x[0], x[0].shape()[a], p.start, o, oshape[a], 0, oshape[a], axis_view(x[0].shape(), a));
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return slice(t, c.p.axis, c.p.start, c.p.stop); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      auto n = c.shape(0)[static_cast<std::size_t>(norm_axis("slice", c.p.axis, c.shape(0).size()))];
      return pad(ct, c.p.axis, c.p.start, n - c.p.stop);
    },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      return std::vector<OpCase>{
          cases::single("[5] 1:4", {cases::sample({5}, Domain::Real, 1)}, [](auto x) { return slice(x[0], 0, 1, 4); }),
          cases::single("[3,4] axis1 2:4", {cases::sample({3, 4}, Domain::Real, 2)}, [](auto x) { return slice(x[0], 1, 2, 4); }),
          cases::single("[3,4] axis0 0:0", {cases::sample({3, 4}, Domain::Real, 3)}, [](auto x) { return slice(x[0], 0, 0, 0); }),
          cases::single("[1,2] axis0 0:1", {cases::sample({1, 2}, Domain::Real, 4)}, [](auto x) { return slice(x[0], 0, 0, 1); }),
          cases::single("[2,0,3] axis-1 1:2", {cases::sample({2, 0, 3}, Domain::Real, 5)}, [](auto x) { return slice(x[0], -1, 1, 2); }),
          cases::single("[10,12] axis0 3:9", {cases::sample({10, 12}, Domain::Real, 6)}, [](auto x) { return slice(x[0], 0, 3, 9); }),
      };
    },
};

const Primitive pad_p{
    .name = "pad",
    .forward = [](auto x, auto& p) {
      auto a = static_cast<std::size_t>(norm_axis("pad", p.axis, x[0].dim()));
      Shape oshape = x[0].shape();
      oshape[a] += p.start + p.stop;
      Tensor o = zeros(oshape, x[0].dtype());
      copy_block(x[0], x[0].shape()[a], 0, o, oshape[a], p.start, x[0].shape()[a], axis_view(x[0].shape(), a));
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return pad(t, c.p.axis, c.p.start, c.p.stop); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      auto n = c.shape(0)[static_cast<std::size_t>(norm_axis("pad", c.p.axis, c.shape(0).size()))];
      return slice(ct, c.p.axis, c.p.start, c.p.start + n);
    },
    .batching = Batching::Leading,
    .saves = kSaveNone,
    .cases = [] {
      return std::vector<OpCase>{
          cases::single("[3] 1,2", {cases::sample({3}, Domain::Real, 1)}, [](auto x) { return pad(x[0], 0, 1, 2); }),
          cases::single("[2,3] axis1 0,1", {cases::sample({2, 3}, Domain::Real, 2)}, [](auto x) { return pad(x[0], 1, 0, 1); }),
          cases::single("[0,2] axis0 1,1", {cases::sample({0, 2}, Domain::Real, 3)}, [](auto x) { return pad(x[0], 0, 1, 1); }),
          cases::single("[1] 0,0", {cases::sample({1}, Domain::Real, 4)}, [](auto x) { return pad(x[0], 0, 0, 0); }),
          cases::single("[2,1,2] axis-2 2,0", {cases::sample({2, 1, 2}, Domain::Real, 5)}, [](auto x) { return pad(x[0], -2, 2, 0); }),
          cases::single("[8,9] axis0 3,4", {cases::sample({8, 9}, Domain::Real, 6)}, [](auto x) { return pad(x[0], 0, 3, 4); }),
      };
    },
};

namespace {
std::int64_t concat_offset(const Ctx& c, int i, std::size_t a) {
  std::int64_t off = 0;
  for (int j = 0; j < i; ++j) off += c.shape(j)[a];
  return off;
}
}  // namespace

const Primitive concat_p{
    .name = "concat",
    .forward = [](auto x, auto& p) {
      auto a = static_cast<std::size_t>(norm_axis("concat", p.axis, x[0].dim()));
      Shape oshape = x[0].shape();
      oshape[a] = 0;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const Shape& s = x[i].shape();
        bool ok = s.size() == oshape.size() && x[i].dtype() == x[0].dtype();
        for (std::size_t d = 0; ok && d < s.size(); ++d) ok = d == a || s[d] == x[0].shape()[d];
        if (!ok)
          throw ShapeError(fmt::format("concat: input {} has shape {} {}, incompatible with input 0 {} {} along axis {}", i,
                                       s.str(), dtype_name(x[i].dtype()), x[0].shape().str(), dtype_name(x[0].dtype()), p.axis));
        oshape[a] += s[a];
      }
      Tensor o = empty(oshape, x[0].dtype());
      // Output row by output row, each input's run in turn: the writes stay sequential however
      // short the runs (concat along the channels of channels-last images).
      const AxisView ov = axis_view(oshape, a);
      const std::size_t es = itemsize(o.dtype());
      std::vector<const char*> src(x.size());
      std::vector<std::size_t> run(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) src[i] = bytes_of(x[i]), run[i] = static_cast<std::size_t>(x[i].shape()[a] * ov.inner) * es;
      char* d = bytes_of_mut(o);
      const auto row = static_cast<std::size_t>(ov.n * ov.inner) * es;
      kernels::parallel_range(
          ov.outer,
          [&](std::int64_t lo, std::int64_t hi) {
            for (std::int64_t r = lo; r < hi; ++r) {
              char* at = d + static_cast<std::size_t>(r) * row;
              for (std::size_t i = 0; i < x.size(); ++i) {
                copy_run(at, src[i] + static_cast<std::size_t>(r) * run[i], run[i]);
                at += run[i];
              }
            }
          },
          ov.n * ov.inner);
      return o;
    },
    .jvp = [](int i, const Tensor& t, const Ctx& c) {
      auto a = static_cast<std::size_t>(norm_axis("concat", c.p.axis, c.shape(0).size()));
      auto off = concat_offset(c, i, a);
      return pad(t, c.p.axis, off, c.out.shape()[a] - off - c.shape(i)[a]);
    },
    .vjp = [](int i, const Tensor& ct, const Ctx& c) {
      auto a = static_cast<std::size_t>(norm_axis("concat", c.p.axis, c.shape(0).size()));
      auto off = concat_offset(c, i, a);
      return slice(ct, c.p.axis, off, off + c.shape(i)[a]);
    },
    .batching = Batching::Materialize,
    .saves = kSaveNone,
    .cases = [] {
      auto s = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); };
      auto cat0 = [](std::span<const Tensor> x) { return concat({x.begin(), x.end()}, 0); };
      auto cat1 = [](std::span<const Tensor> x) { return concat({x.begin(), x.end()}, -1); };
      return std::vector<OpCase>{
          cases::single("[2]+[3]", {s({2}, 1), s({3}, 2)}, cat0),
          cases::single("[2,3]+[2,1] axis-1", {s({2, 3}, 3), s({2, 1}, 4)}, cat1),
          cases::single("[0,2]+[1,2]+[2,2]", {s({0, 2}, 5), s({1, 2}, 6), s({2, 2}, 7)}, cat0),
          cases::single("[1]", {s({1}, 8)}, cat0),
          cases::single("[3,0]+[3,2] axis-1", {s({3, 0}, 9), s({3, 2}, 10)}, cat1),
          cases::single("[7,9]+[5,9]", {s({7, 9}, 11), s({5, 9}, 12)}, cat0),
          cases::single("[8,10]+[8,3] axis-1", {s({8, 10}, 13), s({8, 3}, 14)}, cat1),
      };
    },
};

namespace {
void check_index(std::string_view op, const Tensor& idx, std::int64_t size) {
  if (idx.dtype() != DType::i64)
    throw DTypeError(fmt::format("{}: index must be int64, got {} {}", op, dtype_name(idx.dtype()), idx.shape().str()));
  const auto* d = kernels::in<std::int64_t>(idx);
  for (std::int64_t j = 0; j < idx.numel(); ++j)
    if (d[j] < 0 || d[j] >= size)
      throw ValueError(fmt::format("{}: index {} at position {} is out of range for an axis of size {}", op, d[j], j, size));
}
}  // namespace

const Primitive gather_p{
    .name = "gather",
    .forward = [](auto x, auto& p) {
      auto a = static_cast<std::size_t>(norm_axis("gather", p.axis, x[0].dim()));
      if (x[1].dim() != 1) throw ShapeError(fmt::format("gather: index must be 1-D, got shape {}", x[1].shape().str()));
      AxisView v = axis_view(x[0].shape(), a);
      check_index("gather", x[1], v.n);
      Shape oshape = x[0].shape();
      oshape[a] = x[1].numel();
      Tensor o = empty(oshape, x[0].dtype());
      const auto* idx = kernels::in<std::int64_t>(x[1]);
      const std::int64_t k = x[1].numel();
      kernels::dispatch_all(o.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* s = kernels::in<T>(x[0]);
        T* d = kernels::out<T>(o);
        for (std::int64_t o2 = 0; o2 < v.outer; ++o2)
          for (std::int64_t j = 0; j < k; ++j)
            std::copy_n(s + (o2 * v.n + idx[j]) * v.inner, v.inner, d + (o2 * k + j) * v.inner);
        return 0;
      });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return gather(t, c.x[1], c.p.axis); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) {
      auto a = static_cast<std::size_t>(norm_axis("gather", c.p.axis, c.shape(0).size()));
      return scatter_add(ct, c.x[1], c.p.axis, c.shape(0)[a]);
    },
    .batching = Batching::Leading,
    .cases = [] {
      auto s = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); };
      auto idx = [](std::vector<std::int64_t> v) { return from_vector(v); };
      return std::vector<OpCase>{
          cases::single("[5] idx[4,0,4]", {s({5}, 1), idx({4, 0, 4})}, [](auto x) { return gather(x[0], x[1], 0); }),
          cases::single("[3,4] axis1 idx[1,3]", {s({3, 4}, 2), idx({1, 3})}, [](auto x) { return gather(x[0], x[1], 1); }),
          cases::single("[2,3] idx[]", {s({2, 3}, 3), idx({})}, [](auto x) { return gather(x[0], x[1], 0); }),
          cases::single("[1,2] idx[0]", {s({1, 2}, 4), idx({0})}, [](auto x) { return gather(x[0], x[1], 0); }),
          cases::single("[0,3] axis-1 idx[2,2]", {s({0, 3}, 5), idx({2, 2})}, [](auto x) { return gather(x[0], x[1], -1); }),
          cases::single("[10,6] idx[9,1,1,5,0]", {s({10, 6}, 6), idx({9, 1, 1, 5, 0})}, [](auto x) { return gather(x[0], x[1], 0); }),
          cases::single("[12,8] axis1 idx[7,0,3,3]", {s({12, 8}, 7), idx({7, 0, 3, 3})}, [](auto x) { return gather(x[0], x[1], 1); }),
      };
    },
};

const Primitive scatter_add_p{
    .name = "scatter_add",
    .forward = [](auto x, auto& p) {
      auto a = static_cast<std::size_t>(norm_axis("scatter_add", p.axis, x[0].dim()));
      if (x[1].dim() != 1 || x[1].numel() != x[0].shape()[a])
        throw ShapeError(fmt::format("scatter_add: index shape {} does not match axis {} of source {}", x[1].shape().str(),
                                     p.axis, x[0].shape().str()));
      check_index("scatter_add", x[1], p.size);
      Shape oshape = x[0].shape();
      oshape[a] = p.size;
      Tensor o = zeros(oshape, x[0].dtype());
      AxisView v = axis_view(x[0].shape(), a);
      const auto* idx = kernels::in<std::int64_t>(x[1]);
      kernels::dispatch_float(o.dtype(), "scatter_add", [&](auto tag) {
        using T = decltype(tag);
        const T* s = kernels::in<T>(x[0]);
        T* d = kernels::out<T>(o);
        for (std::int64_t o2 = 0; o2 < v.outer; ++o2)
          for (std::int64_t j = 0; j < v.n; ++j) {
            const T* src = s + (o2 * v.n + j) * v.inner;
            T* dst = d + (o2 * p.size + idx[j]) * v.inner;
            for (std::int64_t i = 0; i < v.inner; ++i) dst[i] += src[i];
          }
        return 0;
      });
      return o;
    },
    .jvp = [](int, const Tensor& t, const Ctx& c) { return scatter_add(t, c.x[1], c.p.axis, c.p.size); },
    .vjp = [](int, const Tensor& ct, const Ctx& c) { return gather(ct, c.x[1], c.p.axis); },
    .batching = Batching::Leading,
    .cases = [] {
      auto s = [](Shape sh, std::uint64_t seed) { return cases::sample(sh, Domain::Real, seed); };
      auto idx = [](std::vector<std::int64_t> v) { return from_vector(v); };
      return std::vector<OpCase>{
          cases::single("[3] idx[4,0,4] size5", {s({3}, 1), idx({4, 0, 4})}, [](auto x) { return scatter_add(x[0], x[1], 0, 5); }),
          cases::single("[3,2] axis1 idx[1,1]", {s({3, 2}, 2), idx({1, 1})}, [](auto x) { return scatter_add(x[0], x[1], 1, 3); }),
          cases::single("[0,3] idx[] size2", {s({0, 3}, 3), idx({})}, [](auto x) { return scatter_add(x[0], x[1], 0, 2); }),
          cases::single("[1] idx[0]", {s({1}, 4), idx({0})}, [](auto x) { return scatter_add(x[0], x[1], 0, 1); }),
          cases::single("[2,2] axis-1 idx[0,0] size1", {s({2, 2}, 5), idx({0, 0})}, [](auto x) { return scatter_add(x[0], x[1], -1, 1); }),
          cases::single("[6,8] idx[..] size4", {s({6, 8}, 6), idx({0, 3, 3, 1, 2, 0})}, [](auto x) { return scatter_add(x[0], x[1], 0, 4); }),
          cases::single("[10,9] idx[..] size5", {s({10, 9}, 7), idx({4, 0, 1, 1, 2, 3, 4, 0, 2, 2})},
                        [](auto x) { return scatter_add(x[0], x[1], 0, 5); }),
      };
    },
};

// ---- public functions -----------------------------------------------------------------------

Tensor reshape(const Tensor& x, const Shape& shape) {
  Shape s = shape;
  std::int64_t known = 1, infer = -1;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) throw ShapeError(fmt::format("reshape: more than one -1 in target shape {}", shape.str()));
      infer = static_cast<std::int64_t>(i);
    } else if (s[i] < 0) {
      throw ShapeError(fmt::format("reshape: negative dimension in target shape {}", shape.str()));
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0)
      throw ShapeError(fmt::format("reshape: cannot reshape {} ({} elements) to {}", x.shape().str(), x.numel(), shape.str()));
    s[static_cast<std::size_t>(infer)] = x.numel() / known;
  }
  if (s.numel() != x.numel())
    throw ShapeError(fmt::format("reshape: cannot reshape {} ({} elements) to {} ({} elements)", x.shape().str(), x.numel(),
                                 s.str(), s.numel()));
  if (s == x.shape()) return x;
  Params p;
  p.shape = s;
  p.rank = x.dim();
  return bind(reshape_p, {x}, p);
}

Tensor flatten(const Tensor& x, std::int64_t start_axis) {
  auto a = static_cast<std::size_t>(norm_axis("flatten", start_axis, std::max<std::size_t>(x.shape().size(), 1)));
  if (x.dim() == 0) return reshape(x, {1});
  return reshape(x, x.shape().slice(0, a) + Shape{-1});
}
Tensor unsqueeze(const Tensor& x, std::int64_t axis) {
  auto a = static_cast<std::size_t>(norm_axis("unsqueeze", axis, x.shape().size() + 1));
  Shape s = x.shape();
  s.insert(a, 1);
  return reshape(x, s);
}
Tensor squeeze(const Tensor& x, std::int64_t axis) {
  auto a = static_cast<std::size_t>(norm_axis("squeeze", axis, x.shape().size()));
  if (x.shape()[a] != 1) throw ShapeError(fmt::format("squeeze: axis {} of shape {} is not 1", axis, x.shape().str()));
  Shape s = x.shape();
  s.erase(a);
  return reshape(x, s);
}

Tensor permute(const Tensor& x, const Axes& perm) {
  const auto r = x.shape().size();
  if (perm.size() != r)
    throw ShapeError(fmt::format("permute: permutation of length {} for shape {}", perm.size(), x.shape().str()));
  Shape axes;
  std::vector<bool> seen(r, false);
  bool identity = true;
  for (std::size_t i = 0; i < r; ++i) {
    auto a = static_cast<std::size_t>(norm_axis("permute", perm[i], r));
    if (seen[a]) throw ShapeError(fmt::format("permute: axis {} repeated in permutation for shape {}", perm[i], x.shape().str()));
    seen[a] = true;
    identity &= a == i;
    axes.push_back(static_cast<std::int64_t>(a));
  }
  if (identity) return x;
  Params p;
  p.axes = axes;
  p.rank = static_cast<std::int64_t>(r);
  return bind(permute_p, {x}, p);
}
Tensor transpose(const Tensor& x, std::int64_t a0, std::int64_t a1) {
  const auto r = x.shape().size();
  if (r < 2) {
    if (r == 1 && a0 == -2 && a1 == -1) return x;  // a 1-D transpose is the identity, as in NumPy
    throw ShapeError(fmt::format("transpose: axes {} and {} out of range for shape {}", a0, a1, x.shape().str()));
  }
  Axes perm(r);
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[static_cast<std::size_t>(norm_axis("transpose", a0, r))], perm[static_cast<std::size_t>(norm_axis("transpose", a1, r))]);
  return permute(x, perm);
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  if (shape.size() < x.shape().size())
    throw ShapeError(fmt::format("broadcast_to: cannot broadcast shape {} to {}", x.shape().str(), shape.str()));
  const std::size_t lead = shape.size() - x.shape().size();
  for (std::size_t i = 0; i < x.shape().size(); ++i)
    if (x.shape()[i] != 1 && x.shape()[i] != shape[lead + i])
      throw ShapeError(fmt::format("broadcast_to: cannot broadcast shape {} to {}", x.shape().str(), shape.str()));
  Params p;
  p.shape = shape;
  p.rank = x.dim();
  return bind(broadcast_to_p, {x}, p);
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const std::size_t lead = x.shape().size() - shape.size();
  Axes axes;
  for (std::size_t i = 0; i < x.shape().size(); ++i)
    if (i < lead || (shape[i - lead] == 1 && x.shape()[i] != 1)) axes.push_back(static_cast<std::int64_t>(i));
  return reshape(sum(x, axes, true), shape);
}

Tensor slice(const Tensor& x, std::int64_t axis, std::int64_t start, std::int64_t stop) {
  auto a = norm_axis("slice", axis, x.shape().size());
  auto n = x.shape()[static_cast<std::size_t>(a)];
  if (start < 0) start += n;
  if (stop < 0) stop += n;
  if (start < 0 || stop > n || start > stop)
    throw ShapeError(fmt::format("slice: range [{}, {}) out of bounds for axis {} of shape {}", start, stop, axis, x.shape().str()));
  if (start == 0 && stop == n) return x;
  Params p;
  p.axis = a - x.dim();
  p.start = start;
  p.stop = stop;
  return bind(slice_p, {x}, p);
}
Tensor pad(const Tensor& x, std::int64_t axis, std::int64_t before, std::int64_t after) {
  auto a = norm_axis("pad", axis, x.shape().size());
  if (before < 0 || after < 0) throw ValueError(fmt::format("pad: negative padding ({}, {})", before, after));
  if (before == 0 && after == 0) return x;
  Params p;
  p.axis = a - x.dim();
  p.start = before;
  p.stop = after;
  return bind(pad_p, {x}, p);
}
Tensor concat(const std::vector<Tensor>& xs, std::int64_t axis) {
  if (xs.empty()) throw ValueError("concat: no tensors given");
  auto a = norm_axis("concat", axis, xs[0].shape().size());
  for (std::size_t i = 1; i < xs.size(); ++i) {
    bool ok = xs[i].shape().size() == xs[0].shape().size();
    for (std::size_t d = 0; ok && d < xs[i].shape().size(); ++d)
      ok = static_cast<std::int64_t>(d) == a || xs[i].shape()[d] == xs[0].shape()[d];
    if (!ok)
      throw ShapeError(fmt::format("concat: input {} has shape {}, incompatible with input 0 of shape {} along axis {}", i,
                                   xs[i].shape().str(), xs[0].shape().str(), axis));
  }
  if (xs.size() == 1) return xs[0];
  Params p;
  p.axis = a - xs[0].dim();
  DType t = xs[0].dtype();
  for (const auto& x : xs) t = promote_types(t, x.dtype());
  for (const auto& x : xs)
    if (x.dtype() != t) {  // type promotion across the inputs, as the array API's concat
      std::vector<Tensor> ys;
      for (const auto& y : xs) ys.push_back(y.dtype() == t ? y : cast(y, t));
      return chainrule::bind(concat_p, std::span<const Tensor>(ys), p);
    }
  return chainrule::bind(concat_p, std::span<const Tensor>(xs), p);
}
Tensor stack(const std::vector<Tensor>& xs, std::int64_t axis) {
  if (xs.empty()) throw ValueError("stack: no tensors given");
  auto a = norm_axis("stack", axis, xs[0].shape().size() + 1);
  std::vector<Tensor> ys;
  for (const auto& x : xs) {
    if (x.shape() != xs[0].shape())
      throw ShapeError(fmt::format("stack: shapes differ: {} and {}", xs[0].shape().str(), x.shape().str()));
    ys.push_back(unsqueeze(x, a));
  }
  if (ys.size() == 1) return ys[0];
  return concat(ys, a);
}
Tensor gather(const Tensor& x, const Tensor& index, std::int64_t axis) {
  Params p;
  p.axis = norm_axis("gather", axis, x.shape().size()) - x.dim();
  return bind(gather_p, {x, index}, p);
}
Tensor scatter_add(const Tensor& src, const Tensor& index, std::int64_t axis, std::int64_t size) {
  Params p;
  p.axis = norm_axis("scatter_add", axis, src.shape().size()) - src.dim();
  p.size = size;
  return bind(scatter_add_p, {src, index}, p);
}

const Primitive* const kShapePrimitives[] = {&reshape_p, &permute_p, &broadcast_to_p, &slice_p,
                                             &pad_p,     &concat_p,  &gather_p,       &scatter_add_p};
std::span<const Primitive* const> shape_primitives() { return kShapePrimitives; }

}  // namespace chainrule
