// compile(f): a trace of f's level-0 work as a flat program, and its replay (see compile.h).
//
// While a trace records (t_recorder set), every level-0 kernel call and every hooked step (in-place
// update, copy, random draw, leaf accumulation) is appended to the program. Each input of a step is
// named by where its value comes from: an argument of f, the output of an earlier step (a slot), or
// a constant (a tensor that existed before, or a factory's product inside f), found by its storage
// and view, so a detached alias (saved outputs, `detach()`) still names its slot. The recorder holds
// slots' storages by weak_ptr only: the storage's address stays unique during the trace (the block
// is freed with the last weak reference), and use counts, which the engine reads to decide whether
// a leaf may take over a cotangent's buffer, are those of the uncompiled run.
#include "chainrule/autodiff/compile.h"

#include <fmt/format.h>

#include <limits>
#include <unordered_map>

#include "autodiff/compile_internal.h"
#include "chainrule/autodiff/anomaly.h"
#include "chainrule/autodiff/frame.h"
#include "chainrule/autodiff/profiler.h"
#include "chainrule/ops/ops.h"

namespace chainrule {

namespace detail {

constinit thread_local Recorder* t_recorder = nullptr;

namespace {

struct Ref {
  enum Kind : std::uint8_t { Arg, Slot, Const, None };
  Kind kind = None;
  std::uint32_t index = 0;
  bool operator==(const Ref&) const = default;
};

struct Step {
  const Primitive* prim = nullptr;  // a kernel call; null: `fn`
  Params params;
  StepFn fn;
  SmallVec<Ref, 3> in;
  std::int32_t out = -1;                // the slot it defines (-1: none, an update in place)
  SmallVec<std::uint32_t, 2> release;   // slots whose last use is this step
};

struct ArgSignature {
  Shape shape;
  DType dtype = DType::f32;
  bool defined = false, graph = false;
  std::int32_t alias = -1;  // the first earlier argument with the same storage
};

std::int32_t alias_of(std::span<const Tensor> leaves, std::size_t i) {
  const Storage* s = leaves[i].defined() ? leaves[i].impl()->storage.get() : nullptr;
  if (!s) return -1;
  for (std::size_t j = 0; j < i; ++j)
    if (leaves[j].defined() && leaves[j].impl()->storage.get() == s) return static_cast<std::int32_t>(j);
  return -1;
}

}  // namespace

class Program {
 public:
  // The signature it was traced for.
  std::size_t type_key = 0;
  bool grad_mode = true;
  std::vector<ArgSignature> args;
  // The program.
  std::vector<Step> steps;
  std::vector<Tensor> consts;
  std::uint32_t slots = 0;
  std::vector<Ref> outputs;
  std::vector<bool> output_copied;  // a constant made inside f: a fresh copy per call, as uncompiled
  std::vector<std::pair<std::shared_ptr<Node>, Ref>> leaf_grads;
  std::shared_ptr<const void> prototype;
  std::string unreplayable;  // non-empty: every call runs f uncompiled, for this reason

  bool matches(std::size_t key, std::span<const Tensor> leaves) const {
    if (type_key != key || grad_mode != GradMode::is_enabled() || args.size() != leaves.size()) return false;
    for (std::size_t i = 0; i < leaves.size(); ++i) {
      const Tensor& t = leaves[i];
      const ArgSignature& s = args[i];
      if (t.defined() != s.defined) return false;
      if (!t.defined()) continue;
      if (t.dtype() != s.dtype || t.shape() != s.shape || (t.impl()->node != nullptr) != s.graph) return false;
      if (alias_of(leaves, i) != s.alias) return false;
    }
    return true;
  }
};

class Recorder {
 public:
  explicit Recorder(Program& p) : prog_(p) {}
  const void* stack_marker = nullptr;  // an address in the frame of the call that traces

  void add_argument(const Tensor& t, std::uint32_t i) {
    if (t.defined()) define(t, {Ref::Arg, i});
  }

