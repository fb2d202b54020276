#include "chainrule/autodiff/transforms.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace chainrule {
namespace detail {

Tensor ReverseTrace::track(const Tensor& x) {
  if (!is_floating(x.dtype()))  // callers name the leaf first (check_floating); this is the backstop
    throw DTypeError(fmt::format("{}: cannot differentiate with respect to a tensor of dtype {} (shape {})", who_, dtype_name(x.dtype()),
                                 x.shape().str()));
  if (!scope_) throw AutodiffError(fmt::format("{}: inputs must be tracked before the function returns", who_));
  auto leaf = make_leaf();
  leaves_.push_back(leaf);
  inputs_.push_back(x);
  return make_reverse_tracer(scope_->frame(), x, std::move(leaf));
}
std::vector<Tensor> ReverseTrace::track(const std::vector<Tensor>& xs) {
  std::vector<Tensor> r;
  r.reserve(xs.size());
  for (const auto& x : xs) r.push_back(track(x));
  return r;
}
void ReverseTrace::finish(const Tensor& out) {
  if (!out.defined()) throw AutodiffError(fmt::format("{}: the function returned an undefined tensor", who_));
  frame_ = scope_->frame();
  if (is_traced_by(out, frame_.get())) {
    out_ = out.impl()->primal;
    out_node_ = out.impl()->node;
  } else {
    out_ = out;  // does not depend on the inputs
  }
  scope_.reset();
}
std::vector<Tensor> ReverseTrace::pull(const Tensor& out_ct) const {
  if (out_ct.shape() != out_.shape() || out_ct.dtype() != out_.dtype())
    throw AutodiffError(fmt::format("{}: the cotangent is {} {}, but the output is {} {}", who_, dtype_name(out_ct.dtype()),
                                    out_ct.shape().str(), dtype_name(out_.dtype()), out_.shape().str()));
  std::vector<Tensor> g;
  if (out_node_) {
    std::shared_ptr<Node> roots[] = {out_node_};
    Tensor seeds[] = {out_ct};
    g = run_backward(roots, seeds, leaves_, {.retain_graph = true, .create_graph = GradMode::is_enabled()});
  } else {
    g.resize(leaves_.size());
  }
  for (std::size_t i = 0; i < g.size(); ++i)
    if (!g[i].defined()) g[i] = zeros_like(inputs_[i]);
  return g;
}

void check_scalar_output(const char* transform, const Tensor& out) {
  if (out.numel() != 1 || out.dim() != 0)
    throw AutodiffError(fmt::format("{}: the function must return a scalar, got shape {}; use vjp or jacrev for "
                                    "non-scalar outputs", transform, out.shape().str()));
  if (!is_floating(out.dtype()))
    throw DTypeError(fmt::format("{}: the function must return a float scalar, got {}", transform, dtype_name(out.dtype())));
}
void check_argnums(const char* transform, const std::vector<int>& argnums, std::size_t nargs) {
  for (int a : argnums)
    if (a < 0 || static_cast<std::size_t>(a) >= nargs)
      throw AutodiffError(fmt::format("{}: argnum {} is not an input (the function was called with {} arguments)", transform, a, nargs));
}

Tensor flat_leaves(const std::vector<Tensor>& leaves) {
  if (leaves.size() == 1) return reshape(leaves[0], Shape{leaves[0].numel()});
  std::vector<Tensor> flat;
  flat.reserve(leaves.size());
  for (const auto& x : leaves) flat.push_back(reshape(x, Shape{x.numel()}));
  return concat(flat, 0);
}
Tensor leaf_of(const Tensor& flat, const LeafLayout& l, std::size_t i, DType dtype) {
  Tensor v = l.shapes.size() == 1 ? flat : slice(flat, 0, l.offsets[i], l.offsets[i] + l.shapes[i].numel());
  v = reshape(v, l.shapes[i]);
  return v.dtype() == dtype ? v : cast(v, dtype);
}
Tensor jac_block(const Tensor& J, const LeafLayout& out, std::size_t i, const LeafLayout& in, std::size_t j) {
  Tensor b = J;
  if (out.shapes.size() > 1) b = slice(b, 0, out.offsets[i], out.offsets[i] + out.shapes[i].numel());
  if (in.shapes.size() > 1) b = slice(b, 1, in.offsets[j], in.offsets[j] + in.shapes[j].numel());
  return reshape(b, out.shapes[i] + in.shapes[j]);
}

void tangent_error(const char* who, const std::string& name, const Tensor& x, const Tensor& t) {
  if (!is_floating(x.dtype()))
    throw DTypeError(fmt::format("{}: cannot differentiate with respect to {}: dtype {} (shape {}) is not floating-point", who, name,
                                 dtype_name(x.dtype()), x.shape().str()));
  throw AutodiffError(fmt::format("{}: the tangent for {} is {} {}, but the primal is {} {}", who, name, dtype_name(t.dtype()),
                                  t.shape().str(), dtype_name(x.dtype()), x.shape().str()));
}
std::pair<Tensor, Tensor> jvp_finish(const std::shared_ptr<Frame>& f, const Tensor& out) {
  if (is_traced_by(out, f.get())) {
    Tensor t = out.impl()->tangent;
    return {out.impl()->primal, t.defined() ? t : zeros_like(out.impl()->primal)};
  }
  return {out, zeros_like(out)};
}

std::int64_t chunk_for_budget(std::size_t max_bytes, std::size_t one, std::size_t two) {
  // one = fixed + per, two = fixed + 2 per. Size classes can make two <= one: then count the pass
  // of 2 as all per-direction bytes, an overestimate that keeps the budget.
  const double per = std::max(1.0, two > one ? static_cast<double>(two - one) : static_cast<double>(two) / 2);
  const double fixed = std::max(0.0, static_cast<double>(one) - per);
  const double chunk = std::floor((static_cast<double>(max_bytes) - fixed) / per);
  return chunk < 1 ? 1 : static_cast<std::int64_t>(chunk);
}

Tensor vmap_finish(const std::shared_ptr<Frame>& f, const Tensor& out) {
  if (is_traced_by(out, f.get())) return out.impl()->primal;
  return broadcast_to(out, Shape{f->batch_size} + out.shape());  // unbatched: same for every entry
}

}  // namespace detail

