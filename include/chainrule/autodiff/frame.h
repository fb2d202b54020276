#pragma once
// Transforms as interpreters with levels (as in JAX's autodidax). Each active transform pushes a
// Frame; its level is its depth on this thread's stack. An operation is handled by the frame of
// highest level among its inputs' tracers, which unwraps them, applies the operation one level
// down, and wraps the result. Inputs from lower levels are constants to that frame, which is what
// keeps nested derivatives apart (no perturbation confusion).
#include <cstdint>
#include <memory>

namespace chainrule {

enum class TraceKind : std::uint8_t { Jvp, Reverse, Batch, Linearize };

// What a random draw (rand, randn, uniform, randint, Dropout) does inside vmap, torch.func's
// `randomness`: refuse (the default: a silent shared draw is the classic per-example bug), draw
// once for every example (Same), or draw independently per example (Different), reproducibly
// from the generator's counter.
enum class Randomness : std::uint8_t { Error, Same, Different };

struct LinearTape;  // linearize's record of JVP rules to replay (autodiff/linearize.h)

struct Frame {
  int level = 0;
  TraceKind kind = TraceKind::Jvp;
  bool alive = true;              // false once the transform has returned
  std::int64_t batch_size = 0;    // Batch frames only
  Randomness randomness = Randomness::Error;  // Batch frames only
  std::shared_ptr<LinearTape> tape;           // Linearize frames only
};

// RAII: pushes a frame on construction, pops it (and marks it dead) on destruction.
class FrameScope {
 public:
  explicit FrameScope(TraceKind kind, std::int64_t batch_size = 0);
  ~FrameScope();
  FrameScope(const FrameScope&) = delete;
  FrameScope& operator=(const FrameScope&) = delete;
  const std::shared_ptr<Frame>& frame() const { return frame_; }

 private:
  std::shared_ptr<Frame> frame_;
};

int current_level();  // number of active frames on this thread

// Eager (libtorch-style) recording of the reverse-mode graph at level 0 can be switched off.
// It does not affect the transforms: grad() inside a NoGradGuard still works.
struct GradMode {
  static bool is_enabled();
  static void set_enabled(bool on);
};

class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

class EnableGradGuard {
 public:
  EnableGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(true); }
  ~EnableGradGuard() { GradMode::set_enabled(prev_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};
// Grad mode set to `enabled` for a scope (libtorch's AutoGradMode).
class AutoGradMode {
 public:
  explicit AutoGradMode(bool enabled) : prev_(GradMode::is_enabled()) { GradMode::set_enabled(enabled); }
  ~AutoGradMode() { GradMode::set_enabled(prev_); }
  AutoGradMode(const AutoGradMode&) = delete;
  AutoGradMode& operator=(const AutoGradMode&) = delete;

 private:
  bool prev_;
};


}  // namespace chainrule
