// einsum (chainrule/ops/einsum.h) against a brute-force reference written out here (a loop over
// every assignment of the labels, summing the products: the definition), hand-written loops for
// "..." broadcasting, the contraction order of einsum_path against costs worked out by hand,
// errors, derivatives by check_grads in float64 and vmap against a loop.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "chainrule/autodiff/check.h"
#include "chainrule/chainrule.h"

using namespace chainrule;

namespace {

Tensor rand64(Shape s, std::uint64_t seed) {
  Generator g(seed);
  return randn(s, g, DType::f64);
}
std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

// out[output labels] = Σ over all other labels of Π operands, for explicit letter subscripts.
std::vector<double> reference(const std::string& subscripts, const std::vector<Tensor>& ops) {
  const auto arrow = subscripts.find("->");
  std::vector<std::string> terms;
  std::string lhs = subscripts.substr(0, arrow), out = subscripts.substr(arrow + 2);
  for (std::size_t s = 0;;) {
    auto c = lhs.find(',', s);
    terms.push_back(lhs.substr(s, c == std::string::npos ? std::string::npos : c - s));
    if (c == std::string::npos) break;
    s = c + 1;
  }
  std::map<char, std::int64_t> size;
  for (std::size_t i = 0; i < terms.size(); ++i)
    for (std::size_t a = 0; a < terms[i].size(); ++a) size[terms[i][a]] = std::max(size[terms[i][a]], ops[i].shape()[a]);
  std::vector<char> labels;
  for (auto& [l, n] : size) labels.push_back(l);
  std::vector<std::vector<double>> data;
  for (const auto& o : ops) data.push_back(vals(o));
  std::int64_t out_n = 1;
  for (char c : out) out_n *= size[c];
  std::vector<double> result(static_cast<std::size_t>(out_n), 0.0);
  for (auto& [l, n] : size)
    if (n == 0) return result;  // an empty sum
  std::map<char, std::int64_t> at;
  for (char l : labels) at[l] = 0;
  for (;;) {
    double prod = 1;
    for (std::size_t i = 0; i < ops.size(); ++i) {
      std::int64_t flat = 0;
      for (std::size_t a = 0; a < terms[i].size(); ++a) {
        const auto n = ops[i].shape()[a];
        flat = flat * n + (n == 1 ? 0 : at[terms[i][a]]);  // a size-1 axis broadcasts
      }
      prod *= data[i][static_cast<std::size_t>(flat)];
    }
    std::int64_t o = 0;
    for (char c : out) o = o * size[c] + at[c];
    if (out_n > 0) result[static_cast<std::size_t>(o)] += prod;
    std::size_t k = 0;  // next assignment, odometer style
    for (; k < labels.size(); ++k) {
      if (++at[labels[k]] < size[labels[k]]) break;
      at[labels[k]] = 0;
    }
    if (k == labels.size()) break;
  }
  return result;
}

void expect_matches(const std::string& subscripts, const std::vector<Tensor>& ops, const std::string& explicit_form = "") {
  const Tensor got = einsum(subscripts, ops);
  const auto want = reference(explicit_form.empty() ? subscripts : explicit_form, ops);
  const auto g = vals(got);
  ASSERT_EQ(g.size(), want.size()) << subscripts;
  for (std::size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], want[i], 1e-10) << subscripts << " at " << i;
}

