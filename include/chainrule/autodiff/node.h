#pragma once
// A node of the reverse-mode graph: one primitive application, what its VJP needs, and an edge
// per input to the node that produced that input (null if the input is not being differentiated).
// Leaf nodes have no primitive; they collect the cotangent of a differentiated input.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chainrule/autodiff/primitive.h"

namespace chainrule {

struct Node : std::enable_shared_from_this<Node> {
  const Primitive* prim = nullptr;  // null: a leaf
  Params params;
  SmallVec<std::shared_ptr<Node>, 3> next;  // per input
  SmallVec<Shape, 3> in_shapes;             // per input, to sum broadcast cotangents back
  SmallVec<Tensor, 3> saved;                // per input, when the primitive saves inputs
  Tensor saved_out;                         // when the primitive saves its output
  SmallVec<std::uint64_t, 3> saved_versions;
  std::uint64_t saved_out_version = 0;
  bool released = false;   // saved tensors freed by a backward pass without retain_graph
  bool eager = false;      // level-0 node (its saved output is re-attached under create_graph)
  bool accumulates = false;  // leaf of an eager tensor: backward() adds into `grad`
  Tensor grad;             // leaf accumulator
  // Called with `grad` after each accumulation into it (Tensor::register_post_accumulate_grad_hook).
  std::vector<std::pair<std::uint64_t, std::function<void(const Tensor&)>>> post_accumulate_grad_hooks;
  std::string created_in;  // where in the forward pass (anomaly mode only)
  std::uint64_t mark = 0;  // scratch for graph traversal
  std::uint32_t topo = 0;  // scratch for graph traversal
};

// Records a node for `p` applied to `inputs` (wrapped values, whose `node` give the edges) with
// primal values `primals` and primal output `out`.
std::shared_ptr<Node> record_node(const Primitive& p, std::span<const Tensor> inputs,
                                  std::span<const Tensor> primals, const Tensor& out,
                                  const Params& params, bool eager);

struct BackwardOptions {
  bool retain_graph = false;
  bool create_graph = false;
  bool accumulate = false;  // add into eager leaves' `grad`
};

// The options of the innermost reverse pass running on this thread (null outside one). A rule
// that re-runs a function (checkpoint) uses it to accumulate into eager leaves directly.
const BackwardOptions* active_backward_options();

// Runs the reverse pass from `roots` seeded with `seeds` and returns the cotangents reaching
// the nodes `wrt` (undefined where none arrives).
std::vector<Tensor> run_backward(std::span<const std::shared_ptr<Node>> roots, std::span<const Tensor> seeds,
                                 std::span<const std::shared_ptr<Node>> wrt, const BackwardOptions& opts);

}  // namespace chainrule
