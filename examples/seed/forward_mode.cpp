// The source text's JAX example, in C++: the JVP of relu(W x) along r by forward mode (dual
// numbers), against the manual product diag(1[W x > 0]) W r.
#include <chainrule/chainrule.h>

#include <iostream>

int main() {
  using namespace chainrule;
  Generator gen(0);
  Tensor W = randn({3, 5}, gen);
  Tensor x = randn({5}, gen);
  auto f = [&](const Tensor& v) { return relu(matmul(W, v)); };

  // The directional derivative.
  Tensor r = randn({5}, gen);
  auto [y, u] = jvp(f, x, r);

  // Manually compute the Jacobian-vector product.
  Tensor dh_dz = cast(matmul(W, x) > 0.0, DType::f32);  // the diagonal of diag(1[W x > 0])
  Tensor manual = dh_dz * matmul(W, r);
  std::cout << "jvp    = " << u << "\nmanual = " << manual << "\n";
  if (!allclose(u, manual)) return 1;
  std::cout << "forward mode matches diag(1[Wx > 0]) W r\n";
}
