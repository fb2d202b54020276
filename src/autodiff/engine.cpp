// The reverse pass: order the graph topologically (depth-first post-order, reversed), then call
// each node's VJP rule once with the sum of the cotangents that reached it.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <vector>

#include "autodiff/anomaly_internal.h"
#include "autodiff/compile_internal.h"
#include "chainrule/autodiff/anomaly.h"
#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/node.h"
#include "chainrule/autodiff/profiler.h"
#include "chainrule/ops/ops.h"

namespace chainrule {

namespace {

std::atomic<std::uint64_t> g_epoch{0};
thread_local const BackwardOptions* t_active_pass = nullptr;

struct ActivePass {
  const BackwardOptions* prev = t_active_pass;
  explicit ActivePass(const BackwardOptions& o) { t_active_pass = &o; }
  ~ActivePass() { t_active_pass = prev; }
  ActivePass(const ActivePass&) = delete;
  ActivePass& operator=(const ActivePass&) = delete;
};

void check_version(const Node& n, const Tensor& t, std::uint64_t expected, const char* what) {
  if (!t.defined() || t.impl()->frame) return;
  auto now = t.impl()->storage->version;
  if (now != expected)
    throw AutodiffError(fmt::format("backward: {} saved by '{}' for the backward pass (shape {}) was modified in place "
                                    "(version {}, expected {})", what, n.prim->name, t.shape().str(), now, expected));
}

void accumulate_leaf(Node& leaf, Tensor ct, bool create_graph) {
  if (create_graph) {
    leaf.grad = leaf.grad.defined() ? add(leaf.grad, ct) : ct;
    return;
  }
  if (!leaf.grad.defined()) {
    // Take the cotangent's buffer when nothing else refers to it, as PyTorch's AccumulateGrad does.
    bool sole = ct.impl_ptr().use_count() == 1 && !ct.impl()->frame && ct.impl()->storage.use_count() == 1 && !ct.impl()->node;
    leaf.grad = sole ? ct : ct.detach().contiguous_clone();
  } else if (leaf.grad.impl()->node || leaf.grad.impl()->frame || ct.impl()->frame) {
    leaf.grad = add(leaf.grad, ct);
  } else {
    leaf.grad.add_(ct);
  }
}

// Working buffers of one backward pass, kept per thread and per nesting depth (a rule may run a
// nested backward pass) and reused, so a steady-state backward pass allocates nothing.
struct Scratch {
  std::vector<Node*> order;
  std::vector<std::pair<Node*, std::size_t>> stack;
  std::vector<std::uint32_t> edge_begin, edge_slot;
  std::vector<std::int64_t> wrt_slot;
  std::vector<char> keep;
  std::vector<Tensor> buf;
};
thread_local std::vector<std::unique_ptr<Scratch>> t_scratch;
thread_local std::size_t t_depth = 0;

class ScratchLease {
 public:
  ScratchLease() {
    if (t_depth == t_scratch.size()) t_scratch.push_back(std::make_unique<Scratch>());
    s_ = t_scratch[t_depth++].get();
    s_->order.clear(), s_->stack.clear(), s_->edge_begin.clear(), s_->edge_slot.clear();
  }
  ~ScratchLease() {
    s_->buf.clear();  // drop the cotangents now, not at the next pass
    --t_depth;
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  Scratch& operator*() const { return *s_; }

 private:
  Scratch* s_;
};

}  // namespace

const BackwardOptions* active_backward_options() { return t_active_pass; }

std::vector<Tensor> run_backward(std::span<const std::shared_ptr<Node>> roots, std::span<const Tensor> seeds,
                                 std::span<const std::shared_ptr<Node>> wrt, const BackwardOptions& opts) {
  const std::uint64_t epoch = ++g_epoch;
  ActivePass active(opts);

  ScratchLease lease;
  Scratch& scratch = *lease;

  // 1. Depth-first post-order from the roots.
  std::vector<Node*>& order = scratch.order;
  auto& stack = scratch.stack;
  for (const auto& r : roots) {
    if (!r || r->mark == epoch) continue;
    r->mark = epoch;
    stack.emplace_back(r.get(), 0);
    while (!stack.empty()) {
      auto& [n, i] = stack.back();
      if (i < n->next.size()) {
        Node* child = n->next[i++].get();
        if (child && child->mark != epoch) {
          child->mark = epoch;
          stack.emplace_back(child, 0);
        }
      } else {
        order.push_back(n);
        stack.pop_back();
      }
    }
  }
  std::reverse(order.begin(), order.end());
  // Resolve every edge to a slot now: a nested backward pass (inside a rule) reuses the scratch
  // fields of shared nodes.
  for (std::size_t k = 0; k < order.size(); ++k) order[k]->topo = static_cast<std::uint32_t>(k);
  std::vector<std::uint32_t>& edge_begin = scratch.edge_begin;
  std::vector<std::uint32_t>& edge_slot = scratch.edge_slot;
  edge_begin.assign(order.size() + 1, 0);
  for (std::size_t k = 0; k < order.size(); ++k) {
    edge_begin[k] = static_cast<std::uint32_t>(edge_slot.size());
    for (const auto& e : order[k]->next) edge_slot.push_back(e ? e->topo : UINT32_MAX);
  }
  edge_begin[order.size()] = static_cast<std::uint32_t>(edge_slot.size());
  std::vector<std::int64_t>& wrt_slot = scratch.wrt_slot;
  std::vector<char>& keep = scratch.keep;
  wrt_slot.assign(wrt.size(), -1);
  keep.assign(order.size(), 0);
  for (std::size_t w = 0; w < wrt.size(); ++w)
    if (wrt[w] && wrt[w]->mark == epoch) wrt_slot[w] = wrt[w]->topo, keep[wrt[w]->topo] = 1;

  // 2. Seed and sweep.
  std::vector<Tensor>& buf = scratch.buf;
  buf.assign(order.size(), Tensor());
  for (std::size_t r = 0; r < roots.size(); ++r) {
    if (!roots[r]) continue;
    Tensor& b = buf[roots[r]->topo];
    b = b.defined() ? add(b, seeds[r]) : seeds[r];
  }
  AutoGradMode grad_mode(opts.create_graph);  // the VJPs' own ops are recorded only for create_graph

  for (std::size_t k = 0; k < order.size(); ++k) {
    Node* node = order[k];
    if (!buf[k].defined()) continue;
    Tensor ct = keep[k] ? buf[k] : std::move(buf[k]);
    if (!node->prim) {
      if (node->accumulates && opts.accumulate) {
        if (detail::t_recorder) detail::trace_leaf(*node, opts.create_graph);  // compile: replayed as an assignment
        profiler::detail::timed("accumulate_grad", profiler::Phase::Backward,
                                [&] { accumulate_leaf(*node, std::move(ct), opts.create_graph); });
        for (auto& [id, hook] : node->post_accumulate_grad_hooks) hook(node->grad);
      }
      continue;
    }
    if (node->released)
      throw AutodiffError(fmt::format("backward: the graph through '{}' was freed by an earlier backward pass; "
                                      "pass retain_graph=true to run backward through it again", node->prim->name));
    for (std::size_t i = 0; i < node->saved.size(); ++i)
      check_version(*node, node->saved[i], node->saved_versions[i], "an input");
    check_version(*node, node->saved_out, node->saved_out_version, "the output");
    Tensor out = node->saved_out;
    if (out.defined() && node->eager && opts.create_graph) {
      // Differentiating the backward pass needs the output attached to its own node again.
      out = out.detach();
      out.impl()->node = node->shared_from_this();
    }
    SmallVec<Tensor, 3> none;
    Ctx c{node->saved.empty() ? std::span<const Tensor>(none) : std::span<const Tensor>(node->saved), out, node->params,
          node->in_shapes};
    std::optional<detail::BackwardContext> context;
    std::string in_shapes;
    if (AnomalyMode::is_enabled()) {
      for (const auto& sh : node->in_shapes) in_shapes += (in_shapes.empty() ? "" : ", ") + sh.str();
      context.emplace(fmt::format("while computing the backward of '{}' (created {}; inputs {})", node->prim->name,
                                  node->created_in.empty() ? "outside anomaly mode" : node->created_in, in_shapes));
    }
    profiler::detail::Scope profile(node->prim->name, profiler::Phase::Backward);  // to the end of this node
    std::vector<Tensor> all;
    if (node->prim->vjp_all) {
      std::vector<bool> needed(node->next.size());
      for (std::size_t i = 0; i < needed.size(); ++i) needed[i] = edge_slot[edge_begin[k] + i] != UINT32_MAX;
      all = node->prim->vjp_all(ct, c, needed);
    }
    for (std::size_t i = 0; i < node->next.size(); ++i) {
      auto slot = edge_slot[edge_begin[k] + i];
      if (slot == UINT32_MAX) continue;
      Tensor g = node->prim->vjp_all ? std::move(all[i]) : node->prim->vjp(static_cast<int>(i), ct, c);
      if (g.defined() && AnomalyMode::is_enabled() && g.level() == 0 && detail::first_non_finite(g) >= 0)
        throw NumericalError(fmt::format("anomaly: the backward of '{}' (created {}; inputs {}) produced a NaN or Inf in the "
                                         "gradient of its input {} (shape {})", node->prim->name, node->created_in, in_shapes, i,
                                         node->in_shapes[i].str()));
      if (!g.defined()) continue;
      if (g.shape() != node->in_shapes[i]) g = sum_to(g, node->in_shapes[i]);
      buf[slot] = buf[slot].defined() ? add(buf[slot], g) : std::move(g);
    }
    if (!opts.retain_graph) {
      node->saved.clear();
      node->saved_out = Tensor();
      node->released = true;
    }
  }

  std::vector<Tensor> result(wrt.size());
  for (std::size_t w = 0; w < wrt.size(); ++w)
    if (wrt_slot[w] >= 0) result[w] = buf[static_cast<std::size_t>(wrt_slot[w])];
  return result;
}

}  // namespace chainrule
