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

// ---- statistics and reductions (the array API's names) -------------------------------------------
// Empty axes means all axes, as sum and mean.

// Its derivative is the product of the other elements, exact where some are zero (no division).
Tensor prod(const Tensor& x, const Axes& axes = {}, bool keepdims = false);
Tensor min(const Tensor& x, const Axes& axes = {}, bool keepdims = false);  // -max(-x): ties split evenly
Tensor argmin(const Tensor& x, std::int64_t axis = -1);                     // int64, the first minimum
// Σ (x - mean)² / (N - correction) over the axes; correction 0 (the array API's default) is the
// population variance, 1 PyTorch's default (Bessel's correction; NumPy's ddof).
Tensor var(const Tensor& x, const Axes& axes = {}, double correction = 0.0, bool keepdims = false);
Tensor std(const Tensor& x, const Axes& axes = {}, double correction = 0.0, bool keepdims = false);
// Whether all / any elements (nonzero ones are true) along the axes are true: bool, no derivative.
Tensor all(const Tensor& x, const Axes& axes = {}, bool keepdims = false);
Tensor any(const Tensor& x, const Axes& axes = {}, bool keepdims = false);
Tensor logaddexp(const Tensor& a, const Tensor& b);  // log(e^a + e^b), without overflow

// ---- cumulative operations along one axis (src/ops/scan.cpp) -------------------------------------

Tensor cumsum(const Tensor& x, std::int64_t axis);
Tensor cumprod(const Tensor& x, std::int64_t axis);  // exact derivatives where elements are zero
Tensor logcumsumexp(const Tensor& x, std::int64_t axis);
// h_i = a_i h_{i-1} + b_i along the axis, from h = 0 before the first element (reverse: from the
// last element backwards). a and b have one shape. The recurrence behind cumprod's and prod's
// exact derivatives; its own JVP and VJP are linear scans.
Tensor linear_scan(const Tensor& a, const Tensor& b, std::int64_t axis, bool reverse = false);

// ---- sorting and searching (src/ops/sort.cpp) ----------------------------------------------------
// Sorts are stable: equal elements keep their order. NaN sorts last, both ways (NumPy's order).

Tensor argsort(const Tensor& x, std::int64_t axis = -1, bool descending = false);  // int64, no derivative
// The values in order: x taken along argsort(x). Its derivative sends each position's cotangent
// back to the element that landed there.
Tensor sort(const Tensor& x, std::int64_t axis = -1, bool descending = false);
// The k largest (or smallest) along the axis, in order, and their int64 indices (torch.topk).
std::pair<Tensor, Tensor> topk(const Tensor& x, std::int64_t k, std::int64_t axis = -1, bool largest = true);
// out[..., j, ...] = x[..., indices[..., j, ...], ...] along the axis; indices (int64) match x on
// every other axis (NumPy's take_along_axis, torch.gather).
Tensor take_along_axis(const Tensor& x, const Tensor& indices, std::int64_t axis);
// Its adjoint: zeros with `size` along the axis, src added at the indices (torch.scatter_add).
Tensor scatter_add_along_axis(const Tensor& src, const Tensor& indices, std::int64_t axis, std::int64_t size);
// Indices where `values` would be inserted into the 1-D ascending `sorted_sequence` to keep it
// sorted: before equal elements (right = false, NumPy's side="left") or after them. int64.
Tensor searchsorted(const Tensor& sorted_sequence, const Tensor& values, bool right = false);

// ---- manipulation (src/ops/manip.cpp) ------------------------------------------------------------

