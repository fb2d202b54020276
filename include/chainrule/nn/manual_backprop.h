#pragma once
// The backward pass of a K-layer ReLU MLP written out by hand, with no autodiff, following the
// text. For k = 0..K, with h_0 = x:
//   f_k = β_k + W_k h_k,   h_{k+1} = ReLU(f_k),   l = l[f_K, y]
// Backward, from ∂l/∂f_K (softmax - onehot for cross-entropy):
//   ∂l/∂f_{k-1} = (∂l/∂f_k)ᵀ W_k ⊙ 1[f_{k-1} > 0]
//   ∂l/∂β_k = ∂l/∂f_k,   ∂l/∂W_k = ∂l/∂f_k h_kᵀ
// On a batch the examples are rows, so each ∂l/∂f_k is a matrix G_k [batch, out] and the
// per-example outer products sum to G_kᵀ H_k.
#include <vector>

#include "chainrule/tensor/tensor.h"

namespace chainrule::nn {

struct MlpGradients {
  Tensor loss;                                // mean cross-entropy over the batch
  std::vector<Tensor> weight_grads, bias_grads;  // ∂l/∂W_k [out, in], ∂l/∂β_k [out]
  std::vector<Tensor> pre_activations;        // f_k [batch, out], from the forward pass
};

// weights[k] is W_k [out, in], biases[k] is β_k [out]; x [batch, in]; labels [batch] int64.
// The loss is the mean softmax cross-entropy of f_K.
MlpGradients mlp_backprop_by_hand(const std::vector<Tensor>& weights, const std::vector<Tensor>& biases, const Tensor& x,
                                  const Tensor& labels);

}  // namespace chainrule::nn
