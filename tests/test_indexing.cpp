// Indexing (chainrule/ops/indexing.h): strided slices, index() and the functional updates against
// reference loops written out here (x holds 0, 1, 2, ... so every value names its position),
// errors, derivatives by check_grads in float64 and vmap against a loop. The strided_slice
// primitives' own rules are checked with every other primitive in test_core_primitives.cpp.
#include <gtest/gtest.h>

#include <limits>
#include <numeric>
#include <vector>

#include "chainrule/autodiff/check.h"
#include "chainrule/chainrule.h"

using namespace chainrule;
using namespace chainrule::indexing;

namespace {

Tensor iota(Shape s) {
  std::vector<double> v(static_cast<std::size_t>(s.numel()));
  std::iota(v.begin(), v.end(), 0.0);
  return from_vector(v, s);
}
Tensor i64s(std::vector<std::int64_t> v, Shape s = {}) {
  if (s.empty()) s = Shape{static_cast<std::int64_t>(v.size())};
  return from_vector(v, s);
}
std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }
Tensor rand64(Shape s, std::uint64_t seed) {
  Generator g(seed);
  return randn(s, g, DType::f64);
}
void expect_pass(const CheckReport& r, const char* what) { EXPECT_TRUE(r.pass) << what << ": " << r.failure; }

// ---- slice with a step ------------------------------------------------------------------------

TEST(StridedSlice, FollowsPythonSliceRules) {
  const Tensor x = iota({7});
  using V = std::vector<double>;
  auto s = [&](std::optional<std::int64_t> a, std::optional<std::int64_t> b, std::int64_t c) { return vals(slice(x, 0, a, b, c)); };
  // Expected values as Python's list(range(7))[a:b:c].
  EXPECT_EQ(s(1, 6, 2), (V{1, 3, 5}));
  EXPECT_EQ(s(std::nullopt, std::nullopt, -1), (V{6, 5, 4, 3, 2, 1, 0}));
  EXPECT_EQ(s(-2, std::nullopt, -1), (V{5, 4, 3, 2, 1, 0}));
  EXPECT_EQ(s(5, 1, -2), (V{5, 3}));
  EXPECT_EQ(s(-100, 100, 3), (V{0, 3, 6}));
  EXPECT_EQ(s(100, -100, -3), (V{6, 3, 0}));
  EXPECT_EQ(s(-1, -8, -1), (V{6, 5, 4, 3, 2, 1, 0}));
  EXPECT_EQ(s(3, 3, 1), V{});
  EXPECT_EQ(s(4, 2, 1), V{});
  EXPECT_EQ(s(2, 5, -1), V{});
  EXPECT_EQ(s(-3, std::nullopt, 1), (V{4, 5, 6}));
  EXPECT_EQ(s(std::nullopt, -5, 1), (V{0, 1}));
  EXPECT_EQ(s(0, 7, 10), (V{0}));
  EXPECT_THROW(slice(x, 0, 0, 7, 0), ShapeError);
  // The 4-argument form is unchanged: exact bounds, negative ones from the end.
  EXPECT_EQ(vals(slice(x, 0, 1, -2)), (V{1, 2, 3, 4}));
  EXPECT_THROW(slice(x, 0, 0, 9), ShapeError);
}

TEST(StridedSlice, AlongAnAxisMatchesLoopsWithDerivativesAndVmap) {
  const Tensor x = iota({3, 8, 2});
  const Tensor y = slice(x, 1, 6, 0, -3);  // rows 6, 3
  ASSERT_EQ(y.shape(), (Shape{3, 2, 2}));
  const auto xv = vals(x), yv = vals(y);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 2; ++k) EXPECT_EQ(yv[(i * 2 + j) * 2 + k], xv[(i * 8 + (6 - 3 * j)) * 2 + k]);
  expect_pass(check_grads([](std::span<const Tensor> a) { return slice(a[0], -2, std::nullopt, std::nullopt, -2); }, {rand64({3, 5, 2}, 1)}),
              "slice ::-2");
  const Tensor xs = rand64({4, 9}, 2);
  const Tensor batched = vmap([](const Tensor& r) { return slice(r, 0, 1, std::nullopt, 3); })(xs);
  for (std::int64_t b = 0; b < 4; ++b)
    EXPECT_EQ(vals(slice(batched, 0, b, b + 1)), vals(slice(slice(xs, 0, b, b + 1), 1, 1, std::nullopt, 3))) << b;
}

