#pragma once
// checkpoint (rematerialisation), as torch.utils.checkpoint.checkpoint and jax.checkpoint: the
// reverse pass keeps only the inputs of f, not its internal activations, and re-runs f to rebuild
// them when its cotangent arrives. Memory for time: checkpointing every k of n blocks keeps about
// n/k block inputs plus k blocks' activations instead of n blocks' activations.
//
//   Tensor y = checkpoint([&](const std::vector<Tensor>& in) { return block(in[0], in[1]); }, {x, w});
//   auto g = checkpoint(f);  // the same, as a function: g(x) or g({x, w})
//   std::vector<Tensor> ys = checkpoint(f2, {x, w});  // f2 returns several tensors
//
// It composes with every transform (backward, autograd_grad, grad, vjp, jvp, vmap, jacfwd,
// jacrev, hessian, create_graph): only reverse mode rematerialises; forward mode and vmap run f
// directly. Random draws inside f (dropout) are replayed identically by the recomputation, which
// leaves the generators as the forward pass left them.
//
// Every tensor f is differentiated through must be one of its inputs: a captured tensor that
// requires grad, or a captured tracer of an enclosing transform, is reported as an error
// (nn::checkpoint passes a module's parameters for you). f should be a pure function of its
// inputs apart from random draws: it runs twice.
#include <functional>
#include <memory>
#include <type_traits>
#include <vector>

#include "chainrule/tensor/random.h"
#include "chainrule/tensor/tensor.h"

namespace chainrule {

using CheckpointFn = std::function<Tensor(const std::vector<Tensor>&)>;

Tensor checkpoint(CheckpointFn f, const std::vector<Tensor>& inputs);
Tensor checkpoint(const std::function<Tensor(const Tensor&)>& f, const Tensor& x);
// Several outputs (floating, of one dtype): they travel packed in one flat tensor.
using CheckpointFnN = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
std::vector<Tensor> checkpoint(CheckpointFnN f, const std::vector<Tensor>& inputs);

// checkpoint(f) -> the rematerialised f, callable on a Tensor or a std::vector<Tensor>.
template <class F>
struct Checkpointed {
  F f;
  Tensor operator()(const Tensor& x) const { return checkpoint(std::function<Tensor(const Tensor&)>(f), x); }
  auto operator()(const std::vector<Tensor>& xs) const {
    if constexpr (std::is_convertible_v<std::invoke_result_t<const F&, const std::vector<Tensor>&>, Tensor>)
      return checkpoint(CheckpointFn(f), xs);
    else
      return checkpoint(CheckpointFnN(f), xs);
  }
};
template <class F>
Checkpointed<F> checkpoint(F f) {
  return {std::move(f)};
}

// True while checkpoint re-runs a function in the backward pass: state updates that must happen
// once per forward pass (BatchNorm's running statistics) are skipped then.
bool checkpoint_recomputing();

namespace detail {
// What a checkpoint node keeps besides its inputs: the function and the random draws it made.
struct Remat {
  CheckpointFn f;
  RngTape rng;
};
}  // namespace detail

}  // namespace chainrule
