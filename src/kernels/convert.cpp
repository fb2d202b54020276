#include "kernels/convert.h"

#include <immintrin.h>

#include <bit>
#include <type_traits>

#include "kernels/kernels.h"

namespace chainrule::kernels {
namespace {

template <class Fn>
decltype(auto) dispatch_any(DType t, Fn&& fn) {
  switch (t) {
    case DType::bf16: return fn(bfloat16{});
    case DType::f16: return fn(float16{});
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
    case DType::i64: return fn(std::int64_t{});
    case DType::b8: break;
  }
  return fn(bool{});
}

template <class T> constexpr bool kHalf = std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>;

// A half value as its (exact) float32; other types unchanged.
template <class T> auto widen(T v) {
  if constexpr (kHalf<T>) return to_float(v);
  else return v;
}
// W to B; to a half type from float32 directly, from anything else through float64 (exact for
// float64 and bool, one rounding of an int64 beyond 2^53).
template <class B, class W> B narrow(W w) {
  using Src = std::conditional_t<std::is_same_v<W, float>, float, double>;
  if constexpr (std::is_same_v<B, bfloat16>) return to_bfloat16(static_cast<Src>(w));
  else if constexpr (std::is_same_v<B, float16>) return to_float16(static_cast<Src>(w));
  else return static_cast<B>(w);
}

// float16 <-> float32 on the F16C instructions, 8 at a time (IEEE round to nearest even, the
// same results as the scalar conversions but for NaN payloads); used where the CPU has them.
__attribute__((target("avx,f16c"))) void f16_to_f32_f16c(const float16* s, float* d, std::int64_t lo, std::int64_t hi) {
  std::int64_t i = lo;
  for (; i + 8 <= hi; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  for (; i < hi; ++i) d[i] = to_float(s[i]);
}
__attribute__((target("avx,f16c"))) void f32_to_f16_f16c(const float* s, float16* d, std::int64_t lo, std::int64_t hi) {
  std::int64_t i = lo;
  for (; i + 8 <= hi; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < hi; ++i) d[i] = to_float16(s[i]);
}
// float32 -> bfloat16 as half::float_to_bf16, written without a branch so that it vectorises:
// an AVX2 build of the loop, chosen at run time (SSE2's 16-byte version measured 3x slower than
// the F16C float16 loop). Not target_clones: its ifunc resolver runs before ThreadSanitizer is
// initialised and crashes a TSan build at start-up.
inline void f32_to_bf16_loop(const float* s, bfloat16* d, std::int64_t lo, std::int64_t hi) {
  for (std::int64_t i = lo; i < hi; ++i) {
    const auto x = std::bit_cast<std::uint32_t>(s[i]);
    const std::uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16, quiet_nan = (x >> 16) | 0x40u;
    d[i].bits = static_cast<std::uint16_t>((x & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
  }
}
__attribute__((target("avx2"))) void f32_to_bf16_avx2(const float* s, bfloat16* d, std::int64_t lo, std::int64_t hi) {
  f32_to_bf16_loop(s, d, lo, hi);
}
void f32_to_bf16(const float* s, bfloat16* d, std::int64_t lo, std::int64_t hi) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return f32_to_bf16_avx2(s, d, lo, hi);
  f32_to_bf16_loop(s, d, lo, hi);
}

bool has_f16c() {
  static const bool yes = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return yes;
}

}  // namespace

Tensor convert(const Tensor& x, DType to) {
  Tensor o = empty(x.shape(), to);
  const std::int64_t n = o.numel();
  dispatch_any(x.dtype(), [&](auto a) {
    return dispatch_any(to, [&](auto b) {
      using A = decltype(a);
      using B = decltype(b);
      const A* s = in<A>(x);
      B* d = out<B>(o);
      if constexpr (std::is_same_v<A, B>) {
        std::copy(s, s + n, d);
      } else if constexpr (std::is_same_v<A, float16> && std::is_same_v<B, float>) {
        parallel_range(n, [&](std::int64_t lo, std::int64_t hi) {
          if (has_f16c()) return f16_to_f32_f16c(s, d, lo, hi);
          for (std::int64_t i = lo; i < hi; ++i) d[i] = to_float(s[i]);
        });
      } else if constexpr (std::is_same_v<A, float> && std::is_same_v<B, bfloat16>) {
        parallel_range(n, [&](std::int64_t lo, std::int64_t hi) { f32_to_bf16(s, d, lo, hi); });
      } else if constexpr (std::is_same_v<A, float> && std::is_same_v<B, float16>) {
        parallel_range(n, [&](std::int64_t lo, std::int64_t hi) {
          if (has_f16c()) return f32_to_f16_f16c(s, d, lo, hi);
          for (std::int64_t i = lo; i < hi; ++i) d[i] = to_float16(s[i]);
        });
      } else {
        parallel_range(n, [&](std::int64_t lo, std::int64_t hi) {
          for (std::int64_t i = lo; i < hi; ++i) d[i] = narrow<B>(widen(s[i]));
        });
      }
      return 0;
    });
  });
  return o;
}

}  // namespace chainrule::kernels
