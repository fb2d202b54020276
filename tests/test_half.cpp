// bfloat16 and float16: the conversions against references written from the IEEE definitions
// (and against GCC's _Float16), exhaustively over the 65536 bit patterns; casts, promotion,
// arithmetic through the float32 path, derivatives under the transforms, safetensors files.
#include <gtest/gtest.h>

#include <bit>
#include <cfenv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include "chainrule/chainrule.h"
#include "chainrule/nn/checkpoint.h"
#include "chainrule/optim/optimizer.h"

using namespace chainrule;

namespace {

struct Format {
  int mant;   // stored mantissa bits
  int emin;   // exponent of the smallest normal
  int emax;   // exponent of the largest finite
  int ebits;  // exponent field width
};
constexpr Format kBF16{7, -126, 127, 8};
constexpr Format kF16{10, -14, 15, 5};

// The value of a 16-bit pattern, from the fields (sign, biased exponent, fraction).
double decode(std::uint16_t h, Format f) {
  const int bias = (1 << (f.ebits - 1)) - 1;
  const bool neg = h >> 15;
  const int e = (h >> f.mant) & ((1 << f.ebits) - 1);
  const int m = h & ((1 << f.mant) - 1);
  double v;
  if (e == (1 << f.ebits) - 1) v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (e == 0) v = std::ldexp(m, f.emin - f.mant);
  else v = std::ldexp(m + (1 << f.mant), e - bias - f.mant);
  return neg ? -v : v;
}

// Round a double to the format: scale by the quantum (a power of two, exact), nearbyint (ties to
// even in the default rounding mode), and overflow to inf beyond the largest finite value.
double round_to(double v, Format f) {
  if (std::isnan(v) || std::isinf(v) || v == 0) return v;
  int e;
  std::frexp(v, &e);  // |v| in [2^(e-1), 2^e)
  const int exp = std::max(e - 1, f.emin);
  const double q = std::ldexp(1.0, exp - f.mant);
  const double r = std::nearbyint(v / q) * q;
  const double max = std::ldexp(2.0 - std::ldexp(1.0, -f.mant), f.emax);
  if (std::fabs(r) > max) return std::copysign(std::numeric_limits<double>::infinity(), v);
  return r == 0 ? std::copysign(0.0, v) : r;
}

bool same(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

float f16_reference(std::uint16_t h) {
  _Float16 x;
  std::memcpy(&x, &h, 2);
  return static_cast<float>(x);
}
std::uint16_t f16_reference(float f) {
  _Float16 x = static_cast<_Float16>(f);
  std::uint16_t h;
  std::memcpy(&h, &x, 2);
  return h;
}

// Floats to probe a format's rounding with: every value, the midpoints between neighbours, one
// float32 ulp either side of them, and a stride through all float32 bit patterns.
std::vector<float> probes(Format f) {
  std::vector<float> out;
  std::vector<double> vals;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    double v = decode(static_cast<std::uint16_t>(h), f);
    if (std::isfinite(v)) vals.push_back(v);
  }
  std::sort(vals.begin(), vals.end());
  vals.push_back(std::ldexp(2.0, f.emax));  // the overflow threshold's neighbour
  for (std::size_t i = 0; i + 1 < vals.size(); ++i) {
    const auto mid = static_cast<float>((vals[i] + vals[i + 1]) / 2);  // exact: 2 more bits than the format
    out.insert(out.end(), {static_cast<float>(vals[i]), mid, std::nextafter(mid, -INFINITY), std::nextafter(mid, INFINITY)});
  }
  for (std::uint64_t b = 0; b < (1ull << 32); b += 4099) out.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(b)));
  for (float s : {INFINITY, -INFINITY, NAN, -NAN, std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min()})
    out.push_back(s);
  return out;
}

