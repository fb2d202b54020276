#pragma once
// The Batch interpreter's hook for custom functions with a user batching rule (custom.cpp).
#include <memory>
#include <span>

#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/primitive.h"

namespace chainrule::detail {

// True for a custom function whose rules include `batch`.
bool has_custom_batch_rule(const Primitive& p, const Params& params);
// Applies that rule at Batch frame f: one call on the whole batch.
Tensor eval_custom_batch(const std::shared_ptr<Frame>& f, std::span<const Tensor> xs, const Params& params);

}  // namespace chainrule::detail
