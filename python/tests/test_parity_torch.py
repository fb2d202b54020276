"""Parity with torch.func (functorch 1.13 stands in for it): the same functions written on both
sides give the same gradients, Jacobians, Hessians, JVPs/VJPs and per-example gradients in
float64. Tolerance: rtol 1e-11, atol 1e-12 (the two sum in different orders; float64 rounding
of these small programs is ~1e-15 relative, so a real rule error shows far above it)."""
import numpy as np
import pytest

import chainrule as cr

torch = pytest.importorskip("torch")
functorch = pytest.importorskip("functorch")
RTOL, ATOL = 1e-11, 1e-12

g = np.random.default_rng(7)
W1, b1 = g.standard_normal((6, 4)) * 0.6, g.standard_normal(6) * 0.1
W2 = g.standard_normal((3, 6)) * 0.6


def program(lib):
    """The same function on both sides: a tanh/softplus network with a logsumexp head."""
    if lib == "cr":
        w1, bb, w2 = cr.tensor(W1), cr.tensor(b1), cr.tensor(W2)
        return lambda x: cr.logsumexp(cr.matmul(w2, cr.softplus(cr.tanh(cr.matmul(w1, x) + bb) * x.sum())), axis=0)
    w1, bb, w2 = (torch.tensor(a) for a in (W1, b1, W2))
    return lambda x: torch.logsumexp(torch.matmul(w2, torch.nn.functional.softplus(torch.tanh(torch.matmul(w1, x) + bb) * x.sum())), 0)


def vector_program(lib):
    if lib == "cr":
        w1 = cr.tensor(W1)
        return lambda x: cr.sin(cr.matmul(w1, x)) * cr.exp(-x.sum())
    w1 = torch.tensor(W1)
    return lambda x: torch.sin(torch.matmul(w1, x)) * torch.exp(-x.sum())


def close(a, b):
    np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=RTOL, atol=ATOL)


x0 = g.standard_normal(4)
u0, v0 = g.standard_normal(4), g.standard_normal(6)


def test_grad_and_hessian():
    f, tf = program("cr"), program("torch")
    close(cr.grad(f)(cr.tensor(x0)), functorch.grad(tf)(torch.tensor(x0)))
    close(cr.hessian(f)(cr.tensor(x0)), functorch.hessian(tf)(torch.tensor(x0)))
    close(cr.jacrev(cr.jacrev(f))(cr.tensor(x0)), functorch.jacrev(functorch.jacrev(tf))(torch.tensor(x0)))


def test_jacobians_jvp_vjp():
    f, tf = vector_program("cr"), vector_program("torch")
    x, tx = cr.tensor(x0), torch.tensor(x0)
    close(cr.jacrev(f)(x), functorch.jacrev(tf)(tx))
    close(cr.jacfwd(f)(x), functorch.jacfwd(tf)(tx))
    _, t = cr.jvp(f, (x,), (cr.tensor(u0),))
    _, tt = functorch.jvp(tf, (tx,), (torch.tensor(u0),))
    close(t, tt)
    _, pull = cr.vjp(f, x)
    _, tpull = functorch.vjp(tf, tx)
    close(pull(cr.tensor(v0))[0], tpull(torch.tensor(v0))[0])


def test_per_example_hessians_and_grads():
    f, tf = program("cr"), program("torch")
    xs = g.standard_normal((5, 4))
    close(cr.vmap(cr.grad(f))(cr.tensor(xs)), functorch.vmap(functorch.grad(tf))(torch.tensor(xs)))
    close(cr.vmap(cr.hessian(f))(cr.tensor(xs)), functorch.vmap(functorch.hessian(tf))(torch.tensor(xs)))