// ---- index: basic items ------------------------------------------------------------------------

TEST(Index, IntegersSlicesNewAxesAndEllipsisMatchLoops) {
  const Tensor x = iota({4, 5, 6});
  const auto xv = vals(x);
  auto at3 = [&](std::int64_t i, std::int64_t j, std::int64_t k) { return xv[static_cast<std::size_t>((i * 5 + j) * 6 + k)]; };
  {  // x[1, ::-2, None, ...]
    const Tensor y = index(x, {1, Slice(None, None, -2), None, Ellipsis});
    ASSERT_EQ(y.shape(), (Shape{3, 1, 6}));
    const auto yv = vals(y);
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 6; ++k) EXPECT_EQ(yv[static_cast<std::size_t>(j * 6 + k)], at3(1, 4 - 2 * j, k));
  }
  {  // x[..., -1]
    const Tensor y = index(x, {Ellipsis, -1});
    ASSERT_EQ(y.shape(), (Shape{4, 5}));
    const auto yv = vals(y);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 5; ++j) EXPECT_EQ(yv[static_cast<std::size_t>(i * 5 + j)], at3(i, j, 5));
  }
  {  // x[None, :, 2]
    const Tensor y = index(x, {None, Slice(), 2});
    ASSERT_EQ(y.shape(), (Shape{1, 4, 6}));
    const auto yv = vals(y);
    for (int i = 0; i < 4; ++i)
      for (int k = 0; k < 6; ++k) EXPECT_EQ(yv[static_cast<std::size_t>(i * 6 + k)], at3(i, 2, k));
  }
  {  // x[-3:, 1:4, 5::-5]
    const Tensor y = index(x, {Slice(-3), Slice(1, 4), Slice(5, None, -5)});
    ASSERT_EQ(y.shape(), (Shape{3, 3, 2}));
    const auto yv = vals(y);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 2; ++k) EXPECT_EQ(yv[static_cast<std::size_t>((i * 3 + j) * 2 + k)], at3(i + 1, j + 1, 5 - 5 * k));
  }
  // NumPy's scalar bools are 0-d masks: advanced indices of shape [1] or [0] beside the others.
  EXPECT_EQ(index(x, {1, Ellipsis, true}).shape(), (Shape{1, 5, 6}));  // separated: in front
  EXPECT_EQ(index(x, {Slice(), true, i64s({0, 1})}).shape(), (Shape{4, 2, 6}));  // [1] broadcasts with [2]
  EXPECT_EQ(index(x, {Slice(), false, i64s({0})}).shape(), (Shape{4, 0, 6}));
  EXPECT_THROW(index(x, {Slice(), false, i64s({0, 1})}), ShapeError);  // [0] and [2] do not broadcast
  EXPECT_EQ(index(x, {true}).shape(), (Shape{1, 4, 5, 6}));
  EXPECT_EQ(index(x, {false}).shape(), (Shape{0, 4, 5, 6}));
  EXPECT_EQ(index(x, {}).shape(), x.shape());
  EXPECT_EQ(index(x, {1, 2, 3}).item(), at3(1, 2, 3));
  EXPECT_EQ(index(iota({}), {None}).shape(), (Shape{1}));
}

// ---- index: integer arrays and masks ------------------------------------------------------------

