// The experiments' quick versions: each assertion of the experiments issue is one test here. They
// count operations and bytes (and average over random networks); none depends on time.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "chainrule/chainrule.h"
#include "chainrule/data/dataset.h"
#include "chainrule/experiments/experiments.h"

namespace ex = chainrule::experiments;

namespace {

// Each quick experiment runs once per test process.
const ex::Result& quick(const std::string& name) {
  static std::map<std::string, ex::Result> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, ex::run_experiment(name, {.quick = true, .seed = 0})).first;
  return it->second;
}

// The experiments that train need Fashion-MNIST (Debian package dataset-fashion-mnist).
bool have_fashion_mnist() {
  return std::filesystem::exists(std::filesystem::path(chainrule::data::kFashionMnistDir) / "train-images-idx3-ubyte.gz") ||
         std::filesystem::exists(std::filesystem::path(chainrule::data::kFashionMnistDir) / "train-images-idx3-ubyte");
}
#define REQUIRE_FASHION_MNIST() \
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed (dataset-fashion-mnist)"

void expect_check(const std::string& experiment, const std::string& check, ex::CheckKind kind, bool expect_pass = true) {
  const auto& r = quick(experiment);
  for (const auto& c : r.checks) {
    if (c.name != check) continue;
    EXPECT_EQ(c.pass, expect_pass) << experiment << ": " << c.name << ": " << c.detail;
    EXPECT_EQ(c.kind, kind) << experiment << ": " << c.name << " is a " << ex::kind_name(c.kind) << " check";
    // The verdict is the numeric statement's.
    EXPECT_EQ(c.pass, ex::holds(c.value, c.cmp, c.threshold)) << c.name;
    return;
  }
  std::string names;
  for (const auto& c : r.checks) names += "\n  " + c.name;
  ADD_FAILURE() << experiment << " has no check named '" << check << "'; it has:" << names;
}

}  // namespace

// ---- the matrix chain ------------------------------------------------------------------------------

TEST(ExperimentsChain, DpEqualsBruteForceUpTo8Factors) {
  chainrule::Generator gen(42);
  for (int K = 1; K <= 8; ++K) {
    for (int trial = 0; trial < 100; ++trial) {
      std::vector<std::int64_t> dims;
      for (int k = 0; k <= K; ++k) dims.push_back(1 + static_cast<std::int64_t>(gen.next_u64() % 100));
      auto dp = ex::matrix_chain_order(dims);
      ASSERT_EQ(dp.cost, ex::matrix_chain_brute_force(dims)) << "K = " << K << ", trial " << trial;
      EXPECT_LE(dp.cost, ex::chain_cost_forward(dims));
      EXPECT_LE(dp.cost, ex::chain_cost_reverse(dims));
    }
  }
}

TEST(ExperimentsChain, ForwardAndReverseOrdersByHand) {
  // J1: 16×64, J2: 2048×16, J3: 16×2048... widths 64, 16, 2048, 16, 64.
  std::vector<std::int64_t> dims{64, 16, 2048, 16, 64};
  EXPECT_EQ(ex::chain_cost_forward(dims), 2048ull * 16 * 64 + 16ull * 2048 * 64 + 64ull * 16 * 64);
  EXPECT_EQ(ex::chain_cost_reverse(dims), 64ull * 16 * 64 + 64ull * 2048 * 16 + 64ull * 16 * 2048);
  EXPECT_EQ(ex::chain_order_forward(dims).bracketing, "(J4 (J3 (J2 J1)))");
  EXPECT_EQ(ex::chain_order_reverse(dims).bracketing, "(((J4 J3) J2) J1)");
  auto dp = ex::matrix_chain_order({10, 20, 30});
  EXPECT_EQ(dp.cost, 10u * 20 * 30);
  EXPECT_EQ(dp.bracketing, "(J2 J1)");
  EXPECT_THROW(ex::matrix_chain_order({5}), chainrule::ValueError);
}

