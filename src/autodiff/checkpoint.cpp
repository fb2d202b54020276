// checkpoint: a higher-order primitive. In reverse mode (eager or a Reverse frame) it runs f
// without recording anything and records one node that saves only f's inputs; that node's VJP
// re-runs f under a fresh Reverse frame from the saved inputs and pulls the cotangent back through
// the graph it just built. Forward mode and vmap run f directly under their frame: they keep no
// tape, so there is nothing to rematerialise.
//
// Why it nests: the recomputation is an ordinary reverse-mode transform one level above whatever
// is active when the VJP runs, and the saved inputs are the values one level below the checkpoint
// node's frame (tracers of the outer transforms, or eager tensors with their nodes). So the
// recomputed forward and backward are seen by every enclosing transform exactly as a plain call of
// f and its backward would be: recorded by an outer Reverse frame (reverse over reverse), pushed
// forward by an outer Jvp frame (forward over reverse), batched by a vmap of the pullback
// (jacrev), or recorded eagerly when the engine runs with create_graph.
#include "chainrule/autodiff/checkpoint.h"

#include <fmt/format.h>

#include <optional>

#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/node.h"
#include "chainrule/autodiff/primitive.h"
#include "chainrule/autodiff/tracer.h"
#include "chainrule/ops/ops.h"

namespace chainrule {

namespace {

thread_local int t_recomputing = 0;

struct RecomputeScope {
  RecomputeScope() { ++t_recomputing; }
  ~RecomputeScope() { --t_recomputing; }
  RecomputeScope(const RecomputeScope&) = delete;
  RecomputeScope& operator=(const RecomputeScope&) = delete;
};

// Re-runs f from the saved inputs with the random draws of the forward pass.
Tensor rerun(const detail::Remat& r, const std::vector<Tensor>& in) {
  RecomputeScope recomputing;
  detail::RngTapeScope replay(r.rng, detail::RngTapeScope::Replay{});
  return r.f(in);
}

// The usual case, loss.backward() on eager tensors: re-run f eagerly and let a nested pass
// accumulate straight into the parameters' .grad as it goes, as the plain graph would. Only the
// cotangents of the other inputs are returned, so the segment's parameter gradients never exist
// all at once beside its activations.
std::vector<Tensor> recompute_eager(const detail::Remat& r, const Tensor& out_ct, const Ctx& c, const std::vector<bool>& needed) {
  std::vector<Tensor> in(c.x.size()), result(c.x.size());
  std::vector<std::shared_ptr<Node>> wrt;
  std::vector<std::size_t> wrt_input;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const auto& node = c.x[i].impl()->node;
    if (needed[i] && node && node->accumulates) {
      in[i] = c.x[i];  // a leaf: the nested pass adds into its .grad
      continue;
    }
    in[i] = c.x[i].detach();
    if (!needed[i]) continue;
    in[i].impl()->node = detail::make_leaf();
    wrt.push_back(in[i].impl()->node);
    wrt_input.push_back(i);
  }
  Tensor out;
  {
    EnableGradGuard recording;
    out = rerun(r, in);
  }
  if (!out.impl()->node) return result;  // f does not depend on the inputs after all
  std::shared_ptr<Node> roots[] = {out.impl()->node};
  Tensor seeds[] = {out_ct};
  auto g = run_backward(roots, seeds, wrt, {.accumulate = true});
  for (std::size_t k = 0; k < wrt.size(); ++k) result[wrt_input[k]] = std::move(g[k]);
  return result;
}

// Any other pass (transforms, autograd_grad, create_graph): re-run f under a fresh Reverse frame
// above everything active and pull the cotangent back through the graph it records.
std::vector<Tensor> recompute_in_frame(const detail::Remat& r, const Tensor& out_ct, const Ctx& c, const std::vector<bool>& needed) {
  std::vector<Tensor> in(c.x.begin(), c.x.end()), result(c.x.size());
  std::vector<std::shared_ptr<Node>> leaves;
  std::vector<std::size_t> leaf_input;
  std::optional<FrameScope> scope(std::in_place, TraceKind::Reverse);
  const std::shared_ptr<Frame> frame = scope->frame();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (!needed[i]) continue;
    leaves.push_back(detail::make_leaf());
    leaf_input.push_back(i);
    in[i] = detail::make_reverse_tracer(frame, c.x[i], leaves.back());
  }
  Tensor out = rerun(r, in);
  scope.reset();  // the recomputation is done; its backward runs one level down, like grad's
  if (!detail::is_traced_by(out, frame.get())) return result;
  std::shared_ptr<Node> roots[] = {out.impl()->node};
  Tensor seeds[] = {out_ct};
  // Nothing else refers to this graph: free it as the pass goes. Under create_graph the rules
  // record their own (eager) graph, which is what a derivative of this backward pass follows.
  auto g = run_backward(roots, seeds, leaves, {.create_graph = GradMode::is_enabled()});
  for (std::size_t k = 0; k < leaves.size(); ++k) result[leaf_input[k]] = std::move(g[k]);
  return result;
}

// All cotangents from one recomputation (the engine calls this once per node, not per input).
std::vector<Tensor> checkpoint_vjp_all(const Tensor& out_ct, const Ctx& c, const std::vector<bool>& needed) {
  const detail::Remat& r = *c.p.remat;
  const BackwardOptions* pass = active_backward_options();
  bool eager = pass && pass->accumulate && !pass->create_graph && !out_ct.impl()->frame;
  for (const auto& x : c.x) eager = eager && !x.impl()->frame;
  return eager ? recompute_eager(r, out_ct, c, needed) : recompute_in_frame(r, out_ct, c, needed);
}