TEST(Einsum, MatchesTheDefinition) {
  expect_matches("ij,jk->ik", {rand64({3, 4}, 1), rand64({4, 5}, 2)});
  expect_matches("ii->i", {rand64({4, 4}, 3)});
  expect_matches("ii->", {rand64({4, 4}, 4)});
  expect_matches("ij->ji", {rand64({2, 3}, 5)});
  expect_matches("i,i->", {rand64({6}, 6), rand64({6}, 7)});
  expect_matches("i,j->ij", {rand64({3}, 8), rand64({2}, 9)});
  expect_matches("bij,bjk->bik", {rand64({2, 3, 4}, 10), rand64({2, 4, 2}, 11)});
  expect_matches("iji->j", {rand64({3, 2, 3}, 12)});
  expect_matches("ijk,kl,lm->ijm", {rand64({2, 3, 4}, 13), rand64({4, 3}, 14), rand64({3, 2}, 15)});
  expect_matches("ab,bc,cd,de->ae", {rand64({2, 3}, 16), rand64({3, 4}, 17), rand64({4, 2}, 18), rand64({2, 3}, 19)});
  expect_matches("ij,ij->ij", {rand64({1, 3}, 20), rand64({2, 3}, 21)});  // a size-1 axis broadcasts
  expect_matches("abc,cab->b", {rand64({2, 3, 4}, 22), rand64({4, 2, 3}, 23)});
  expect_matches("ij,jk,ki->", {rand64({2, 3}, 24), rand64({3, 4}, 25), rand64({4, 2}, 26)});
  expect_matches("iij,jk->ik", {rand64({3, 3, 2}, 27), rand64({2, 4}, 28)});
  expect_matches("ij,k->", {rand64({2, 0}, 29), rand64({3}, 30)});  // an empty axis sums to zero
  expect_matches("aB,Bc->ca", {rand64({2, 3}, 31), rand64({3, 2}, 32)});
  // Six operands (the greedy order).
  expect_matches("ab,bc,cd,de,ef,fa->", {rand64({2, 3}, 33), rand64({3, 2}, 34), rand64({2, 4}, 35), rand64({4, 2}, 36),
                                         rand64({2, 3}, 37), rand64({3, 2}, 38)});
}

TEST(Einsum, ImplicitOutputSortsTheLabelsUsedOnce) {
  expect_matches("ij,jk", {rand64({3, 4}, 40), rand64({4, 2}, 41)}, "ij,jk->ik");
  expect_matches("ji", {rand64({3, 2}, 42)}, "ji->ij");
  expect_matches("ii", {rand64({3, 3}, 43)}, "ii->");
  expect_matches("ba,a", {rand64({2, 3}, 44), rand64({3}, 45)}, "ba,a->b");
  expect_matches("Ab,b", {rand64({2, 3}, 46), rand64({3}, 47)}, "Ab,b->A");  // upper case sorts first
}

TEST(Einsum, EllipsisBroadcastsLeadingAxes) {
  const Tensor a = rand64({2, 1, 3, 4}, 50), b = rand64({5, 4, 2}, 51);
  const Tensor c = einsum("...ij,...jk->...ik", {a, b});
  ASSERT_EQ(c.shape(), (Shape{2, 5, 3, 2}));
  const auto av = vals(a), bv = vals(b), cv = vals(c);
  for (int p = 0; p < 2; ++p)
    for (int q = 0; q < 5; ++q)
      for (int i = 0; i < 3; ++i)
        for (int k = 0; k < 2; ++k) {
          double s = 0;
          for (int j = 0; j < 4; ++j) s += av[static_cast<std::size_t>((p * 3 + i) * 4 + j)] * bv[static_cast<std::size_t>((q * 4 + j) * 2 + k)];
          EXPECT_NEAR(cv[static_cast<std::size_t>(((p * 5 + q) * 3 + i) * 2 + k)], s, 1e-12);
        }
  EXPECT_EQ(vals(einsum("...ij,...jk", {a, b})), cv);  // implicit: "..." first
  const Tensor x = rand64({2, 3, 4}, 52);
  const auto xv = vals(x);
  const auto rows = vals(einsum("...i->...", {x}));
  for (int p = 0; p < 6; ++p) {
    double s = 0;
    for (int i = 0; i < 4; ++i) s += xv[static_cast<std::size_t>(p * 4 + i)];
    EXPECT_NEAR(rows[static_cast<std::size_t>(p)], s, 1e-12);
  }
  const Tensor moved = einsum("i...->...i", {x});
  ASSERT_EQ(moved.shape(), (Shape{3, 4, 2}));
  EXPECT_EQ(vals(moved), vals(permute(x, {1, 2, 0})));
  // Explicit output without "...": the broadcast axes are summed.
  EXPECT_NEAR(einsum("...i->", {x}).item(), sum(x).item(), 1e-12);
}