TEST(ExperimentsChain, MultiplyChainMatchesEveryOrder) {
  chainrule::Generator gen(1);
  std::vector<std::int64_t> dims{7, 3, 11, 2, 9, 5};
  std::vector<chainrule::Tensor> factors;
  for (std::size_t k = 1; k < dims.size(); ++k) factors.push_back(chainrule::randn({dims[k], dims[k - 1]}, gen, chainrule::DType::f64));
  auto a = ex::multiply_chain(factors, ex::matrix_chain_order(dims));
  auto b = ex::multiply_chain(factors, ex::chain_order_forward(dims));
  auto c = ex::multiply_chain(factors, ex::chain_order_reverse(dims));
  EXPECT_EQ(a.shape(), (chainrule::Shape{5, 7}));
  EXPECT_LT(chainrule::max_abs_diff(a, b), 1e-10);
  EXPECT_LT(chainrule::max_abs_diff(a, c), 1e-10);
}

TEST(ExperimentsTools, Autocorrelation) {
  std::vector<double> alt{1, -1, 1, -1, 1, -1, 1, -1};
  auto r = ex::autocorrelation(alt, 2);
  EXPECT_DOUBLE_EQ(r[0], 1.0);
  EXPECT_NEAR(r[1], -7.0 / 8.0, 1e-12);
  EXPECT_NEAR(r[2], 6.0 / 8.0, 1e-12);
  auto flat = ex::autocorrelation({3, 3, 3}, 1);
  EXPECT_EQ(flat[1], 0.0);
}

TEST(ExperimentsTools, UnknownExperimentNamesTheKnownOnes) {
  try {
    ex::run_experiment("nope");
    FAIL() << "expected ValueError";
  } catch (const chainrule::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("modes"), std::string::npos) << e.what();
  }
}

TEST(ExperimentsTools, CsvAndGnuplotScript) {
  ex::Result r;
  r.name = "demo";
  r.title = "demo";
  r.tables = {{"a", {"x", "y"}, {{"1", "2"}}}, {"b", {"x", "z"}, {{"3", "a,b"}}}};
  r.figure.plots = {{"t", "x", "y", true, true, {{"s", {1, 0, 2}, {1, 5, -1}, "lines"}}, ""}};
  auto dir = std::filesystem::temp_directory_path() / "chainrule_test_experiments";
  std::filesystem::create_directories(dir);
  ex::write_csv(r, dir / "demo.csv");
  std::ifstream in(dir / "demo.csv");
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "table,x,y,z\na,1,2,\nb,3,,\"a,b\"\n");
  // Points a log axis cannot show are left out of the data blocks.
  auto gp = ex::gnuplot_script(r, "demo.svg", "demo.png");
  EXPECT_NE(gp.find("$d0_0 << EOD\n1 1\nEOD"), std::string::npos) << gp;
  EXPECT_NE(gp.find("set terminal svg"), std::string::npos);
  EXPECT_NE(gp.find("set terminal pngcairo"), std::string::npos);
  std::filesystem::remove_all(dir);
}

// ---- statistics over seeds ------------------------------------------------------------------------

namespace {
std::vector<double> normal_sample(chainrule::Generator& gen, std::int64_t n, double mu, double sigma) {
  auto v = chainrule::randn({n}, gen, chainrule::DType::f64).to_vector<double>();
  for (auto& x : v) x = mu + sigma * x;
  return v;
}
double sample_mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}
double sample_sd(const std::vector<double>& v) {
  const double m = sample_mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}
}  // namespace

TEST(ExperimentsStats, BootstrapMatchesNormalTheoryOnALargeSample) {
  chainrule::Generator gen(7);
  const auto v = normal_sample(gen, 400, 3.0, 2.0);
  const auto iv = ex::bootstrap_mean_ci(v);
  const double m = sample_mean(v), half = 1.96 * sample_sd(v) / std::sqrt(400.0);
  EXPECT_NEAR(iv.mean, m, 1e-12);
  // The percentile interval of a mean is about mean ± 1.96 σ/√n; 2000 resamples put its ends
  // within a few per cent of the half-width.
  EXPECT_NEAR(iv.lo, m - half, 0.1 * half);
  EXPECT_NEAR(iv.hi, m + half, 0.1 * half);
}

TEST(ExperimentsStats, BootstrapCoversTheTrueMeanAboutNinetyFivePerCent) {
  chainrule::Generator gen(11);
  const int trials = 400;
  int covered = 0;
  for (int t = 0; t < trials; ++t) {
    const auto iv = ex::bootstrap_mean_ci(normal_sample(gen, 50, 3.0, 2.0), 2000, static_cast<std::uint64_t>(t));
    covered += iv.lo <= 3.0 && 3.0 <= iv.hi;
  }
  // The expected rate is a little below 95 % (the percentile interval uses the plug-in σ); one
  // standard error over 400 trials is about 1.1 %.
  EXPECT_GE(covered, static_cast<int>(0.90 * trials));
  EXPECT_LE(covered, static_cast<int>(0.98 * trials));
}

