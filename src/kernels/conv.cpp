// Convolution kernels (kernels/conv.h). float32: oneDNN's direct convolutions, one cached plan per
// shape and thread count. oneDNN's fast kernels want blocked layouts (nChw16c, OIhw16i16o), so a
// plan reorders the plain NCHW/OIHW buffers in and out around the call; measured on 128×16×28×28
// 3×3 convolutions the blocked kernels are 2–5× faster than oneDNN's own plain-layout GEMM path,
// which more than pays for the reorders. float64 (and any shape oneDNN only has a reference kernel
// for) runs im2col + GEMM per image.
#include "kernels/conv.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <string_view>
#include <tuple>

#include <dnnl.hpp>
#include <memory>
#include <unordered_map>
#include <vector>

#include "kernels/kernels.h"

namespace chainrule::kernels {

namespace {

// ---- Reference path: im2col + GEMM per image and group ----------------------------------------

template <class T>
struct Ref {
  const ConvShape& s;
  std::int64_t og = s.o / s.groups, cg = s.c / s.groups, k = cg * s.kh * s.kw, l = s.oh * s.ow;
  std::vector<T> cols = std::vector<T>(static_cast<std::size_t>(s.c * s.kh * s.kw * l));

  void im2col(const T* x) {
    conv_windows(s, s.c, [&](std::int64_t r, std::int64_t src) { cols[r] = src < 0 ? T(0) : x[src]; });
  }
  void forward(const T* x, const T* w, T* y) {
    for (std::int64_t b = 0; b < s.n; ++b) {
      im2col(x + b * s.c * s.h * s.w);
      for (std::int64_t g = 0; g < s.groups; ++g)
        gemm(false, false, og, l, k, T(1), w + g * og * k, k, cols.data() + g * k * l, l, T(0), y + (b * s.o + g * og) * l, l);
    }
  }
  void backward_data(const T* dy, const T* w, T* dx) {
    for (std::int64_t b = 0; b < s.n; ++b) {
      for (std::int64_t g = 0; g < s.groups; ++g)
        gemm(true, false, k, l, og, T(1), w + g * og * k, k, dy + (b * s.o + g * og) * l, l, T(0), cols.data() + g * k * l, l);
      T* out = dx + b * s.c * s.h * s.w;
      std::fill(out, out + s.c * s.h * s.w, T(0));
      conv_windows(s, s.c, [&](std::int64_t r, std::int64_t dst) {
        if (dst >= 0) out[dst] += cols[r];
      });
    }
  }
  void backward_weights(const T* x, const T* dy, T* dw) {
    std::fill(dw, dw + s.o * k, T(0));
    for (std::int64_t b = 0; b < s.n; ++b) {
      im2col(x + b * s.c * s.h * s.w);
      for (std::int64_t g = 0; g < s.groups; ++g)
        gemm(false, true, og, k, l, T(1), dy + (b * s.o + g * og) * l, l, cols.data() + g * k * l, l, T(1), dw + g * og * k, k);
    }
  }
};

// Channels-last on the reference path: NHWC <-> NCHW copies around the NCHW loops (float64 and
// shapes without a fast oneDNN kernel only). Channel ch of image b is at ((f·n + b)·hw + p)·cb + j
// for f = ch / cb, j = ch % cb, cb = c / folded (plain NHWC when folded = 1).
template <class T>
std::vector<T> to_nchw(const T* x, std::int64_t n, std::int64_t c, std::int64_t hw, std::int64_t folded) {
  std::vector<T> out(static_cast<std::size_t>(n * c * hw));
  const std::int64_t cb = c / folded;
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t p = 0; p < hw; ++p)
      for (std::int64_t ch = 0; ch < c; ++ch)
        out[static_cast<std::size_t>((b * c + ch) * hw + p)] = x[((ch / cb * n + b) * hw + p) * cb + ch % cb];
  return out;
}
template <class T>
void from_nchw(const std::vector<T>& x, std::int64_t n, std::int64_t c, std::int64_t hw, std::int64_t folded, T* out) {
  const std::int64_t cb = c / folded;
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t p = 0; p < hw; ++p)
      for (std::int64_t ch = 0; ch < c; ++ch)
        out[((ch / cb * n + b) * hw + p) * cb + ch % cb] = x[static_cast<std::size_t>((b * c + ch) * hw + p)];
}
template <class T>
void ref_forward(const ConvShape& s, const T* x, const T* w, T* y) {
  if (!s.channels_last) return Ref<T>{s}.forward(x, w, y);
  std::vector<T> out(static_cast<std::size_t>(s.n * s.o * s.oh * s.ow));
  Ref<T>{s}.forward(to_nchw(x, s.n, s.c, s.h * s.w, s.folded).data(), w, out.data());
  from_nchw(out, s.n, s.o, s.oh * s.ow, s.folded, y);
}
template <class T>
void ref_backward_data(const ConvShape& s, const T* dy, const T* w, T* dx) {
  if (!s.channels_last) return Ref<T>{s}.backward_data(dy, w, dx);
  std::vector<T> out(static_cast<std::size_t>(s.n * s.c * s.h * s.w));
  Ref<T>{s}.backward_data(to_nchw(dy, s.n, s.o, s.oh * s.ow, s.folded).data(), w, out.data());
  from_nchw(out, s.n, s.c, s.h * s.w, s.folded, dx);
}
template <class T>
void ref_backward_weights(const ConvShape& s, const T* x, const T* dy, T* dw) {
  if (!s.channels_last) return Ref<T>{s}.backward_weights(x, dy, dw);
  Ref<T>{s}.backward_weights(to_nchw(x, s.n, s.c, s.h * s.w, s.folded).data(), to_nchw(dy, s.n, s.o, s.oh * s.ow, s.folded).data(), dw);
}

