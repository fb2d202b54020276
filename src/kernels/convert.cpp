#include "kernels/convert.h"

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