TEST(ExperimentsStats, BootstrapEdgeCasesAndReproducibility) {
  auto one = ex::bootstrap_mean_ci({2.5});
  EXPECT_EQ(one.mean, 2.5);
  EXPECT_EQ(one.lo, 2.5);
  EXPECT_EQ(one.hi, 2.5);
  auto flat = ex::bootstrap_mean_ci({4, 4, 4});
  EXPECT_EQ(flat.lo, 4.0);
  EXPECT_EQ(flat.hi, 4.0);
  auto a = ex::bootstrap_mean_ci({1, 5, 2, 8}), b = ex::bootstrap_mean_ci({1, 5, 2, 8});
  EXPECT_EQ(a.lo, b.lo);
  EXPECT_EQ(a.hi, b.hi);
  EXPECT_DOUBLE_EQ(a.mean, 4.0);
  // Three values: a resample of three copies of the smallest (or largest) has probability
  // 1/27 > 2.5 %, so the 95 % percentile interval is exactly [min, max].
  auto three = ex::bootstrap_mean_ci({1, 2, 3});
  EXPECT_EQ(three.lo, 1.0);
  EXPECT_EQ(three.hi, 3.0);
  EXPECT_TRUE(std::isnan(ex::bootstrap_mean_ci({}).mean));
}

TEST(ExperimentsStats, BootstrapOfAnyStatisticAgreesWithTheMeansAndResamplesEachGroup) {
  const std::vector<double> v{1, 5, 2, 8, 3};
  auto mean_of = [&](const ex::GroupIndices& idx) {
    double s = 0;
    for (auto i : idx[0]) s += v[i];
    return s / static_cast<double>(idx[0].size());
  };
  const auto a = ex::bootstrap_mean_ci(v), b = ex::bootstrap_ci({v.size()}, mean_of);
  EXPECT_EQ(a.mean, b.mean);
  EXPECT_EQ(a.lo, b.lo);
  EXPECT_EQ(a.hi, b.hi);
  // Two groups of different sizes, each resampled within itself: the difference of the means.
  const std::vector<double> x{0, 0, 0, 1}, y{10, 10, 12};
  auto diff = [&](const ex::GroupIndices& idx) {
    EXPECT_EQ(idx[0].size(), x.size());
    EXPECT_EQ(idx[1].size(), y.size());
    double sx = 0, sy = 0;
    for (auto i : idx[0]) sx += x.at(i);
    for (auto i : idx[1]) sy += y.at(i);
    return sy / 3 - sx / 4;
  };
  const auto d = ex::bootstrap_ci({x.size(), y.size()}, diff, 500);
  EXPECT_NEAR(d.mean, 32.0 / 3 - 0.25, 1e-12);
  EXPECT_LE(d.lo, d.mean);
  EXPECT_GE(d.hi, d.mean);
  EXPECT_GE(d.lo, 10 - 1.0);   // the extremes a resample can reach
  EXPECT_LE(d.hi, 12 - 0.0);
  EXPECT_LT(d.lo, d.hi);
  // A statistic that is always NaN has no interval.
  const auto n = ex::bootstrap_ci({3}, [](const ex::GroupIndices&) { return std::nan(""); }, 10);
  EXPECT_TRUE(std::isnan(n.lo) && std::isnan(n.hi));
  EXPECT_THROW(ex::bootstrap_ci({3}, mean_of, 1), chainrule::ValueError);
}

TEST(ExperimentsStats, DerivedSeeds) {
  auto s = ex::derive_seeds(5, 20);
  ASSERT_EQ(s.size(), 20u);
  EXPECT_EQ(s[0], 5u);  // one seed is the plain run
  std::sort(s.begin(), s.end());
  EXPECT_EQ(std::unique(s.begin(), s.end()), s.end());
  for (std::size_t i = 1; i < s.size(); ++i) EXPECT_GT(s[i] - s[i - 1], 1000u);  // clear of the experiments' seed + k
  for (auto v : s) EXPECT_LT(v, 1ull << 53);  // exact as a JSON double
  EXPECT_EQ(ex::derive_seeds(5, 3), (std::vector<std::uint64_t>{ex::derive_seeds(5, 20)[0], ex::derive_seeds(5, 20)[1],
                                                                 ex::derive_seeds(5, 20)[2]}));
  EXPECT_THROW(ex::derive_seeds(0, 0), chainrule::ValueError);
}