const Primitive checkpoint_p{
    .name = "checkpoint",
    .vjp_all = checkpoint_vjp_all,
    .saves = kSaveInputs,
};

const char* kCaptureHint =
    "pass it as one of the inputs (nn::checkpoint passes a module's parameters for you)";

// Runs f once in the forward pass, recording its random draws for the recomputation.
Tensor run_recorded(detail::Remat& r, const std::vector<Tensor>& xs) {
  detail::RngTapeScope record(r.rng);
  Tensor out = r.f(xs);
  if (!out.defined()) throw AutodiffError("checkpoint: the function returned an undefined tensor");
  return out;
}

Tensor apply_checkpoint(const std::shared_ptr<detail::Remat>& r, const std::vector<Tensor>& xs) {
  const std::shared_ptr<Frame>* top = nullptr;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].defined()) throw ValueError(fmt::format("checkpoint: input {} is an undefined tensor", i));
    const auto& f = xs[i].impl()->frame;
    if (f && f->alive && (!top || f->level > (*top)->level)) top = &f;
  }
  Params params;
  params.remat = r;

  if (!top) {
    bool tracked = false;
    for (const auto& x : xs) tracked |= x.impl()->node != nullptr;
    if (!tracked || !GradMode::is_enabled()) return run_recorded(*r, xs);
    // Eager reverse mode: run f on detached inputs, so nothing is recorded unless f uses a
    // tensor that requires grad without taking it as an input.
    std::vector<Tensor> detached;
    detached.reserve(xs.size());
    for (const auto& x : xs) detached.push_back(x.detach());
    Tensor out = run_recorded(*r, detached);
    if (out.impl()->node)
      throw AutodiffError(fmt::format("checkpoint: the function uses a tensor that requires grad but is not one of its "
                                      "inputs; {}", kCaptureHint));
    if (!is_floating(out.dtype())) return out;
    out = out.detach();  // never attach the node to a tensor f may share with its caller
    out.impl()->node = record_node(checkpoint_p, xs, xs, out, params, /*eager=*/true);
    return out;
  }

  const std::shared_ptr<Frame>& frame = *top;
  if (frame->kind != TraceKind::Reverse) return run_recorded(*r, xs);

  std::vector<Tensor> primals(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i)
    primals[i] = detail::is_traced_by(xs[i], frame.get()) ? xs[i].impl()->primal : xs[i];
  Tensor out = apply_checkpoint(r, primals);  // one level down: nothing is recorded at this level
  const auto& out_frame = out.impl()->frame;
  if (out_frame && out_frame->level >= frame->level)
    throw AutodiffError(fmt::format("checkpoint: the function uses a tracer of an enclosing transform that is not one "
                                    "of its inputs; {}", kCaptureHint));
  if (!is_floating(out.dtype())) return out;
  return detail::make_reverse_tracer(frame, out, record_node(checkpoint_p, xs, primals, out, params, /*eager=*/false));
}

}  // namespace

Tensor checkpoint(CheckpointFn f, const std::vector<Tensor>& inputs) {
  if (!f) throw ValueError("checkpoint: the function is empty");
  auto r = std::make_shared<detail::Remat>();
  r->f = std::move(f);
  return apply_checkpoint(r, inputs);
}

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& f, const Tensor& x) {
  if (!f) throw ValueError("checkpoint: the function is empty");
  return checkpoint([f](const std::vector<Tensor>& in) { return f(in[0]); }, std::vector<Tensor>{x});
}

std::vector<Tensor> checkpoint(CheckpointFnN f, const std::vector<Tensor>& inputs) {
  if (!f) throw ValueError("checkpoint: the function is empty");
  // The outputs' shapes, from the first run (the recomputation must agree).
  auto shapes = std::make_shared<std::vector<Shape>>();
  auto packed_f = [f = std::move(f), shapes](const std::vector<Tensor>& in) {
    std::vector<Tensor> outs = f(in);
    if (outs.empty()) throw ValueError("checkpoint: the function returned no tensors");
    std::vector<Shape> seen;
    std::vector<Tensor> flat;
    for (std::size_t k = 0; k < outs.size(); ++k) {
      if (!outs[k].defined() || !is_floating(outs[k].dtype()) || outs[k].dtype() != outs[0].dtype())
        throw DTypeError(fmt::format("checkpoint: output {} is {}; several outputs must be defined float tensors of one dtype ({})",
                                     k, outs[k].defined() ? dtype_name(outs[k].dtype()) : "undefined",
                                     outs[0].defined() ? dtype_name(outs[0].dtype()) : "undefined"));
      seen.push_back(outs[k].shape());
      flat.push_back(reshape(outs[k], {outs[k].numel()}));
    }
    if (shapes->empty()) *shapes = seen;
    else if (*shapes != seen) throw AutodiffError("checkpoint: the recomputation returned outputs of other shapes than the forward pass");
    return flat.size() == 1 ? flat[0] : concat(flat, 0);
  };
  Tensor packed = checkpoint(CheckpointFn(packed_f), inputs);
  std::vector<Tensor> outs;
  std::int64_t start = 0;
  for (const Shape& shape : *shapes) {
    const std::int64_t n = shape.numel();
    outs.push_back(reshape(slice(packed, 0, start, start + n), shape));
    start += n;
  }
  return outs;
}

bool checkpoint_recomputing() { return t_recomputing > 0; }

}  // namespace chainrule