TEST(Einsum, BadSubscriptsAreShapeErrors) {
  const Tensor a = rand64({2, 3}, 60), b = rand64({3, 4}, 61);
  EXPECT_THROW(einsum("ij,jk->ik", {a}), ShapeError);            // one operand for two terms
  EXPECT_THROW(einsum("ijk,jk->ik", {a, b}), ShapeError);        // rank 2 named with 3 labels
  EXPECT_THROW(einsum("ij,kj->ik", {a, b}), ShapeError);         // j: 3 vs 4
  EXPECT_THROW(einsum("ij,jk->iz", {a, b}), ShapeError);         // z in no operand
  EXPECT_THROW(einsum("ij,jk->ii", {a, b}), ShapeError);         // repeated output label
  EXPECT_THROW(einsum("i1,jk->ik", {a, b}), ShapeError);         // not a letter
  EXPECT_THROW(einsum("....,jk->k", {a, b}), ShapeError);        // two ellipses
  EXPECT_THROW(einsum("ii->i", {a}), ShapeError);                // a 2x3 diagonal
  try {
    einsum("ij,kj->ik", {a, b});
  } catch (const ShapeError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("einsum"), std::string::npos) << m;
    EXPECT_NE(m.find("'j'"), std::string::npos) << m;
  }
}

TEST(EinsumPath, ChoosesTheCheapestOrder) {
  // ij,jk,kl->il with [100,2] [2,100] [100,2]: (0,1) first costs 100·2·100 + 100·100·2 = 40000,
  // (1,2) first costs 2·100·2 + 100·2·2 = 800, (0,2) first (an outer product) 100·2·100·2 + ... more.
  const EinsumPath p = einsum_path("ij,jk,kl->il", {{100, 2}, {2, 100}, {100, 2}});
  ASSERT_EQ(p.contractions.size(), 2u);
  EXPECT_EQ(p.contractions[0], (std::pair<std::size_t, std::size_t>{1, 2}));
  EXPECT_EQ(p.contractions[1], (std::pair<std::size_t, std::size_t>{0, 1}));
  EXPECT_EQ(p.cost, 800.0);
  EXPECT_EQ(p.naive_cost, 40000.0);
  EXPECT_TRUE(p.optimal);
  // Two operands: one contraction, costing m·k·n.
  const EinsumPath q = einsum_path("ij,jk->ik", {{3, 4}, {4, 5}});
  EXPECT_EQ(q.contractions.size(), 1u);
  EXPECT_EQ(q.cost, 60.0);
  // Six: greedy, still no worse than left to right on this chain, and five contractions.
  const EinsumPath g = einsum_path("ab,bc,cd,de,ef,fg->ag", {{50, 2}, {2, 50}, {50, 2}, {2, 50}, {50, 2}, {2, 50}});
  EXPECT_FALSE(g.optimal);
  EXPECT_EQ(g.contractions.size(), 5u);
  EXPECT_LE(g.cost, g.naive_cost);
  // The chosen order gives the same values as the definition.
  expect_matches("ij,jk,kl->il", {rand64({10, 2}, 70), rand64({2, 10}, 71), rand64({10, 2}, 72)});
}

TEST(Einsum, DerivativesAndVmap) {
  for (const char* s : {"ij,jk->ik", "ii->i", "bij,bjk,bk->bi", "...ij,...j->...i", "iji->j"}) {
    std::vector<Tensor> in;
    const std::string sub = s;
    if (sub == "ij,jk->ik") in = {rand64({2, 3}, 80), rand64({3, 2}, 81)};
    if (sub == "ii->i") in = {rand64({3, 3}, 82)};
    if (sub == "bij,bjk,bk->bi") in = {rand64({2, 2, 3}, 83), rand64({2, 3, 2}, 84), rand64({2, 2}, 85)};
    if (sub == "...ij,...j->...i") in = {rand64({2, 2, 3}, 86), rand64({3}, 87)};
    if (sub == "iji->j") in = {rand64({2, 3, 2}, 88)};
    auto r = check_grads([sub](std::span<const Tensor> x) { return einsum(sub, {x.begin(), x.end()}); }, in);
    EXPECT_TRUE(r.pass) << s << ": " << r.failure;
  }
  const Tensor xs = rand64({4, 3, 2}, 90), w = rand64({2, 5}, 91);
  auto f = [&](const Tensor& x) { return einsum("ij,jk->ik", {x, w}); };
  const Tensor batched = vmap(f)(xs);
  for (std::int64_t b = 0; b < 4; ++b) {
    const auto got = vals(slice(batched, 0, b, b + 1));
    const auto want = vals(f(squeeze(slice(xs, 0, b, b + 1), 0)));
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12);
  }
}

}  // namespace
