#pragma once
// Transcendental functions over contiguous float arrays, vectorised with SLEEF's 1.0-ULP
// functions (erfc: 1.5 ULP), the library PyTorch's CPU kernels use, on AVX-512 or AVX2 as the CPU
// says at run time; <cmath> one element at a time elsewhere (and under valgrind, whose CPU has no
// AVX-512). Results may differ in the last bit between the three paths, never by more than the
// stated bound from the correctly rounded value. Deterministic on one machine.
#include <cstdint>

namespace chainrule {
class Tensor;
}

namespace chainrule::kernels {

// X(name): the functions with a vector kernel (sigmoid is 1 / (1 + exp(-|x|)) on SLEEF's exp;
// gelu is x erfc(-x / sqrt 2) / 2 and gelu_tanh x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), the
// forms of 0.5 x (1 + erf) and 0.5 x (1 + tanh) without their cancellation for negative x).
#define CHAINRULE_VEC_FUNCTIONS(X)                                                                          \
  X(exp) X(exp2) X(expm1) X(log) X(log2) X(log10) X(log1p) X(sin) X(cos) X(tan) X(asin) X(acos) X(atan)   \
  X(sinh) X(cosh) X(tanh) X(asinh) X(acosh) X(atanh) X(erf) X(erfc) X(sigmoid) \
  X(gelu) X(gelu_tanh)

enum class VecFn : int {
#define CHAINRULE_VEC_ENUM(name) name,
  CHAINRULE_VEC_FUNCTIONS(CHAINRULE_VEC_ENUM)
#undef CHAINRULE_VEC_ENUM
};

// d[i] = f(a[i]) for i in [0, n); a and d may be the same array.
void vec_map(VecFn f, const float* a, float* d, std::int64_t n);
void vec_map(VecFn f, const double* a, double* d, std::int64_t n);
// The same on the scalar <cmath> path whatever the CPU (the reference for tests and benchmarks).
void vec_map_scalar(VecFn f, const float* a, float* d, std::int64_t n);
void vec_map_scalar(VecFn f, const double* a, double* d, std::int64_t n);

// "avx512f", "avx2" or "scalar": the path vec_map takes on this CPU.
const char* vec_isa();

// SLEEF's u10 sinh, cosh, asinh, acosh and log1p keep their 1-ULP bound only up to a magnitude
// below where the result overflows (sinhf: |x| <= 88.5, asinhf: 1.84e19; SLEEF's reference
// manual), and return inf past it. The kernels recompute those rare lanes with wide_fallback: the
// <cmath> function one precision up (float64 for float, long double for double), rounded.
// sleef_limit is that magnitude, 0 where SLEEF's bound holds everywhere.
double sleef_limit(VecFn f, bool single);
float wide_fallback(VecFn f, float x);
double wide_fallback(VecFn f, double x);

// The per-ISA kernels (vecmath_avx512.cpp, vecmath_avx2.cpp); call only where the CPU has the ISA.
namespace avx512 {
void map(VecFn f, const float* a, float* d, std::int64_t n);
void map(VecFn f, const double* a, double* d, std::int64_t n);
}  // namespace avx512
namespace avx2 {
void map(VecFn f, const float* a, float* d, std::int64_t n);
void map(VecFn f, const double* a, double* d, std::int64_t n);
}  // namespace avx2

// The forward kernel of a unary float primitive: f elementwise in x's dtype, rows on the thread
// team. (Tensor only declared: the per-ISA files include this header and must compile no inline
// library code, see vecmath_avx512.cpp.)
Tensor vec_unary_forward(const char* name, const Tensor& x, VecFn f);

}  // namespace chainrule::kernels