TEST(ExperimentsStats, CheckStatements) {
  EXPECT_TRUE(ex::holds(1.0, ex::Compare::LessEq, 1.0));
  EXPECT_FALSE(ex::holds(1.0, ex::Compare::Less, 1.0));
  EXPECT_TRUE(ex::holds(2.0, ex::Compare::Greater, 1.0));
  EXPECT_FALSE(ex::holds(std::nan(""), ex::Compare::GreaterEq, 0.0));
  EXPECT_FALSE(ex::holds(std::nan(""), ex::Compare::LessEq, 0.0));
  auto c = ex::check_value(ex::CheckKind::Reproduction, "c", 0.2, ex::Compare::LessEq, 0.15, "d");
  EXPECT_FALSE(c.pass);
  EXPECT_EQ(c.passed, 0);
  EXPECT_EQ(c.seeds, 1);
  EXPECT_TRUE(ex::check_true("t", true, "").pass);
  EXPECT_FALSE(ex::check_true("t", false, "").pass);
  EXPECT_EQ(ex::check_true("t", true, "").kind, ex::CheckKind::Software);
}

namespace {
ex::Result seed_result(std::uint64_t seed, double cell, const std::string& text, double y, std::vector<double> checks) {
  ex::Result r;
  r.name = "demo", r.title = "demo", r.seeds = {seed}, r.seed_seconds = {1.0 + static_cast<double>(seed)};
  r.seconds = r.seed_seconds[0];
  r.tables = {{"t", {"label", "value", "fixed", "note"}, {{"a", std::to_string(cell), "5", text}}}};
  r.figure.plots = {{"p", "x", "y", false, false, {{"s", {1, 2}, {y, 2 * y}, "lines"}}, ""}};
  r.checks.push_back(ex::check_value(ex::CheckKind::Reproduction, "repro", checks[0], ex::Compare::LessEq, 1.0, "r"));
  r.checks.push_back(ex::check_value(ex::CheckKind::Software, "soft", checks[1], ex::Compare::LessEq, 0.0, "s"));
  r.json = "{\"seed\": " + std::to_string(seed) + "}";
  return r;
}
}  // namespace

TEST(ExperimentsStats, AggregateTablesSeriesAndChecks) {
  std::vector<ex::Result> rs = {seed_result(0, 1, "x", 1, {0.5, 0}), seed_result(1, 2, "x", 3, {0.6, 0}),
                                seed_result(2, 3, "y", 5, {1.05, 1})};
  const auto agg = ex::aggregate_results(rs);
  ASSERT_EQ(agg.tables.size(), 1u);
  const auto& row = agg.tables[0].rows.at(0);
  EXPECT_EQ(row[0], "a");            // text equal over seeds stays
  EXPECT_EQ(row[1], "2 [1, 3]");     // mean and the interval of {1, 2, 3}
  EXPECT_EQ(row[2], "5");            // equal numbers stay
  EXPECT_EQ(row[3], "x (varies)");   // text that differs says so
  const auto& se = agg.figure.plots.at(0).series.at(0);
  EXPECT_EQ(se.y, (std::vector<double>{3, 6}));
  EXPECT_EQ(se.lo, (std::vector<double>{1, 2}));
  EXPECT_EQ(se.hi, (std::vector<double>{5, 10}));
  ASSERT_EQ(agg.checks.size(), 2u);
  // Reproduction: two of three seeds pass, but the interval [0.5, 1.05] crosses the threshold.
  EXPECT_EQ(agg.checks[0].passed, 2);
  EXPECT_EQ(agg.checks[0].seeds, 3);
  EXPECT_NEAR(agg.checks[0].value, 0.716666, 1e-5);
  EXPECT_EQ(agg.checks[0].hi, 1.05);
  EXPECT_FALSE(agg.checks[0].pass);
  // Software: must hold on every seed.
  EXPECT_EQ(agg.checks[1].passed, 2);
  EXPECT_FALSE(agg.checks[1].pass);
  EXPECT_EQ(agg.seeds, (std::vector<std::uint64_t>{0, 1, 2}));
  EXPECT_DOUBLE_EQ(agg.seconds, 1 + 2 + 3);
  EXPECT_NE(agg.json.find("per_seed"), std::string::npos);
  // The plot draws the band.
  const auto gp = ex::gnuplot_script(agg, "demo.svg", "demo.png");
  EXPECT_NE(gp.find("$d0_0 << EOD\n1 3 1 5\n2 6 2 10\nEOD"), std::string::npos) << gp;
  EXPECT_NE(gp.find("filledcurves"), std::string::npos);
}

