#pragma once
// Hooks of compile's tracer (compile.cpp) in the places that do level-0 work: bind's eager path
// (dispatch.cpp), the reverse pass's leaf accumulation (engine.cpp), and Tensor's in-place
// methods, copies and random draws (tensor.cpp). Each hook is one test of `t_recorder`, null
// unless a compiled function is being traced on this thread.
#include <functional>
#include <span>
#include <string>

#include "chainrule/autodiff/node.h"
#include "chainrule/autodiff/primitive.h"

namespace chainrule::detail {

class Recorder;
extern constinit thread_local Recorder* t_recorder;

using EagerEval = Tensor (*)(const Primitive& p, std::span<const Tensor> xs, const Params& params);
// Runs eval(p, xs, params) (nothing inside it recorded: a kernel that binds ops is one call) and
// appends the kernel call to the trace.
Tensor trace_kernel(const Primitive& p, std::span<const Tensor> xs, const Params& params, EagerEval eval);
// A step that is not a primitive (an in-place update, a copy, a random draw): out = fn(xs) now and
// on every replay. `out` may be undefined (an update in place).
using StepFn = std::function<Tensor(std::span<const Tensor> xs)>;
Tensor trace_step(std::span<const Tensor> xs, StepFn fn);
inline Tensor trace_step(std::initializer_list<Tensor> xs, StepFn fn) {
  return trace_step(std::span<const Tensor>(xs.begin(), xs.size()), std::move(fn));
}
// The same for a step that updates xs[0] in place.
Tensor trace_update(std::span<const Tensor> xs, StepFn fn);
inline Tensor trace_update(std::initializer_list<Tensor> xs, StepFn fn) {
  return trace_update(std::span<const Tensor>(xs.begin(), xs.size()), std::move(fn));
}
// A factory made this storage inside the traced function (empty()).
void trace_made(const std::shared_ptr<Storage>& s);
// The reverse pass is about to accumulate into eager leaf `leaf`.
void trace_leaf(Node& leaf, bool create_graph);
// The trace being recorded cannot be replayed faithfully: its signature runs uncompiled.
void poison_trace(const std::string& why);
// A draw from `generator`: the replay draws from it again, so it must outlive the call. One on the
// stack below the compiled call is a local of the traced function: that trace runs uncompiled.
void trace_generator(const void* generator, const char* op);

// Level-0 forward of a primitive (dispatch.cpp's run_forward: bf16/f16 through float32 kernels).
Tensor run_primitive(const Primitive& p, std::span<const Tensor> xs, const Params& params);

}  // namespace chainrule::detail