TEST(Index, IntegerArraysFollowNumPysRules) {
  const Tensor x = iota({4, 5, 6});
  const auto xv = vals(x);
  auto at3 = [&](std::int64_t i, std::int64_t j, std::int64_t k) { return xv[static_cast<std::size_t>((i * 5 + j) * 6 + k)]; };
  {  // one array: its shape replaces the axis, negative entries count from the end
    const std::vector<std::int64_t> id = {3, 0, -1, 1};
    const Tensor y = index(x, {Slice(), i64s(id, {2, 2})});
    ASSERT_EQ(y.shape(), (Shape{4, 2, 2, 6}));
    const auto yv = vals(y);
    for (int i = 0; i < 4; ++i)
      for (int a = 0; a < 4; ++a)
        for (int k = 0; k < 6; ++k) {
          const auto j = id[static_cast<std::size_t>(a)] < 0 ? id[static_cast<std::size_t>(a)] + 5 : id[static_cast<std::size_t>(a)];
          EXPECT_EQ(yv[static_cast<std::size_t>((i * 4 + a) * 6 + k)], at3(i, j, k));
        }
  }
  {  // two adjacent arrays broadcast to [2, 3]; the result axes stand where they were
    const std::vector<std::int64_t> i1 = {4, 0, 2}, i2 = {5, 1};
    const Tensor y = index(x, {Slice(), i64s(i1), i64s(i2, {2, 1})});
    ASSERT_EQ(y.shape(), (Shape{4, 2, 3}));
    const auto yv = vals(y);
    for (int i = 0; i < 4; ++i)
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 3; ++b)
          EXPECT_EQ(yv[static_cast<std::size_t>((i * 2 + a) * 3 + b)], at3(i, i1[static_cast<std::size_t>(b)], i2[static_cast<std::size_t>(a)]));
  }
  {  // arrays separated by a slice: their axes go in front
    const std::vector<std::int64_t> i1 = {3, 1, 3}, i2 = {0, 5, 2};
    const Tensor y = index(x, {i64s(i1), Slice(), i64s(i2)});
    ASSERT_EQ(y.shape(), (Shape{3, 5}));
    const auto yv = vals(y);
    for (int p = 0; p < 3; ++p)
      for (int j = 0; j < 5; ++j)
        EXPECT_EQ(yv[static_cast<std::size_t>(p * 5 + j)], at3(i1[static_cast<std::size_t>(p)], j, i2[static_cast<std::size_t>(p)]));
  }
  {  // NumPy: an integer beside an array is an array too, so x[0, :, idx] has the array axis first
    const std::vector<std::int64_t> id = {2, 4};
    const Tensor y = index(x, {0, Slice(), i64s(id)});
    ASSERT_EQ(y.shape(), (Shape{2, 5}));
    const auto yv = vals(y);
    for (int p = 0; p < 2; ++p)
      for (int j = 0; j < 5; ++j) EXPECT_EQ(yv[static_cast<std::size_t>(p * 5 + j)], at3(0, j, id[static_cast<std::size_t>(p)]));
  }
  {  // an Ellipsis between arrays separates them even when it stands for no axis (NumPy)
    const Tensor y = index(x, {None, i64s({0, 3}), Ellipsis, i64s({1, 4}), Slice()});
    ASSERT_EQ(y.shape(), (Shape{2, 1, 6}));
    const auto yv = vals(y);
    for (int p = 0; p < 2; ++p)
      for (int k = 0; k < 6; ++k) EXPECT_EQ(yv[static_cast<std::size_t>(p * 6 + k)], at3(p == 0 ? 0 : 3, p == 0 ? 1 : 4, k));
    EXPECT_EQ(index(x, {None, i64s({0, 3}), i64s({1, 4}), Ellipsis}).shape(), (Shape{1, 2, 6}));
  }
  {  // three arrays over every axis: a plain gather of elements
    const Tensor y = index(x, {i64s({1, 3}), i64s({4, 0}), i64s({5, 2})});
    EXPECT_EQ(vals(y), (std::vector<double>{at3(1, 4, 5), at3(3, 0, 2)}));
  }
}

TEST(Index, BoolMasksSelectInRowMajorOrder) {
  const Tensor x = iota({3, 4});
  const std::vector<bool> m = {true, false, false, true, false, true, true, false, false, false, false, true};
  const Tensor mask = from_vector(m, Shape{3, 4});
  std::vector<double> want;
  for (std::size_t i = 0; i < m.size(); ++i)
    if (m[i]) want.push_back(static_cast<double>(i));
  EXPECT_EQ(vals(index(x, {mask})), want);
  // A mask over the first axis keeps whole rows; one over the trailing axes after a slice.
  const Tensor rows = index(x, {from_vector(std::vector<bool>{true, false, true}, Shape{3})});
  EXPECT_EQ(vals(rows), (std::vector<double>{0, 1, 2, 3, 8, 9, 10, 11}));
  const Tensor y = iota({2, 3, 4});
  const Tensor inner = index(y, {Slice(), mask});
  ASSERT_EQ(inner.shape(), (Shape{2, 5}));
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::size_t p = 0; p < want.size(); ++p) EXPECT_EQ(vals(inner)[static_cast<std::size_t>(b * 5) + p], want[p] + 12.0 * static_cast<double>(b));
  EXPECT_EQ(index(x, {from_vector(std::vector<bool>(12, false), Shape{3, 4})}).shape(), (Shape{0}));
  // Derivatives route to the selected elements.
  expect_pass(check_grads([&](std::span<const Tensor> a) { return index(a[0], {Slice(), mask}); }, {rand64({2, 3, 4}, 3)}), "mask");
}