TEST(ExperimentsStats, ReproductionVerdictIsOnTheInterval) {
  // 19 seeds at 0.5 and one at 1.2 against "<= 1": one seed fails (95 % pass), but the mean's
  // interval lies well below 1, so the check passes; all seeds at 0.98 and one at 1.2 fail it.
  std::vector<ex::Result> good, bad;
  for (int k = 0; k < 20; ++k) {
    good.push_back(seed_result(static_cast<std::uint64_t>(k), 1, "x", 1, {k == 7 ? 1.2 : 0.5, 0}));
    bad.push_back(seed_result(static_cast<std::uint64_t>(k), 1, "x", 1, {k == 7 ? 1.2 : 0.98, 0}));
  }
  const auto g = ex::aggregate_results(good), b = ex::aggregate_results(bad);
  EXPECT_EQ(g.checks[0].passed, 19);
  EXPECT_TRUE(g.checks[0].pass) << g.checks[0].lo << " " << g.checks[0].hi;
  EXPECT_TRUE(g.checks[1].pass);
  EXPECT_LT(g.checks[0].hi, 1.0);
  EXPECT_EQ(b.checks[0].passed, 19);
  EXPECT_FALSE(b.checks[0].pass) << b.checks[0].lo << " " << b.checks[0].hi;
}

TEST(ExperimentsStats, AggregateKeepsFirstSeedWhereShapesDiffer) {
  auto a = seed_result(0, 1, "x", 1, {0.5, 0}), b = seed_result(1, 2, "x", 1, {0.5, 0});
  b.tables[0].rows.push_back({"b", "1", "5", "x"});
  b.figure.plots[0].series[0].x = {1, 3};
  b.checks.pop_back();  // a seed without the software check counts as failing it
  const auto agg = ex::aggregate_results({a, b});
  EXPECT_EQ(agg.tables[0].rows.size(), 1u);
  EXPECT_NE(agg.tables[0].name.find("first seed only"), std::string::npos);
  EXPECT_NE(agg.figure.plots[0].series[0].label.find("first seed"), std::string::npos);
  EXPECT_TRUE(agg.figure.plots[0].series[0].lo.empty());
  EXPECT_EQ(agg.checks[1].passed, 1);
  EXPECT_FALSE(agg.checks[1].pass);
}

TEST(ExperimentsStats, ReportSplitsTheKinds) {
  std::vector<ex::Result> rs = {seed_result(0, 1, "x", 1, {0.5, 0}), seed_result(1, 2, "x", 3, {0.6, 0})};
  const auto agg = ex::aggregate_results(rs);
  ex::ReportInfo info{"cmd", "", 3.0, true, 0, 2, 2, {0.5, 0.25, 0.125}};
  const auto md = ex::report_markdown({agg}, info);
  EXPECT_NE(md.find("2 seeds"), std::string::npos) << md;
  EXPECT_NE(md.find("**Software checks** (1/1 pass"), std::string::npos) << md;
  EXPECT_NE(md.find("**Reproduction checks** (1/1 pass"), std::string::npos) << md;
  EXPECT_NE(md.find("| demo | reproduction | repro | 2/2 | 100 % | PASS |"), std::string::npos) << md;
  EXPECT_NE(md.find("load average at the start: 0.50, 0.25, 0.12"), std::string::npos) << md;
  EXPECT_NE(md.find("| [`demo`](#demo) | 1/1 pass | 1/1 pass | 1.5 ± 0.5 |"), std::string::npos) << md;  // median ± IQR of {1, 2} s
  EXPECT_NE(md.find("| all | 1/1 pass | 1/1 pass | |"), std::string::npos) << md;
}

// ---- modes ----------------------------------------------------------------------------------------