TEST(Half, ToFloatExhaustive) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto h = static_cast<std::uint16_t>(b);
    ASSERT_TRUE(same(to_float(bfloat16{h}), decode(h, kBF16))) << "bf16 " << std::hex << b;
    ASSERT_TRUE(same(to_float(float16{h}), decode(h, kF16))) << "f16 " << std::hex << b;
    ASSERT_TRUE(same(to_float(float16{h}), f16_reference(h))) << "f16 vs _Float16 " << std::hex << b;
  }
}

TEST(Half, RoundTripExhaustive) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto h = static_cast<std::uint16_t>(b);
    const float fb = to_float(bfloat16{h}), fh = to_float(float16{h});
    if (std::isnan(fb)) {
      EXPECT_TRUE(std::isnan(to_float(to_bfloat16(fb)))) << std::hex << b;
      EXPECT_EQ(to_bfloat16(fb).bits >> 15, h >> 15) << "NaN sign " << std::hex << b;
    } else {
      ASSERT_EQ(to_bfloat16(fb).bits, h) << "bf16 " << std::hex << b;
      ASSERT_EQ(to_bfloat16(static_cast<double>(fb)).bits, h) << "bf16 from f64 " << std::hex << b;
    }
    if (std::isnan(fh)) {
      EXPECT_TRUE(std::isnan(to_float(to_float16(fh)))) << std::hex << b;
      EXPECT_EQ(to_float16(fh).bits >> 15, h >> 15) << "NaN sign " << std::hex << b;
    } else {
      ASSERT_EQ(to_float16(fh).bits, h) << "f16 " << std::hex << b;
      ASSERT_EQ(to_float16(static_cast<double>(fh)).bits, h) << "f16 from f64 " << std::hex << b;
    }
  }
}

TEST(Half, FromFloatRoundsToNearestEven) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  for (auto [fmt, name] : {std::pair{kBF16, "bf16"}, std::pair{kF16, "f16"}}) {
    const bool bf = fmt.ebits == 8;
    std::size_t n = 0;
    for (float x : probes(fmt)) {
      const double got = bf ? to_float(to_bfloat16(x)) : to_float(to_float16(x));
      ASSERT_TRUE(same(got, round_to(x, fmt))) << name << " of " << x << " (0x" << std::hex << std::bit_cast<std::uint32_t>(x) << ")";
      if (!bf && !std::isnan(x)) {
        ASSERT_EQ(to_float16(x).bits, f16_reference(x)) << "vs _Float16 at " << x;
      }
      ++n;
    }
    EXPECT_GT(n, 1000000u);
  }
  // Ties go to the even neighbour: 1 + 2^-8 lies between bf16's 1 and 1 + 2^-7.
  EXPECT_EQ(to_bfloat16(1.0f + 0x1p-8f).bits, 0x3F80);
  EXPECT_EQ(to_bfloat16(1.0f + 3 * 0x1p-8f).bits, 0x3F82);
  EXPECT_EQ(to_float16(1.0f + 0x1p-11f).bits, 0x3C00);
  EXPECT_EQ(to_float16(65519.0f).bits, 0x7BFF);  // max finite 65504
  EXPECT_EQ(to_float16(65520.0f).bits, 0x7C00);  // overflow to inf
  EXPECT_EQ(to_float16(0x1p-25f).bits, 0x0000);  // the tie below the smallest subnormal: to zero
  EXPECT_EQ(to_float16(0x1.8p-24f).bits, 0x0002);  // 1.5 quanta: to even (2)
  EXPECT_EQ(to_bfloat16(std::numeric_limits<float>::max()).bits, 0x7F80);
}

