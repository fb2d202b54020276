#include <chainrule/chainrule.h>

#include <iostream>

int main() {
  using namespace chainrule;
  // d/dx sum(tanh(x)^2) at x = [0.5, -1].
  Tensor x = tensor({0.5, -1.0}, {2}, DType::f64);
  Tensor g = grad([](const Tensor& v) { return sum(square(tanh(v))); })(x);
  std::cout << g << "\n";
  return g.numel() == 2 ? 0 : 1;
}