  void record(const Primitive* prim, const Params* params, StepFn fn, std::span<const Tensor> xs, const Tensor& out,
              bool in_place) {
    Step s;
    s.prim = prim;
    if (params) s.params = *params;
    s.fn = std::move(fn);
    const auto k = static_cast<std::uint32_t>(prog_.steps.size());
    for (std::size_t i = 0; i < xs.size(); ++i) {
      Ref r = ref_of(xs[i]);
      if (in_place && i == 0 && r.kind == Ref::Const && made_[r.index])
        poison("an in-place update of a tensor made inside the function (it would carry over from one call to the next)");
      use(r, k);
      s.in.push_back(r);
    }
    if (out.defined()) {
      s.out = static_cast<std::int32_t>(prog_.slots++);
      last_use_.push_back(k);
      define(out, {Ref::Slot, static_cast<std::uint32_t>(s.out)});
    }
    prog_.steps.push_back(std::move(s));
  }

  void note_leaf(Node& leaf, bool create_graph) {
    if (create_graph) poison("a backward pass with create_graph");
    if (!leaf.post_accumulate_grad_hooks.empty()) poison("a leaf with post-accumulate-grad hooks");
    for (const auto& l : leaves_)
      if (l.get() == &leaf) return;
    if (leaf.grad.defined()) poison("a leaf that already had a gradient (call zero_grad() before the compiled function)");
    leaves_.push_back(leaf.shared_from_this());
  }

  void note_made(const std::shared_ptr<Storage>& s) { made_storage_.emplace(s.get(), s); }

  void poison(const std::string& why) {
    if (prog_.unreplayable.empty()) prog_.unreplayable = why;
  }

  void finish(const std::vector<Tensor>& outputs) {
    constexpr auto kKept = std::numeric_limits<std::uint32_t>::max();
    for (const Tensor& t : outputs) {
      Ref r;
      if (t.defined()) {
        if (t.impl()->frame) poison("an output is a tracer of a transform");
        else if (t.impl()->node) poison("an output carries an eager graph (return detach()ed values, or call backward() inside)");
        r = ref_of(t);
      }
      use(r, kKept);
      prog_.outputs.push_back(r);
      prog_.output_copied.push_back(r.kind == Ref::Const && made_[r.index]);
    }
    for (const auto& leaf : leaves_) {
      if (!leaf->grad.defined()) continue;
      Ref r = ref_of(leaf->grad);
      use(r, kKept);
      prog_.leaf_grads.emplace_back(leaf, r);
      if (r.kind == Ref::Const && made_[r.index]) escaped_.push_back(r.index);
    }
    // A constant made inside f that the caller now holds (an output, a gradient) may be changed
    // by it: the program keeps its own copy of the value at the end of the trace.
    for (std::size_t i = 0; i < prog_.outputs.size(); ++i)
      if (prog_.output_copied[i]) escaped_.push_back(prog_.outputs[i].index);
    for (auto c : escaped_) prog_.consts[c] = prog_.consts[c].contiguous_clone();
    for (std::uint32_t s = 0; s < prog_.slots; ++s)
      if (last_use_[s] != kKept) prog_.steps[last_use_[s]].release.push_back(s);
  }

 private:
  struct Entry {
    std::weak_ptr<Storage> storage;
    std::int64_t offset;
    Shape shape;
    DType dtype;
    Ref ref;
  };

  void define(const Tensor& t, Ref r) {
    const TensorImpl& impl = *t.impl();
    by_storage_[impl.storage.get()].push_back({impl.storage, impl.offset, impl.shape, impl.dtype, r});
  }

  Ref ref_of(const Tensor& t) {
    const TensorImpl& impl = *t.impl();
    if (impl.frame) {
      poison("a tracer reached a level-0 step");
      return {};
    }
    if (auto it = by_storage_.find(impl.storage.get()); it != by_storage_.end())
      for (auto e = it->second.rbegin(); e != it->second.rend(); ++e)  // the newest view first
        if (!e->storage.expired() && e->offset == impl.offset && e->dtype == impl.dtype && e->shape == impl.shape) return e->ref;
    auto [c, fresh] = const_index_.try_emplace(&impl, static_cast<std::uint32_t>(prog_.consts.size()));
    if (fresh) {
      prog_.consts.push_back(t);
      auto m = made_storage_.find(impl.storage.get());
      made_.push_back(m != made_storage_.end() && !m->second.expired());
    }
    return {Ref::Const, c->second};
  }

  void use(Ref r, std::uint32_t step) {
    if (r.kind == Ref::Slot) last_use_[r.index] = step;
  }

