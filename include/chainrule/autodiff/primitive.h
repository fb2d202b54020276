#pragma once
// A primitive is one definition holding its name, its forward kernel, its JVP rule, its VJP rule,
// how it is batched by vmap, what its VJP needs saved, and its test cases. Rules are written with
// differentiable chainrule ops, so derivatives of derivatives work.
//
// Shape convention that makes vmap and batched Jacobians work: every primitive accepts extra
// leading (batch) dimensions on its inputs and keeps them in front of its output. Parameters are
// therefore relative to the trailing dimensions: reduction axes are negative, a reshape records the
// rank it applies to, and so on.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chainrule/tensor/small_vec.h"
#include "chainrule/tensor/tensor.h"

namespace chainrule {

namespace detail {
struct Remat;  // a checkpointed function (autodiff/checkpoint.h)
}

// Parameters of a primitive application. Each primitive uses the few fields it needs.
struct Params {
  Shape shape;              // reshape / broadcast_to target
  Shape axes;               // reduction axes (negative), or a permutation
  std::int64_t axis = 0;    // negative axis for softmax, slice, concat, gather
  std::int64_t start = 0;   // slice start / pad before
  std::int64_t stop = 0;    // slice stop / pad after
  std::int64_t size = 0;    // scatter: the length of the axis to scatter into
  std::int64_t rank = 0;    // the logical rank of input 0 that the parameters refer to
  bool keepdims = false;
  int code = 0;             // sub-operation (comparison kind, ...)
  double scalar = 0.0;      // a scalar argument
  DType dtype = DType::f32; // cast target
  DType from = DType::f32;  // cast source (for its VJP)
  std::shared_ptr<const detail::Remat> remat;  // checkpoint: the function its VJP re-runs
  // A primitive's own typed static parameters (conv/pool geometry: ops/conv.cpp), for those the
  // fixed fields above do not describe. Set with `with_attrs`, read with `attrs<T>()`; the
  // primitive that reads it is the one that set it, so the type is known at both ends.
  std::shared_ptr<const void> typed;
  template <class T>
  const T& attrs() const {
    return *static_cast<const T*>(typed.get());
  }
  template <class T>
  static Params with_attrs(T value) {
    Params p;
    p.typed = std::make_shared<const T>(std::move(value));
    return p;
  }
};

// What a rule sees: the primal inputs, the output and the parameters. In a VJP, inputs the
// primitive does not save are undefined; their shapes are always available.
struct Ctx {
  std::span<const Tensor> x;
  const Tensor& out;
  const Params& p;
  std::span<const Shape> shapes;
  const Shape& shape(int i) const { return shapes[i]; }
};

// How vmap handles the primitive (the batch axis is always in front).
enum class Batching : std::uint8_t {
  Broadcast,    // inputs broadcast against each other (elementwise, where, matmul): batched inputs
                // get unit axes inserted after the batch axis so that their ranks line up
  Leading,      // only input 0 batches in one call (reshape, gather, ...); a batched secondary
                // input (per-example gather indices) makes vmap run the primitive per example
  Materialize,  // unbatched inputs are broadcast to carry the batch axis too (concat, losses)
  Rule,         // the primitive's own `batch_rule` (conv folds the batch into images or groups)
};

enum Saves : std::uint8_t { kSaveNone = 0, kSaveInputs = 1, kSaveOutput = 2 };

struct OpCase;

struct Primitive {
  std::string_view name;
  // Forward kernel on concrete tensors (with possible extra leading dimensions).
  Tensor (*forward)(std::span<const Tensor> x, const Params& p) = nullptr;
  // Tangent of the output from the tangent of input i (the others held fixed). Null when the
  // output is piecewise constant in the inputs (comparisons, casts to integers): no derivative.
  Tensor (*jvp)(int i, const Tensor& x_t, const Ctx& c) = nullptr;
  // Cotangent of input i from the cotangent of the output.
  Tensor (*vjp)(int i, const Tensor& out_ct, const Ctx& c) = nullptr;
  // Optional, instead of `vjp`: the cotangents of all inputs in one call, for a primitive whose
  // inputs share the work (checkpoint re-runs its function once for all of them). Only the
  // inputs with `needed[i]` are used; the others may be left undefined.
  std::vector<Tensor> (*vjp_all)(const Tensor& out_ct, const Ctx& c, const std::vector<bool>& needed) = nullptr;
  Batching batching = Batching::Broadcast;
  // With Batching::Rule: the output, batch axis in front, from the inputs, of which those with bit
  // i of `batched` set carry the batch axis in front (JAX's batching rule). Written with ops.
  Tensor (*batch_rule)(std::span<const Tensor> x, std::uint32_t batched, const Params& p) = nullptr;
  std::uint8_t saves = kSaveInputs;
  // Sample inputs for the generated derivative tests and `chainrule check`.
  std::vector<OpCase> (*cases)() = nullptr;
  std::string_view kinks;  // how the derivative is defined where it does not exist
  // The forward kernel takes bfloat16/float16 inputs itself (cast, matmul's bf16 GEMM). Otherwise
  // level-0 bind runs it on float32 copies of them and rounds its float32 output back (dispatch.cpp).
  bool half_kernels = false;

  bool differentiable() const { return jvp != nullptr; }
};

// Applies a primitive: dispatched to the innermost active transform among the inputs.
Tensor bind(const Primitive& p, std::span<const Tensor> x, const Params& params = {});
inline Tensor bind(const Primitive& p, std::initializer_list<Tensor> x, const Params& params = {}) {
  return bind(p, std::span<const Tensor>(x.begin(), x.size()), params);
}

// Every built-in primitive, for the generated tests and `chainrule check`.
std::span<const Primitive* const> all_primitives();
const Primitive* find_primitive(std::string_view name);

// A sample for the derivative checks: inputs (float64) and the function under test.
struct OpCase {
  std::string label;
  std::vector<Tensor> inputs;
  std::function<Tensor(std::span<const Tensor>)> fn;
  bool second_order = true;  // check derivatives of derivatives as well
  double eps = 0;             // finite-difference step, when the default (1e-6) does not suit
  double atol = 0;            // absolute tolerance, likewise
  double identity_rtol = 0;   // JVP/VJP identity tolerance, when the path is not float64 throughout
};

}  // namespace chainrule
