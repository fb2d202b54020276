// The AVX2 kernels of vecmath.h, compiled with -mavx2 -mfma (CMakeLists.txt). As in
// vecmath_avx512.cpp: only SLEEF and intrinsics here.
#include <immintrin.h>
#include <sleef.h>

#include "kernels/vecmath.h"

namespace chainrule::kernels::avx2 {

namespace {

__m256 sigmoid_f(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = Sleef_expf8_u10avx2(_mm256_or_ps(x, _mm256_set1_ps(-0.0f)));  // exp(-|x|)
  const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_div_ps(_mm256_blendv_ps(one, e, neg), _mm256_add_ps(one, e));
}
__m256d sigmoid_d(__m256d x) {
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d e = Sleef_expd4_u10avx2(_mm256_or_pd(x, _mm256_set1_pd(-0.0)));
  const __m256d neg = _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_LT_OQ);
  return _mm256_div_pd(_mm256_blendv_pd(one, e, neg), _mm256_add_pd(one, e));
}

// x erfc(-x / sqrt 2) / 2, and x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)) (vecmath.h).
// gelu in float32 (as vecmath_avx512.cpp) from one exp: erfc(z) = exp(-z^2) t S(t) with z = |x|/sqrt 2, t = 1 / (1 + z/2)
// and S a degree-10 least-squares fit of erfc(z) exp(z^2) / t on z in [0, 10.5] (relative error
// 3.7e-9; beyond 10.5, |x| > 14.8, the exp underflows). exp(-x^2/2) takes x^2 exactly as h + lo
// (an fma), exp(-h/2) (1 - lo/2), so no rounding of x/sqrt 2 reaches the exponent. gelu is
// x E/2 for x <= 0 and x (1 - E/2) for x > 0 (E <= 1: no cancellation; inf stays inf). |x| is clamped at 20 (E is
// 0 there) so that x^2 neither overflows nor leaves lo a NaN.
__m256 gelu_f(__m256 x) {
  const __m256 ax = _mm256_min_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), _mm256_set1_ps(20.0f));
  const __m256 h = _mm256_mul_ps(ax, ax), lo = _mm256_fmsub_ps(ax, ax, h);
  const __m256 e = Sleef_expf8_u10avx2(_mm256_mul_ps(h, _mm256_set1_ps(-0.5f)));
  const __m256 g = _mm256_fnmadd_ps(_mm256_mul_ps(e, _mm256_set1_ps(0.5f)), lo, e);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(ax, _mm256_set1_ps(0.35355339059327376f), one));
  __m256 s = _mm256_set1_ps(0.036333332669389969674f);
  s = _mm256_fmadd_ps(s, t, _mm256_set1_ps(-0.19438870304250109905f));
  s = _mm256_fmadd_ps(s, t, _mm256_set1_ps(0.39013225417713084886f));
  s = _mm256_fmadd_ps(s, t, _mm256_set1_ps(-0.30261733509205429187f));
  s = _mm256_fmadd_ps(s, t, _mm256_set1_ps(-0.0095748965915633607238f));
  s = _mm256_fmadd_ps(s, t, _mm256_set1_ps(0.027599499673812775507f));
  s = _mm256_fmadd_ps(s, t, _mm256_set1_ps(0.058172091375366600786f));
  s = _mm256_fmadd_ps(s, t, _mm256_set1_ps(0.18467845569181546769f));
  s = _mm256_fmadd_ps(s, t, _mm256_set1_ps(0.24533964116681217453f));
  s = _mm256_fmadd_ps(s, t, _mm256_set1_ps(0.28223646248361867283f));
  s = _mm256_fmadd_ps(s, t, _mm256_set1_ps(0.2820892011316886548f));
  const __m256 he = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_mul_ps(_mm256_mul_ps(g, t), s));  // E/2
  const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LE_OQ);
  return _mm256_mul_ps(x, _mm256_blendv_ps(_mm256_sub_ps(one, he), he, neg));
}
__m256d gelu_d(__m256d x) {
  const __m256d e = Sleef_erfcd4_u15avx2(_mm256_mul_pd(x, _mm256_set1_pd(-0.70710678118654752440)));
  return _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(0.5), x), e);
}
__m256 gelu_tanh_f(__m256 x) {
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 u = _mm256_mul_ps(_mm256_set1_ps(1.5957691216057307f), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
  return _mm256_mul_ps(x, sigmoid_f(u));
}
__m256d gelu_tanh_d(__m256d x) {
  const __m256d x3 = _mm256_mul_pd(_mm256_mul_pd(x, x), x);
  const __m256d u = _mm256_mul_pd(_mm256_set1_pd(1.5957691216057307117), _mm256_fmadd_pd(_mm256_set1_pd(0.044715), x3, x));
  return _mm256_mul_pd(x, sigmoid_d(u));
}

// Lane masks for the tail: lanes [0, k) set, as maskload/maskstore read them (the sign bit).
__m256i tail_mask32(std::int64_t k) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(k)), lanes);
}
__m256i tail_mask64(std::int64_t k) {
  const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(k), lanes);
}

