// The source text's PyTorch example, in C++: the VJP of relu(W x) with cotangent v by reverse
// mode, against the manual product v diag(1[z > 0]) W. (The text's snippet compares with x.grad
// without calling backward; here backward runs.)
#include <chainrule/chainrule.h>

#include <iostream>

int main() {
  using namespace chainrule;
  Generator gen(1);
  Tensor x = randn({5}, gen).requires_grad_();
  Tensor W = randn({3, 5}, gen);

  // Forward pass.
  Tensor z = matmul(W, x);
  Tensor h = relu(z);

  // Reverse-mode AD.
  Tensor v = randn({3}, gen);
  h.backward(v);

  // Manually compute the vector-Jacobian product.
  Tensor dh_dz = cast(z.detach() > 0.0, DType::f32);
  Tensor manual = matmul(v * dh_dz, W);
  std::cout << "x.grad = " << x.grad() << "\nmanual = " << manual << "\n";
  if (!allclose(x.grad(), manual)) return 1;
  std::cout << "reverse mode matches v diag(1[z > 0]) W\n";
}
