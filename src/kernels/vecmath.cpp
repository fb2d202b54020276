#include "kernels/vecmath.h"

#include <cmath>

#include "kernels/kernels.h"

namespace chainrule::kernels {

namespace {

// 2 sqrt(2/pi) (x + 0.044715 x^3): sigmoid of it is (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2.
template <class T>
T gelu_tanh_arg(T x) {
  return T(1.5957691216057307117597842397375L) * (x + T(0.044715) * x * x * x);
}

template <class T>
T scalar(VecFn f, T a) {
  switch (f) {
#define CHAINRULE_CASE(name) case VecFn::name: return std::name(a);
    CHAINRULE_CASE(exp) CHAINRULE_CASE(exp2) CHAINRULE_CASE(expm1) CHAINRULE_CASE(log) CHAINRULE_CASE(log2)
    CHAINRULE_CASE(log10) CHAINRULE_CASE(log1p) CHAINRULE_CASE(sin) CHAINRULE_CASE(cos) CHAINRULE_CASE(tan)
    CHAINRULE_CASE(asin) CHAINRULE_CASE(acos) CHAINRULE_CASE(atan) CHAINRULE_CASE(sinh) CHAINRULE_CASE(cosh)
    CHAINRULE_CASE(tanh) CHAINRULE_CASE(asinh) CHAINRULE_CASE(acosh) CHAINRULE_CASE(atanh) CHAINRULE_CASE(erf)
    CHAINRULE_CASE(erfc)
#undef CHAINRULE_CASE
    case VecFn::sigmoid: {  // from exp(-|a|), so that neither branch overflows
      const T e = std::exp(-std::abs(a));
      return a >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
    }
    case VecFn::gelu: return T(0.5) * a * std::erfc(a * T(-0.70710678118654752440L));
    case VecFn::gelu_tanh: return a * scalar(VecFn::sigmoid, gelu_tanh_arg(a));
  }
  return a;
}

template <class T>
void map_scalar(VecFn f, const T* a, T* d, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) d[i] = scalar(f, a[i]);
}

enum class Isa { avx512, avx2, scalar };
Isa detect() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
  return Isa::scalar;
}
Isa isa() {
  static const Isa cached = detect();
  return cached;
}

template <class T>
void map_any(VecFn f, const T* a, T* d, std::int64_t n) {
  switch (isa()) {
    case Isa::avx512: return avx512::map(f, a, d, n);
    case Isa::avx2: return avx2::map(f, a, d, n);
    case Isa::scalar: return map_scalar(f, a, d, n);
  }
}

}  // namespace

void vec_map(VecFn f, const float* a, float* d, std::int64_t n) { map_any(f, a, d, n); }
void vec_map(VecFn f, const double* a, double* d, std::int64_t n) { map_any(f, a, d, n); }
void vec_map_scalar(VecFn f, const float* a, float* d, std::int64_t n) { map_scalar(f, a, d, n); }
void vec_map_scalar(VecFn f, const double* a, double* d, std::int64_t n) { map_scalar(f, a, d, n); }

double sleef_limit(VecFn f, bool single) {
  switch (f) {
    case VecFn::sinh:
    case VecFn::cosh: return single ? 88.5 : 709.0;
    case VecFn::asinh:
    case VecFn::acosh: return single ? 1.84e19 : 1.34e154;
    case VecFn::log1p: return single ? 1e38 : 1e307;
    default: return 0;
  }
}
float wide_fallback(VecFn f, float x) { return static_cast<float>(scalar(f, static_cast<double>(x))); }
double wide_fallback(VecFn f, double x) { return static_cast<double>(scalar(f, static_cast<long double>(x))); }

const char* vec_isa() {
  switch (isa()) {
    case Isa::avx512: return "avx512f";
    case Isa::avx2: return "avx2";
    case Isa::scalar: break;
  }
  return "scalar";
}

Tensor vec_unary_forward(const char* name, const Tensor& x, VecFn f) {
  return dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    Tensor o = empty(x.shape(), x.dtype());
    const T* a = in<T>(x);
    T* d = out<T>(o);
    parallel_range(x.numel(), [&](std::int64_t b, std::int64_t e) { vec_map(f, a + b, d + b, e - b); });
    return o;
  });
}

}  // namespace chainrule::kernels
