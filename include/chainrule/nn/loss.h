#pragma once
// Losses, as torch.nn.functional, with a reduction (Mean by default, Sum, or None per element).
#include "chainrule/ops/ops.h"

namespace chainrule::nn {

using chainrule::Reduction;

// Softmax cross-entropy of logits [..., C] against int64 labels [...], reduced: the fused, stable
// primitive of ops.h (logsumexp with the row maximum subtracted), re-exported here.
using chainrule::cross_entropy;
// Cross-entropy against labels smoothed towards uniform: target (1-ε) onehot(y) + ε/C, i.e.
// (1-ε) CE(z, y) + ε (logsumexp(z) - mean(z)), as torch's label_smoothing.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing, Reduction reduction = Reduction::Mean);
// (a - b)², reduced; mse_loss(a, b) (the mean) is the ops.h function.
using chainrule::mse_loss;
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction);
// -[y log σ(z) + (1 - y) log(1 - σ(z))] for targets y in [0, 1], reduced.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets, Reduction reduction = Reduction::Mean);

}  // namespace chainrule::nn