TEST(Half, FromDoubleRoundsOnce) {
  // Just above a tie: float32 would round it onto the tie (and then to even, down); one rounding goes up.
  for (auto [fmt, name] : {std::pair{kBF16, "bf16"}, std::pair{kF16, "f16"}}) {
    const bool bf = fmt.ebits == 8;
    for (double base : {1.0, 3.0, 1000.0, -7.0, std::ldexp(1.0, fmt.emin), std::ldexp(1.0, fmt.emin - 3)}) {
      int e;
      std::frexp(base, &e);
      const double q = std::ldexp(1.0, std::max(e - 1, fmt.emin) - fmt.mant);
      for (double x : {base + q / 2 + q * 0x1p-30, base + q / 2 - q * 0x1p-30, base + q * 1.5 - q * 0x1p-30, base + q / 2}) {
        const double got = bf ? to_float(to_bfloat16(x)) : to_float(to_float16(x));
        EXPECT_TRUE(same(got, round_to(x, fmt))) << name << " of " << x;
      }
    }
  }
  EXPECT_EQ(to_float16(1e300).bits, 0x7C00);
  EXPECT_EQ(to_bfloat16(-1e300).bits, 0xFF80);
  EXPECT_EQ(to_bfloat16(1e-300).bits, 0x0000);
  EXPECT_TRUE(std::isnan(to_float(to_bfloat16(std::numeric_limits<double>::quiet_NaN()))));
}

// The tensor conversions (cast; float16 on F16C where the CPU has it) agree with the scalar ones.
TEST(Half, TensorCastMatchesScalarConversions) {
  std::vector<float16> all16(65536);
  std::vector<bfloat16> allb(65536);
  for (std::uint32_t b = 0; b < 65536; ++b) {
    all16[b].bits = static_cast<std::uint16_t>(b);
    allb[b].bits = static_cast<std::uint16_t>(b);
  }
  Tensor h = empty({65536}, DType::f16), bb = empty({65536}, DType::bf16);
  std::copy(all16.begin(), all16.end(), h.mutable_data<float16>());
  std::copy(allb.begin(), allb.end(), bb.mutable_data<bfloat16>());
  auto hf = cast(h, DType::f32).to_vector<float>(), bf = cast(bb, DType::f32).to_vector<float>();
  for (std::uint32_t b = 0; b < 65536; ++b) {
    ASSERT_TRUE(same(hf[b], to_float(all16[b]))) << std::hex << b;
    ASSERT_TRUE(same(bf[b], to_float(allb[b]))) << std::hex << b;
  }
  for (auto fmt : {kF16, kBF16}) {
    const std::vector<float> xs = probes(fmt);
    Tensor x = from_vector<float>(xs);
    const bool is_bf = fmt.ebits == 8;
    Tensor r = cast(x, is_bf ? DType::bf16 : DType::f16);
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const float got = is_bf ? to_float(r.data<bfloat16>()[i]) : to_float(r.data<float16>()[i]);
      const float want = is_bf ? to_float(to_bfloat16(xs[i])) : to_float(to_float16(xs[i]));
      ASSERT_TRUE(same(got, want)) << xs[i];
    }
  }
}

TEST(Half, DTypeNamesAndSizes) {
  EXPECT_EQ(dtype_name(DType::bf16), "bfloat16");
  EXPECT_EQ(dtype_name(DType::f16), "float16");
  EXPECT_EQ(itemsize(DType::bf16), 2u);
  EXPECT_EQ(itemsize(DType::f16), 2u);
  EXPECT_TRUE(is_floating(DType::bf16));
  EXPECT_TRUE(is_floating(DType::f16));
  EXPECT_THROW(set_default_dtype(DType::bf16), DTypeError);
}