// ---- oneDNN path ------------------------------------------------------------------------------

enum class Kind : int { Forward, BackwardData, BackwardWeights };

struct PlanKey {
  Kind kind;
  ConvShape s;
  int threads;
  bool operator==(const PlanKey&) const = default;
};
struct PlanKeyHash {
  std::size_t operator()(const PlanKey& k) const {
    const ConvShape& s = k.s;
    std::size_t h = static_cast<std::size_t>(k.kind) * 31 + static_cast<std::size_t>(k.threads);
    for (std::int64_t v : {s.n, s.c, s.h, s.w, s.o, s.kh, s.kw, s.oh, s.ow, s.stride[0], s.stride[1], s.pad_begin[0], s.pad_begin[1],
                           s.pad_end[0], s.pad_end[1], s.dilation[0], s.dilation[1], s.groups, std::int64_t{s.bf16}, std::int64_t{s.channels_last},
                           s.folded})
      h = h * 1000003u ^ static_cast<std::size_t>(v);
    return h;
  }
};

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// One of a plan's three tensors: the caller's plain buffer and, when the primitive chose another
// layout, a buffer of that layout with the reorder between them.
struct Operand {
  int arg = 0;
  dnnl::memory user;
  dnnl::memory inner;
  dnnl::reorder reorder;  // user -> inner for inputs, inner -> user for the output
  bool reordered = false;

  Operand(int a, const dnnl::memory::desc& plain, const dnnl::memory::desc& chosen, bool is_output) : arg(a) {
    user = dnnl::memory(plain, engine(), DNNL_MEMORY_NONE);
    reordered = plain != chosen;
    if (reordered) {
      inner = dnnl::memory(chosen, engine());
      reorder = is_output ? dnnl::reorder(inner, user) : dnnl::reorder(user, inner);
    }
  }
  dnnl::memory& used() { return reordered ? inner : user; }
};

struct Plan {
  bool usable = false;  // false: oneDNN has only its reference kernel here; use ours
  dnnl::primitive primitive;
  std::vector<Operand> ops;  // two inputs, then the output
  std::uint64_t calls = 0;

