// The vectorised transcendental kernels (src/kernels/vecmath*.cpp: SLEEF on AVX-512 or AVX2)
// against long-double <cmath> references, in ULPs, over every decade of each type's range, both
// signs, the vector tails and the IEEE edge cases (0, -0, +-inf, NaN, the largest finite,
// denormals). Each ISA path is called directly (kernels::avx512::map, kernels::avx2::map) where
// this CPU has it, and the primitives through the run-time dispatch.
//
// The bounds are fixed from SLEEF's documented accuracy (sleef.org, "u10": at most 1.0 ULP from
// the exact value; erfc is the "u15" function, 1.5 ULP; tanh 1.0001 ULP), not from measurement.
// The reference is the long-double value rounded to T (within 0.5 ULP of exact, plus long
// double's own error of ~2^-11 ULP of double), so a u10 result is at most 1 representable value
// from it, erfc at most 2. sigmoid is ours: e = exp(-|x|) (1 ULP), 1 + e and the division (0.5 ULP
// each) add to 2^-22 relatively, which is up to 4 ULP of a result at the bottom of its binade: 4.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "chainrule/chainrule.h"
#include "kernels/vecmath.h"

using namespace chainrule;
using kernels::VecFn;

namespace {

// x's position on the line of representable values, 0 and -0 both 0, +-inf next after +-max:
// the number of values between two of them is the difference of their positions.
std::int64_t position(float v) {
  std::int32_t i;
  std::memcpy(&i, &v, sizeof v);
  const std::int64_t mag = i & 0x7fffffff;
  return i < 0 ? -mag : mag;
}
std::int64_t position(double v) {
  std::int64_t i;
  std::memcpy(&i, &v, sizeof v);
  const std::int64_t mag = i & 0x7fffffffffffffff;
  return i < 0 ? -mag : mag;
}
template <class T>
std::int64_t ulps(T a, T b) {
  const std::int64_t pa = position(a), pb = position(b);
  // Opposite signs: the sum of the magnitudes, in unsigned (it may pass int64's range).
  const std::uint64_t d = (pa >= 0) == (pb >= 0)
                              ? static_cast<std::uint64_t>(pa > pb ? pa - pb : pb - pa)
                              : static_cast<std::uint64_t>(pa < 0 ? -pa : pa) + static_cast<std::uint64_t>(pb < 0 ? -pb : pb);
  const auto most = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return static_cast<std::int64_t>(d > most ? most : d);
}

template <class T>
std::vector<T> inputs() {
  using L = std::numeric_limits<T>;
  std::vector<T> v = {T(0), T(-0.0), L::infinity(), -L::infinity(), L::quiet_NaN(), L::max(), -L::max(), L::min(),
                      -L::min(), L::denorm_min(), -L::denorm_min(), L::min() / 3, -L::min() / 3, T(1), T(-1),
                      T(0.5), T(-0.5), T(88.72), T(-87.3), T(-103.9), T(709.7), T(-745.1), T(1e-30), T(1e30), T(88.5), T(89.4), T(709.0), T(710.4), T(1e38), T(1e307),
                      T(1.8e19), T(1.9e19), T(1.3e154), T(1.4e154),
                      std::nextafter(T(1), T(0)), std::nextafter(T(1), T(2)), std::nextafter(T(-1), T(0))};
  // Every decade of the type's range (denormals included), a few mantissas each, both signs.
  const int lo = L::min_exponent10 - L::digits10 - 1, hi = L::max_exponent10;
  for (int k = lo; k <= hi; ++k)
    for (double m : {1.0, 1.7, 3.14159, 5.5, 8.9}) {
      const T x = static_cast<T>(m * std::pow(10.0, k));
      v.push_back(x);
      v.push_back(-x);
    }
  // Densely over [-12, 12], where activations live, and over (0, 2] where log, acosh and atanh
  // bend; the odd lengths leave vector tails.
  for (int i = 0; i <= 24001; ++i) v.push_back(static_cast<T>(-12.0 + i * 0.001));
  for (int i = 1; i <= 4001; ++i) v.push_back(static_cast<T>(i * 0.0005));
  return v;
}

long double sigmoid_ref(long double x) { return 1.0L / (1.0L + std::exp(-x)); }

struct Fn {
  const char* name;
  VecFn fn;
  Tensor (*op)(const Tensor&);  // the primitive on this kernel (none for exp2, log2, log10)
  long double (*ref)(long double);
  int bound;  // ULPs from the long-double value rounded to the type (the header comment)
};
#define CHAINRULE_FN(name, bound) \
  Fn { #name, VecFn::name, chainrule::name, [](long double x) { return std::name(x); }, bound }
#define CHAINRULE_KERNEL_ONLY(name, bound) \
  Fn { #name, VecFn::name, nullptr, [](long double x) { return std::name(x); }, bound }
const Fn kFns[] = {
    CHAINRULE_FN(exp, 1),   CHAINRULE_KERNEL_ONLY(exp2, 1),  CHAINRULE_FN(expm1, 1), CHAINRULE_FN(log, 1),
    CHAINRULE_KERNEL_ONLY(log2, 1),  CHAINRULE_KERNEL_ONLY(log10, 1), CHAINRULE_FN(log1p, 1), CHAINRULE_FN(sin, 1),
    CHAINRULE_FN(cos, 1),   CHAINRULE_FN(tan, 1),   CHAINRULE_FN(asin, 1),  CHAINRULE_FN(acos, 1),
    CHAINRULE_FN(atan, 1),  CHAINRULE_FN(sinh, 1),  CHAINRULE_FN(cosh, 1),  CHAINRULE_FN(tanh, 1),
    CHAINRULE_FN(asinh, 1), CHAINRULE_FN(acosh, 1), CHAINRULE_FN(atanh, 1), CHAINRULE_FN(erf, 1),
    CHAINRULE_FN(erfc, 2),  Fn{"sigmoid", VecFn::sigmoid, sigmoid, sigmoid_ref, 4},
};
#undef CHAINRULE_FN
#undef CHAINRULE_KERNEL_ONLY

// The ways to reach the kernels: each ISA directly, and the primitive through the dispatch.
enum class Path { avx512, avx2, primitive };
bool available(Path p) {
  __builtin_cpu_init();
  switch (p) {
    case Path::avx512: return __builtin_cpu_supports("avx512f");
    case Path::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Path::primitive: break;
  }
  return true;
}
const char* path_name(Path p) { return p == Path::avx512 ? "avx512" : p == Path::avx2 ? "avx2" : "primitive"; }

template <class T>
std::vector<T> apply(Path p, const Fn& f, const std::vector<T>& xs) {
  const auto n = static_cast<std::int64_t>(xs.size());
  std::vector<T> d(xs.size());
  switch (p) {
    case Path::avx512: kernels::avx512::map(f.fn, xs.data(), d.data(), n); break;
    case Path::avx2: kernels::avx2::map(f.fn, xs.data(), d.data(), n); break;
    case Path::primitive: {
      const DType dt = sizeof(T) == 4 ? DType::f32 : DType::f64;
      d = f.op(from_vector(std::vector<double>(xs.begin(), xs.end()), Shape{n}).to(dt)).template to_vector<T>();
      break;
    }
  }
  return d;
}

template <class T>
void check_all(Path p) {
  if (!available(p)) GTEST_SKIP() << path_name(p) << ": not on this CPU";
  const std::vector<T> xs = inputs<T>();
  for (const Fn& f : kFns) {
    if (p == Path::primitive && !f.op) continue;
    const std::vector<T> got = apply(p, f, xs);
    std::int64_t worst = 0;
    int failures = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const T want = static_cast<T>(f.ref(static_cast<long double>(xs[i])));
      const T have = got[i];
      bool ok;
      if (std::isnan(want)) {
        ok = std::isnan(have);
      } else {
        ok = !std::isnan(have) && ulps(have, want) <= f.bound;
        worst = std::max(worst, std::isnan(have) ? std::numeric_limits<std::int64_t>::max() : ulps(have, want));
        if (xs[i] == 0 && want == 0) ok = ok && have == 0 && std::signbit(have) == std::signbit(want);  // sin(-0) = -0
      }
      if (!ok && ++failures <= 5)
        ADD_FAILURE() << path_name(p) << " " << f.name << "(" << xs[i] << ") = " << have << ", want " << want << " ("
                      << ulps(have, want) << " ulps, bound " << f.bound << ")";
    }
    EXPECT_EQ(failures, 0) << f.name;
    std::cout << path_name(p) << " " << (sizeof(T) == 4 ? "f32 " : "f64 ") << f.name << ": max " << worst
              << " ulp over " << xs.size() << " inputs (bound " << f.bound << ")\n";
  }
}

TEST(VecMath, Float32Avx512) { check_all<float>(Path::avx512); }
TEST(VecMath, Float64Avx512) { check_all<double>(Path::avx512); }
TEST(VecMath, Float32Avx2) { check_all<float>(Path::avx2); }
TEST(VecMath, Float64Avx2) { check_all<double>(Path::avx2); }
TEST(VecMath, Float32Primitive) { check_all<float>(Path::primitive); }
TEST(VecMath, Float64Primitive) { check_all<double>(Path::primitive); }

// gelu's fused kernels on each path against long double. Rounding x / sqrt 2 (or the tanh form's
// argument w) moves erfc (or sigmoid) by up to its condition number, about 2 (x/sqrt 2)^2 = x^2
// (or |w|) times the relative rounding u, on top of erfc's 1.5 ULP and two products (0.5 ULP
// each): a relative bound (4 + x^2) 2u for gelu and (4 + 3 |w|) 2u for the tanh form, fixed before
// measuring. Checked where the exact value is a normal number. float32 gelu on the vector paths
// is x E/2 or x (1 - E/2) with E = erfc(|x|/sqrt 2) = exp(-x^2/2) t S(t) (vecmath_avx512.cpp),
// whose exponent is exact (x^2 as h + lo): exp 1 ULP, the (1 - lo/2) fma 0.5, t's three
// roundings through erfc's log-derivative in t (at most 1.5) 2.5, the fit 0.06, the ten Horner
// steps on terms of one sign-dominated sum 2, and the three products 1.5: a flat bound of 8 ULP
// (in units of 2u), with no x^2 term.
template <class T>
void check_gelu(Path p) {
  if (!available(p)) GTEST_SKIP() << path_name(p) << ": not on this CPU";
  const long double u = std::numeric_limits<T>::epsilon() / 2;
  std::vector<T> xs = {T(0), T(-0.0), std::numeric_limits<T>::infinity(), -std::numeric_limits<T>::infinity()};
  for (int i = 0; i <= 24001; ++i) xs.push_back(static_cast<T>(-12.0 + i * 0.001));
  for (int k = -30; k <= 30; ++k) xs.push_back(static_cast<T>(std::pow(10.0, k))), xs.push_back(static_cast<T>(-std::pow(10.0, k)));
  const auto n = static_cast<std::int64_t>(xs.size());
  for (bool approx : {false, true}) {
    const VecFn fn = approx ? VecFn::gelu_tanh : VecFn::gelu;
    std::vector<T> got(xs.size());
    if (p == Path::avx512) kernels::avx512::map(fn, xs.data(), got.data(), n);
    else if (p == Path::avx2) kernels::avx2::map(fn, xs.data(), got.data(), n);
    else got = gelu(from_vector(std::vector<double>(xs.begin(), xs.end())).to(sizeof(T) == 4 ? DType::f32 : DType::f64), approx)
                   .template to_vector<T>();
    long double worst = 0;
    int failures = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const long double x = xs[i];
      const long double w = 1.5957691216057307117597842397375L * (x + 0.044715L * x * x * x);
      const long double want = approx ? x / (1 + std::exp(-w)) : 0.5L * x * std::erfc(-x / std::sqrt(2.0L));
      const T have = got[i];
      if (std::isinf(x)) {  // gelu(inf) = inf; gelu(-inf) is -inf · 0 in either form, left unchecked
        if (x > 0) {
          EXPECT_EQ(have, std::numeric_limits<T>::infinity()) << path_name(p);
        }
        continue;
      }
      if (std::abs(want) < std::numeric_limits<T>::min() || std::abs(want) > std::numeric_limits<T>::max()) continue;
      const long double rel = std::abs((static_cast<long double>(have) - want) / want) / (2 * u);
      const bool fitted = sizeof(T) == 4 && !approx && (p != Path::primitive || std::string(kernels::vec_isa()) != "scalar");
      const long double bound = approx ? 4 + 3 * std::abs(w) : fitted ? 8 : 4 + x * x;
      worst = std::max(worst, rel / bound);
      if (!(rel <= bound) && ++failures <= 5)
        ADD_FAILURE() << path_name(p) << (approx ? " gelu_tanh(" : " gelu(") << xs[i] << ") = " << have << ", want "
                      << static_cast<double>(want) << ": " << static_cast<double>(rel) << " ulps (bound " << static_cast<double>(bound) << ")";
    }
    EXPECT_EQ(failures, 0);
    std::cout << path_name(p) << (sizeof(T) == 4 ? " f32 " : " f64 ") << (approx ? "gelu_tanh" : "gelu")
              << ": worst error " << static_cast<double>(worst) << " of its bound\n";
  }
}
TEST(VecMath, GeluAvx512) { check_gelu<float>(Path::avx512); check_gelu<double>(Path::avx512); }
TEST(VecMath, GeluAvx2) { check_gelu<float>(Path::avx2); check_gelu<double>(Path::avx2); }
TEST(VecMath, GeluPrimitive) { check_gelu<float>(Path::primitive); check_gelu<double>(Path::primitive); }

// Every length from 0 to 40 (vector bodies, masked tails, lengths below one vector) on each
// path, in place and not: each element as the same function of that element alone, nothing
// written past the end.
template <class T>
void check_tails(Path p) {
  if (!available(p)) return;
  const Fn& f = kFns[0];  // exp
  for (std::size_t n = 0; n <= 40; ++n) {
    std::vector<T> xs(n);
    for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<T>(0.37 * static_cast<double>(i) - 5.0);
    std::vector<T> got = apply(p, f, xs);
    ASSERT_EQ(got.size(), n);
    for (std::size_t i = 0; i < n; ++i)
      EXPECT_EQ(got[i], apply(p, f, std::vector<T>{xs[i]})[0]) << path_name(p) << " n=" << n << " i=" << i;
    if (p == Path::primitive) continue;
    std::vector<T> buf = xs;
    buf.push_back(T(-7));  // a guard past the end
    const auto len = static_cast<std::int64_t>(n);
    if (p == Path::avx512) kernels::avx512::map(f.fn, buf.data(), buf.data(), len);
    else kernels::avx2::map(f.fn, buf.data(), buf.data(), len);
    for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(buf[i], got[i]) << path_name(p) << " in place n=" << n;
    EXPECT_EQ(buf[n], T(-7)) << path_name(p) << " wrote past the end, n=" << n;
  }
}

TEST(VecMath, TailsMatchElementByElement) {
  for (Path p : {Path::avx512, Path::avx2, Path::primitive}) {
    check_tails<float>(p);
    check_tails<double>(p);
  }
}

}  // namespace
