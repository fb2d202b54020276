// bind(): the one entry point of every primitive. It finds the innermost active transform among
// the inputs and lets that transform's interpreter handle the operation; at level 0 it runs the
// forward kernel and, in eager mode, records a reverse-mode node.
#include <fmt/format.h>

#include <vector>

#include "autodiff/anomaly_internal.h"
#include "autodiff/compile_internal.h"
#include "autodiff/custom_internal.h"
#include "chainrule/autodiff/anomaly.h"
#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/linearize.h"
#include "chainrule/autodiff/node.h"
#include "chainrule/autodiff/primitive.h"
#include "chainrule/autodiff/profiler.h"
#include "chainrule/autodiff/tracer.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/allocator.h"
#include "kernels/convert.h"

namespace chainrule {

namespace {
thread_local std::vector<std::shared_ptr<Frame>> t_frames;  // outermost first
thread_local bool t_grad_enabled = true;

const char* kind_name(TraceKind k) {
  switch (k) {
    case TraceKind::Jvp: return "jvp";
    case TraceKind::Reverse: return "reverse-mode";
    case TraceKind::Batch: return "vmap";
    case TraceKind::Linearize: return "linearize";
  }
  return "?";
}
}  // namespace

FrameScope::FrameScope(TraceKind kind, std::int64_t batch_size) : frame_(std::make_shared<Frame>()) {
  frame_->level = static_cast<int>(t_frames.size()) + 1;
  frame_->kind = kind;
  frame_->batch_size = batch_size;
  t_frames.push_back(frame_);
}
FrameScope::~FrameScope() {
  frame_->alive = false;
  t_frames.pop_back();
}
int current_level() { return static_cast<int>(t_frames.size()); }

Tensor detail::random_under_vmap(const char* op, const Shape& shape, const std::function<Tensor(const Shape&)>& draw) {
  std::vector<std::shared_ptr<Frame>> different;
  Shape lead;
  for (const auto& f : t_frames) {
    if (f->kind != TraceKind::Batch) continue;
    if (f->randomness == Randomness::Error)
      throw AutodiffError(fmt::format("{}: a random draw inside vmap; choose vmap's randomness: Randomness::Same (one draw "
                                      "for every example) or Randomness::Different (a draw per example). The default "
                                      "refuses, as torch.func's randomness='error'", op));
    if (f->randomness == Randomness::Different) {
      different.push_back(f);
      lead = lead + Shape{f->batch_size};
    }
  }
  if (different.empty()) return draw(shape);
  Tensor t = draw(lead + shape);
  for (const auto& f : different) t = make_batch_tracer(f, t);  // outermost first: each peels one axis
  return t;
}

bool GradMode::is_enabled() { return t_grad_enabled; }
void GradMode::set_enabled(bool on) { t_grad_enabled = on; }

namespace detail {

Tensor make_jvp_tracer(const std::shared_ptr<Frame>& f, const Tensor& primal, const Tensor& tangent) {
  auto impl = memory::make_pooled<TensorImpl>();
  impl->shape = primal.shape();
  impl->dtype = primal.dtype();
  impl->frame = f;
  impl->primal = primal;
  impl->tangent = tangent;
  return Tensor(std::move(impl));
}
Tensor make_reverse_tracer(const std::shared_ptr<Frame>& f, const Tensor& primal, std::shared_ptr<Node> node) {
  auto impl = memory::make_pooled<TensorImpl>();
  impl->shape = primal.shape();
  impl->dtype = primal.dtype();
  impl->frame = f;
  impl->primal = primal;
  impl->node = std::move(node);
  return Tensor(std::move(impl));
}
Tensor make_batch_tracer(const std::shared_ptr<Frame>& f, const Tensor& batched) {
  auto impl = memory::make_pooled<TensorImpl>();
  impl->shape = batched.shape().slice(1);
  impl->dtype = batched.dtype();
  impl->frame = f;
  impl->primal = batched;
  return Tensor(std::move(impl));
}
std::shared_ptr<Node> make_leaf() { return memory::make_pooled<Node>(); }

}  // namespace detail

std::shared_ptr<Node> record_node(const Primitive& p, std::span<const Tensor> inputs, std::span<const Tensor> primals,
                                  const Tensor& out, const Params& params, bool eager) {
  auto node = memory::make_pooled<Node>();
  node->prim = &p;
  node->params = params;
  node->eager = eager;
  if (AnomalyMode::is_enabled()) {
    // Where in the forward pass: the module, and the node's number among those recorded on this
    // thread in anomaly mode (so two nodes of one primitive in one module can be told apart).
    thread_local std::uint64_t recorded = 0;
    std::string scope = current_name_scope();
    node->created_in = fmt::format("{} as node {} of the forward pass", scope.empty() ? "at top level" : "in module " + scope, ++recorded);
  }
  node->next.resize(inputs.size());
  node->in_shapes.resize(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    node->in_shapes[i] = primals[i].shape();
    // Only inputs tracked at this level get an edge: at level 0 those with a node, in a
    // reverse-mode frame its tracers (the caller passes the unwrapped input otherwise).
    if (inputs[i].impl() != primals[i].impl() || eager) node->next[i] = inputs[i].impl()->node;
  }
  if (p.saves & kSaveInputs) {
    node->saved.resize(primals.size());
    node->saved_versions.resize(primals.size());
    for (std::size_t i = 0; i < primals.size(); ++i) {
      node->saved[i] = primals[i];
      if (!primals[i].impl()->frame) node->saved_versions[i] = primals[i].impl()->storage->version;
    }
  }
  if (p.saves & kSaveOutput) {
    // At level 0 the output's own node is this node: save a detached alias to avoid a cycle.
    node->saved_out = eager ? out.detach() : out;
    if (!out.impl()->frame) node->saved_out_version = out.impl()->storage->version;
  }
  return node;
}

namespace {

// bfloat16 and float16 at the primitive boundary: a kernel without half support (most; see
// Primitive::half_kernels) runs on float32 copies of the half inputs, and its float32 output is
// rounded back to their half type, as PyTorch's CPU kernels do inside most bf16 ops. Reductions
// therefore accumulate in float32 and round once, and every op, JVP and VJP (made of ops) works
// on the half types with the float32 kernels alone.
Tensor run_forward(const Primitive& p, std::span<const Tensor> xs, const Params& params) {
  if (p.half_kernels) return p.forward(xs, params);
  const Tensor* half = nullptr;
  for (const auto& x : xs)
    if (is_half(x.dtype())) half = &x;
  if (!half) return p.forward(xs, params);
  SmallVec<Tensor, 3> up(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i)
    up[i] = is_half(xs[i].dtype()) ? kernels::convert(xs[i], DType::f32) : xs[i];
  Tensor out;
  try {
    out = p.forward(up, params);
  } catch (const DTypeError& e) {  // an integer-only kernel, say: name the dtype the caller used
    throw DTypeError(fmt::format("{}: unsupported dtype {} (its float32 kernel said: {})", p.name, dtype_name(half->dtype()), e.what()));
  }
  return out.dtype() == DType::f32 ? kernels::convert(out, half->dtype()) : out;
}

Tensor eval_eager_untraced(const Primitive& p, std::span<const Tensor> xs, const Params& params) {
  Tensor out = profiler::detail::timed(p.name, profiler::Phase::Forward, [&] { return run_forward(p, xs, params); });
  if (AnomalyMode::is_enabled()) detail::check_output(p.name, xs, out);
  if (!p.differentiable() || !t_grad_enabled) return out;
  bool tracked = false;
  for (const auto& x : xs) tracked |= x.impl()->node != nullptr;
  if (!tracked) return out;
  out.impl()->node = record_node(p, xs, xs, out, params, /*eager=*/true);
  return out;
}

Tensor eval_eager(const Primitive& p, std::span<const Tensor> xs, const Params& params) {
  if (detail::t_recorder) [[unlikely]] return detail::trace_kernel(p, xs, params, eval_eager_untraced);  // compile.cpp
  return eval_eager_untraced(p, xs, params);
}

// Forward mode: push tangents through the primitive's JVP rule, one input at a time.
Tensor eval_jvp(const std::shared_ptr<Frame>& f, const Primitive& p, std::span<const Tensor> xs, const Params& params) {
  SmallVec<Tensor, 3> primals(xs.size()), tangents(xs.size());
  SmallVec<Shape, 3> shapes(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    bool mine = detail::is_traced_by(xs[i], f.get());
    primals[i] = mine ? xs[i].impl()->primal : xs[i];
    if (mine) tangents[i] = xs[i].impl()->tangent;
    shapes[i] = xs[i].shape();
  }
  Tensor out = bind(p, primals, params);
  if (!p.differentiable()) return out;
  Ctx c{primals, out, params, shapes};
  Tensor out_t;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!tangents[i].defined()) continue;
    Tensor t = p.jvp(static_cast<int>(i), tangents[i], c);
    if (!t.defined()) continue;
    if (t.shape() != out.shape()) t = broadcast_to(t, out.shape());
    out_t = out_t.defined() ? add(out_t, t) : t;
  }
  if (!out_t.defined()) return out;
  return detail::make_jvp_tracer(f, out, out_t);
}