TEST(Index, BadIndicesAreClearErrors) {
  const Tensor x = iota({4, 5});
  try {
    index(x, {Slice(), 5});
    FAIL() << "no error";
  } catch (const ValueError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("index"), std::string::npos) << m;
    EXPECT_NE(m.find("axis 1"), std::string::npos) << m;
    EXPECT_NE(m.find("5"), std::string::npos) << m;
    EXPECT_NE(m.find("size 5"), std::string::npos) << m;
  }
  EXPECT_THROW(index(x, {-5}), ValueError);
  EXPECT_THROW(index(x, {i64s({0, 4, -6})}), ValueError);
  EXPECT_THROW(index(x, {Slice(), i64s({5})}), ValueError);
  EXPECT_THROW(index(x, {from_vector(std::vector<bool>{true, false}, Shape{2})}), ShapeError);  // mask [2] vs axis 0 of size 4
  EXPECT_THROW(index(x, {0, 0, 0}), ShapeError);
  EXPECT_THROW(index(x, {Ellipsis, Ellipsis}), ShapeError);
  EXPECT_THROW(index(x, {iota({2})}), DTypeError);
  EXPECT_THROW(index(x, {Slice(0, 4, 0)}), ShapeError);
  EXPECT_THROW(index(x, {i64s({0, 1}), i64s({0, 1, 2})}), ShapeError);  // arrays that do not broadcast
}

TEST(Index, DerivativesMatchFiniteDifferences) {
  const Tensor id = i64s({2, -1, 0, 2});
  expect_pass(check_grads([&](std::span<const Tensor> a) { return index(a[0], {1, Slice(None, None, -2), None, id}); },
                          {rand64({3, 5, 4}, 4)}),
              "mixed items");
  expect_pass(check_grads([&](std::span<const Tensor> a) { return index(a[0], {i64s({1, 1, 0}), Slice(1), i64s({3, 0, 3})}); },
                          {rand64({2, 3, 4}, 5)}),
              "separated arrays");
}

TEST(Index, VmapMatchesALoop) {
  const Tensor xs = rand64({3, 4, 5}, 6);
  const Tensor id = i64s({4, 0, -2});
  auto f = [&](const Tensor& x) { return index(x, {Slice(None, None, -1), id}); };
  const Tensor batched = vmap(f)(xs);
  for (std::int64_t b = 0; b < 3; ++b) EXPECT_EQ(vals(index(batched, {b})), vals(f(index(xs, {b})))) << b;
  // Per-example indices: each example picks its own rows.
  const Tensor x = rand64({5, 2}, 7);
  const Tensor ids = i64s({0, 4, 1, 1, 3, 2}, {3, 2});
  const Tensor per = vmap([&](const Tensor& i) { return index(x, {i}); })(ids);
  ASSERT_EQ(per.shape(), (Shape{3, 2, 2}));
  for (std::int64_t b = 0; b < 3; ++b) EXPECT_EQ(vals(index(per, {b})), vals(index(x, {index(ids, {b})}))) << b;
  // A mask that vmap does not batch is fine; a batched one has no fixed shape.
  const Tensor mask = from_vector(std::vector<bool>{true, false, true, true, false}, Shape{5});
  const Tensor sel = vmap([&](const Tensor& r) { return index(r, {Slice(), mask}); })(xs);
  EXPECT_EQ(sel.shape(), (Shape{3, 4, 3}));
  const Tensor masks = from_vector(std::vector<bool>{true, false, false, true, true, true}, Shape{3, 2});
  try {
    vmap([&](const Tensor& m) { return index(x, {Slice(), m}); })(masks);
    FAIL() << "no error";
  } catch (const AutodiffError& e) {
    EXPECT_NE(std::string(e.what()).find("index"), std::string::npos) << e.what();
  }
}