TEST(ExperimentModes, DpEqualsBruteForce) {
  expect_check("modes", "DP = brute force for up to 8 factors", ex::CheckKind::Software);
}
TEST(ExperimentModes, DpNeverDearerThanSingleModes) {
  expect_check("modes", "DP order never dearer than all-forward or all-reverse", ex::CheckKind::Software);
}
TEST(ExperimentModes, CountedMaddsEqualPredicted) {
  expect_check("modes", "counted multiply-adds = predicted", ex::CheckKind::Software);
}
TEST(ExperimentModes, OptimalStrategyEqualsJacrev) {
  expect_check("modes", "optimal strategy's Jacobian = jacrev's", ex::CheckKind::Software);
}
TEST(ExperimentModes, JacfwdGrowsWithN) { expect_check("modes", "jacfwd multiply-adds grow as n", ex::CheckKind::Software); }
TEST(ExperimentModes, JacrevGrowsWithM) { expect_check("modes", "jacrev multiply-adds grow as m", ex::CheckKind::Software); }
TEST(ExperimentModes, CrossoverAtNEqualsM) { expect_check("modes", "crossover at n = m", ex::CheckKind::Software); }
TEST(ExperimentModes, JacobianPicksCheaperMode) {
  expect_check("modes", "jacobian picks the cheaper mode", ex::CheckKind::Software);
}

// ---- cost -----------------------------------------------------------------------------------------

TEST(ExperimentCost, GradientAtMost3xForward) {
  expect_check("cost", "gradient <= 3x forward multiply-adds", ex::CheckKind::Software);
}
TEST(ExperimentCost, JvpAtMost3xForward) { expect_check("cost", "jvp <= 3x forward multiply-adds", ex::CheckKind::Software); }
TEST(ExperimentCost, TapeBytesLinearInDepth) { expect_check("cost", "tape bytes linear in depth", ex::CheckKind::Software); }
TEST(ExperimentCost, ForwardModeKeepsNoTape) { expect_check("cost", "forward mode keeps no tape", ex::CheckKind::Software); }

// ---- init -----------------------------------------------------------------------------------------

TEST(ExperimentInit, HeFanInKeepsForwardVariance) {
  expect_check("init", "He fan_in keeps the forward variance within a factor 2", ex::CheckKind::Reproduction);
}
TEST(ExperimentInit, HeFanOutKeepsBackwardVariance) {
  expect_check("init", "He fan_out keeps the backward variance within a factor 2", ex::CheckKind::Reproduction);
}
TEST(ExperimentInit, XavierShrinksByTwoPerLayer) {
  expect_check("init", "Xavier shrinks both by about 2^-L", ex::CheckKind::Reproduction);
}
TEST(ExperimentInit, SmallStdVanishes) { expect_check("init", "N(0, 0.01²) vanishes", ex::CheckKind::Reproduction); }

// ---- shattered ------------------------------------------------------------------------------------

// Each threshold is derived in shattered.cpp from the theorems of Balduzzi et al. 2017. One process
// runs the quick experiment once, so the checks are grouped into few tests.
TEST(ExperimentShattered, TheoremsReproduced) {
  expect_check("shattered", "theorem 1: plain + BN nets' gradient correlation decays at >= 0.447 per layer",
               ex::CheckKind::Reproduction);
  expect_check("shattered", "theorem 2: residual nets' gradient correlation decays at <= 0.447 per block", ex::CheckKind::Reproduction);
  expect_check("shattered", "theorem 3: residual + BN decay slows with depth (sub-exponential): rate ratio < 1",
               ex::CheckKind::Reproduction);
  expect_check("shattered", "beta = 0.3 rescaling raises the deepest residual + BN net's correlation as theorem 3 implies",
               ex::CheckKind::Reproduction);
}
// Not reproduced: plain nets without BN decorrelate far more slowly than theorem 1's 2^-L (their
// kinks do not multiply with depth; the report says so). The test pins the finding, so that a change
// that moves it is seen.
TEST(ExperimentShattered, PlainWithoutBnSlowerThanTheorem1) {
  expect_check("shattered", "theorem 1: plain nets' gradient correlation decays at >= 0.447 per layer", ex::CheckKind::Reproduction,
               /*expect_pass=*/false);
}
// Not reproduced either: residual + BN nets decay as (1 + L)^-p with p near 1 (branches that
// decorrelate fully), not theorem 3's 1/2.
TEST(ExperimentShattered, ResidualBnDecaysFasterThanTheorem3) {
  expect_check("shattered", "theorem 3: residual + BN decays as (1 + L)^-p with p nearer 1/2 than 1 (p <= 0.75)",
               ex::CheckKind::Reproduction, /*expect_pass=*/false);
}
TEST(ExperimentShattered, EstimatorAndKinkCounter) {
  expect_check("shattered", "q of x-constant gradients is 1", ex::CheckKind::Software);
  expect_check("shattered", "q of white-noise gradients is 0 within 5 standard deviations", ex::CheckKind::Software);
  expect_check("shattered", "input-layer kinks in |x| < 0.5 follow the Cauchy law (sigma_b = 0.1)", ex::CheckKind::Software);
  expect_check("shattered", "input-layer kinks in |x| < 0.5 follow the Cauchy law (sigma_b = sigma_w)", ex::CheckKind::Software);
}

