"""The README's two examples, from Python:
    PYTHONPATH=build/python /usr/bin/python3 examples/python/seed_examples.py
"""
import numpy as np

import chainrule as cr

g = np.random.default_rng(1)
W = cr.tensor(g.standard_normal((3, 5)), dtype="float32")
x = cr.tensor(g.standard_normal(5), dtype="float32")
r = cr.tensor(g.standard_normal(5), dtype="float32")
v = cr.tensor(g.standard_normal(3), dtype="float32")


def f(a):
    return cr.relu(cr.matmul(W, a))


# Forward mode: the JVP of relu(W x) along r equals diag(1[W x > 0]) W r.
y, u = cr.jvp(f, (x,), (r,))
manual = cr.cast(cr.matmul(W, x) > 0.0, "float32") * cr.matmul(W, r)
assert cr.allclose(u, manual)
print("jvp:", u.numpy(), "== diag(1[Wx>0]) W r")

# Reverse mode: the VJP with cotangent v equals v diag(1[z > 0]) W.
out, pullback = cr.vjp(f, x)
(ct,) = pullback(v)
z = cr.matmul(W, x)
assert cr.allclose(ct, cr.matmul(v * cr.cast(z > 0.0, "float32"), W), 1e-5, 1e-6)
print("vjp:", ct.numpy(), "== v diag(1[z>0]) W")