Tensor flip(const Tensor& x, const Axes& axes = {});  // empty axes: every axis
Tensor roll(const Tensor& x, std::int64_t shift, std::int64_t axis);  // elements past the end wrap around
// NumPy's tile: the whole array repeated reps[i] times along axis i (reps and the shape padded
// with leading ones to one length).
Tensor tile(const Tensor& x, const std::vector<std::int64_t>& reps);
// Each element `repeats` times in a row along the axis (the array API's repeat with an integer
// count; torch.repeat_interleave).
Tensor repeat(const Tensor& x, std::int64_t repeats, std::int64_t axis);
Tensor repeat_interleave(const Tensor& x, std::int64_t repeats, std::int64_t axis);
Tensor moveaxis(const Tensor& x, std::int64_t source, std::int64_t destination);
Tensor expand_dims(const Tensor& x, std::int64_t axis);  // unsqueeze
Tensor squeeze(const Tensor& x, const Axes& axes);      // several size-1 axes at once
// Consecutive pieces of the given sizes along the axis (torch.split with a list of sizes).
std::vector<Tensor> split(const Tensor& x, const std::vector<std::int64_t>& sizes, std::int64_t axis = 0);
std::vector<Tensor> unstack(const Tensor& x, std::int64_t axis = 0);
// Coordinate grids from 1-D inputs; indexing "xy" (the default, NumPy's) swaps the first two
// output axes, "ij" does not.
std::vector<Tensor> meshgrid(const std::vector<Tensor>& xs, std::string_view indexing = "xy");

// The lower (tril) or upper (triu) triangle of the last two axes, the rest zero: element (i, j)
// is kept where j - i <= k (tril) or j - i >= k (triu). Any dtype; linear, so differentiable.
Tensor tril(const Tensor& x, std::int64_t k = 0);
Tensor triu(const Tensor& x, std::int64_t k = 0);

// ---- creation (src/ops/manip.cpp): constants, no derivative ----------------------------------

// num values from start to stop, evenly spaced (stop included when endpoint; NumPy's spacing:
// start + i step, the last exactly stop). num >= 0.
Tensor linspace(double start, double stop, std::int64_t num, DType dtype = get_default_dtype(), bool endpoint = true);
// start, start + step, ... while before stop (step > 0) or after it (step < 0): ceil((stop -
// start) / step) values. step != 0. arange(n) (tensor.h) is arange(0, n, 1).
Tensor arange(double start, double stop, double step = 1.0, DType dtype = get_default_dtype());
// x's shape filled with value, in x's dtype or the one given; a constant (x's values unused).
Tensor full_like(const Tensor& x, double value);
Tensor full_like(const Tensor& x, double value, DType dtype);

// ---- integer division and bitwise operations (src/ops/math.cpp), with type promotion --------------

// floor(a / b), as Python's // and NumPy's floor_divide: float32/64 (piecewise constant, no
// derivative; b = 0 gives +-inf or NaN as IEEE division) and int64 (b = 0 is a ValueError).
Tensor floor_divide(const Tensor& a, const Tensor& b);
// a - floor_divide(a, b) b: the sign of b, as Python's % and NumPy's and torch's remainder.
// Differentiable in floats (d/da = 1, d/db = -floor_divide(a, b)); int64 has no derivative.
Tensor remainder(const Tensor& a, const Tensor& b);
// Elementwise on int64 or bool (logical for bool); a float operand is a DTypeError. No derivative.
Tensor bitwise_and(const Tensor& a, const Tensor& b);
Tensor bitwise_or(const Tensor& a, const Tensor& b);
Tensor bitwise_xor(const Tensor& a, const Tensor& b);
Tensor bitwise_not(const Tensor& x);  // torch.bitwise_not; the array API's bitwise_invert
Tensor bitwise_invert(const Tensor& x);

// ---- special functions (src/ops/special.cpp) -----------------------------------------------------

Tensor lgamma(const Tensor& x);  // log|Γ(x)|
Tensor digamma(const Tensor& x);  // ψ = Γ'/Γ = polygamma(0, x)
// The n-th derivative of digamma; its own derivative is polygamma(n + 1), so every order of
// derivative exists (digamma's second derivative included).
Tensor polygamma(std::int64_t n, const Tensor& x);

}  // namespace chainrule
