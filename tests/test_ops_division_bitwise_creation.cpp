// floor_divide, remainder, the bitwise operations (src/ops/math.cpp), tril/triu and the creation
// functions linspace, arange, full_like (src/ops/manip.cpp): values against hand-written loops
// and Python's own results, derivatives against finite differences, and the errors on bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "chainrule/chainrule.h"
#include "chainrule/ops/array_api.h"

using namespace chainrule;

namespace {

Tensor f64s(std::vector<double> v, Shape s = {}) {
  if (s.size() == 0) s = Shape{static_cast<std::int64_t>(v.size())};
  return tensor(v, s, DType::f64);
}
Tensor i64s(std::vector<std::int64_t> v) { return from_vector(v); }

// Python 3: divmod(a, b) for the pairs below, written out by hand.
TEST(Division, FloatMatchesPythonDivmod) {
  const std::vector<double> a = {7, -7, 7, -7, 7.5, -7.5, 1, 0, -0.0, 5, 1e300};
  const std::vector<double> b = {2, 2, -2, -2, 2, 2, 0.1, 3, 3, -0.5, 1e-300};
  // 7//2=3, -7//2=-4, 7//-2=-4, -7//-2=3, 7.5//2=3, -7.5//2=-4, 1//0.1=9 (not 10), 0//3=0,
  // -0.0//3=-0.0, 5//-0.5=-10, 1e300//1e-300=inf
  const std::vector<double> q = {3, -4, -4, 3, 3, -4, 9, 0, -0.0, -10, std::numeric_limits<double>::infinity()};
  // 7%2=1, -7%2=1, 7%-2=-1, -7%-2=-1, 7.5%2=1.5, -7.5%2=0.5, 1%0.1=0.09999999999999995, 0%3=0,
  // -0.0%3=0.0, 5%-0.5=-0.0
  const std::vector<double> r = {1, 1, -1, -1, 1.5, 0.5, 0.09999999999999995, 0, 0.0, -0.0};
  const auto gq = floor_divide(f64s(a), f64s(b)).to_vector<double>();
  const auto gr = remainder(f64s(a), f64s(b)).to_vector<double>();
  for (std::size_t i = 0; i < q.size(); ++i) {
    EXPECT_EQ(gq[i], q[i]) << a[i] << " // " << b[i];
    EXPECT_EQ(std::signbit(gq[i]), std::signbit(q[i])) << a[i] << " // " << b[i];
  }
  for (std::size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(gr[i], r[i]) << a[i] << " % " << b[i];
    EXPECT_EQ(std::signbit(gr[i]), std::signbit(r[i])) << a[i] << " % " << b[i];
  }
  // Division by zero in floats follows IEEE (NumPy): +-inf or NaN, and a NaN remainder.
  const auto z = floor_divide(f64s({1, -1, 0}), f64s({0, 0, 0})).to_vector<double>();
  EXPECT_EQ(z[0], std::numeric_limits<double>::infinity());
  EXPECT_EQ(z[1], -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(z[2]));
  EXPECT_TRUE(std::isnan(remainder(f64s({1}), f64s({0})).to_vector<double>()[0]));
  // float32 keeps its dtype
  EXPECT_EQ(remainder(cast(f64s({-7}), DType::f32), cast(f64s({2}), DType::f32)).dtype(), DType::f32);
}

// The identity a == floor_divide(a, b) * b + remainder(a, b) and |remainder| < |b| with b's sign,
// over every pair of a grid of integers, against a reference written with std::floor.
TEST(Division, IntegerMatchesFloorReference) {
  std::vector<std::int64_t> as, bs;
  for (std::int64_t a = -9; a <= 9; ++a)
    for (std::int64_t b = -4; b <= 4; ++b)
      if (b != 0) as.push_back(a), bs.push_back(b);
  const auto q = floor_divide(i64s(as), i64s(bs));
  const auto r = remainder(i64s(as), i64s(bs));
  EXPECT_EQ(q.dtype(), DType::i64);
  EXPECT_EQ(r.dtype(), DType::i64);
  const auto qv = q.to_vector<std::int64_t>(), rv = r.to_vector<std::int64_t>();
  for (std::size_t i = 0; i < as.size(); ++i) {
    const auto want = static_cast<std::int64_t>(std::floor(static_cast<double>(as[i]) / static_cast<double>(bs[i])));
    EXPECT_EQ(qv[i], want) << as[i] << " // " << bs[i];
    EXPECT_EQ(rv[i], as[i] - want * bs[i]) << as[i] << " % " << bs[i];
  }
  // INT64_MIN // -1 wraps as in NumPy (no undefined behaviour), remainder 0.
  const std::int64_t lo = std::numeric_limits<std::int64_t>::min();
  EXPECT_EQ(floor_divide(i64s({lo}), i64s({-1})).to_vector<std::int64_t>()[0], lo);
  EXPECT_EQ(remainder(i64s({lo}), i64s({-1})).to_vector<std::int64_t>()[0], 0);
  // Broadcasting and promotion: int64 against float64 runs in float64.
  const auto m = remainder(i64s({-5, 5}), f64s({3}));
  EXPECT_EQ(m.dtype(), DType::f64);
  EXPECT_EQ(m.to_vector<double>(), (std::vector<double>{1, 2}));
}

TEST(Division, BadInput) {
  EXPECT_THROW(floor_divide(i64s({1, 2}), i64s({1, 0})), ValueError);
  EXPECT_THROW(remainder(i64s({1}), i64s({0})), ValueError);
  EXPECT_THROW(remainder(f64s({1, 2, 3}), f64s({1, 2})), ShapeError);
  EXPECT_THROW(floor_divide(from_vector(std::vector<bool>{true}), from_vector(std::vector<bool>{true})), DTypeError);
}

TEST(Division, RemainderDerivatives) {
  // d/da = 1, d/db = -floor(a / b), away from the jumps.
  const Tensor a = f64s({2.3, -2.3, 0.7}), b = f64s({0.9, 0.9, -0.4});
  auto f = [&](const Tensor& x, const Tensor& y) { return sum(remainder(x, y)); };
  const Tensor ga = grad([&](const Tensor& x) { return f(x, b); })(a);
  const Tensor gb = grad([&](const Tensor& y) { return f(a, y); })(b);
  EXPECT_EQ(ga.to_vector<double>(), (std::vector<double>{1, 1, 1}));
  EXPECT_EQ(gb.to_vector<double>(), (std::vector<double>{-2, 3, 2}));  // -floor(2.56), -floor(-2.56), -floor(-1.75)
  // floor_divide is a constant to every transform.
  const Tensor gq = grad([&](const Tensor& x) { return sum(mul(floor_divide(x, b), x)); })(a);
  EXPECT_EQ(gq.to_vector<double>(), floor_divide(a, b).to_vector<double>());
}

TEST(Bitwise, MatchesReferenceLoops) {
  const std::vector<std::int64_t> a = {0, 1, -1, 6, 12345, -98765, std::numeric_limits<std::int64_t>::min()};
  const std::vector<std::int64_t> b = {0, 3, 5, -2, 255, 1 << 20, -1};
  const auto ands = bitwise_and(i64s(a), i64s(b)).to_vector<std::int64_t>();
  const auto ors = bitwise_or(i64s(a), i64s(b)).to_vector<std::int64_t>();
  const auto xors = bitwise_xor(i64s(a), i64s(b)).to_vector<std::int64_t>();
  const auto nots = bitwise_not(i64s(a)).to_vector<std::int64_t>();
  for (std::size_t i = 0; i < a.size(); ++i) {
    // bit by bit, as unsigned words
    std::uint64_t wa = static_cast<std::uint64_t>(a[i]), wb = static_cast<std::uint64_t>(b[i]), x = 0, y = 0, z = 0, n = 0;
    for (int k = 0; k < 64; ++k) {
      const std::uint64_t p = (wa >> k) & 1, q = (wb >> k) & 1;
      x |= (p && q ? 1ull : 0ull) << k;
      y |= (p || q ? 1ull : 0ull) << k;
      z |= (p != q ? 1ull : 0ull) << k;
      n |= (p ? 0ull : 1ull) << k;
    }
    EXPECT_EQ(static_cast<std::uint64_t>(ands[i]), x) << i;
    EXPECT_EQ(static_cast<std::uint64_t>(ors[i]), y) << i;
    EXPECT_EQ(static_cast<std::uint64_t>(xors[i]), z) << i;
    EXPECT_EQ(static_cast<std::uint64_t>(nots[i]), n) << i;
  }
  // bool is logical; bool with int64 promotes to int64; broadcasting.
  const Tensor t = from_vector(std::vector<bool>{true, true, false, false});
  const Tensor u = from_vector(std::vector<bool>{true, false, true, false});
  EXPECT_EQ(bitwise_and(t, u).to_vector<bool>(), (std::vector<bool>{true, false, false, false}));
  EXPECT_EQ(bitwise_or(t, u).to_vector<bool>(), (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(bitwise_xor(t, u).to_vector<bool>(), (std::vector<bool>{false, true, true, false}));
  EXPECT_EQ(bitwise_invert(t).to_vector<bool>(), (std::vector<bool>{false, false, true, true}));
  const Tensor mixed = bitwise_or(t, i64s({2}));
  EXPECT_EQ(mixed.dtype(), DType::i64);
  EXPECT_EQ(mixed.to_vector<std::int64_t>(), (std::vector<std::int64_t>{3, 3, 2, 2}));
}

TEST(Bitwise, BadInput) {
  EXPECT_THROW(bitwise_and(f64s({1}), f64s({1})), DTypeError);
  EXPECT_THROW(bitwise_or(i64s({1}), f64s({1})), DTypeError);  // promotes to float64
  EXPECT_THROW(bitwise_not(f64s({1})), DTypeError);
  EXPECT_THROW(bitwise_xor(i64s({1, 2, 3}), i64s({1, 2})), ShapeError);
}

TEST(Triangle, MatchesReferenceLoops) {
  const std::int64_t B = 2, R = 3, C = 5;
  std::vector<double> v(static_cast<std::size_t>(B * R * C));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) + 1;
  const Tensor x = f64s(v, {B, R, C});
  for (std::int64_t k : {-3, -1, 0, 1, 2, 6}) {
    const auto lo = tril(x, k).to_vector<double>(), up = triu(x, k).to_vector<double>();
    for (std::int64_t m = 0; m < B; ++m)
      for (std::int64_t i = 0; i < R; ++i)
        for (std::int64_t j = 0; j < C; ++j) {
          const auto at = static_cast<std::size_t>((m * R + i) * C + j);
          EXPECT_EQ(lo[at], j <= i + k ? v[at] : 0.0) << "tril k=" << k;
          EXPECT_EQ(up[at], j >= i + k ? v[at] : 0.0) << "triu k=" << k;
        }
  }
  // Any dtype; the gradient of sum(w * tril(x)) is tril(w).
  EXPECT_EQ(triu(i64s({1, 2, 3, 4}).reshape({2, 2})).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 2, 0, 4}));
  const Tensor w = f64s(v, {B, R, C});
  const Tensor g = grad([&](const Tensor& y) { return sum(mul(w, tril(y, 1))); })(x);
  EXPECT_EQ(g.to_vector<double>(), tril(w, 1).to_vector<double>());
  EXPECT_THROW(tril(f64s({1, 2, 3})), ShapeError);
  EXPECT_THROW(triu(scalar_tensor(1.0, DType::f64)), ShapeError);
}

