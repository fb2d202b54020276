import numpy as np
import pytest

import chainrule as cr

rng = np.random.default_rng(1)


def t64(a):
    return cr.tensor(np.asarray(a, dtype=np.float64), dtype="float64")


def fd_grad(f, x, eps=1e-6):
    """Central differences of a numpy-valued function of a numpy array."""
    x = np.array(x, dtype=np.float64)
    y0 = np.asarray(f(x))
    J = np.zeros(y0.shape + x.shape)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        J[(...,) + i] = (np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * eps)
    return J


def np_of(f):
    return lambda a: f(t64(a)).numpy()


def f_scalar(x):
    return cr.sum(cr.tanh(x) * x + cr.exp(x * 0.3))


def f_vec(x):
    W = t64(np.arange(12).reshape(3, 4) / 10.0)
    return cr.tanh(cr.matmul(W, x)) * 2.0


def test_grad_vs_finite_differences():
    x = rng.standard_normal(4)
    g = cr.grad(f_scalar)(t64(x)).numpy()
    np.testing.assert_allclose(g, fd_grad(np_of(f_scalar), x), rtol=1e-6, atol=1e-8)


def test_value_and_grad_argnums_and_aux():
    x, y = t64(rng.standard_normal(3)), t64(rng.standard_normal(3))

    def f(a, b):
        return cr.sum(a * b * b), a * 2.0
    (v, aux), (ga, gb) = cr.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, y)
    np.testing.assert_allclose(v.item(), (x.numpy() * y.numpy() ** 2).sum())
    np.testing.assert_allclose(ga.numpy(), y.numpy() ** 2)
    np.testing.assert_allclose(gb.numpy(), 2 * x.numpy() * y.numpy())
    gb1 = cr.grad(lambda a, b: f(a, b)[0], argnums=1)(x, y)
    np.testing.assert_allclose(gb1.numpy(), gb.numpy())
    # a tuple of tensors as one argument
    gt = cr.grad(lambda p: cr.sum(p[0] * p[1]))((x, y))
    assert isinstance(gt, tuple)
    np.testing.assert_allclose(gt[0].numpy(), y.numpy())


