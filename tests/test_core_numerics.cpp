// Numerical safety: stable softmax family at extreme logits, and anomaly mode.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "chainrule/chainrule.h"

using namespace chainrule;

namespace {

const double kInf = std::numeric_limits<double>::infinity();

bool all_finite(const Tensor& t) {
  for (double v : cast(t, DType::f64).to_vector<double>())
    if (!std::isfinite(v)) return false;
  return true;
}

TEST(Stability, SoftmaxFamilyAtExtremeLogits) {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor z = tensor({1e4, -1e4, 0, -1e4, 1e4, 1e4}, {2, 3}, dt);
    Tensor labels = from_vector<std::int64_t>({1, 0});
    EXPECT_TRUE(all_finite(softmax(z)));
    EXPECT_TRUE(all_finite(log_softmax(z)));
    EXPECT_TRUE(all_finite(logsumexp(z, {-1})));
    Tensor ce = cross_entropy(z, labels, Reduction::None);
    EXPECT_TRUE(all_finite(ce));
    EXPECT_NEAR(cast(ce, DType::f64).to_vector<double>()[0], 2e4, 1e-2);
    Tensor g = grad([&](const Tensor& v) { return cross_entropy(v, labels); })(z);
    EXPECT_TRUE(all_finite(g));
  }
}

TEST(Stability, RowsOfMinusInfinity) {
  Tensor z = tensor({-kInf, -kInf, -kInf, 0.0, -kInf, 1.0}, {2, 3}, DType::f64);
  auto lse = logsumexp(z, {-1}).to_vector<double>();
  EXPECT_EQ(lse[0], -kInf);  // log of an empty sum
  EXPECT_NEAR(lse[1], std::log(1 + std::exp(1.0)), 1e-15);
  auto ls = log_softmax(z).to_vector<double>();
  EXPECT_EQ(ls[3 + 1], -kInf);
  EXPECT_NEAR(ls[3 + 2], 1 - lse[1], 1e-15);
  // A finite label in a row with some -inf logits has a finite loss.
  Tensor ce = cross_entropy(slice(z, 0, 1, 2), from_vector<std::int64_t>({2}), Reduction::None);
  EXPECT_TRUE(all_finite(ce));
}

TEST(Anomaly, ReportsThePrimitiveShapesAndModule) {
  Tensor x = tensor({1, -1}, {2}, DType::f64);
  EXPECT_TRUE(std::isnan(log(x).to_vector<double>()[1]));  // off: no check
  DetectAnomalyGuard guard;
  try {
    NameScope outer("2"), inner("l1");
    log(x);
    FAIL() << "expected a NumericalError";
  } catch (const NumericalError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("'log'"), std::string::npos) << m;
    EXPECT_NE(m.find("float64 [2]"), std::string::npos) << m;
    EXPECT_NE(m.find("in module 2.l1"), std::string::npos) << m;
  }
}

TEST(Anomaly, ReportsWhereTheBackwardNodeWasCreated) {
  DetectAnomalyGuard guard;
  Tensor x = tensor({0.0, 1.0}, {2}, DType::f64).requires_grad_();
  Tensor y;
  {
    NameScope s("0");
    y = sum(sqrt(x));  // finite forward, infinite derivative at 0
  }
  try {
    y.backward();
    FAIL() << "expected a NumericalError";
  } catch (const NumericalError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("backward of 'sqrt'"), std::string::npos) << m;
    EXPECT_NE(m.find("in module 0"), std::string::npos) << m;
  }
}

}  // namespace
