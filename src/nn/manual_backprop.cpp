#include "chainrule/nn/manual_backprop.h"

#include <fmt/format.h>

#include "chainrule/autodiff/frame.h"
#include "chainrule/ops/ops.h"

namespace chainrule::nn {

MlpGradients mlp_backprop_by_hand(const std::vector<Tensor>& weights, const std::vector<Tensor>& biases, const Tensor& x,
                                  const Tensor& labels) {
  if (weights.empty() || weights.size() != biases.size())
    throw ValueError(fmt::format("mlp_backprop_by_hand: {} weights and {} biases (need the same, at least one)", weights.size(),
                                 biases.size()));
  NoGradGuard no_graph;  // plain tensor arithmetic: nothing is recorded
  const std::size_t K = weights.size();
  const Tensor x0 = x.detach();
  const std::int64_t batch = x0.shape()[0];

  // Forward: keep h_k (the input of layer k) and f_k.
  std::vector<Tensor> h{x0}, f;
  for (std::size_t k = 0; k < K; ++k) {
    const Tensor W = weights[k].detach(), beta = biases[k].detach();
    if (W.dim() != 2 || h[k].shape()[1] != W.shape()[1])
      throw ShapeError(fmt::format("mlp_backprop_by_hand: layer {} has W of shape {} for inputs {}", k, W.shape().str(), h[k].shape().str()));
    f.push_back(add(matmul(h[k], W, false, true), beta));  // f_k = β_k + W_k h_k, one row per example
    if (k + 1 < K) h.push_back(relu(f[k]));
  }

  MlpGradients out;
  out.loss = cross_entropy(f[K - 1], labels);
  out.pre_activations = f;
  out.weight_grads.resize(K);
  out.bias_grads.resize(K);

  // ∂l/∂f_K of the mean cross-entropy: (softmax(f_K) - onehot(y)) / batch.
  const Tensor onehot = cast(equal(unsqueeze(labels, -1), arange(f[K - 1].shape()[1], DType::i64)), x0.dtype());
  Tensor G = div(sub(softmax(f[K - 1], -1), onehot), scalar_tensor(static_cast<double>(batch), x0.dtype()));

  for (std::size_t k = K; k-- > 0;) {
    out.bias_grads[k] = sum(G, {0});                  // ∂l/∂β_k = ∂l/∂f_k (summed over examples)
    out.weight_grads[k] = matmul(G, h[k], true, false);  // ∂l/∂W_k = ∂l/∂f_k h_kᵀ  (Gᵀ H on a batch)
    if (k == 0) break;
    // ∂l/∂f_{k-1} = (∂l/∂f_k)ᵀ W_k ⊙ 1[f_{k-1} > 0]: a row of G times W, masked by the ReLU's
    // diagonal Jacobian.
    const Tensor mask = cast(greater(f[k - 1], scalar_tensor(0.0, x0.dtype())), x0.dtype());
    G = mul(matmul(G, weights[k].detach(), false, false), mask);
  }
  return out;
}

}  // namespace chainrule::nn