  void run(dnnl::stream& st, const void* a, const void* b, void* out) {
    ops[0].user.set_data_handle(const_cast<void*>(a));
    ops[1].user.set_data_handle(const_cast<void*>(b));
    ops[2].user.set_data_handle(out);
    for (int i = 0; i < 2; ++i)
      if (ops[i].reordered) ops[i].reorder.execute(st, ops[i].user, ops[i].inner);
    primitive.execute(st, {{ops[0].arg, ops[0].used()}, {ops[1].arg, ops[1].used()}, {ops[2].arg, ops[2].used()}});
    if (ops[2].reordered) ops[2].reorder.execute(st, ops[2].inner, ops[2].user);
    st.wait();
  }
};

// ConvShape::folded's layout as oneDNN's [n, c, h, w]: a blocked layout whose blocks are one
// example's c/folded channels, each block's images one after another, channels-last inside. With
// blocks of 16 and one image per example it is oneDNN's own nChw16c, so no reorder runs at all.
dnnl::memory::desc folded_desc(const dnnl::memory::dims& d, std::int64_t folded) {
  dnnl::memory::desc md(d, dnnl::memory::data_type::f32, dnnl::memory::format_tag::nChw16c);
  dnnl_memory_desc_t& m = md.data;
  const std::int64_t n = d[0], c = d[1], hw = d[2] * d[3], cb = c / folded;
  m.padded_dims[1] = c;
  dnnl_blocking_desc_t& b = m.format_desc.blocking;
  b.inner_nblks = 1;
  b.inner_blks[0] = cb;
  b.inner_idxs[0] = 1;
  b.strides[0] = n == 1 ? c * hw : hw * cb;  // one image: the value nChw16c has (never used)
  b.strides[1] = n * hw * cb;
  b.strides[2] = d[3] * cb;
  b.strides[3] = cb;
  return md;
}

std::unique_ptr<Plan> make_plan(const PlanKey& key) {
  using md = dnnl::memory::desc;
  using tag = dnnl::memory::format_tag;
  const auto f32 = dnnl::memory::data_type::f32;
  const ConvShape& s = key.s;
  const dnnl::memory::dims src{s.n, s.c, s.h, s.w}, dst{s.n, s.o, s.oh, s.ow};
  const dnnl::memory::dims wei = s.groups == 1 ? dnnl::memory::dims{s.o, s.c, s.kh, s.kw}
                                               : dnnl::memory::dims{s.groups, s.o / s.groups, s.c / s.groups, s.kh, s.kw};
  const dnnl::memory::dims strides{s.stride[0], s.stride[1]}, dil{s.dilation[0] - 1, s.dilation[1] - 1};
  const dnnl::memory::dims pl{s.pad_begin[0], s.pad_begin[1]}, pr{s.pad_end[0], s.pad_end[1]};
  // Channels-last activations stay NHWC inside the primitive too (oneDNN's NHWC kernels run about
  // as fast as its blocked ones here, and no reorder is needed); NCHW and folded ones (grouped
  // convolutions, which oneDNN runs fast only in its blocked layouts) let oneDNN choose.
  const bool folded = s.folded > 1;
  const tag plain_act = s.channels_last ? tag::nhwc : tag::nchw, act = s.channels_last && !folded ? tag::nhwc : tag::any;
  const md src_plain = folded ? folded_desc(src, s.folded) : md(src, f32, plain_act);
  const md dst_plain = folded ? folded_desc(dst, s.folded) : md(dst, f32, plain_act);
  const md wei_plain(wei, f32, s.groups == 1 ? tag::oihw : tag::goihw);
  // Mixed precision: the two inputs of each primitive in bfloat16 (the reorders from the plain
  // float32 buffers round them), its output in float32.
  const auto in = s.bf16 ? dnnl::memory::data_type::bf16 : f32;
  const bool bwd_data = key.kind == Kind::BackwardData, bwd_weights = key.kind == Kind::BackwardWeights;
  const md src_any(src, bwd_data ? f32 : in, act), wei_any(wei, bwd_weights ? f32 : in, tag::any);
  const md dst_any(dst, key.kind == Kind::Forward ? f32 : in, act);
  const auto algo = dnnl::algorithm::convolution_direct;

  auto plan = std::make_unique<Plan>();
  // The forward descriptor; for a backward plan, the hint oneDNN wants, in the input type alone.
  const md hint_dst(dst, in, act);
  dnnl::convolution_forward::primitive_desc fwd(
      {dnnl::prop_kind::forward_training, algo, md(src, in, act), md(wei, in, tag::any), key.kind == Kind::Forward ? dst_any : hint_dst,
       strides, dil, pl, pr},
      engine());
  auto fast = [](const char* impl) { return std::string_view(impl).substr(0, 3) != "ref"; };
  switch (key.kind) {
    case Kind::Forward:
      plan->usable = fast(fwd.impl_info_str());
      plan->primitive = dnnl::convolution_forward(fwd);
      plan->ops = {Operand(DNNL_ARG_SRC, src_plain, fwd.src_desc(), false), Operand(DNNL_ARG_WEIGHTS, wei_plain, fwd.weights_desc(), false),
                   Operand(DNNL_ARG_DST, dst_plain, fwd.dst_desc(), true)};
      break;
    case Kind::BackwardData: {
      dnnl::convolution_backward_data::primitive_desc bwd({algo, src_any, wei_any, dst_any, strides, dil, pl, pr}, engine(), fwd);
      plan->usable = fast(bwd.impl_info_str());
      plan->primitive = dnnl::convolution_backward_data(bwd);
      plan->ops = {Operand(DNNL_ARG_DIFF_DST, dst_plain, bwd.diff_dst_desc(), false),
                   Operand(DNNL_ARG_WEIGHTS, wei_plain, bwd.weights_desc(), false),
                   Operand(DNNL_ARG_DIFF_SRC, src_plain, bwd.diff_src_desc(), true)};
      break;
    }
    case Kind::BackwardWeights: {
      dnnl::convolution_backward_weights::primitive_desc bwd({algo, src_any, wei_any, dst_any, strides, dil, pl, pr}, engine(), fwd);
      plan->usable = fast(bwd.impl_info_str());
      plan->primitive = dnnl::convolution_backward_weights(bwd);
      plan->ops = {Operand(DNNL_ARG_SRC, src_plain, bwd.src_desc(), false), Operand(DNNL_ARG_DIFF_DST, dst_plain, bwd.diff_dst_desc(), false),
                   Operand(DNNL_ARG_DIFF_WEIGHTS, wei_plain, bwd.diff_weights_desc(), true)};
      break;
    }
  }
  return plan;
}