def test_jacfwd_jacrev_vs_finite_differences():
    x = rng.standard_normal(4)
    fd = fd_grad(np_of(f_vec), x)
    np.testing.assert_allclose(cr.jacfwd(f_vec)(t64(x)).numpy(), fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(cr.jacrev(f_vec)(t64(x)).numpy(), fd, rtol=1e-6, atol=1e-8)


def test_hessian_and_hvp_vs_finite_differences():
    x = rng.standard_normal(4)
    gnp = lambda a: cr.grad(f_scalar)(t64(a)).numpy()
    fd = fd_grad(gnp, x)
    H = cr.hessian(f_scalar)(t64(x)).numpy()
    np.testing.assert_allclose(H, fd, rtol=1e-5, atol=1e-7)
    v = rng.standard_normal(4)
    np.testing.assert_allclose(cr.hvp(f_scalar)(t64(x), t64(v)).numpy(), H @ v, rtol=1e-10, atol=1e-10)


def test_nesting_third_order():
    # d^3/dx^3 sum(x^4) = 24 x on the diagonal
    x = t64([0.5, -1.0])
    d3 = cr.jacfwd(cr.jacrev(cr.jacfwd(lambda v: cr.sum(v ** 4))))(x).numpy()
    exp = np.zeros((2, 2, 2))
    exp[0, 0, 0], exp[1, 1, 1] = 12.0, -24.0
    np.testing.assert_allclose(d3, exp, atol=1e-9)
    gg = cr.grad(lambda v: cr.sum(cr.grad(lambda u: cr.sum(u ** 3))(v)))(x)
    np.testing.assert_allclose(gg.numpy(), 6 * x.numpy())


def test_vjp_and_jvp():
    x = rng.standard_normal(4)
    J = fd_grad(np_of(f_vec), x)
    out, pullback = cr.vjp(f_vec, t64(x))
    ct = rng.standard_normal(3)
    (g,) = pullback(t64(ct))
    np.testing.assert_allclose(g.numpy(), ct @ J, rtol=1e-6)
    (g2,) = pullback(t64(ct * 2))  # called again
    np.testing.assert_allclose(g2.numpy(), 2 * ct @ J, rtol=1e-6)
    t = rng.standard_normal(4)
    y, u = cr.jvp(f_vec, (t64(x),), (t64(t),))
    np.testing.assert_allclose(y.numpy(), out.numpy())
    np.testing.assert_allclose(u.numpy(), J @ t, rtol=1e-6)


def test_vmap_grad_per_example_vs_loop():
    w = t64(rng.standard_normal(3))
    xs = rng.standard_normal((5, 3))
    ys = rng.standard_normal(5)

    def loss(w, x, y):
        return cr.square(cr.sum(w * x) - y)
    per = cr.vmap(cr.grad(loss), in_axes=(None, 0, 0))(w, t64(xs), t64(ys)).numpy()
    loop = np.stack([cr.grad(loss)(w, t64(xs[i]), t64(ys[i])).numpy() for i in range(5)])
    np.testing.assert_allclose(per, loop, rtol=1e-12)
    # single argument, and a mapped axis other than 0
    np.testing.assert_allclose(cr.vmap(lambda r: cr.sum(r * r))(t64(xs)).numpy(), (xs ** 2).sum(1))
    np.testing.assert_allclose(cr.vmap(lambda c: cr.sum(c), in_axes=1)(t64(xs)).numpy(), xs.sum(0))


class Boom(Exception):
    pass


def test_python_exception_propagates_and_leaves_no_state():
    def bad(x):
        y = x * 2.0
        raise Boom("inside grad")
    for tr in (lambda: cr.grad(bad)(t64([1.0])), lambda: cr.jacfwd(bad)(t64([1.0])),
               lambda: cr.vmap(bad)(t64([[1.0]])), lambda: cr.jvp(bad, (t64([1.0]),), (t64([1.0]),)),
               lambda: cr.hessian(bad)(t64([1.0]))):
        with pytest.raises(Boom, match="inside grad") as e:
            tr()
        assert any(fr.name == "bad" for fr in e.traceback)
    x = t64([3.0])
    assert x.level == 0
    np.testing.assert_allclose(cr.grad(lambda v: cr.sum(v * v))(x).numpy(), [6.0])
    np.testing.assert_allclose(cr.jacrev(lambda v: v * v)(x).numpy(), [[6.0]])


def test_transform_errors():
    x = t64([1.0, 2.0])
    with pytest.raises(cr.Error, match="grad"):
        cr.grad(lambda v: v * 2.0)(x)          # not a scalar
    assert float(cr.grad(lambda v: v * v)(3.0)) == 6.0  # a Python float becomes a float64 tensor, as in JAX
    with pytest.raises(TypeError, match="Tensor"):
        cr.grad(lambda v: cr.sum(v))("3.0")     # not a tensor
    with pytest.raises(TypeError, match="must return a Tensor"):
        cr.grad(lambda v: 1.0)(x)
    with pytest.raises(TypeError, match="Tensor"):
        cr.jacfwd(lambda v: v)([1.0])
    with pytest.raises(ValueError):
        cr.vmap(lambda a, b: a + b)(cr.zeros((2, 3)), cr.zeros((3, 3)))


def test_seed_examples():
    g = np.random.default_rng(1)  # W x has positive and negative entries
    W = cr.tensor(g.standard_normal((3, 5)), dtype="float32")
    x = cr.tensor(g.standard_normal(5), dtype="float32")
    r = cr.tensor(g.standard_normal(5), dtype="float32")
    y, u = cr.jvp(lambda v: cr.relu(cr.matmul(W, v)), (x,), (r,))
    manual = cr.cast(cr.matmul(W, x) > 0.0, "float32") * cr.matmul(W, r)
    assert cr.allclose(u, manual)
    assert (manual.numpy() != 0).any() and (manual.numpy() == 0).any()
    v = cr.tensor(g.standard_normal(3), dtype="float32")
    out, pullback = cr.vjp(lambda a: cr.relu(cr.matmul(W, a)), x)
    (ct,) = pullback(v)
    z = cr.matmul(W, x)
    assert cr.allclose(ct, cr.matmul(v * cr.cast(z > 0.0, "float32"), W), 1e-5, 1e-6)


def test_more_transform_forms():
    x, y = t64([1.0, 2.0]), t64([3.0, -1.0])
    g, aux = cr.grad(lambda a: (cr.sum(a * a), cr.sum(a)), has_aux=True)(x)
    np.testing.assert_allclose(g.numpy(), [2.0, 4.0])
    assert aux.item() == 3.0
    out, pb = cr.vjp(lambda a, b: a * b, x, y)
    ga, gb = pb(cr.ones((2,), dtype="float64"))
    np.testing.assert_allclose(ga.numpy(), y.numpy())
    np.testing.assert_allclose(gb.numpy(), x.numpy())
    _, u = cr.jvp(lambda a, b: a * b, (x, y), (cr.ones((2,), dtype="float64"), cr.zeros((2,), dtype="float64")))
    np.testing.assert_allclose(u.numpy(), y.numpy())
    _, u1 = cr.jvp(lambda a: a * a, x, x)   # a single Tensor for one argument
    np.testing.assert_allclose(u1.numpy(), 2 * x.numpy() ** 2)
    with pytest.raises(ValueError, match="in_axes"):
        cr.vmap(lambda a, b: a, in_axes=(0,))(x, y)
    with pytest.raises(ValueError, match="argnums"):
        cr.grad(lambda a: cr.sum(a), argnums=3)(x)
    with pytest.raises(cr.DTypeError):
        cr.cross_entropy(cr.zeros((2, 3)), cr.zeros((2,)))   # float labels


def test_transforms_in_several_python_threads():
    # Transform state is per thread in C++ (thread_local), and the GIL can switch threads while a
    # transformed Python function runs: results must not mix.
    import threading
    errors = []

    def work(k):
        try:
            x = t64([float(k), 1.0])
            for _ in range(200):
                h = cr.hessian(lambda v: cr.sum(v ** 3) * float(k))(x).numpy()
                np.testing.assert_allclose(h, np.diag(6.0 * k * x.numpy()))
        except Exception as e:  # pragma: no cover
            errors.append(e)
    import sys
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        ts = [threading.Thread(target=work, args=(k,)) for k in (1, 2, 3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors


def test_trees_dicts_in_grad_jvp_and_vmap():
    # Per-example gradients of a dict of parameters, a tree out of vmap (issue 17/19).
    W = rng.standard_normal((3, 4))
    b = rng.standard_normal(3)
    xs = rng.standard_normal((6, 4))
    ys = np.array([0, 2, 1, 1, 0, 2])
    params = {"weight": t64(W), "bias": t64(b)}

    def loss(p, x, y):
        logits = cr.matmul(p["weight"], x) + p["bias"]
        return cr.cross_entropy(logits, y)
    labels = cr.tensor(ys.astype(np.int64))
    per = cr.vmap(cr.grad(loss), in_axes=(None, 0, 0))(params, t64(xs), labels)
    assert set(per) == {"weight", "bias"}
    assert per["weight"].shape == (6, 3, 4)
    for i in range(6):
        gi = cr.grad(loss)(params, t64(xs[i]), cr.tensor(np.array(ys[i], dtype=np.int64)))
        np.testing.assert_allclose(per["weight"].numpy()[i], gi["weight"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(per["bias"].numpy()[i], gi["bias"].numpy(), rtol=1e-12)
    # jvp with dict primals and tangents; a tuple output gives a tuple of tangents.
    tang = {"weight": t64(np.ones((3, 4))), "bias": t64(np.zeros(3))}
    (o1, o2), (t1, t2) = cr.jvp(lambda p: (cr.sum(p["weight"]), p["bias"] * 2.0), (params,), (tang,))
    np.testing.assert_allclose(t1.numpy(), 12.0)
    np.testing.assert_allclose(t2.numpy(), np.zeros(3))
    with pytest.raises(ValueError, match="structure"):
        cr.jvp(lambda p: cr.sum(p["weight"]), (params,), ({"weight": t64(np.ones((3, 4)))},))
    # out_axes moves the mapped axis; a non-tree argument passes through when not mapped.
    out = cr.vmap(lambda r, k: r * k, in_axes=(0, None), out_axes=1)(t64(xs), 2.0)
    np.testing.assert_allclose(out.numpy(), 2.0 * xs.T)


def test_linearize_linear_transpose_and_chunked_jacobians():
    A = rng.standard_normal((4, 3))
    x = t64(rng.standard_normal(3))

    def f(v):
        return cr.tanh(cr.matmul(t64(A), cr.sin(v)))
    y, lin = cr.linearize(f, x)
    u = t64(rng.standard_normal(3))
    np.testing.assert_allclose(lin(u).numpy(), cr.jvp(f, x, u)[1].numpy(), rtol=1e-12)
    lin_t = cr.linear_transpose(lin, x)
    ct = t64(rng.standard_normal(4))
    np.testing.assert_allclose(lin_t(ct).numpy(), cr.vjp(f, x)[1](ct)[0].numpy(), rtol=1e-12)
    J = cr.jacrev(f)(x).numpy()
    for chunk in (1, 2, 10):
        np.testing.assert_allclose(cr.jacrev(f, chunk_size=chunk)(x).numpy(), J, rtol=1e-12)
        np.testing.assert_allclose(cr.jacfwd(f, chunk_size=chunk)(x).numpy(), J, rtol=1e-12)