// The lanes past SLEEF's documented range (sleef_limit, vecmath.h) again, one at a time.
__m256 patch(VecFn f, __m256 x, __m256 r, int lanes) {
  alignas(32) float xs[8], rs[8];
  _mm256_store_ps(xs, x);
  _mm256_store_ps(rs, r);
  for (int k = 0; k < 8; ++k)
    if ((lanes >> k) & 1) rs[k] = wide_fallback(f, xs[k]);
  return _mm256_load_ps(rs);
}
__m256d patch(VecFn f, __m256d x, __m256d r, int lanes) {
  alignas(32) double xs[4], rs[4];
  _mm256_store_pd(xs, x);
  _mm256_store_pd(rs, r);
  for (int k = 0; k < 4; ++k)
    if ((lanes >> k) & 1) rs[k] = wide_fallback(f, xs[k]);
  return _mm256_load_pd(rs);
}

// Full vectors, then the tail under a mask (its unused lanes read as zero, never stored); lanes
// with |x| > limit (none when limit is 0; never a NaN) through patch.
template <class Fn>
void run(Fn fn, VecFn f, const float* a, float* d, std::int64_t n) {
  const auto limit = static_cast<float>(sleef_limit(f, true));
  const __m256 lim = _mm256_set1_ps(limit), sign = _mm256_set1_ps(-0.0f);
  auto eval = [&](__m256 x) {
    const __m256 r = fn(x);
    if (limit == 0) return r;
    const int out = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, x), lim, _CMP_GT_OQ));
    return out ? patch(f, x, r, out) : r;
  };
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, eval(_mm256_loadu_ps(a + i)));
  if (i < n) {
    const __m256i m = tail_mask32(n - i);
    _mm256_maskstore_ps(d + i, m, eval(_mm256_maskload_ps(a + i, m)));
  }
}
template <class Fn>
void run(Fn fn, VecFn f, const double* a, double* d, std::int64_t n) {
  const double limit = sleef_limit(f, false);
  const __m256d lim = _mm256_set1_pd(limit), sign = _mm256_set1_pd(-0.0);
  auto eval = [&](__m256d x) {
    const __m256d r = fn(x);
    if (limit == 0) return r;
    const int out = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_andnot_pd(sign, x), lim, _CMP_GT_OQ));
    return out ? patch(f, x, r, out) : r;
  };
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) _mm256_storeu_pd(d + i, eval(_mm256_loadu_pd(a + i)));
  if (i < n) {
    const __m256i m = tail_mask64(n - i);
    _mm256_maskstore_pd(d + i, m, eval(_mm256_maskload_pd(a + i, m)));
  }
}

}  // namespace

void map(VecFn f, const float* a, float* d, std::int64_t n) {
  switch (f) {
#define CHAINRULE_CASE(name) case VecFn::name: return run(Sleef_##name##f8_u10avx2, f, a, d, n);
    CHAINRULE_CASE(exp) CHAINRULE_CASE(exp2) CHAINRULE_CASE(expm1) CHAINRULE_CASE(log) CHAINRULE_CASE(log2)
    CHAINRULE_CASE(log10) CHAINRULE_CASE(log1p) CHAINRULE_CASE(sin) CHAINRULE_CASE(cos) CHAINRULE_CASE(tan)
    CHAINRULE_CASE(asin) CHAINRULE_CASE(acos) CHAINRULE_CASE(atan) CHAINRULE_CASE(sinh) CHAINRULE_CASE(cosh)
    CHAINRULE_CASE(tanh) CHAINRULE_CASE(asinh) CHAINRULE_CASE(acosh) CHAINRULE_CASE(atanh) CHAINRULE_CASE(erf)
#undef CHAINRULE_CASE
    case VecFn::erfc: return run(Sleef_erfcf8_u15avx2, f, a, d, n);
    case VecFn::sigmoid: return run(sigmoid_f, f, a, d, n);
    case VecFn::gelu: return run(gelu_f, f, a, d, n);
    case VecFn::gelu_tanh: return run(gelu_tanh_f, f, a, d, n);
  }
}
void map(VecFn f, const double* a, double* d, std::int64_t n) {
  switch (f) {
#define CHAINRULE_CASE(name) case VecFn::name: return run(Sleef_##name##d4_u10avx2, f, a, d, n);
    CHAINRULE_CASE(exp) CHAINRULE_CASE(exp2) CHAINRULE_CASE(expm1) CHAINRULE_CASE(log) CHAINRULE_CASE(log2)
    CHAINRULE_CASE(log10) CHAINRULE_CASE(log1p) CHAINRULE_CASE(sin) CHAINRULE_CASE(cos) CHAINRULE_CASE(tan)
    CHAINRULE_CASE(asin) CHAINRULE_CASE(acos) CHAINRULE_CASE(atan) CHAINRULE_CASE(sinh) CHAINRULE_CASE(cosh)
    CHAINRULE_CASE(tanh) CHAINRULE_CASE(asinh) CHAINRULE_CASE(acosh) CHAINRULE_CASE(atanh) CHAINRULE_CASE(erf)
#undef CHAINRULE_CASE
    case VecFn::erfc: return run(Sleef_erfcd4_u15avx2, f, a, d, n);
    case VecFn::sigmoid: return run(sigmoid_d, f, a, d, n);
    case VecFn::gelu: return run(gelu_d, f, a, d, n);
    case VecFn::gelu_tanh: return run(gelu_tanh_d, f, a, d, n);
  }
}

}  // namespace chainrule::kernels::avx2
