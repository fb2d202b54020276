// The AVX-512 kernels of vecmath.h, compiled with -mavx512f -mfma (CMakeLists.txt). This file
// calls only SLEEF and intrinsics: inline library code compiled here could be chosen by the linker
// for baseline callers too, and fault on a CPU without AVX-512.
#include <immintrin.h>
#include <sleef.h>

#include "kernels/vecmath.h"

namespace chainrule::kernels::avx512 {

namespace {

// SLEEF's exp, with the division of the scalar kernel: e / (1 + e) for x < 0, 1 / (1 + e) else.
__m512 sigmoid_f(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = Sleef_expf16_u10avx512f(_mm512_castsi512_ps(
      _mm512_or_si512(_mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int>(0x80000000u)))));  // exp(-|x|)
  const __m512 den = _mm512_add_ps(one, e);
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_div_ps(_mm512_mask_blend_ps(neg, one, e), den);
}
__m512d sigmoid_d(__m512d x) {
  const __m512d one = _mm512_set1_pd(1.0);
  const __m512d e = Sleef_expd8_u10avx512f(_mm512_castsi512_pd(
      _mm512_or_si512(_mm512_castpd_si512(x), _mm512_set1_epi64(static_cast<long long>(0x8000000000000000ull)))));
  const __m512d den = _mm512_add_pd(one, e);
  const __mmask8 neg = _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_LT_OQ);
  return _mm512_div_pd(_mm512_mask_blend_pd(neg, one, e), den);
}

// The lanes past SLEEF's documented range (sleef_limit, vecmath.h) again, one at a time.
__m512 patch(VecFn f, __m512 x, __m512 r, __mmask16 lanes) {
  alignas(64) float xs[16], rs[16];
  _mm512_store_ps(xs, x);
  _mm512_store_ps(rs, r);
  for (int k = 0; k < 16; ++k)
    if ((lanes >> k) & 1) rs[k] = wide_fallback(f, xs[k]);
  return _mm512_load_ps(rs);
}
__m512d patch(VecFn f, __m512d x, __m512d r, __mmask8 lanes) {
  alignas(64) double xs[8], rs[8];
  _mm512_store_pd(xs, x);
  _mm512_store_pd(rs, r);
  for (int k = 0; k < 8; ++k)
    if ((lanes >> k) & 1) rs[k] = wide_fallback(f, xs[k]);
  return _mm512_load_pd(rs);
}

// x erfc(-x / sqrt 2) / 2, and x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)) (vecmath.h).
// gelu in float32 from one exp: erfc(z) = exp(-z^2) t S(t) with z = |x|/sqrt 2, t = 1 / (1 + z/2)
// and S a degree-10 least-squares fit of erfc(z) exp(z^2) / t on z in [0, 10.5] (relative error
// 3.7e-9; beyond 10.5, |x| > 14.8, the exp underflows). exp(-x^2/2) takes x^2 exactly as h + lo
// (an fma), exp(-h/2) (1 - lo/2), so no rounding of x/sqrt 2 reaches the exponent. gelu is
// x E/2 for x <= 0 and x (1 - E/2) for x > 0 (E <= 1: no cancellation; inf stays inf). |x| is clamped at 20 (E is
// 0 there) so that x^2 neither overflows nor leaves lo a NaN.
__m512 gelu_f(__m512 x) {
  // maskz_min (all lanes): GCC 12 warns on the undefined source register of _mm512_min_ps.
  const __m512 ax = _mm512_maskz_min_ps(0xffff, _mm512_abs_ps(x), _mm512_set1_ps(20.0f));
  const __m512 h = _mm512_mul_ps(ax, ax), lo = _mm512_fmsub_ps(ax, ax, h);
  const __m512 e = Sleef_expf16_u10avx512f(_mm512_mul_ps(h, _mm512_set1_ps(-0.5f)));
  const __m512 g = _mm512_fnmadd_ps(_mm512_mul_ps(e, _mm512_set1_ps(0.5f)), lo, e);
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(ax, _mm512_set1_ps(0.35355339059327376f), one));
  __m512 s = _mm512_set1_ps(0.036333332669389969674f);
  s = _mm512_fmadd_ps(s, t, _mm512_set1_ps(-0.19438870304250109905f));
  s = _mm512_fmadd_ps(s, t, _mm512_set1_ps(0.39013225417713084886f));
  s = _mm512_fmadd_ps(s, t, _mm512_set1_ps(-0.30261733509205429187f));
  s = _mm512_fmadd_ps(s, t, _mm512_set1_ps(-0.0095748965915633607238f));
  s = _mm512_fmadd_ps(s, t, _mm512_set1_ps(0.027599499673812775507f));
  s = _mm512_fmadd_ps(s, t, _mm512_set1_ps(0.058172091375366600786f));
  s = _mm512_fmadd_ps(s, t, _mm512_set1_ps(0.18467845569181546769f));
  s = _mm512_fmadd_ps(s, t, _mm512_set1_ps(0.24533964116681217453f));
  s = _mm512_fmadd_ps(s, t, _mm512_set1_ps(0.28223646248361867283f));
  s = _mm512_fmadd_ps(s, t, _mm512_set1_ps(0.2820892011316886548f));
  const __m512 he = _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_mul_ps(_mm512_mul_ps(g, t), s));  // E/2
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LE_OQ);
  return _mm512_mul_ps(x, _mm512_mask_blend_ps(neg, _mm512_sub_ps(one, he), he));
}
__m512d gelu_d(__m512d x) {
  const __m512d e = Sleef_erfcd8_u15avx512f(_mm512_mul_pd(x, _mm512_set1_pd(-0.70710678118654752440)));
  return _mm512_mul_pd(_mm512_mul_pd(_mm512_set1_pd(0.5), x), e);
}
__m512 gelu_tanh_f(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 u = _mm512_mul_ps(_mm512_set1_ps(1.5957691216057307f), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
  return _mm512_mul_ps(x, sigmoid_f(u));
}
__m512d gelu_tanh_d(__m512d x) {
  const __m512d x3 = _mm512_mul_pd(_mm512_mul_pd(x, x), x);
  const __m512d u = _mm512_mul_pd(_mm512_set1_pd(1.5957691216057307117), _mm512_fmadd_pd(_mm512_set1_pd(0.044715), x3, x));
  return _mm512_mul_pd(x, sigmoid_d(u));
}

// Full vectors, then the tail under a mask (its unused lanes read as zero, never stored); lanes
// with |x| > limit (none when limit is 0; never a NaN) through patch.
template <class Fn>
void run(Fn fn, VecFn f, const float* a, float* d, std::int64_t n) {
  const auto limit = static_cast<float>(sleef_limit(f, true));
  const __m512 lim = _mm512_set1_ps(limit);
  auto eval = [&](__m512 x) {
    const __m512 r = fn(x);
    if (limit == 0) return r;
    const __mmask16 out = _mm512_cmp_ps_mask(_mm512_abs_ps(x), lim, _CMP_GT_OQ);
    return out ? patch(f, x, r, out) : r;
  };
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, eval(_mm512_loadu_ps(a + i)));
  if (i < n) {
    const auto m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(d + i, m, eval(_mm512_maskz_loadu_ps(m, a + i)));
  }
}
template <class Fn>
void run(Fn fn, VecFn f, const double* a, double* d, std::int64_t n) {
  const double limit = sleef_limit(f, false);
  const __m512d lim = _mm512_set1_pd(limit);
  auto eval = [&](__m512d x) {
    const __m512d r = fn(x);
    if (limit == 0) return r;
    const __mmask8 out = _mm512_cmp_pd_mask(_mm512_abs_pd(x), lim, _CMP_GT_OQ);
    return out ? patch(f, x, r, out) : r;
  };
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm512_storeu_pd(d + i, eval(_mm512_loadu_pd(a + i)));
  if (i < n) {
    const auto m = static_cast<__mmask8>((1u << (n - i)) - 1);
    _mm512_mask_storeu_pd(d + i, m, eval(_mm512_maskz_loadu_pd(m, a + i)));
  }
}

}  // namespace

