#pragma once
// stop_gradient(x): x's value, treated as a constant by every differentiating transform at every
// level (grad, jvp, jacfwd, jacrev, hessian and the eager tape), unlike detach(), which only
// drops the eager tape's node. It is a primitive without derivative rules: a JVP frame gives its
// output no tangent and a reverse-mode frame records no node, while vmap batches it like any
// elementwise op (jax.lax.stop_gradient).
#include "chainrule/autodiff/primitive.h"

namespace chainrule {

namespace detail {
inline const Primitive stop_gradient_p{
    .name = "stop_gradient",
    // An alias of the value without its eager node (a new TensorImpl over the same storage).
    .forward = [](std::span<const Tensor> x, const Params&) { return x[0].detach(); },
    .batching = Batching::Broadcast,
    .saves = kSaveNone,
};
}  // namespace detail

inline Tensor stop_gradient(const Tensor& x) { return bind(detail::stop_gradient_p, {x}); }

}  // namespace chainrule
