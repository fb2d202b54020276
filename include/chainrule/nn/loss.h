#pragma once
// Losses, as torch.nn.functional, with a reduction (Mean by default, Sum, or None per element).
#include "chainrule/ops/array_api.h"

namespace chainrule::nn {

using chainrule::Reduction;

// Softmax cross-entropy of logits [..., C] against int64 labels [...], reduced: the fused, stable
// primitive of ops.h (logsumexp with the row maximum subtracted), re-exported here.
using chainrule::cross_entropy;
// Cross-entropy against labels smoothed towards uniform: target (1-ε) onehot(y) + ε/C, i.e.
// (1-ε) CE(z, y) + ε (logsumexp(z) - mean(z)), as torch's label_smoothing.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing, Reduction reduction = Reduction::Mean);
// The other losses are chainrule's (ops.h, ops/array_api.h), re-exported under PyTorch's names.
using chainrule::binary_cross_entropy;
using chainrule::binary_cross_entropy_with_logits;
using chainrule::huber_loss;
using chainrule::kl_div;
using chainrule::l1_loss;
using chainrule::mse_loss;
using chainrule::nll_loss;
using chainrule::smooth_l1_loss;

}  // namespace chainrule::nn