void map(VecFn f, const float* a, float* d, std::int64_t n) {
  switch (f) {
#define CHAINRULE_CASE(name) case VecFn::name: return run(Sleef_##name##f16_u10avx512f, f, a, d, n);
    CHAINRULE_CASE(exp) CHAINRULE_CASE(exp2) CHAINRULE_CASE(expm1) CHAINRULE_CASE(log) CHAINRULE_CASE(log2)
    CHAINRULE_CASE(log10) CHAINRULE_CASE(log1p) CHAINRULE_CASE(sin) CHAINRULE_CASE(cos) CHAINRULE_CASE(tan)
    CHAINRULE_CASE(asin) CHAINRULE_CASE(acos) CHAINRULE_CASE(atan) CHAINRULE_CASE(sinh) CHAINRULE_CASE(cosh)
    CHAINRULE_CASE(tanh) CHAINRULE_CASE(asinh) CHAINRULE_CASE(acosh) CHAINRULE_CASE(atanh) CHAINRULE_CASE(erf)
#undef CHAINRULE_CASE
    case VecFn::erfc: return run(Sleef_erfcf16_u15avx512f, f, a, d, n);
    case VecFn::sigmoid: return run(sigmoid_f, f, a, d, n);
    case VecFn::gelu: return run(gelu_f, f, a, d, n);
    case VecFn::gelu_tanh: return run(gelu_tanh_f, f, a, d, n);
  }
}
void map(VecFn f, const double* a, double* d, std::int64_t n) {
  switch (f) {
#define CHAINRULE_CASE(name) case VecFn::name: return run(Sleef_##name##d8_u10avx512f, f, a, d, n);
    CHAINRULE_CASE(exp) CHAINRULE_CASE(exp2) CHAINRULE_CASE(expm1) CHAINRULE_CASE(log) CHAINRULE_CASE(log2)
    CHAINRULE_CASE(log10) CHAINRULE_CASE(log1p) CHAINRULE_CASE(sin) CHAINRULE_CASE(cos) CHAINRULE_CASE(tan)
    CHAINRULE_CASE(asin) CHAINRULE_CASE(acos) CHAINRULE_CASE(atan) CHAINRULE_CASE(sinh) CHAINRULE_CASE(cosh)
    CHAINRULE_CASE(tanh) CHAINRULE_CASE(asinh) CHAINRULE_CASE(acosh) CHAINRULE_CASE(atanh) CHAINRULE_CASE(erf)
#undef CHAINRULE_CASE
    case VecFn::erfc: return run(Sleef_erfcd8_u15avx512f, f, a, d, n);
    case VecFn::sigmoid: return run(sigmoid_d, f, a, d, n);
    case VecFn::gelu: return run(gelu_d, f, a, d, n);
    case VecFn::gelu_tanh: return run(gelu_tanh_d, f, a, d, n);
  }
}

}  // namespace chainrule::kernels::avx512
