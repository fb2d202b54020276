#pragma once
// Sample inputs for the generated derivative tests of each primitive (its "test spec"): shapes
// covering scalars, broadcasting, size-1 and size-0 axes, small and medium sizes, drawn in
// float64 from a domain that keeps away from the primitive's kinks.
#include <functional>
#include <string>
#include <vector>

#include "chainrule/autodiff/primitive.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/random.h"

namespace chainrule::cases {

enum class Domain {
  Real,          // N(0, 1)
  Positive,      // U[0.5, 2]
  AwayFromZero,  // |x| in [0.2, 2], random sign (kinks at 0)
  Quarter,       // integers in [-3, 3] plus 0.25: never tie with ThreeQuarter
  ThreeQuarter,  // integers in [-3, 3] plus 0.75
  Logits,        // N(0, 2): realistic softmax inputs
  Unit,          // U[-0.9, 0.9]: inside the domain of asin, acos, atanh
  AboveOne,      // U[1.2, 3]: inside the domain of acosh
};

Tensor sample(const Shape& shape, Domain d, std::uint64_t seed);

using Fn = std::function<Tensor(std::span<const Tensor>)>;

// Unary elementwise: shapes [], [1], [5], [2, 3], [0, 3], [3, 1, 4], [16, 24].
std::vector<OpCase> unary(Fn fn, Domain d = Domain::Real);
// Binary elementwise with broadcasting pairs (scalar, equal, broadcast both ways, size-0, medium).
std::vector<OpCase> binary(Fn fn, Domain da = Domain::Real, Domain db = Domain::Real);
// A function of one input and an axis: [5] axis 0, [3,4] both axes, [2,1,3] axis 1, [0,3], [1]
// and a medium [10,12] (softmax, cumulative ops).
std::vector<OpCase> along_axis(Tensor (*fn)(const Tensor&, std::int64_t), Domain d);
// One input of each listed shape, with labels.
OpCase single(std::string label, std::vector<Tensor> inputs, Fn fn, bool second_order = true);

}  // namespace chainrule::cases
