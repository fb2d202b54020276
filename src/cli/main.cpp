#include <iostream>

#include "chainrule/chainrule.h"

int main() {
  using namespace chainrule;
  Tensor x = tensor({1, 2, 3}, {3}, DType::f64);
  std::cout << grad([](const Tensor& v) { return sum(mul(v, v)); })(x) << "\n";
}