struct ThreadPlans {
  dnnl::stream stream{engine()};
  std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> cache;
};

ThreadPlans& thread_plans() {
  static thread_local ThreadPlans t;
  return t;
}

// Runs the oneDNN plan for this shape; false when the caller should use the reference path.
// Where oneDNN 2.6's bf16 kernels run slower than its float32 ones (measured with `chainrule bench
// --precision bf16` on ResNet-8's shapes, Zen 5): backward-weights of strided convolutions (118 vs
// about 260 GFLOP/s) and inputs of fewer than 4 channels per group (the stem: 66 vs 96 GFLOP/s).
bool bf16_pays(Kind kind, const ConvShape& s) {
  if (kind == Kind::BackwardWeights && (s.stride[0] > 1 || s.stride[1] > 1)) return false;
  return s.c / s.groups >= 4;
}

bool run_dnnl(Kind kind, const ConvShape& s, const float* a, const float* b, float* out) {
  if (s.n == 0 || s.c == 0 || s.o == 0) return false;
  if (s.bf16 && !bf16_pays(kind, s)) {
    ConvShape f = s;
    f.bf16 = false;
    return run_dnnl(kind, f, a, b, out);
  }
  ThreadPlans& t = thread_plans();
  const PlanKey key{kind, s, omp_get_max_threads()};
  auto it = t.cache.find(key);
  if (it == t.cache.end()) {
    if (t.cache.size() >= 256) t.cache.clear();  // many one-off shapes: start over
    std::unique_ptr<Plan> plan;
    try {
      plan = make_plan(key);
    } catch (const dnnl::error& e) {
      if (s.bf16) plan = std::make_unique<Plan>();  // no bf16 convolution here: unusable, so float32 below
      else throw Error(fmt::format("conv2d: oneDNN cannot plan a {}x{}x{}x{} input with a {}x{}x{}x{} kernel: {}", s.n, s.c, s.h, s.w, s.o,
                              s.c / s.groups, s.kh, s.kw, e.what()));
    }
    it = t.cache.emplace(key, std::move(plan)).first;
  }
  Plan& plan = *it->second;
  if (!plan.usable && s.bf16) {  // no bf16 kernel on this CPU: float32 products
    ConvShape f = s;
    f.bf16 = false;
    return run_dnnl(kind, f, a, b, out);
  }
  if (!plan.usable) return false;
  ++plan.calls;
  plan.run(t.stream, a, b, out);
  return true;
}