// ---- functional updates -------------------------------------------------------------------------

TEST(At, SetAddMultiplyWithRepeatedIndices) {
  const Tensor x = from_vector(std::vector<double>{1, 2, 3, 4, 5});
  const Tensor id = i64s({1, 3, 1});
  const Tensor v = from_vector(std::vector<double>{10, 20, 30});
  using V = std::vector<double>;
  EXPECT_EQ(vals(at(x, {id}).set(v)), (V{1, 30, 3, 20, 5}));  // the last of the repeats wins
  EXPECT_EQ(vals(at(x, {id}).add(v)), (V{1, 42, 3, 24, 5}));
  EXPECT_EQ(vals(at(x, {id}).multiply(v)), (V{1, 600, 3, 80, 5}));
  EXPECT_EQ(vals(at(x, {id}).get()), (V{2, 4, 2}));
  EXPECT_EQ(vals(index_put(x, {id}, v)), (V{1, 30, 3, 20, 5}));
  EXPECT_EQ(vals(index_put(x, {id}, v, true)), (V{1, 42, 3, 24, 5}));
  EXPECT_EQ(vals(at(x, {Slice(None, None, 2)}).set(0.0)), (V{0, 2, 0, 4, 0}));
  EXPECT_EQ(vals(at(x, {-1}).add(1.0)), (V{1, 2, 3, 4, 6}));
  // Overwritten infinities do not leak through.
  const Tensor inf = from_vector(std::vector<double>{1, std::numeric_limits<double>::infinity(), 3});
  EXPECT_EQ(vals(at(inf, {1}).set(7.0)), (V{1, 7, 3}));
}

TEST(At, UpdatesOverSeveralAxesMatchLoops) {
  const Tensor x = iota({3, 4, 5});
  const Tensor v = rand64({3, 2, 2}, 8);  // x[:, 1::2, [4, 0]] = v
  const Tensor out = at(x, {Slice(), Slice(1, None, 2), i64s({4, 0})}).set(v);
  const auto xv = vals(x), vv = vals(v), ov = vals(out);
  std::vector<double> want = xv;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 2; ++j)
      for (int p = 0; p < 2; ++p) want[static_cast<std::size_t>((i * 4 + 1 + 2 * j) * 5 + (p == 0 ? 4 : 0))] = vv[static_cast<std::size_t>((i * 2 + j) * 2 + p)];
  EXPECT_EQ(ov, want);
  // Separated arrays with a repeat: x[[0, 2, 0], :, [1, 3, 1]] += w, w [3, 4].
  const Tensor w = rand64({3, 4}, 9);
  const Tensor added = at(x, {i64s({0, 2, 0}), Slice(), i64s({1, 3, 1})}).add(w);
  std::vector<double> want2 = xv;
  const auto wv = vals(w);
  const int r0[] = {0, 2, 0}, r2[] = {1, 3, 1};
  for (int p = 0; p < 3; ++p)
    for (int j = 0; j < 4; ++j) want2[static_cast<std::size_t>((r0[p] * 4 + j) * 5 + r2[p])] += wv[static_cast<std::size_t>(p * 4 + j)];
  const auto av = vals(added);
  for (std::size_t i = 0; i < want2.size(); ++i) EXPECT_NEAR(av[i], want2[i], 1e-12) << i;
  // A mask: x[x > 30] = -1.
  const Tensor masked = at(x, {greater(x, scalar_tensor(30.0, DType::f64))}).set(-1.0);
  for (std::size_t i = 0; i < xv.size(); ++i) EXPECT_EQ(vals(masked)[i], xv[i] > 30 ? -1.0 : xv[i]) << i;
  EXPECT_THROW(at(x, {0}).set(rand64({3}, 1)), ShapeError);  // x[0] is [4, 5]
  EXPECT_THROW(at(i64s({1, 2}), {0}).set(1.0), DTypeError);
}

