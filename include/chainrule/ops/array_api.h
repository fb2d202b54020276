#pragma once
// The array API's statistics, cumulative, sorting and manipulation functions and PyTorch's
// losses (issue 21), beside the core ops of ops.h. Each is a primitive (src/ops/loss.cpp,
// stats.cpp, sort.cpp, manip.cpp) or an exact composite of primitives.
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "chainrule/ops/ops.h"

namespace chainrule {

// ---- losses (torch.nn.functional names and arguments) -------------------------------------------
// Every loss takes a Reduction: Mean (of all elements), Sum, or None (per element / per sample).
// BatchMean is accepted by kl_div only; elsewhere it is a ValueError.

// -logp[..., label] for log-probabilities [..., C] (classes last, as cross_entropy) and int64
// labels [...]. cross_entropy(z, y) == nll_loss(log_softmax(z), y).
Tensor nll_loss(const Tensor& log_probs, const Tensor& labels, Reduction reduction = Reduction::Mean);
// -(y log p + (1 - y) log(1 - p)) for probabilities p; each log is clamped to >= -100, as PyTorch.
Tensor binary_cross_entropy(const Tensor& probs, const Tensor& targets, Reduction reduction = Reduction::Mean);
// The same on logits z (p = σ(z)), in a form that never overflows.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets,
                                        Reduction reduction = Reduction::Mean);
// d = input - target: ½ d² where |d| < delta, else delta (|d| - ½ delta).
Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean, double delta = 1.0);
// ½ d² / beta where |d| < beta, else |d| - ½ beta; beta = 0 is l1_loss.
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean, double beta = 1.0);
Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
// target (log target - input) for log-probabilities `input` and probabilities `target` (0 where
// target = 0); with log_target the target is given as log-probabilities. PyTorch's default
// reduction is Mean (over all elements); BatchMean (sum / input.shape[0]) is the KL divergence.
Tensor kl_div(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean, bool log_target = false);

}  // namespace chainrule
