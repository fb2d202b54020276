#pragma once
// Creating and reading tracers (used by the transforms; users rarely need this).
#include <functional>

#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/node.h"
#include "chainrule/tensor/tensor.h"

namespace chainrule::detail {

// A JVP tracer: primal value plus tangent (undefined tangent = zero).
Tensor make_jvp_tracer(const std::shared_ptr<Frame>& f, const Tensor& primal, const Tensor& tangent);
// A reverse-mode tracer: primal value plus the node that produced it.
Tensor make_reverse_tracer(const std::shared_ptr<Frame>& f, const Tensor& primal, std::shared_ptr<Node> node);
// A vmap tracer: `batched` carries the batch axis in front.
Tensor make_batch_tracer(const std::shared_ptr<Frame>& f, const Tensor& batched);
// True if `t` is a tracer of frame `f`.
inline bool is_traced_by(const Tensor& t, const Frame* f) { return t.defined() && t.impl()->frame.get() == f; }
// Random values of `shape` from draw(shape') inside the active vmaps, by each one's Randomness:
// an Error frame throws (naming `op`), a Different frame adds its batch axis to the draw and
// wraps the result as its tracer, a Same frame adds nothing.
Tensor random_under_vmap(const char* op, const Shape& shape, const std::function<Tensor(const Shape&)>& draw);
// A fresh leaf node for a value differentiated by a reverse-mode transform.
std::shared_ptr<Node> make_leaf();

}  // namespace chainrule::detail