TEST(At, DerivativesInXAndValues) {
  const Tensor id = i64s({1, 3, 1, 0});
  for (int mode = 0; mode < 3; ++mode) {
    auto f = [&, mode](std::span<const Tensor> a) {
      auto u = at(a[0], {Slice(), id});
      return mode == 0 ? u.set(a[1]) : mode == 1 ? u.add(a[1]) : u.multiply(a[1]);
    };
    expect_pass(check_grads(f, {rand64({2, 5}, 10), rand64({2, 4}, 11)}), mode == 0 ? "set" : mode == 1 ? "add" : "multiply");
  }
  // set: x's gradient is zero where overwritten, and only the last repeat's value gets one.
  auto loss = [&](const Tensor& x, const Tensor& v) { return sum(at(x, {id}).set(v)); };
  auto g = grad(loss, std::vector<int>{0, 1})(rand64({5}, 12), rand64({4}, 13));
  EXPECT_EQ(vals(g[0]), (std::vector<double>{0, 0, 1, 0, 1}));
  EXPECT_EQ(vals(g[1]), (std::vector<double>{0, 1, 1, 1}));
  expect_pass(check_grads([](std::span<const Tensor> a) { return at(a[0], {Slice(None, None, -2), 1}).multiply(a[1]); },
                          {rand64({5, 3}, 14), rand64({3}, 15)}),
              "multiply, basic");
}

TEST(At, VmapMatchesALoop) {
  const Tensor xs = rand64({3, 5}, 16), vs = rand64({3, 2}, 17);
  const Tensor id = i64s({4, 4});
  auto f = [&](const Tensor& x, const Tensor& v) { return at(x, {id}).set(v); };
  const Tensor batched = vmap(f, {0, 0})(xs, vs);
  for (std::int64_t b = 0; b < 3; ++b) EXPECT_EQ(vals(index(batched, {b})), vals(f(index(xs, {b}), index(vs, {b})))) << b;
  // Per-example indices and values into one x.
  const Tensor x = rand64({5}, 18);
  const Tensor ids = i64s({0, 0, 2, 1, 4, 3}, {3, 2});
  auto h = [&](const Tensor& i, const Tensor& v) { return at(x, {i}).multiply(v); };
  const Tensor per = vmap(h, {0, 0})(ids, vs);
  for (std::int64_t b = 0; b < 3; ++b) {
    const auto want = vals(h(index(ids, {b}), index(vs, {b})));
    const auto got = vals(index(per, {b}));
    for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-14) << b << " " << i;
  }
  auto hs = [&](const Tensor& i, const Tensor& v) { return at(x, {i}).set(v); };
  const Tensor per_set = vmap(hs, {0, 0})(ids, vs);
  for (std::int64_t b = 0; b < 3; ++b) EXPECT_EQ(vals(index(per_set, {b})), vals(hs(index(ids, {b}), index(vs, {b})))) << b;
}

TEST(At, PerExampleGradientsWithBatchedIndicesAndSecondOrder) {
  // vmap(grad) with each example's own indices, against a loop of grads.
  const Tensor x = rand64({6}, 19);
  const Tensor ids = i64s({0, 2, 2, 5, 1, 1, 4, 3, 0}, {3, 3});
  const Tensor vs = rand64({3, 3}, 20);
  auto loss = [&](const Tensor& i, const Tensor& v) { return sum(mul(at(x, {i}).multiply(v), at(x, {i}).set(mul(v, v)))); };
  auto dv = [&](const Tensor& i, const Tensor& v) { return grad([&](const Tensor& w) { return loss(i, w); })(v); };
  const Tensor per = vmap(dv, {0, 0})(ids, vs);
  for (std::int64_t b = 0; b < 3; ++b) {
    const auto want = vals(dv(index(ids, {b}), index(vs, {b})));
    const auto got = vals(index(per, {b}));
    for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << b << " " << i;
  }
  // The Hessian of a quadratic made of updates, against its closed form: f(v) = Σ (x.at[id].add(v))²
  // has Hessian 2 Pᵀ P, where (Pᵀ P)_jk = 1 when id_j = id_k.
  const Tensor id = i64s({1, 3, 1});
  const Tensor h = hessian([&](const Tensor& v) { return sum(square(at(x, {id}).add(v))); })(rand64({3}, 21));
  const auto hv = vals(h);
  const std::int64_t idv[] = {1, 3, 1};
  for (int j = 0; j < 3; ++j)
    for (int k = 0; k < 3; ++k) EXPECT_NEAR(hv[static_cast<std::size_t>(j * 3 + k)], idv[j] == idv[k] ? 2.0 : 0.0, 1e-12) << j << k;
}

}  // namespace