TEST(Half, CastBetweenEveryPair) {
  const std::vector<double> vals{0.0, 1.0, -2.5, 3.0, 1000.0, 0.1, 1.0 / 3.0, 70000.0, -1e-6};
  const DType all[] = {DType::f32, DType::f64, DType::i64, DType::b8, DType::bf16, DType::f16};
  auto expect = [](double v, DType t) {
    switch (t) {
      case DType::f32: return static_cast<double>(static_cast<float>(v));
      case DType::f64: return v;
      case DType::i64: return std::trunc(v);
      case DType::b8: return v != 0 ? 1.0 : 0.0;
      case DType::bf16: return round_to(v, kBF16);
      case DType::f16: return round_to(v, kF16);
    }
    return 0.0;
  };
  for (DType from : all) {
    Tensor src = cast(tensor(vals, {9}, DType::f64), from);
    for (DType to : all) {
      Tensor got = cast(src, to);
      ASSERT_EQ(got.dtype(), to);
      Tensor wide = cast(got, DType::f64);
      auto w = wide.to_vector<double>();
      auto s = cast(src, DType::f64).to_vector<double>();
      for (std::size_t i = 0; i < vals.size(); ++i) {
        if (to == DType::i64 && from == DType::f16 && std::isinf(s[i])) continue;  // inf to int64 is undefined
        if (to == DType::i64 && std::fabs(s[i]) > 1e18) continue;
        EXPECT_TRUE(same(w[i], expect(s[i], to)) || (w[i] == 0 && expect(s[i], to) == 0))
            << dtype_name(from) << " -> " << dtype_name(to) << " of " << s[i] << ": " << w[i];
      }
    }
  }
}

TEST(Half, AccessorsAndPrinting) {
  Tensor b = tensor({1.5, -2.0, 0.1}, {3}, DType::bf16);
  EXPECT_EQ(b.dtype(), DType::bf16);
  EXPECT_EQ(b.to_vector<bfloat16>()[0].bits, 0x3FC0);
  EXPECT_EQ(slice(b, 0, 1, 2).item<bfloat16>().bits, 0xC000);
  EXPECT_DOUBLE_EQ(sum(b).item(), round_to(1.5 - 2.0 + round_to(0.1, kBF16), kBF16));
  EXPECT_DOUBLE_EQ(slice(b, 0, 2, 3).item(), round_to(0.1, kBF16));
  EXPECT_THROW(b.data<float>(), DTypeError);
  Tensor h = full({2}, 65504.0, DType::f16);
  EXPECT_DOUBLE_EQ(h.to_vector<float16>().size(), 2);
  EXPECT_DOUBLE_EQ(cast(h, DType::f64).to_vector<double>()[1], 65504.0);
  EXPECT_NE(b.str().find("bfloat16"), std::string::npos) << b.str();
  EXPECT_NE(b.str().find("1.5"), std::string::npos) << b.str();
}

TEST(Half, PromotionTable) {
  EXPECT_EQ(promote_types(DType::bf16, DType::f16), DType::f32);
  EXPECT_EQ(promote_types(DType::f16, DType::bf16), DType::f32);
  EXPECT_EQ(promote_types(DType::bf16, DType::f32), DType::f32);
  EXPECT_EQ(promote_types(DType::f16, DType::f32), DType::f32);
  EXPECT_EQ(promote_types(DType::f16, DType::f64), DType::f64);
  EXPECT_EQ(promote_types(DType::i64, DType::bf16), DType::bf16);
  EXPECT_EQ(promote_types(DType::b8, DType::f16), DType::f16);
  EXPECT_EQ(promote_types(DType::bf16, DType::bf16), DType::bf16);
  Tensor b = tensor({1.0, 2.0}, {2}, DType::bf16);
  Tensor h = tensor({1.0, 2.0}, {2}, DType::f16);
  EXPECT_EQ(add(b, h).dtype(), DType::f32);
  EXPECT_EQ(mul(b, tensor({1.0, 2.0}, {2}, DType::f32)).dtype(), DType::f32);
  EXPECT_EQ(sub(h, tensor({1.0, 2.0}, {2}, DType::f64)).dtype(), DType::f64);
  EXPECT_EQ(add(b, tensor({1.0, 2.0}, {2}, DType::i64)).dtype(), DType::bf16);
  EXPECT_EQ((b + 2.5).dtype(), DType::bf16);  // a scalar takes the tensor's type
  EXPECT_EQ(pow(h, 2.0).dtype(), DType::f16);
  EXPECT_EQ(div(tensor({1.0}, {1}, DType::i64), b).dtype(), DType::bf16);
  EXPECT_EQ(where(b > 1.0, b, h).dtype(), DType::f32);
  EXPECT_EQ(matmul(reshape(b, {1, 2}), reshape(h, {2, 1})).dtype(), DType::f32);
}

