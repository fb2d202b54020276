#pragma once
// The two 16-bit float storage types, bfloat16 (1 sign, 8 exponent, 7 mantissa bits: float32's
// range) and float16 (IEEE binary16: 5 exponent, 10 mantissa bits, max 65504), and their exact
// conversions: to float32 (every value is a float32) and from float32 or float64, rounded to
// nearest, ties to even, NaN kept NaN (quiet, sign and top payload bits kept), overflow to inf.
// Arithmetic is not defined on them: kernels convert to float32 (see docs/ARCHITECTURE.md).
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace chainrule {

struct bfloat16 {
  std::uint16_t bits = 0;
};
struct float16 {
  std::uint16_t bits = 0;
};

namespace half {

inline float bf16_to_float(std::uint16_t h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }

inline std::uint16_t float_to_bf16(float f) {
  const auto x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // NaN: quiet
  // Round to nearest even on the 16 dropped bits; a carry into the exponent is right (up to inf).
  return static_cast<std::uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (m << 13));  // inf, NaN
  if (e == 0) {
    if (m == 0) return std::bit_cast<float>(sign);
    e = 113;  // a subnormal m·2^-24: normalise
    while (!(m & 0x400u)) m <<= 1, --e;
    return std::bit_cast<float>(sign | (e << 23) | ((m & 0x3FFu) << 13));
  }
  return std::bit_cast<float>(sign | ((e + 112) << 23) | (m << 13));
}

inline std::uint16_t float_to_f16(float f) {
  std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u)  // inf, NaN (quiet, top payload bits kept)
    return static_cast<std::uint16_t>(sign | 0x7C00u | (x > 0x7F800000u ? 0x200u | ((x >> 13) & 0x3FFu) : 0u));
  if (x >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to inf
  std::uint32_t r, rem, halfway;
  if (x < 0x38800000u) {  // below 2^-14: a subnormal (or zero) result, r·2^-24
    if (x <= 0x33000000u) return sign;  // <= 2^-25 rounds to zero (2^-25 is a tie, to even)
    const std::uint32_t s = 126 - (x >> 23), m = (x & 0x7FFFFFu) | 0x800000u;
    r = m >> s, rem = m & ((1u << s) - 1), halfway = 1u << (s - 1);
  } else {
    r = (x - 0x38000000u) >> 13, rem = x & 0x1FFFu, halfway = 0x1000u;  // rebias 127 -> 15
  }
  if (rem > halfway || (rem == halfway && (r & 1u))) ++r;  // a carry into the exponent is right
  return static_cast<std::uint16_t>(sign | r);
}

// float64 -> float32 rounded to odd (truncate, then set the last bit if inexact). Rounding that
// to a format with at least two fewer significant bits gives the correctly rounded result, so
// float64 -> half does not round twice.
inline float to_float_odd(double d) {
  if (std::isnan(d)) return static_cast<float>(d);
  float f = static_cast<float>(d);
  if (std::isinf(f) && !std::isinf(d)) f = std::copysign(std::numeric_limits<float>::max(), f);  // odd
  if (static_cast<double>(f) == d) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);
  return std::bit_cast<float>(std::bit_cast<std::uint32_t>(f) | 1u);
}

}  // namespace half

// Conversions (explicit, as static_cast<bfloat16>(x) or static_cast<float>(h)).
inline float to_float(bfloat16 h) { return half::bf16_to_float(h.bits); }
inline float to_float(float16 h) { return half::f16_to_float(h.bits); }
inline bfloat16 to_bfloat16(float f) { return {half::float_to_bf16(f)}; }
inline bfloat16 to_bfloat16(double d) { return {half::float_to_bf16(half::to_float_odd(d))}; }
inline float16 to_float16(float f) { return {half::float_to_f16(f)}; }
inline float16 to_float16(double d) { return {half::float_to_f16(half::to_float_odd(d))}; }

}  // namespace chainrule
