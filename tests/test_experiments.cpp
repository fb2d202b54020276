// The experiments' quick versions: each assertion of the experiments issue is one test here. They
// count operations and bytes (and average over random networks); none depends on time.
#include <gtest/gtest.h>

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

void expect_check(const std::string& experiment, const std::string& check) {
  const auto& r = quick(experiment);
  for (const auto& c : r.checks) {
    if (c.name != check) continue;
    EXPECT_TRUE(c.pass) << experiment << ": " << c.name << ": " << c.detail;
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

// ---- modes ----------------------------------------------------------------------------------------

TEST(ExperimentModes, DpEqualsBruteForce) { expect_check("modes", "DP = brute force for up to 8 factors"); }
TEST(ExperimentModes, DpNeverDearerThanSingleModes) { expect_check("modes", "DP order never dearer than all-forward or all-reverse"); }
TEST(ExperimentModes, CountedMaddsEqualPredicted) { expect_check("modes", "counted multiply-adds = predicted"); }
TEST(ExperimentModes, OptimalStrategyEqualsJacrev) { expect_check("modes", "optimal strategy's Jacobian = jacrev's"); }
TEST(ExperimentModes, JacfwdGrowsWithN) { expect_check("modes", "jacfwd multiply-adds grow as n"); }
TEST(ExperimentModes, JacrevGrowsWithM) { expect_check("modes", "jacrev multiply-adds grow as m"); }
TEST(ExperimentModes, CrossoverAtNEqualsM) { expect_check("modes", "crossover at n = m"); }
TEST(ExperimentModes, JacobianPicksCheaperMode) { expect_check("modes", "jacobian picks the cheaper mode"); }

// ---- cost -----------------------------------------------------------------------------------------

TEST(ExperimentCost, GradientAtMost3xForward) { expect_check("cost", "gradient <= 3x forward multiply-adds"); }
TEST(ExperimentCost, JvpAtMost3xForward) { expect_check("cost", "jvp <= 3x forward multiply-adds"); }
TEST(ExperimentCost, TapeBytesLinearInDepth) { expect_check("cost", "tape bytes linear in depth"); }
TEST(ExperimentCost, ForwardModeKeepsNoTape) { expect_check("cost", "forward mode keeps no tape"); }

// ---- init -----------------------------------------------------------------------------------------

TEST(ExperimentInit, HeFanInKeepsForwardVariance) { expect_check("init", "He fan_in keeps the forward variance within a factor 2"); }
TEST(ExperimentInit, HeFanOutKeepsBackwardVariance) { expect_check("init", "He fan_out keeps the backward variance within a factor 2"); }
TEST(ExperimentInit, XavierShrinksByTwoPerLayer) { expect_check("init", "Xavier shrinks both by about 2^-L"); }
TEST(ExperimentInit, SmallStdVanishes) { expect_check("init", "N(0, 0.01²) vanishes"); }

// ---- shattered ------------------------------------------------------------------------------------

TEST(ExperimentShattered, ScaledResidualKeepsCorrelation) {
  expect_check("shattered", "1/sqrt(L) residual lag-16 autocorrelation >= 2x the 24-layer plain net's");
}
TEST(ExperimentShattered, DeepPlainIsWhiteNoise) { expect_check("shattered", "deep plain gradients look like white noise"); }

// ---- backprop -------------------------------------------------------------------------------------

TEST(ExperimentBackprop, HandEqualsReverseInFloat64) { expect_check("backprop", "hand vs reverse <= 1e-12 max|g| in float64"); }
TEST(ExperimentBackprop, ForwardEqualsReverseInFloat64) { expect_check("backprop", "jacfwd vs reverse <= 1e-12 max|g| in float64"); }
TEST(ExperimentBackprop, FiniteDifferencesAgree) { expect_check("backprop", "finite differences agree to 1e-6 in float64"); }

// ---- residual-block -------------------------------------------------------------------------------

TEST(ExperimentResidualBlock, LrlrBranchOutputsNonNegative) {
  expect_check("residual-block", "lrlr branch outputs are all non-negative");
}
TEST(ExperimentResidualBlock, GrowthMatchesDerivation) {
  expect_check("residual-block", "variance growth matches the derivation within 15 %");
}
TEST(ExperimentResidualBlock, PreActivationDoubles) {
  expect_check("residual-block", "a pre-activation block about doubles the variance");
}

// ---- training on Fashion-MNIST --------------------------------------------------------------------

TEST(ExperimentVanishing, HeTrains) {
  REQUIRE_FASHION_MNIST();
  expect_check("vanishing", "He trains");
}
TEST(ExperimentVanishing, XavierAndSmallStdStall) {
  REQUIRE_FASHION_MNIST();
  expect_check("vanishing", "Xavier and N(0, 0.01²) stall near ln 10");
}
TEST(ExperimentDepth, ResidualBeatsPlainAtLargestDepth) {
  REQUIRE_FASHION_MNIST();
  expect_check("depth", "at the largest depth, residual training loss < plain");
}

// ---- paths ----------------------------------------------------------------------------------------

TEST(ExperimentPaths, DeletingResidualBlockCostsLessThanPlainLayer) {
  REQUIRE_FASHION_MNIST();
  expect_check("paths", "deleting a residual block costs less accuracy than deleting a plain layer");
}
TEST(ExperimentPaths, GradientPerPathFallsWithLength) {
  REQUIRE_FASHION_MNIST();
  expect_check("paths", "gradient per path falls with its length");
}

// ---- checkpointing (Chen et al. 2016) ------------------------------------------------------------

TEST(ExperimentCheckpointing, GradientsUnchanged) {
  expect_check("checkpointing", "software: checkpointing leaves every gradient unchanged");
}
TEST(ExperimentCheckpointing, LeastMemoryNearSqrtN) {
  expect_check("checkpointing", "reproduction: n = 16: the least peak memory is at k within 2x of sqrt(n)");
}
TEST(ExperimentCheckpointing, AtMostOneExtraForward) {
  expect_check("checkpointing", "reproduction: n = 16: recomputation at the best k costs at most 1.4x the GEMM work");
}
