#pragma once
// Derivative checks, as JAX's check_grads and PyTorch's gradcheck: reverse and forward mode
// against central finite differences in float64, the JVP/VJP identity <v, J u> = <Jᵀ v, u>,
// batched Jacobians (vmap) against unbatched ones, second order (every mode over every mode
// of the first derivative), and float32 against float64.
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "chainrule/autodiff/primitive.h"
#include "chainrule/tensor/tensor.h"

namespace chainrule {

struct CheckOptions {
  double eps = 1e-6;       // finite-difference step
  double atol = 1e-5;      // |ad - fd| <= atol + rtol |fd|
  double rtol = 1e-3;
  double identity_rtol = 1e-12;  // <v, J u> = <Jᵀ v, u>, relative to sum |v_i (J u)_i|
  bool second_order = true;
  bool float32 = true;     // float32 derivatives within 1e-4 * max(1, |g|) of float64
  bool half = true;        // bfloat16 and float16 values within kHalfTolerances of float64
  std::uint64_t seed = 0;  // for the random directions u, v
};

struct CheckReport {
  bool pass = true;
  double max_abs_error = 0;          // largest |ad - fd| over the first-order comparisons
  std::vector<std::string> checks;   // names of the checks that ran
  std::string failure;               // the first failure, with numbers
};

using CheckFn = std::function<Tensor(std::span<const Tensor>)>;

// The half check runs fn with its float inputs rounded to the half type and compares the output
// with fn in float64 on those same rounded inputs: |half - f64| <= rtol |f64| + atol s, where s is
// the largest magnitude among 1, the float inputs and the float64 output. rtol is a few roundings
// of the type's unit 2^-p (p = 8 significant bits for bfloat16, 11 for float16): the output's
// rounding and those of the intermediate results of a composite case, on the scale of the values.
// A float16 overflow to inf where float64 exceeds 65504 is right and passes.
struct DTypeTolerance {
  DType dtype;
  double rtol, atol;
};
inline constexpr DTypeTolerance kHalfTolerances[] = {
    {DType::bf16, 0x1p-6, 0x1p-7},   // 4 units of 2^-8, 2 on the output's scale
    {DType::f16, 0x1p-9, 0x1p-10},   // 4 units of 2^-11, 2 on the output's scale
};

// Checks the derivatives of fn at `inputs` (float64; non-float inputs are held fixed).
CheckReport check_grads(const CheckFn& fn, const std::vector<Tensor>& inputs, const CheckOptions& opts = {});

// Runs every test case of a primitive, plus cases derived from them (an input from a scalar, an
// input broadcast along a size-1 axis) when its own cases have no scalar or broadcast input.
struct PrimitiveReport {
  std::string name;
  int cases = 0;
  double max_abs_error = 0;
  std::vector<std::string> checks;
  bool pass = true;
  std::vector<std::string> failures;  // "case label: message"
  std::vector<std::string> labels;    // of the cases, in order
  // Cases per kind of input (case_kinds()): a case counts for every kind it has.
  std::map<std::string, int> coverage;
  std::map<std::string, std::string> not_applicable;  // kind -> why it has no case
};
// The kinds of sample input the checks aim to cover for every primitive: "scalar" (a rank-0
// input or output), "broadcast" (float inputs of different shapes, or an output larger than
// every input), "empty" (a size-0 axis), "size-1 axes", "small" (2 to 64 elements in the largest
// float input) and "medium" (more than 64).
std::vector<std::string> case_kinds(std::span<const Tensor> inputs, const Tensor& output);
inline const char* const kCaseKinds[] = {"scalar", "broadcast", "empty", "size-1 axes", "small", "medium"};
PrimitiveReport check_primitive(const Primitive& p, const CheckOptions& opts = {});

}  // namespace chainrule