std::uint64_t madds(const ConvShape& s) {
  return static_cast<std::uint64_t>(s.n * s.o * s.oh * s.ow * (s.c / s.groups) * s.kh * s.kw);
}

template <class F>
double median_call_seconds(F&& call, double min_seconds) {
  call();  // warm-up
  std::vector<double> times;
  const auto begin = std::chrono::steady_clock::now();
  while (times.size() < 5 || (times.size() < 1000 && std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count() < min_seconds)) {
    const auto t0 = std::chrono::steady_clock::now();
    call();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2), times.end());
  return times[times.size() / 2];
}

}  // namespace

std::vector<ConvPlanTiming> time_conv_plans(double min_seconds) {
  static constexpr const char* kKinds[] = {"forward", "backward-data", "backward-weights"};
  ThreadPlans& t = thread_plans();
  std::vector<ConvPlanTiming> out;
  for (auto& [key, plan] : t.cache) {
    if (!plan->usable || key.threads != omp_get_max_threads()) continue;
    // Buffers of the plain layouts, filled so that no denormals slow either side.
    std::vector<std::vector<float>> plain;
    for (auto& op : plan->ops) plain.emplace_back(op.user.get_desc().get_size() / sizeof(float), 0.5f);
    const double call_s = median_call_seconds([&] { plan->run(t.stream, plain[0].data(), plain[1].data(), plain[2].data()); }, min_seconds);
    auto& ops = plan->ops;
    const double primitive_s = median_call_seconds(
        [&] {
          plan->primitive.execute(t.stream, {{ops[0].arg, ops[0].used()}, {ops[1].arg, ops[1].used()}, {ops[2].arg, ops[2].used()}});
          t.stream.wait();
        },
        min_seconds);
    const bool reordered = ops[0].reordered || ops[1].reordered || ops[2].reordered;
    out.push_back({kKinds[static_cast<int>(key.kind)], key.s, madds(key.s), plan->calls, call_s, primitive_s, reordered});
  }
  std::sort(out.begin(), out.end(), [](const ConvPlanTiming& a, const ConvPlanTiming& b) {
    return std::tie(a.shape.c, a.shape.h, a.shape.o, a.kind) < std::tie(b.shape.c, b.shape.h, b.shape.o, b.kind);
  });
  return out;
}

void clear_conv_plans() { thread_plans().cache.clear(); }

void conv2d_forward(const ConvShape& s, const float* x, const float* w, float* y) {
  if (run_dnnl(Kind::Forward, s, x, w, y))
    gemm_madds() += madds(s);
  else
    ref_forward(s, x, w, y);
}
void conv2d_forward(const ConvShape& s, const double* x, const double* w, double* y) { ref_forward(s, x, w, y); }

void conv2d_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx) {
  if (run_dnnl(Kind::BackwardData, s, dy, w, dx))
    gemm_madds() += madds(s);
  else
    ref_backward_data(s, dy, w, dx);
}
void conv2d_backward_data(const ConvShape& s, const double* dy, const double* w, double* dx) { ref_backward_data(s, dy, w, dx); }

void conv2d_backward_weights(const ConvShape& s, const float* x, const float* dy, float* dw) {
  if (run_dnnl(Kind::BackwardWeights, s, x, dy, dw))
    gemm_madds() += madds(s);
  else
    ref_backward_weights(s, x, dy, dw);
}
void conv2d_backward_weights(const ConvShape& s, const double* x, const double* dy, double* dw) { ref_backward_weights(s, x, dy, dw); }

}  // namespace chainrule::kernels
