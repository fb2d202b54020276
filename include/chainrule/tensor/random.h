#pragma once
// Counter-based random numbers: element i of a draw is a pure function of (seed, counter + i),
// so results do not depend on the number of threads or the order in which elements are filled.
#include <cstdint>
#include <vector>

#include "chainrule/tensor/tensor.h"

namespace chainrule {

class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0) : seed_(seed) {}
  std::uint64_t seed() const { return seed_; }
  std::uint64_t counter() const { return counter_; }
  void set_state(std::uint64_t seed, std::uint64_t counter) { seed_ = seed, counter_ = counter; }
  // Reserves n consecutive counters and returns the first.
  std::uint64_t advance(std::uint64_t n) {
    auto first = counter_;
    counter_ += n;
    return first;
  }
  // The 64 random bits for one counter value.
  static std::uint64_t bits(std::uint64_t seed, std::uint64_t counter);
  // Uniform in [0, 1) with 53 random bits.
  static double uniform(std::uint64_t seed, std::uint64_t counter) {
    return static_cast<double>(bits(seed, counter) >> 11) * 0x1.0p-53;
  }
  std::uint64_t next_u64() { return bits(seed_, advance(1)); }

 private:
  std::uint64_t seed_;
  std::uint64_t counter_ = 0;
};

Tensor randn(const Shape& shape, Generator& gen, DType dtype = get_default_dtype());  // N(0, 1)
Tensor rand(const Shape& shape, Generator& gen, DType dtype = get_default_dtype());   // U[0, 1)
Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dtype = get_default_dtype());
Tensor randint(const Shape& shape, std::int64_t high, Generator& gen);                       // int64 in [0, high)

namespace detail {

// Draws of the functions above, recorded so that a re-run of the same code draws the same numbers
// without touching the generators (checkpoint's recomputation, PyTorch's preserve_rng_state).
// While scopes are active, a draw is taken from the innermost replaying tape (or, if none, from
// the generator) and appended to every recording tape inside that one, so nested checkpoints
// replay consistently.
struct RngDraw {
  std::uint64_t seed, counter, count;
};
using RngTape = std::vector<RngDraw>;

class RngTapeScope {
 public:
  struct Replay {};
  explicit RngTapeScope(RngTape& record_into);        // appends the draws made in this scope
  RngTapeScope(const RngTape& replay_from, Replay);   // hands them out again, in order
  ~RngTapeScope();
  RngTapeScope(const RngTapeScope&) = delete;
  RngTapeScope& operator=(const RngTapeScope&) = delete;
};

// Reserves `count` counters of `gen` (or replays them): the seed and first counter to draw with.
RngDraw draw(Generator& gen, std::uint64_t count);

}  // namespace detail

}  // namespace chainrule
