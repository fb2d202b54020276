#pragma once
// The Jacobian of a composition f = f_K ∘ … ∘ f_1 is the chain J = J_K ⋯ J_1 (J_k is d_k × d_{k-1}).
// Forward mode multiplies it right to left (cost ∝ d_0), reverse mode left to right (cost ∝ d_K);
// for mixed widths a bracketing in between can be far cheaper. matrix_chain_order finds the
// cheapest one by dynamic programming (the classic matrix-chain order problem), and
// jacobian(stages, x) evaluates the Jacobian in that order with JVPs and VJPs of the stages.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "chainrule/autodiff/transforms.h"

namespace chainrule {

// A bracketing of the chain of widths dims = [d_0, ..., d_K]. Multiplying a (p × q) by a (q × r)
// matrix costs p q r multiply-adds.
struct ChainOrder {
  std::uint64_t cost = 0;  // multiply-adds of the products (the factors themselves are given)
  // split[i][j] (1-based factors i <= j): the s of the top-level product (J_j..J_{s+1})(J_s..J_i).
  std::vector<std::vector<int>> split;
  std::string bracketing;  // e.g. "((J3 J2) J1)"
};
ChainOrder matrix_chain_order(const std::vector<std::int64_t>& dims);  // dynamic programming, O(K³)
ChainOrder chain_order_forward(const std::vector<std::int64_t>& dims);  // (J_K (… (J_2 J_1)))
ChainOrder chain_order_reverse(const std::vector<std::int64_t>& dims);  // (((J_K J_{K-1}) …) J_1)
std::uint64_t chain_cost_forward(const std::vector<std::int64_t>& dims);
std::uint64_t chain_cost_reverse(const std::vector<std::int64_t>& dims);
// Multiplies explicit factors (factors[k-1] = J_k, 2-D) in the order of `order`.
Tensor multiply_chain(const std::vector<Tensor>& factors, const ChainOrder& order);

using Stage = std::function<Tensor(const Tensor&)>;
enum class ChainStrategy { Optimal, Forward, Reverse };
struct ChainJacobian {
  Tensor jacobian;   // shape f(x).shape + x.shape
  ChainOrder order;  // the bracketing used, over the stages' flattened widths
};
// The Jacobian of stages[K-1] ∘ … ∘ stages[0] at x, evaluated in the bracketing the strategy picks
// (Optimal: matrix_chain_order). A product that touches a single stage is never formed from that
// stage's explicit Jacobian: columns are pushed through the stage by a batched JVP, or rows pulled
// back by a batched VJP, so the all-forward order is jacfwd and the all-reverse order is jacrev.
ChainJacobian jacobian(const std::vector<Stage>& stages, const Tensor& x, ChainStrategy strategy = ChainStrategy::Optimal);

}  // namespace chainrule
