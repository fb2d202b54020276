#pragma once
// Functions with their own derivative rules, at the level of functions rather than primitives
// (JAX's custom_vjp / custom_jvp, torch.autograd.Function). Rules are callables that may capture
// state; static, non-differentiable data travels in those captures. Rules are written with
// chainrule's ops, so they work nested in every transform (grad of grad, vmap of grad, hessian).
//
//   auto safe_log1pexp = custom_vjp("log1pexp",
//       [](const std::vector<Tensor>& x) { return softplus(x[0]); },
//       [](const std::vector<Tensor>& x, const Tensor& out, const Tensor& ct) {
//         return std::vector<Tensor>{mul(ct, sigmoid(x[0]))}; });
//   Tensor y = safe_log1pexp({x});
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "chainrule/tensor/tensor.h"

namespace chainrule {

using CustomForward = std::function<Tensor(const std::vector<Tensor>& xs)>;
// Cotangents of every input from the output's (undefined: zero).
using CustomVjp = std::function<std::vector<Tensor>(const std::vector<Tensor>& xs, const Tensor& out, const Tensor& ct)>;
// The output's tangent from the inputs' tangents (each defined; zeros where an input has none).
using CustomJvp = std::function<Tensor(const std::vector<Tensor>& xs, const Tensor& out, const std::vector<Tensor>& ts)>;

// A batching rule (JAX's custom_vmap, torch.autograd.Function's vmap staticmethod): at one vmap
// level, the batch size, the inputs and each one's batch axis (0, or std::nullopt for an input
// that is the same for every example) -> the batched output and its batch axis (std::nullopt:
// the same for every example). vmap calls it once instead of running `forward` per example.
using CustomBatch = std::function<std::pair<Tensor, std::optional<std::int64_t>>(
    std::int64_t size, const std::vector<Tensor>& xs, const std::vector<std::optional<std::int64_t>>& in_axes)>;

struct CustomRules {
  std::string name;       // names the function in errors
  CustomForward forward;  // the value, on concrete tensors of the caller's shapes (vmap: per example)
  CustomVjp vjp;          // reverse mode; if absent, the transpose of `jvp`
  CustomJvp jvp;          // forward mode; if absent, the transpose of `vjp` (which is linear in ct)
  CustomBatch batch;      // vmap; if absent, `forward` runs per example
};

// The function of `rules`, callable as f({x, y, ...}). At least one of vjp and jvp is needed;
// the missing one is derived by transposing the other (a VJP is linear in the cotangent, a JVP in
// the tangents), so every transform and every nesting works. A rule returning the wrong number of
// cotangents, or a shape or dtype other than its input's, is an AutodiffError naming the rule, and
// so is a batching rule whose output's batch axis is out of range or not of the batch's size.
std::function<Tensor(const std::vector<Tensor>&)> custom_function(CustomRules rules);

inline std::function<Tensor(const std::vector<Tensor>&)> custom_vjp(std::string name, CustomForward f, CustomVjp vjp) {
  return custom_function({std::move(name), std::move(f), std::move(vjp), {}});
}
inline std::function<Tensor(const std::vector<Tensor>&)> custom_jvp(std::string name, CustomForward f, CustomJvp jvp) {
  return custom_function({std::move(name), std::move(f), {}, std::move(jvp)});
}

}  // namespace chainrule