TEST(Half, ArithmeticRoundsOnceFromFloat32) {
  // 1 + 2^-8 + 2^-8: each sum in bfloat16 would stay at 1 (ties to even), float32 holds 1 + 2^-7.
  Tensor x = tensor({1.0, 0x1p-8, 0x1p-8}, {3}, DType::bf16);
  EXPECT_DOUBLE_EQ(sum(x).item(), 1.0 + 0x1p-7);
  // A long sum accumulates in float32: 1000 ones give 1000 (a bf16 accumulator stops at 256).
  EXPECT_DOUBLE_EQ(sum(ones({1000}, DType::bf16)).item(), 1000.0);
  EXPECT_DOUBLE_EQ(mean(ones({1000}, DType::f16)).item(), 1.0);
  Tensor e = exp(tensor({1.0}, {1}, DType::bf16));
  EXPECT_EQ(e.dtype(), DType::bf16);
  EXPECT_DOUBLE_EQ(e.item(), round_to(static_cast<float>(std::exp(1.0f)), kBF16));
  Tensor a = tensor({3.0, 0.1}, {2}, DType::f16);
  Tensor q = div(a, tensor({7.0, 3.0}, {2}, DType::f16));
  EXPECT_DOUBLE_EQ(q.to_vector<float16>().size(), 2);
  EXPECT_DOUBLE_EQ(cast(q, DType::f64).to_vector<double>()[0], round_to(3.0f / 7.0f, kF16));
  EXPECT_TRUE((argmax(tensor({1.0, 3.0, 2.0}, {3}, DType::bf16), -1).dtype() == DType::i64));
  EXPECT_EQ((x > 0.5).dtype(), DType::b8);
  try {
    bitwise_and(x, x);
    ADD_FAILURE() << "bitwise_and of bfloat16 did not throw";
  } catch (const DTypeError& err) {
    EXPECT_NE(std::string(err.what()).find("bfloat16"), std::string::npos) << err.what();
  }
}

TEST(Half, DerivativesKeepTheHalfTypeUnderEveryTransform) {
  for (DType t : {DType::bf16, DType::f16}) {
    Tensor x = tensor({0.5, -1.5, 2.0}, {3}, t);
    auto f = [](const Tensor& v) { return sum(mul(v, v)); };
    Tensor g = grad(f)(x);
    ASSERT_EQ(g.dtype(), t);
    EXPECT_EQ(cast(g, DType::f64).to_vector<double>(), (std::vector<double>{1.0, -3.0, 4.0}));
    auto [y, yt] = jvp([](const Tensor& v) { return mul(v, v); }, x, ones({3}, t));
    EXPECT_EQ(yt.dtype(), t);
    EXPECT_EQ(cast(yt, DType::f64).to_vector<double>(), (std::vector<double>{1.0, -3.0, 4.0}));
    EXPECT_THROW(jvp([](const Tensor& v) { return mul(v, v); }, x, ones({3}, DType::f32)), AutodiffError);
    Tensor v = vmap([](const Tensor& r) { return sum(exp(r)); })(reshape(tensor({0, 0, 0, 1, 1, 1}, {6}, t), {2, 3}));
    EXPECT_EQ(v.dtype(), t);
    Tensor h = hessian(f)(x);
    EXPECT_EQ(h.dtype(), t);
    EXPECT_DOUBLE_EQ(cast(h, DType::f64).to_vector<double>()[0], 2.0);
    // Eager reverse mode: .grad() in the leaf's type; a mixed op gives each operand its own.
    Tensor w = tensor({1.0, 2.0}, {2}, t).requires_grad_();
    Tensor w32 = tensor({3.0, 4.0}, {2}, DType::f32).requires_grad_();
    Tensor loss = sum(mul(w, w32));
    EXPECT_EQ(loss.dtype(), DType::f32);
    loss.backward();
    EXPECT_EQ(w.grad().dtype(), t);
    EXPECT_EQ(w32.grad().dtype(), DType::f32);
    EXPECT_EQ(cast(w.grad(), DType::f64).to_vector<double>(), (std::vector<double>{3.0, 4.0}));
    sum(w).backward();  // accumulates into the existing bf16 gradient
    EXPECT_EQ(cast(w.grad(), DType::f64).to_vector<double>(), (std::vector<double>{4.0, 5.0}));
  }
}

