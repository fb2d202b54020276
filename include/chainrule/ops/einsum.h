#pragma once
// einsum (issue 21): Einstein summation over any subscripts, as a composition of differentiable
// primitives (diagonal gathers, sum, permute, reshape, broadcast_to, matmul), so every derivative
// order and vmap come from theirs (src/ops/einsum.cpp).
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chainrule/ops/ops.h"

namespace chainrule {

// NumPy's / torch.einsum's subscripts: "ij,jk->ik" (explicit output), "ij,jk" (implicit: the
// labels that appear once, in alphabetical order), "ii->i" and "ii" (diagonal, trace), "..."
// for broadcast leading axes ("...ij,...jk->...ik"). Labels are letters a-z, A-Z. An axis of
// size 1 broadcasts against the label's size elsewhere. With more than two operands the pairwise
// order is chosen by einsum_path. Subscripts that do not match the operands' ranks, or sizes that
// disagree, are a ShapeError.
Tensor einsum(std::string_view subscripts, const std::vector<Tensor>& operands);

// The order einsum contracts operands in, as numpy.einsum_path: each pair (i, j), i < j, names
// two operands of the current list, which are removed and their product appended at its end.
// The cost is the number of multiply-adds of the pairwise contractions (the product of the sizes
// of every label either operand has): the optimal order for up to 5 operands (every order
// tried), a greedy one beyond (the cheapest pair first).
struct EinsumPath {
  std::vector<std::pair<std::size_t, std::size_t>> contractions;
  double cost = 0;         // of this order
  double naive_cost = 0;   // of contracting left to right, for comparison
  bool optimal = true;     // false when the greedy search was used
};
EinsumPath einsum_path(std::string_view subscripts, const std::vector<Shape>& shapes);

}  // namespace chainrule
