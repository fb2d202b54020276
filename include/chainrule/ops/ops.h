#pragma once
// The differentiable operations of chainrule. Each is a primitive (declared with its rules in
// src/ops/*.cpp) or a composite of primitives with no rule of its own.
#include <cstdint>
#include <vector>

#include "chainrule/tensor/small_vec.h"
#include "chainrule/tensor/tensor.h"
#include "chainrule/ops/conv.h"

namespace chainrule {

using Axes = SmallVec<std::int64_t, 8>;  // inline: a braced list of axes allocates nothing

// Elementwise, with NumPy broadcasting.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, double exponent);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor relu_backward(const Tensor& grad, const Tensor& out);  // grad ⊙ 1[out > 0]: relu's derivative rule
Tensor sign(const Tensor& x);  // piecewise constant: zero derivative
Tensor square(const Tensor& x);  // composite: x * x
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// The array API's other elementwise functions (src/ops/math.cpp), each a primitive.
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor tan(const Tensor& x);
Tensor asin(const Tensor& x);
Tensor acos(const Tensor& x);
Tensor atan(const Tensor& x);
Tensor sinh(const Tensor& x);
Tensor cosh(const Tensor& x);
Tensor asinh(const Tensor& x);
Tensor acosh(const Tensor& x);
Tensor atanh(const Tensor& x);
Tensor expm1(const Tensor& x);
Tensor log1p(const Tensor& x);
Tensor erf(const Tensor& x);
Tensor erfc(const Tensor& x);
// Rounding, piecewise constant (zero derivative); round is half to even.
Tensor floor(const Tensor& x);
Tensor ceil(const Tensor& x);
Tensor round(const Tensor& x);
Tensor trunc(const Tensor& x);
// Activations, exact compositions of the primitives.
Tensor softplus(const Tensor& x);     // log(1 + e^x), without overflow
Tensor log_sigmoid(const Tensor& x);  // -softplus(-x)
Tensor silu(const Tensor& x);         // x sigmoid(x), PyTorch's SiLU / swish
Tensor gelu(const Tensor& x, bool tanh_approximation = false);  // x Φ(x); PyTorch's approximate="tanh"
Tensor elu(const Tensor& x, double alpha = 1.0);
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01);
Tensor clip(const Tensor& x, double min, double max);   // the array API's name
Tensor clamp(const Tensor& x, double min, double max);  // PyTorch's name
Tensor cast(const Tensor& x, DType dtype);

// Comparisons give bool tensors and have no derivative.
Tensor greater(const Tensor& a, const Tensor& b);
Tensor greater_equal(const Tensor& a, const Tensor& b);
Tensor less(const Tensor& a, const Tensor& b);
Tensor less_equal(const Tensor& a, const Tensor& b);
Tensor equal(const Tensor& a, const Tensor& b);

// Linear algebra. matmul follows NumPy: 1-D operands are promoted and the unit axis removed.
Tensor matmul(const Tensor& a, const Tensor& b);
// C = op(A) op(B) with the transposes folded into the GEMM call (no transposed copy is made).
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b);
// x Wᵀ + bias over the last axis of x (weight [out, in], bias [out]): a dense layer, one GEMM
// with the bias added in its epilogue (torch.nn.functional.linear).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);
// Multiply-adds done by matrix products on this thread so far (m·n·k per GEMM): a count of work
// that, unlike time, tests can assert on.
std::uint64_t matmul_multiply_adds();
// Threads for chainrule's parallel loops and oneDNN's GEMMs (torch.set_num_threads); OpenBLAS
// (float64 GEMM) keeps its own setting.
void set_num_threads(int n);
int get_num_threads();

// Shape.
Tensor reshape(const Tensor& x, const Shape& shape);  // one dimension may be -1
Tensor flatten(const Tensor& x, std::int64_t start_axis = 0);
Tensor unsqueeze(const Tensor& x, std::int64_t axis);
Tensor squeeze(const Tensor& x, std::int64_t axis);
Tensor permute(const Tensor& x, const Axes& perm);
Tensor transpose(const Tensor& x, std::int64_t axis0 = -2, std::int64_t axis1 = -1);
Tensor broadcast_to(const Tensor& x, const Shape& shape);
Tensor sum_to(const Tensor& x, const Shape& shape);  // undoes broadcasting
Tensor slice(const Tensor& x, std::int64_t axis, std::int64_t start, std::int64_t stop);
Tensor pad(const Tensor& x, std::int64_t axis, std::int64_t before, std::int64_t after);
Tensor concat(const std::vector<Tensor>& xs, std::int64_t axis = 0);
Tensor stack(const std::vector<Tensor>& xs, std::int64_t axis = 0);
Tensor gather(const Tensor& x, const Tensor& index, std::int64_t axis = 0);  // index_select
Tensor scatter_add(const Tensor& src, const Tensor& index, std::int64_t axis, std::int64_t size);

// Reductions. Empty axes means all axes.
Tensor sum(const Tensor& x, const Axes& axes = {}, bool keepdims = false);
Tensor mean(const Tensor& x, const Axes& axes = {}, bool keepdims = false);
Tensor max(const Tensor& x, const Axes& axes = {}, bool keepdims = false);
Tensor logsumexp(const Tensor& x, const Axes& axes = {}, bool keepdims = false);
Tensor softmax(const Tensor& x, std::int64_t axis = -1);
Tensor log_softmax(const Tensor& x, std::int64_t axis = -1);
Tensor argmax(const Tensor& x, std::int64_t axis = -1);  // int64, no derivative

// Losses.
// BatchMean (the sum divided by the leading dimension) is kl_div's alone, as in PyTorch.
enum class Reduction { Mean, Sum, None, BatchMean };
// Softmax cross-entropy of logits [..., C] against int64 class labels [...] (fused and stable).
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, Reduction reduction = Reduction::Mean);
// (softmax(logits) - onehot(labels)) ⊙ ct[..., None]: cross_entropy's derivative rule.
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& ct);
Tensor mse_loss(const Tensor& a, const Tensor& b, Reduction reduction = Reduction::Mean);  // (a - b)², reduced

// Operators.
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);
Tensor operator>(const Tensor& a, const Tensor& b);
Tensor operator>(const Tensor& a, double b);
Tensor operator<(const Tensor& a, const Tensor& b);
Tensor operator<(const Tensor& a, double b);

// Numerical helpers.
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
double max_abs_diff(const Tensor& a, const Tensor& b);

}  // namespace chainrule