std::vector<Tensor> autograd_grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                                  const std::vector<Tensor>& grad_outputs, bool retain_graph, bool create_graph) {
  std::vector<std::shared_ptr<Node>> roots, wrt;
  std::vector<Tensor> seeds;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& y = outputs[i];
    if (!y.impl()->node) throw AutodiffError(fmt::format("autograd_grad: output {} does not require grad", i));
    Tensor s = i < grad_outputs.size() ? grad_outputs[i] : Tensor();
    if (!s.defined()) {
      if (y.numel() != 1)
        throw AutodiffError(fmt::format("autograd_grad: output {} has shape {}; a non-scalar output needs a grad_output", i, y.shape().str()));
      s = ones(y.shape(), y.dtype());
    }
    roots.push_back(y.impl()->node);
    seeds.push_back(s);
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].impl()->node)
      throw AutodiffError(fmt::format("autograd_grad: input {} (shape {}) does not require grad", i, inputs[i].shape().str()));
    wrt.push_back(inputs[i].impl()->node);
  }
  auto g = run_backward(roots, seeds, wrt, {.retain_graph = retain_graph || create_graph, .create_graph = create_graph});
  for (std::size_t i = 0; i < g.size(); ++i)
    if (!g[i].defined())
      throw AutodiffError(fmt::format("autograd_grad: input {} (shape {}) is not reachable from the outputs", i, inputs[i].shape().str()));
  return g;
}

}  // namespace chainrule
