#pragma once
// A true linearize (JAX's jax.linearize): one evaluation of f under a Linearize frame records, for
// every primitive applied to a traced value, its primal inputs and output (a LinearTape). The
// linear map u -> J u then replays only the recorded JVP rules on those saved values: no primal
// work is repeated. Like a reverse-mode tape, the record keeps the primals alive.
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/primitive.h"
#include "chainrule/tensor/tensor.h"

namespace chainrule {

struct LinearTape {
  struct Entry {
    const Primitive* prim;
    Params params;
    SmallVec<Tensor, 3> primals;
    SmallVec<Shape, 3> shapes;
    SmallVec<std::int64_t, 3> in_ids;  // per input: the traced value it is (-1: a constant)
    Tensor out;
    std::int64_t out_id;
  };
  std::vector<Entry> entries;
  std::int64_t values = 0;      // traced values recorded (inputs and outputs)
  std::vector<Tensor> tracers;  // kept alive while recording, so their addresses stay unique
  std::unordered_map<const TensorImpl*, std::int64_t> ids;

  std::int64_t add(const Tensor& tracer);
  std::int64_t id_of(const Tensor& tracer) const;  // -1 if not a value of this tape
  // Recording is over: drop the tracers (they hold the frame, which holds this tape).
  void finish() {
    tracers.clear();
    ids.clear();
  }
  // Tangents of the values `outs` given tangents `us` of the values `ins`, by the JVP rules only.
  std::vector<Tensor> apply(std::span<const std::int64_t> ins, std::span<const Tensor> us,
                            std::span<const std::int64_t> outs) const;
};

namespace detail {
Tensor eval_linearize(const std::shared_ptr<Frame>& f, const Primitive& p, std::span<const Tensor> xs, const Params& params);
Tensor make_linearize_tracer(const std::shared_ptr<Frame>& f, const Tensor& primal);
}  // namespace detail

}  // namespace chainrule
