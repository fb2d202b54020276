#pragma once
// Indexing (issue 21): strided slices, a libtorch-style multi-axis indexer and JAX-style functional
// updates. Everything is made of differentiable primitives (src/ops/indexing.cpp), so derivatives
// of every order and vmap work through it.
//
//   using namespace chainrule::indexing;
//   index(x, {0, Slice(1, None), None, Ellipsis, idx});   // x[0, 1:, None, ..., idx]
//   at(x, {mask}).set(0.0);                                // x.at[mask].set(0)
#include <cstdint>
#include <optional>
#include <vector>

#include "chainrule/ops/ops.h"

namespace chainrule {

// Elements start, start + step, ... of an axis, with Python's rules: negative start and stop count
// from the end, bounds past either end are clamped, a negative step walks backwards (NumPy), and
// an omitted bound (nullopt) means the whole axis in the step's direction. step 0 is a ShapeError.
// The 4-argument slice(x, axis, start, stop) of ops.h is the step-1 case with exact bounds.
Tensor slice(const Tensor& x, std::int64_t axis, std::optional<std::int64_t> start, std::optional<std::int64_t> stop,
             std::int64_t step);

namespace indexing {
// torch::indexing's names: Slice(start, stop, step) with optional bounds, None (a new axis of
// size 1, NumPy's newaxis) and Ellipsis (as many full slices as the other items leave).
inline constexpr std::nullopt_t None = std::nullopt;
struct EllipsisIndexType {};
inline constexpr EllipsisIndexType Ellipsis{};
struct Slice {
  Slice(std::optional<std::int64_t> start = std::nullopt, std::optional<std::int64_t> stop = std::nullopt,
        std::optional<std::int64_t> step = std::nullopt)
      : start(start), stop(stop), step(step.value_or(1)) {}
  std::optional<std::int64_t> start, stop;
  std::int64_t step = 1;
};
}  // namespace indexing

// One item of an index (libtorch's TensorIndex): an integer (selects and drops the axis; negative
// counts from the end), a Slice, None, Ellipsis, a bool (NumPy's scalar mask: true adds an axis
// of size 1, false one of size 0), or a tensor: int64 (an integer array index, NumPy's advanced
// indexing) or bool (a mask over as many axes as it has: NumPy's x[mask]).
class TensorIndex {
 public:
  enum class Kind : std::uint8_t { Integer, Slice, None, Ellipsis, Boolean, Tensor };
  TensorIndex(int i) : kind_(Kind::Integer), integer_(i) {}
  TensorIndex(std::int64_t i) : kind_(Kind::Integer), integer_(i) {}
  TensorIndex(bool b) : kind_(Kind::Boolean), boolean_(b) {}
  TensorIndex(std::nullopt_t) : kind_(Kind::None) {}
  TensorIndex(indexing::EllipsisIndexType) : kind_(Kind::Ellipsis) {}
  TensorIndex(indexing::Slice s) : kind_(Kind::Slice), slice_(s) {}
  TensorIndex(Tensor t) : kind_(Kind::Tensor), tensor_(std::move(t)) {}

  Kind kind() const { return kind_; }
  std::int64_t integer() const { return integer_; }
  bool boolean() const { return boolean_; }
  const indexing::Slice& slice() const { return slice_; }
  const Tensor& tensor() const { return tensor_; }

 private:
  Kind kind_;
  std::int64_t integer_ = 0;
  bool boolean_ = false;
  indexing::Slice slice_;
  Tensor tensor_;
};

// x[items...] with NumPy's rules. Integer array indices (and the integers beside them) broadcast
// together; their result axes go where the first of them stood when they are adjacent, else in
// front. A bool mask selects in row-major order, a data-dependent shape: under vmap a batched
// mask is an AutodiffError (JAX's NonConcreteBooleanIndexError); a mask that is not batched is
// fine. An index out of range is a ValueError naming the axis, the index and the size.
Tensor index(const Tensor& x, const std::vector<TensorIndex>& items);

// JAX's x.at[items]: functional updates that return new tensors, differentiable in x and in the
// values (which broadcast to the shape of x[items] and take x's dtype).
//   set:      x with x[items] replaced by v. Where an integer array names a position more than
//             once the last occurrence wins (JAX leaves it unspecified; here it is deterministic),
//             and only that value receives a gradient. x's gradient is zero where overwritten.
//   add:      x with v added at x[items]; repeated positions add up (np.add.at).
//   multiply: x with x[items] multiplied by v; repeated positions multiply up.
//   get:      index(x, items).
class IndexUpdate {
 public:
  IndexUpdate(Tensor x, std::vector<TensorIndex> items) : x_(std::move(x)), items_(std::move(items)) {}
  Tensor get() const;
  Tensor set(const Tensor& values) const;
  Tensor set(double value) const;
  Tensor add(const Tensor& values) const;
  Tensor add(double value) const;
  Tensor multiply(const Tensor& values) const;
  Tensor multiply(double value) const;

 private:
  Tensor x_;
  std::vector<TensorIndex> items_;
};
IndexUpdate at(const Tensor& x, std::vector<TensorIndex> items);

// torch.index_put (out of place): x with x[indices] = values, or += values with accumulate.
// Without accumulate, repeated positions keep the last value (deterministic; PyTorch leaves it
// undefined).
Tensor index_put(const Tensor& x, const std::vector<TensorIndex>& indices, const Tensor& values, bool accumulate = false);

}  // namespace chainrule
