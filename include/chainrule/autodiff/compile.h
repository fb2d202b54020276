#pragma once
// compile(f): trace f once per signature (the arguments' shapes and dtypes, which of them carry a
// graph, and grad mode) into a flat program of level-0 kernel calls, then replay that program on
// later calls with the same signature: no dispatch, no frames, no graph nodes, and every
// intermediate dropped right after its last use so the caching allocator reuses its memory.
//
//   auto step = compile([&](const Tensor& x, const Tensor& y) { return loss(model(x), y); });
//   Tensor l = step(x, y);                      // traces; later calls replay
//   auto g = compile(grad(f));                  // the transforms' level-0 kernels are the program
//
// What a trace records: every primitive that reaches level 0 (so compile(grad(f)), compile(vmap(f)),
// compile(jacrev(f)) and a whole `loss.backward()` work), in-place updates through Tensor's methods
// (add_, mul_, copy_, fill_: BatchNorm's running statistics), copies (contiguous_clone), random
// draws (re-drawn from the same Generator on replay, so a compiled function consumes the generator
// exactly as the uncompiled one), and eager `.grad()` accumulation into leaves (assigned, or added
// to an existing gradient, on replay). Everything else the trace sees is baked in, as in
// torch.jit.trace: tensors that existed before the call (module parameters: kept by reference, so
// in-place optimiser updates are seen), tensors made by factories inside f, values read on the host
// (`item()`, `data()`) and the control flow they steer, module modes and other host state. Writes
// through `mutable_data` are not replayed: wrap such a host-side effect in `compile_effect`.
//
// A call that cannot be replayed runs f uncompiled: inside an active transform (compile inside
// grad/vmap/jvp is f itself, so every transform sees through it) or inside another trace (whose
// program then holds f's kernels). A signature whose trace cannot be replayed faithfully always
// runs uncompiled (`CompileStats::uncompiled_signatures`, with the reason): an eager-graph output
// (return `detach()`ed values, or call backward inside f), create_graph, a leaf that already had a
// gradient or has hooks, an in-place update of a tensor made in f, a draw under checkpoint or from a
// Generator local to f (docs/transforms.md). Replay gives the uncompiled function's bytes: same kernels, same values.
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "chainrule/autodiff/tree.h"
#include "chainrule/tensor/tensor.h"

namespace chainrule {

struct CompileStats {
  int traces = 0;                 // signatures traced (a new shape or dtype traces again)
  int uncompiled_signatures = 0;  // of which run uncompiled, for `reason`
  std::string reason;             // why the last such signature cannot be replayed
  std::size_t steps = 0;          // steps of the last trace's program
};

// Runs fn now and, when a compiled function is being traced, again on every replay: a host-side
// effect outside the primitives (BatchNorm's num_batches_tracked counter).
void compile_effect(const std::function<void()>& fn);

namespace detail {

class Program;

// The type-erased part of compile: the traces of one compiled function, by signature.
class CompileCache {
 public:
  CompileCache();
  ~CompileCache();
  CompileCache(const CompileCache&) = delete;
  CompileCache& operator=(const CompileCache&) = delete;

  // Whether a call on `leaves` can replay a program (no active transform, no trace recording).
  static bool can_replay();
  // The program traced for this signature, or null (not traced yet).
  const Program* find(std::size_t type_key, std::span<const Tensor> leaves) const;
  // Traces body(), which calls f on the arguments whose leaves are `leaves` and returns the output's
  // leaves, and stores the program with make_prototype() (the output's structure, leaves empty).
  void trace(std::size_t type_key, std::span<const Tensor> leaves, const std::function<std::vector<Tensor>()>& body,
             const std::function<std::shared_ptr<const void>()>& make_prototype);
  CompileStats stats() const;
  void clear();

 private:
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Program>> programs_;
  CompileStats stats_;
};

bool program_replays(const Program& p);                    // false: run uncompiled
const void* program_prototype(const Program& p);            // the output structure (an R)
// The outputs' leaves, in a buffer of this thread that the next replay at the same depth reuses
// (a replay allocates nothing in steady state).
std::vector<Tensor>& replay(const Program& p, std::span<const Tensor> args);
// A per-thread list for the arguments' leaves of one call, reused likewise; released by ~ArgLeaves.
class ArgLeaves {
 public:
  ArgLeaves();
  ~ArgLeaves();
  ArgLeaves(const ArgLeaves&) = delete;
  ArgLeaves& operator=(const ArgLeaves&) = delete;
  std::vector<Tensor>& operator*() const { return *leaves_; }

 private:
  std::vector<Tensor>* leaves_;
};

}  // namespace detail

// The compiled form of f (see the top of this file). Copies share the traces.
template <class F>
class Compiled {
 public:
  explicit Compiled(F f) : f_(std::move(f)), cache_(std::make_shared<detail::CompileCache>()) {}

  template <class... Args>
  auto operator()(const Args&... args) const {
    using R = std::decay_t<std::invoke_result_t<const F&, const Args&...>>;
    static_assert(is_tree_v<R>, "compile: f must return a Tensor or a tree of Tensors (pair, tuple, vector, ...)");
    if (!detail::CompileCache::can_replay()) return R(f_(args...));
    detail::ArgLeaves held;
    std::vector<Tensor>& leaves = *held;
    (append_leaves(leaves, args), ...);
    const std::size_t key = typeid(std::tuple<R, std::decay_t<Args>...>).hash_code();
    if (const detail::Program* p = cache_->find(key, leaves)) {
      if (!detail::program_replays(*p)) return R(f_(args...));
      std::vector<Tensor>& outs = detail::replay(*p, leaves);
      R r = tree_unflatten(*static_cast<const R*>(detail::program_prototype(*p)), outs);
      outs.clear();  // the caller holds them now; the buffer keeps its capacity
      return r;
    }
    R result;
    cache_->trace(
        key, leaves,
        [&] {
          result = f_(args...);
          return tree_leaves(result);
        },
        [&] { return std::shared_ptr<const void>(std::make_shared<R>(tree_map([](const Tensor&) { return Tensor(); }, result))); });
    return result;
  }

  CompileStats stats() const { return cache_->stats(); }
  int traces() const { return cache_->stats().traces; }
  void clear() const { cache_->clear(); }  // forget every trace (after changing host state f reads)

 private:
  template <class A>
  static void append_leaves(std::vector<Tensor>& out, const A& a) {
    static_assert(is_tree_v<A>, "compile: every argument must be a Tensor or a tree of Tensors");
    tree_for_each(a, [&](const Tensor& t) { out.push_back(t); });
  }
  F f_;
  std::shared_ptr<detail::CompileCache> cache_;
};

template <class F>
Compiled<std::decay_t<F>> compile(F&& f) {
  return Compiled<std::decay_t<F>>(std::forward<F>(f));
}

}  // namespace chainrule