// matmul in a half type: oneDNN's bf16 GEMM (or the float32 path) against a float64 reference
// loop on the same half inputs; float32 accumulation then one rounding is within an ulp.
TEST(Half, MatmulAgainstReferenceLoop) {
  Generator gen(7);
  for (DType t : {DType::bf16, DType::f16})
    for (auto [m, k, n, batch, ta] : {std::tuple{64, 96, 80, 1, false}, std::tuple{3, 5, 4, 1, false}, std::tuple{40, 33, 50, 3, true},
                                      std::tuple{1, 64, 64, 2, false}}) {
      Tensor a = cast(randn({batch, ta ? k : m, ta ? m : k}, gen), t), b = cast(randn({k, n}, gen), t);
      Tensor c = matmul(a, b, ta, false);
      ASSERT_EQ(c.dtype(), t);
      ASSERT_EQ(c.shape(), (Shape{batch, m, n}));
      auto av = cast(a, DType::f64).to_vector<double>(), bv = cast(b, DType::f64).to_vector<double>();
      auto cv = cast(c, DType::f64).to_vector<double>();
      const double unit = t == DType::bf16 ? 0x1p-8 : 0x1p-11;
      for (int q = 0; q < batch; ++q)
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < n; ++j) {
            double ref = 0, mag = 0;
            for (int l = 0; l < k; ++l) {
              const double x = ta ? av[(q * k + l) * m + i] : av[(q * m + i) * k + l];
              ref += x * bv[l * n + j];
              mag += std::fabs(x * bv[l * n + j]);
            }
            const double got = cv[(q * m + i) * n + j];
            ASSERT_LE(std::fabs(got - ref), unit * std::fabs(ref) + 1e-5 * mag)
                << dtype_name(t) << " " << m << "x" << k << "x" << n << " at " << q << "," << i << "," << j;
          }
    }
}

TEST(Half, LinearAgainstReferenceLoop) {
  Generator gen(8);
  for (DType t : {DType::bf16, DType::f16}) {
    const int rows = 40, in = 48, out = 36;
    Tensor x = cast(randn({rows, in}, gen), t), w = cast(randn({out, in}, gen), t), b = cast(randn({out}, gen), t);
    Tensor y = linear(x, w, b);
    ASSERT_EQ(y.dtype(), t);
    auto xv = cast(x, DType::f64).to_vector<double>(), wv = cast(w, DType::f64).to_vector<double>();
    auto bv = cast(b, DType::f64).to_vector<double>(), yv = cast(y, DType::f64).to_vector<double>();
    const double unit = t == DType::bf16 ? 0x1p-8 : 0x1p-11;
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < out; ++j) {
        double ref = bv[j], mag = std::fabs(bv[j]);
        for (int l = 0; l < in; ++l) ref += xv[r * in + l] * wv[j * in + l], mag += std::fabs(xv[r * in + l] * wv[j * in + l]);
        ASSERT_LE(std::fabs(yv[r * out + j] - ref), unit * std::fabs(ref) + 1e-5 * mag) << dtype_name(t) << " at " << r << "," << j;
      }
  }
}