// Reverse mode inside a transform: apply one level down and record a node.
Tensor eval_reverse(const std::shared_ptr<Frame>& f, const Primitive& p, std::span<const Tensor> xs, const Params& params) {
  SmallVec<Tensor, 3> primals(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i)
    primals[i] = detail::is_traced_by(xs[i], f.get()) ? xs[i].impl()->primal : xs[i];
  Tensor out = bind(p, primals, params);
  if (!p.differentiable()) return out;
  return detail::make_reverse_tracer(f, out, record_node(p, xs, primals, out, params, /*eager=*/false));
}

// vmap: line the batch axes up according to the primitive's batching kind and apply the
// primitive once to the whole batch (its parameters refer to trailing dimensions).
Tensor eval_batch(const std::shared_ptr<Frame>& f, const Primitive& p, std::span<const Tensor> xs, const Params& params) {
  if (detail::has_custom_batch_rule(p, params)) return detail::eval_custom_batch(f, xs, params);  // the user's own rule
  SmallVec<Tensor, 3> vals(xs.size());
  std::size_t rank = 0;
  for (const auto& x : xs) rank = std::max(rank, x.shape().size());
  const std::int64_t B = f->batch_size;
  if (p.batching == Batching::Rule) {
    std::uint32_t batched = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const bool mine = detail::is_traced_by(xs[i], f.get());
      vals[i] = mine ? xs[i].impl()->primal : xs[i];
      if (mine) batched |= 1u << i;
    }
    return detail::make_batch_tracer(f, p.batch_rule(vals, batched, params));
  }
  bool per_example = false;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    bool batched = detail::is_traced_by(xs[i], f.get());
    const Tensor& v = batched ? xs[i].impl()->primal : xs[i];
    switch (p.batching) {
      case Batching::Broadcast:
        if (batched && xs[i].shape().size() < rank) {
          Shape s = Shape{B} + Shape::filled(rank - xs[i].shape().size(), 1) + xs[i].shape();
          vals[i] = reshape(v, s);
        } else {
          vals[i] = v;
        }
        break;
      case Batching::Leading:
        per_example |= batched && i > 0;
        vals[i] = v;
        break;
      case Batching::Materialize:
        vals[i] = batched ? v : broadcast_to(v, Shape{B} + v.shape());
        break;
      case Batching::Rule: break;  // handled above
    }
  }
  if (per_example) {
    // A Leading primitive with a batched secondary input (gather's indices, say) has no single
    // call that lines the examples up: run it per example and stack, as JAX's fallback does.
    if (B == 0) throw AutodiffError(fmt::format("vmap: {} with a batched secondary input needs a non-empty batch", p.name));
    std::vector<Tensor> outs;
    SmallVec<Tensor, 3> one(xs.size());
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::size_t i = 0; i < xs.size(); ++i)
        one[i] = detail::is_traced_by(xs[i], f.get()) ? squeeze(slice(vals[i], 0, b, b + 1), 0) : vals[i];
      outs.push_back(bind(p, one, params));
    }
    return detail::make_batch_tracer(f, stack(outs, 0));
  }
  return detail::make_batch_tracer(f, bind(p, vals, params));
}

}  // namespace

Tensor detail::run_primitive(const Primitive& p, std::span<const Tensor> xs, const Params& params) {
  return run_forward(p, xs, params);
}

Tensor bind(const Primitive& p, std::span<const Tensor> xs, const Params& params) {
  const std::shared_ptr<Frame>* top = nullptr;
  for (const auto& x : xs) {
    if (!x.defined()) throw ValueError(fmt::format("{}: input is an undefined tensor", p.name));
    const auto& f = x.impl()->frame;
    if (!f) continue;
    if (!f->alive)
      throw AutodiffError(fmt::format("{}: an input is a tracer of a {} transform that has already returned "
                                      "(a value escaped its transform)", p.name, kind_name(f->kind)));
    if (!top || f->level > (*top)->level) top = &f;
  }
  if (!top) return eval_eager(p, xs, params);
  switch ((*top)->kind) {
    case TraceKind::Jvp: return eval_jvp(*top, p, xs, params);
    case TraceKind::Reverse: return eval_reverse(*top, p, xs, params);
    case TraceKind::Batch: return eval_batch(*top, p, xs, params);
    case TraceKind::Linearize: return detail::eval_linearize(*top, p, xs, params);
  }
  return {};
}

}  // namespace chainrule
