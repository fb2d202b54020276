#pragma once
// Counter-based random numbers: element i of a draw is a pure function of (seed, counter + i),
// so results do not depend on the number of threads or the order in which elements are filled.
#include <cstdint>

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

Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::f32);                  // N(0, 1)
Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::f32);                   // U[0, 1)
Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dtype = DType::f32);
Tensor randint(const Shape& shape, std::int64_t high, Generator& gen);                       // int64 in [0, high)

}  // namespace chainrule