TEST(Half, OptimizersWantFloat32MasterWeights) {
  Tensor w = tensor({1.0, 2.0}, {2}, DType::bf16).requires_grad_();
  try {
    optim::SGD sgd({{"w", w}}, optim::SGDOptions{});
    ADD_FAILURE() << "SGD took a bfloat16 parameter";
  } catch (const DTypeError& e) {
    EXPECT_NE(std::string(e.what()).find("bfloat16"), std::string::npos) << e.what();
  }
  // Clipping reads half gradients: |(3, 4)| = 5, scaled to norm 1.
  sum(mul(w, tensor({3.0, 4.0}, {2}, DType::bf16))).backward();
  EXPECT_DOUBLE_EQ(optim::clip_grad_norm_({w}, 1.0), 5.0);
  auto g = cast(w.grad(), DType::f64).to_vector<double>();
  EXPECT_NEAR(g[0], 0.6, 0x1p-8);
  EXPECT_NEAR(g[1], 0.8, 0x1p-8);
}

namespace fs = std::filesystem;

// A safetensors file from its JSON header and payload bytes, as the format defines it.
void write_file(const fs::path& p, const std::string& header, const std::vector<std::uint8_t>& data) {
  std::ofstream o(p, std::ios::binary);
  std::uint64_t n = header.size();
  o.write(reinterpret_cast<const char*>(&n), 8);
  o.write(header.data(), static_cast<std::streamsize>(header.size()));
  o.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

TEST(Half, SafetensorsLoadAndSave) {
  const fs::path dir = fs::temp_directory_path() / "chainrule_half_st";
  fs::create_directories(dir);
  const fs::path p = dir / "h.safetensors";
  // bf16 [1, -2, 0.5] = 3F80 C000 3F00; f16 [1, 65504] = 3C00 7BFF; little-endian bytes.
  write_file(p,
             R"({"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"F16","shape":[2],"data_offsets":[6,10]}})",
             {0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3F, 0x00, 0x3C, 0xFF, 0x7B});
  nn::TensorFile f = nn::load_tensors(p.string());
  ASSERT_EQ(f.tensors.at("a").dtype(), DType::bf16);
  ASSERT_EQ(f.tensors.at("b").dtype(), DType::f16);
  EXPECT_EQ(cast(f.tensors.at("a"), DType::f64).to_vector<double>(), (std::vector<double>{1.0, -2.0, 0.5}));
  EXPECT_EQ(cast(f.tensors.at("b"), DType::f64).to_vector<double>(), (std::vector<double>{1.0, 65504.0}));
  nn::TensorFile g = nn::load_tensors(p.string(), DType::f32);
  ASSERT_EQ(g.tensors.at("a").dtype(), DType::f32);
  EXPECT_EQ(g.tensors.at("a").to_vector<float>(), (std::vector<float>{1.0f, -2.0f, 0.5f}));
  EXPECT_EQ(g.tensors.at("b").to_vector<float>(), (std::vector<float>{1.0f, 65504.0f}));
  EXPECT_THROW(nn::load_tensors(p.string(), DType::i64), DTypeError);
  // Saving writes the same bytes back under the same dtype names.
  const fs::path q = dir / "out.safetensors";
  nn::save_tensors(q.string(), {{"a", f.tensors.at("a")}, {"b", f.tensors.at("b")}});
  io::Safetensors st = io::read_safetensors(q.string());
  ASSERT_NE(st.find("a"), nullptr);
  EXPECT_EQ(st.find("a")->dtype, "BF16");
  EXPECT_EQ(st.find("b")->dtype, "F16");
  auto bytes = [](const std::vector<std::byte>& d) {
    std::vector<std::uint8_t> b;
    for (auto x : d) b.push_back(static_cast<std::uint8_t>(x));
    return b;
  };
  EXPECT_EQ(bytes(st.find("a")->data), (std::vector<std::uint8_t>{0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3F}));
  EXPECT_EQ(bytes(st.find("b")->data), (std::vector<std::uint8_t>{0x00, 0x3C, 0xFF, 0x7B}));
  fs::remove_all(dir);
}

}  // namespace