TEST(Creation, Linspace) {
  // NumPy: np.linspace(0, 1, 5), np.linspace(2, 3, 4, endpoint=False), np.linspace(1, -1, 3)
  EXPECT_EQ(linspace(0, 1, 5, DType::f64).to_vector<double>(), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  EXPECT_EQ(linspace(2, 3, 4, DType::f64, false).to_vector<double>(), (std::vector<double>{2, 2.25, 2.5, 2.75}));
  EXPECT_EQ(linspace(1, -1, 3, DType::f64).to_vector<double>(), (std::vector<double>{1, 0, -1}));
  EXPECT_EQ(linspace(0, 0.3, 7, DType::f64).to_vector<double>().back(), 0.3);  // the endpoint exactly
  EXPECT_EQ(linspace(4, 9, 1, DType::f64).to_vector<double>(), (std::vector<double>{4}));
  EXPECT_EQ(linspace(4, 9, 0).numel(), 0);
  EXPECT_EQ(linspace(0, 1, 3).dtype(), get_default_dtype());
  EXPECT_THROW(linspace(0, 1, -1), ValueError);
  EXPECT_THROW(linspace(0, std::numeric_limits<double>::infinity(), 3), ValueError);
}

TEST(Creation, Arange) {
  // Python: list(range(2, 11, 3)), range(5, 0, -2); NumPy: np.arange(0, 1, 0.25), np.arange(1, 1)
  EXPECT_EQ(arange(2, 11, 3, DType::i64).to_vector<std::int64_t>(), (std::vector<std::int64_t>{2, 5, 8}));
  EXPECT_EQ(arange(5, 0, -2, DType::i64).to_vector<std::int64_t>(), (std::vector<std::int64_t>{5, 3, 1}));
  EXPECT_EQ(arange(0, 1, 0.25, DType::f64).to_vector<double>(), (std::vector<double>{0, 0.25, 0.5, 0.75}));
  EXPECT_EQ(arange(1, 1).numel(), 0);
  EXPECT_EQ(arange(3, 1).numel(), 0);  // step 1 never reaches a smaller stop
  EXPECT_EQ(arange(4, DType::f64).to_vector<double>(), (std::vector<double>{0, 1, 2, 3}));  // tensor.h's arange(n) still
  EXPECT_THROW(arange(0, 1, 0), ValueError);
  EXPECT_THROW(arange(0, std::numeric_limits<double>::quiet_NaN(), 1), ValueError);
}

TEST(Creation, FullLike) {
  const Tensor x = f64s({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor y = full_like(x, 2.5);
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_EQ(y.dtype(), DType::f64);
  EXPECT_EQ(y.to_vector<double>(), std::vector<double>(6, 2.5));
  const Tensor z = full_like(x, 7, DType::i64);
  EXPECT_EQ(z.dtype(), DType::i64);
  EXPECT_EQ(z.to_vector<std::int64_t>(), std::vector<std::int64_t>(6, 7));
  // A constant: no gradient flows to x through it.
  const Tensor g = grad([](const Tensor& v) { return sum(mul(full_like(v, 3.0), v)); })(x);
  EXPECT_EQ(g.to_vector<double>(), std::vector<double>(6, 3.0));
}

}  // namespace
