"""Hessians three ways, checked against a closed form and against each other:
    PYTHONPATH=build/python /usr/bin/python3 examples/python/hessian.py

1. f(x) = sum(log(1 + exp(A x))) (softplus of a linear map) has H = A^T diag(s (1 - s)) A with
   s = sigmoid(A x): cr.hessian (forward over reverse) reproduces it.
2. The loss of a small tanh network in its input: hessian, jacfwd(jacrev), jacrev(jacrev) and
   a column of hvp agree.
3. A Hessian-vector product costs about two gradients, not n of them (no n x n matrix is formed).
"""
import numpy as np

import chainrule as cr

g = np.random.default_rng(0)
A = cr.tensor(g.standard_normal((6, 4)))  # float64 throughout: cr.tensor keeps numpy's dtype
x = cr.tensor(g.standard_normal(4))


def softplus_sum(v):
    return cr.sum(cr.softplus(cr.matmul(A, v)))


H = cr.hessian(softplus_sum)(x).numpy()
a = A.numpy()
s = 1.0 / (1.0 + np.exp(-(a @ x.numpy())))
closed = a.T @ np.diag(s * (1 - s)) @ a
np.testing.assert_allclose(H, closed, rtol=1e-12, atol=1e-14)
print("hessian of sum(softplus(A x)) matches A^T diag(s(1-s)) A: max |diff| =", np.abs(H - closed).max())

W1 = cr.tensor(g.standard_normal((8, 4)) * 0.5)
W2 = cr.tensor(g.standard_normal((1, 8)) * 0.5)


def loss(v):
    return cr.sum(cr.square(cr.matmul(W2, cr.tanh(cr.matmul(W1, v)))))


H1 = cr.hessian(loss)(x).numpy()
H2 = cr.jacfwd(cr.jacrev(loss))(x).numpy()
H3 = cr.jacrev(cr.jacrev(loss))(x).numpy()
e2 = cr.tensor(np.eye(4)[2])
col = cr.hvp(loss)(x, e2).numpy()
np.testing.assert_allclose(H1, H2, rtol=1e-12, atol=1e-13)
np.testing.assert_allclose(H1, H3, rtol=1e-12, atol=1e-13)
np.testing.assert_allclose(H1[:, 2], col, rtol=1e-12, atol=1e-13)
np.testing.assert_allclose(H1, H1.T, rtol=1e-12, atol=1e-13)
print("network loss: hessian == jacfwd(jacrev) == jacrev(jacrev); hvp gives column 2; symmetric")
print("eigenvalues of the Hessian:", np.round(np.linalg.eigvalsh(H1), 4))