  Program& prog_;
  std::unordered_map<const Storage*, std::vector<Entry>> by_storage_;
  std::unordered_map<const TensorImpl*, std::uint32_t> const_index_;  // constants are held, so their addresses stay unique
  std::unordered_map<const Storage*, std::weak_ptr<Storage>> made_storage_;  // storages made by factories in f
  std::vector<bool> made_;                                                  // per constant
  std::vector<std::uint32_t> last_use_;                                     // per slot: the last step reading it
  std::vector<std::shared_ptr<Node>> leaves_;
  std::vector<std::uint32_t> escaped_;  // constants made inside f that the caller holds
};

namespace {

// Nothing nested inside a recorded step is recorded: the step replays it.
class Suspend {
 public:
  Suspend() : saved_(t_recorder) { t_recorder = nullptr; }
  ~Suspend() { t_recorder = saved_; }
  Suspend(const Suspend&) = delete;
  Suspend& operator=(const Suspend&) = delete;
  Recorder* recorder() const { return saved_; }

 private:
  Recorder* saved_;
};

// Replays may nest (a kernel running user code that calls a compiled function): buffers per
// depth, kept so that a replay in steady state allocates nothing.
struct ReplayBuffers {
  std::vector<Tensor> slots, inputs, outputs;
};
thread_local std::vector<std::unique_ptr<ReplayBuffers>> t_replay_stack;
thread_local std::size_t t_replay_depth = 0;
thread_local std::vector<std::unique_ptr<std::vector<Tensor>>> t_arg_stack;
thread_local std::size_t t_arg_depth = 0;

}  // namespace

Tensor trace_kernel(const Primitive& p, std::span<const Tensor> xs, const Params& params, EagerEval eval) {
  Tensor out;
  Recorder* r;
  {
    Suspend s;
    r = s.recorder();
    out = eval(p, xs, params);
  }
  r->record(&p, &params, nullptr, xs, out, false);
  return out;
}

Tensor trace_step_impl(std::span<const Tensor> xs, StepFn fn, bool in_place) {
  Tensor out;
  Recorder* r;
  {
    Suspend s;
    r = s.recorder();
    out = fn(xs);
  }
  r->record(nullptr, nullptr, std::move(fn), xs, out, in_place);
  return out;
}
Tensor trace_step(std::span<const Tensor> xs, StepFn fn) { return trace_step_impl(xs, std::move(fn), false); }
Tensor trace_update(std::span<const Tensor> xs, StepFn fn) { return trace_step_impl(xs, std::move(fn), true); }

void trace_leaf(Node& leaf, bool create_graph) { t_recorder->note_leaf(leaf, create_graph); }
void trace_made(const std::shared_ptr<Storage>& s) { t_recorder->note_made(s); }

void poison_trace(const std::string& why) { t_recorder->poison(why); }

void trace_generator(const void* generator, const char* op) {
  // The stack grows down: the traced function's frames lie between this one and the marker.
  const auto* g = static_cast<const char*>(generator);
  if (g > static_cast<const char*>(__builtin_frame_address(0)) && g < static_cast<const char*>(t_recorder->stack_marker))
    t_recorder->poison(fmt::format("{} from a Generator local to the function (a replay could not draw from it again)", op));
}

// ---- the cache -------------------------------------------------------------------------------

CompileCache::CompileCache() = default;
CompileCache::~CompileCache() = default;

bool CompileCache::can_replay() { return t_recorder == nullptr && current_level() == 0 && !AnomalyMode::is_enabled(); }

const Program* CompileCache::find(std::size_t type_key, std::span<const Tensor> leaves) const {
  std::lock_guard lock(mutex_);
  for (const auto& p : programs_)
    if (p->matches(type_key, leaves)) return p.get();
  return nullptr;
}

void CompileCache::trace(std::size_t type_key, std::span<const Tensor> leaves, const std::function<std::vector<Tensor>()>& body,
                         const std::function<std::shared_ptr<const void>()>& make_prototype) {
  auto prog = std::make_unique<Program>();
  prog->type_key = type_key;
  prog->grad_mode = GradMode::is_enabled();
  for (std::size_t i = 0; i < leaves.size(); ++i) {
    const Tensor& t = leaves[i];
    ArgSignature& s = prog->args.emplace_back();
    s.defined = t.defined();
    if (!t.defined()) continue;
    s.shape = t.shape(), s.dtype = t.dtype(), s.graph = t.impl()->node != nullptr, s.alias = alias_of(leaves, i);
  }
  Recorder rec(*prog);
  rec.stack_marker = &rec;
  for (std::size_t i = 0; i < leaves.size(); ++i) rec.add_argument(leaves[i], static_cast<std::uint32_t>(i));
  std::vector<Tensor> outputs;
  {
    t_recorder = &rec;
    struct Restore {
      ~Restore() { t_recorder = nullptr; }
    } restore;
    outputs = body();
  }
  rec.finish(outputs);
  prog->prototype = make_prototype();
  std::lock_guard lock(mutex_);
  ++stats_.traces;
  stats_.steps = prog->steps.size();
  if (!prog->unreplayable.empty()) {
    ++stats_.uncompiled_signatures;
    stats_.reason = prog->unreplayable;
    prog->steps.clear(), prog->consts.clear(), prog->leaf_grads.clear();  // keep only the signature
  }
  programs_.push_back(std::move(prog));
}

CompileStats CompileCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}
void CompileCache::clear() {
  std::lock_guard lock(mutex_);
  programs_.clear();
  stats_ = {};
}

bool program_replays(const Program& p) { return p.unreplayable.empty(); }
const void* program_prototype(const Program& p) { return p.prototype.get(); }

ArgLeaves::ArgLeaves() {
  if (t_arg_depth == t_arg_stack.size()) t_arg_stack.push_back(std::make_unique<std::vector<Tensor>>());
  leaves_ = t_arg_stack[t_arg_depth++].get();
}
ArgLeaves::~ArgLeaves() {
  leaves_->clear();
  --t_arg_depth;
}

std::vector<Tensor>& replay(const Program& p, std::span<const Tensor> args) {
  NoGradGuard no_grad;  // a kernel that binds ops inside (custom functions) records no nodes
  if (t_replay_depth == t_replay_stack.size()) t_replay_stack.push_back(std::make_unique<ReplayBuffers>());
  ReplayBuffers& buffers = *t_replay_stack[t_replay_depth++];
  std::vector<Tensor>& slots = buffers.slots;
  struct Pop {
    std::vector<Tensor>& slots;
    ~Pop() {
      slots.clear();
      --t_replay_depth;
    }
  } pop{slots};
  slots.resize(p.slots);
  auto get = [&](Ref r) -> const Tensor& {
    switch (r.kind) {
      case Ref::Arg: return args[r.index];
      case Ref::Slot: return slots[r.index];
      case Ref::Const: return p.consts[r.index];
      case Ref::None: break;
    }
    static const Tensor undefined;
    return undefined;
  };
  std::vector<Tensor>& xs = buffers.inputs;
  for (const Step& s : p.steps) {
    xs.resize(s.in.size());
    for (std::size_t i = 0; i < s.in.size(); ++i) xs[i] = get(s.in[i]);
    Tensor out = s.prim ? profiler::detail::timed(s.prim->name, profiler::Phase::Forward,
                                                  [&] { return run_primitive(*s.prim, xs, s.params); })
                        : s.fn(xs);
    xs.clear();  // before the releases, so that the memory goes back to the allocator
    if (s.out >= 0) slots[static_cast<std::size_t>(s.out)] = std::move(out);
    for (auto k : s.release) slots[k] = Tensor();
  }
  std::vector<Tensor>& outputs = buffers.outputs;
  outputs.resize(p.outputs.size());
  for (std::size_t i = 0; i < outputs.size(); ++i)
    outputs[i] = p.output_copied[i] ? get(p.outputs[i]).contiguous_clone() : get(p.outputs[i]);
  for (const auto& [leaf, ref] : p.leaf_grads) {
    // As the engine's accumulate_grad: take the value, or add it to a gradient accumulated since.
    Tensor g = ref.kind == Ref::Slot ? get(ref) : get(ref).contiguous_clone();
    if (!leaf->grad.defined()) leaf->grad = std::move(g);
    else if (leaf->grad.impl()->node || leaf->grad.impl()->frame) leaf->grad = add(leaf->grad, g);
    else leaf->grad.add_(g);
    for (auto& [id, hook] : leaf->post_accumulate_grad_hooks) hook(leaf->grad);
  }
  return outputs;
}

}  // namespace detail

void compile_effect(const std::function<void()>& fn) {
  if (!detail::t_recorder) return fn();
  detail::trace_step({}, [fn](std::span<const Tensor>) {
    fn();
    return Tensor();
  });
}

}  // namespace chainrule
