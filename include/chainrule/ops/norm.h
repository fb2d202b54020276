#pragma once
// Training-mode batch normalisation as fused primitives (PyTorch's native_batch_norm and
// native_batch_norm_backward): per channel of axis 1 of x [N, C, *], over every other axis.
#include <utility>

#include "chainrule/tensor/tensor.h"

namespace chainrule {

// The batch statistics of x [N, C, *] as one [2, C] tensor: row 0 the mean, row 1 the biased
// variance (the one training normalises with), per channel over N and *.
Tensor batch_norm_stats(const Tensor& x);

// (x - mean) / sqrt(var + eps) · weight + bias with the batch statistics, per channel. weight and
// bias are [C], or both undefined (affine = false).
Tensor batch_norm_train(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
// The same, and the statistics it normalised with (batch_norm_stats(x)), for the running update.
std::pair<Tensor, Tensor> batch_norm_train_with_stats(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                                      double eps = 1e-5);

// The cotangent of batch_norm_train's x from the output's cotangent dy:
// weight · invstd / M · (M·dy - sum(dy) - xhat · sum(dy · xhat)), M values per channel.
Tensor batch_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, double eps = 1e-5);
// Its per-channel sums as [2, C]: row 0 sum(dy · xhat) (the weight's cotangent), row 1 sum(dy)
// (the bias's).
Tensor batch_norm_backward_reduce(const Tensor& dy, const Tensor& x, double eps = 1e-5);

}  // namespace chainrule
