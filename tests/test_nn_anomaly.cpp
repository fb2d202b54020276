// Anomaly mode names the module path of the primitive that first produced a NaN or Inf.
#include <gtest/gtest.h>

#include "chainrule/chainrule.h"
#include "chainrule/nn/spec.h"

using namespace chainrule;

TEST(NnAnomaly, ReportsTheModulePath) {
  auto model = nn::build_model("resmlp:4-3x2-2");
  {
    NoGradGuard ng;
    // Positive activations into block 0 (index 2), whose first layer then overflows float32.
    model->find_tensor("0.weight")->fill_(1.0);
    model->find_tensor("0.bias")->fill_(1.0);
    model->find_tensor("2.l1.weight")->fill_(3e38);
  }
  Tensor x = ones({2, 4});
  EXPECT_NO_THROW((*model)(x));  // off: no check
  DetectAnomalyGuard guard;
  try {
    (*model)(x);
    FAIL() << "expected a NumericalError";
  } catch (const NumericalError& e) {
    EXPECT_NE(std::string(e.what()).find("in module 2.l1"), std::string::npos) << e.what();
  }
}