// ---- backprop -------------------------------------------------------------------------------------

TEST(ExperimentBackprop, HandEqualsReverseInFloat64) {
  expect_check("backprop", "hand vs reverse <= 1e-12 max|g| in float64", ex::CheckKind::Software);
}
TEST(ExperimentBackprop, ForwardEqualsReverseInFloat64) {
  expect_check("backprop", "jacfwd vs reverse <= 1e-12 max|g| in float64", ex::CheckKind::Software);
}
TEST(ExperimentBackprop, FiniteDifferencesAgree) {
  expect_check("backprop", "finite differences agree to 1e-6 in float64", ex::CheckKind::Software);
}

// ---- residual-block -------------------------------------------------------------------------------

TEST(ExperimentResidualBlock, LrlrBranchOutputsNonNegative) {
  expect_check("residual-block", "lrlr branch outputs are all non-negative", ex::CheckKind::Software);
}
TEST(ExperimentResidualBlock, GrowthMatchesDerivation) {
  expect_check("residual-block", "variance growth matches the derivation within 15 %", ex::CheckKind::Reproduction);
}
TEST(ExperimentResidualBlock, PreActivationDoubles) {
  expect_check("residual-block", "a pre-activation block about doubles the variance", ex::CheckKind::Reproduction);
}

// ---- training on Fashion-MNIST --------------------------------------------------------------------

TEST(ExperimentVanishing, HeTrains) {
  REQUIRE_FASHION_MNIST();
  expect_check("vanishing", "He trains", ex::CheckKind::Reproduction);
}
TEST(ExperimentVanishing, XavierStalls) {
  REQUIRE_FASHION_MNIST();
  expect_check("vanishing", "Xavier stalls near ln 10", ex::CheckKind::Reproduction);
}
TEST(ExperimentVanishing, SmallStdStalls) {
  REQUIRE_FASHION_MNIST();
  expect_check("vanishing", "N(0, 0.01²) stalls near ln 10", ex::CheckKind::Reproduction);
}
TEST(ExperimentDepth, ResidualBeatsPlainAtLargestDepth) {
  REQUIRE_FASHION_MNIST();
  expect_check("depth", "at the largest depth, residual training loss < plain", ex::CheckKind::Reproduction);
}

// ---- paths ----------------------------------------------------------------------------------------

TEST(ExperimentPaths, DeletingResidualBlockCostsLessThanPlainLayer) {
  REQUIRE_FASHION_MNIST();
  expect_check("paths", "deleting a residual block costs less accuracy than deleting a plain layer", ex::CheckKind::Reproduction);
}
TEST(ExperimentPaths, GradientPerPathFallsWithLength) {
  REQUIRE_FASHION_MNIST();
  expect_check("paths", "gradient per path falls with its length", ex::CheckKind::Reproduction);
}

// ---- checkpointing (Chen et al. 2016) ------------------------------------------------------------

TEST(ExperimentCheckpointing, GradientsUnchanged) {
  expect_check("checkpointing", "checkpointing leaves every gradient unchanged", ex::CheckKind::Software);
}
TEST(ExperimentCheckpointing, LeastMemoryNearSqrtN) {
  expect_check("checkpointing", "n = 16: the least peak memory is at k within 2x of sqrt(n)", ex::CheckKind::Reproduction);
}
TEST(ExperimentCheckpointing, AtMostOneExtraForward) {
  expect_check("checkpointing", "n = 16: recomputation at the best k costs at most 1.4x the GEMM work", ex::CheckKind::Reproduction);
}
