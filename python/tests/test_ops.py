import inspect
import pathlib
import re

import numpy as np
import pytest

import chainrule as cr

# Every function that include/chainrule/ops/ops.h declares, read from the header itself.
OPS_H = pathlib.Path(__file__).resolve().parents[2] / "include" / "chainrule" / "ops" / "ops.h"
OPS_H_NAMES = sorted(set(re.findall(r"^(?:Tensor|bool|double|void|int|std::uint64_t) (\w+)\(", OPS_H.read_text(), re.M))
                     - {"operator"})


def test_every_op_of_ops_h_is_bound():
    assert len(OPS_H_NAMES) > 70, OPS_H_NAMES  # the header was read
    missing = [n for n in OPS_H_NAMES if not hasattr(cr, n)]
    assert not missing


def test_math_functions_against_numpy():
    x = np.array([-0.7, -0.2, 0.3, 0.85])
    X = t64(x)
    for name in "sin cos tan arcsin arccos arctan sinh cosh arcsinh arctanh expm1 log1p floor ceil trunc".split():
        crname = {"arcsin": "asin", "arccos": "acos", "arctan": "atan", "arcsinh": "asinh", "arctanh": "atanh"}.get(name, name)
        np.testing.assert_allclose(getattr(cr, crname)(X).numpy(), getattr(np, name)(x), rtol=1e-15, err_msg=name)
    np.testing.assert_array_equal(cr.round(t64([0.5, 1.5, 2.5, -0.5])).numpy(), np.round([0.5, 1.5, 2.5, -0.5]))
    np.testing.assert_allclose(cr.clamp(X, -0.5, 0.5).numpy(), np.clip(x, -0.5, 0.5))
    g = cr.grad(lambda v: cr.sum(cr.sin(v)))(X)
    np.testing.assert_allclose(g.numpy(), np.cos(x), rtol=1e-15)
    with pytest.raises(ValueError, match="approximate"):
        cr.gelu(X, approximate="fast")


def t64(a):
    return cr.tensor(np.asarray(a, dtype=np.float64), dtype="float64")


def test_ops_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    y = rng.standard_normal((4, 2))
    X, Y = t64(x), t64(y)
    np.testing.assert_allclose(cr.matmul(X, Y).numpy(), x @ y)
    np.testing.assert_allclose(cr.matmul(X, X, transpose_b=True).numpy(), x @ x.T)
    np.testing.assert_allclose(cr.relu(X).numpy(), np.maximum(x, 0))
    np.testing.assert_allclose(cr.exp(X).numpy(), np.exp(x))
    np.testing.assert_allclose(cr.log(cr.abs(X)).numpy(), np.log(np.abs(x)))
    np.testing.assert_allclose(cr.sum(X).item(), x.sum())
    np.testing.assert_allclose(cr.sum(X, axis=1, keepdims=True).numpy(), x.sum(1, keepdims=True))
    np.testing.assert_allclose(cr.mean(X, axis=(0,)).numpy(), x.mean(0))
    np.testing.assert_allclose(cr.max(X, axis=[1]).numpy(), x.max(1))
    np.testing.assert_allclose(cr.reshape(X, (4, 3)).numpy(), x.reshape(4, 3))
    np.testing.assert_allclose(X.reshape(2, -1).numpy(), x.reshape(2, -1))
    np.testing.assert_allclose(cr.transpose(X).numpy(), x.T)
    np.testing.assert_allclose(cr.permute(X, (1, 0)).numpy(), x.T)
    np.testing.assert_allclose(cr.softmax(X).numpy(), np.exp(x) / np.exp(x).sum(-1, keepdims=True))
    np.testing.assert_allclose(cr.logsumexp(X, axis=-1).numpy(), np.log(np.exp(x).sum(-1)))
    np.testing.assert_allclose(cr.concat([X, X], axis=0).numpy(), np.concatenate([x, x]))
    np.testing.assert_allclose(cr.stack([X, X], axis=1).numpy(), np.stack([x, x], 1))
    np.testing.assert_allclose(cr.slice(X, 1, 1, 3).numpy(), x[:, 1:3])
    np.testing.assert_array_equal(cr.argmax(X).numpy(), x.argmax(-1))
    np.testing.assert_allclose(cr.where(X > 0, X, 0.0).numpy(), np.where(x > 0, x, 0))
    labels = cr.tensor([0, 3, 1])
    lse = np.log(np.exp(x).sum(-1))
    ce = (lse - x[np.arange(3), [0, 3, 1]])
    np.testing.assert_allclose(cr.cross_entropy(X, labels).item(), ce.mean())
    np.testing.assert_allclose(cr.cross_entropy(X, labels, reduction="none").numpy(), ce)
    np.testing.assert_allclose(cr.cross_entropy(X, labels, reduction="sum").item(), ce.sum())
    np.testing.assert_allclose(cr.mse_loss(X, X * 0.0).item(), (x ** 2).mean())
    assert cr.allclose(X, X)
    with pytest.raises(ValueError, match="reduction"):
        cr.cross_entropy(X, labels, reduction="avg")


def test_keyword_arguments():
    x = cr.ones((2, 3))
    assert cr.sum(x, axis=[0], keepdims=True).shape == (1, 3)
    assert cr.flatten(cr.ones((2, 3, 4)), start_axis=1).shape == (2, 12)
    assert cr.transpose(cr.ones((2, 3, 4)), axis0=0, axis1=2).shape == (4, 3, 2)
    assert cr.softmax(x, axis=0).shape == (2, 3)


def test_large_matmul_releases_gil_and_is_correct_in_threads():
    import threading
    rng = np.random.default_rng(3)
    a = rng.standard_normal((256, 256))
    b = rng.standard_normal((256, 128))
    A = cr.tensor(a, dtype="float64")
    B = cr.tensor(b, dtype="float64")
    np.testing.assert_allclose(cr.matmul(A, B).numpy(), a @ b, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cr.linear(A, cr.transpose(B), cr.zeros((128,), dtype="float64")).numpy(), a @ b,
                               rtol=1e-10, atol=1e-10)
    results = [None] * 4

    def work(i):
        results[i] = [cr.matmul(A, B).numpy().copy() for _ in range(5)]
    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for r in results:
        for m in r:
            np.testing.assert_allclose(m, a @ b, rtol=1e-10, atol=1e-10)
    # inside a transform (tracers) the GIL stays held and the result is the same
    g = cr.grad(lambda x: cr.sum(cr.matmul(x, B)))(A)
    np.testing.assert_allclose(g.numpy(), np.broadcast_to(b.sum(1), (256, 256)), rtol=1e-10)


def test_array_api_linalg_and_conv_bindings_against_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4))
    X = t64(x)
    np.testing.assert_allclose(cr.cumsum(X, 1).numpy(), np.cumsum(x, 1), rtol=1e-14)
    np.testing.assert_allclose(cr.sort(X, -1).numpy(), np.sort(x, -1))
    np.testing.assert_allclose(cr.var(X, 1, correction=1).numpy(), x.var(1, ddof=1), rtol=1e-13)
    np.testing.assert_allclose(cr.prod(X).numpy(), np.prod(x), rtol=1e-13)
    v, i = cr.topk(X, 2)
    np.testing.assert_allclose(v.numpy(), -np.sort(-x, -1)[:, :2])
    a = rng.standard_normal((4, 4)) + 4 * np.eye(4)
    A = t64(a)
    np.testing.assert_allclose(cr.linalg.inv(A).numpy(), np.linalg.inv(a), rtol=1e-12)
    np.testing.assert_allclose(cr.linalg.det(A).numpy(), np.linalg.det(a), rtol=1e-12)
    # d det / dA = det(A) A^{-T}
    g = cr.grad(cr.linalg.det)(A).numpy()
    np.testing.assert_allclose(g, np.linalg.det(a) * np.linalg.inv(a).T, rtol=1e-10)
    w = np.linalg.eigvalsh(a @ a.T)
    np.testing.assert_allclose(cr.linalg.eigvalsh(t64(a @ a.T)).numpy(), w, rtol=1e-10)
    # conv2d against a direct sum, with padding "same"
    img = rng.standard_normal((1, 2, 5, 5))
    ker = rng.standard_normal((3, 2, 3, 3))
    out = cr.conv2d(t64(img), t64(ker), padding="same").numpy()
    padded = np.pad(img, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((1, 3, 5, 5))
    for o in range(3):
        for r in range(5):
            for c in range(5):
                ref[0, o, r, c] = np.sum(padded[0, :, r:r + 3, c:c + 3] * ker[o])
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    pooled = cr.max_pool2d(t64(img), 2).numpy()
    np.testing.assert_allclose(pooled, img[:, :, :4, :4].reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5)))
    with pytest.raises(ValueError, match="padding"):
        cr.conv2d(t64(img), t64(ker), padding="full")


def test_integer_and_bool_sums_are_int64_as_numpy():
    a = np.arange(12, dtype=np.int64).reshape(3, 4) * (2**40)
    x = cr.tensor(a)
    assert cr.sum(x).dtype == cr.int64 and int(cr.sum(x)) == int(a.sum())
    np.testing.assert_array_equal(x.sum(axis=0).numpy(), a.sum(axis=0))
    m = cr.tensor(a) > 2**42
    np.testing.assert_array_equal(cr.sum(m, axis=1).numpy(), (a > 2**42).sum(axis=1))


def test_unfold_fold_scan_and_scatter_match_references():
    g = np.random.default_rng(3)
    x = cr.tensor(g.standard_normal((2, 3, 5, 6)))
    w = cr.tensor(g.standard_normal((4, 3, 3, 3)))
    cols = cr.im2col(x, 3, padding=1)  # [2, 27, 30]
    assert cols.shape == (2, 27, 30)
    via_cols = cr.reshape(cr.matmul(cr.reshape(w, (4, 27)), cols), (2, 4, 5, 6))
    np.testing.assert_allclose(via_cols.numpy(), cr.conv2d(x, w, padding=1).numpy(), rtol=1e-12, atol=1e-12)
    # fold is unfold's adjoint: <unfold(x), c> == <x, fold(c)>.
    c = cr.tensor(g.standard_normal((2, 27, 30)))
    lhs = float(cr.sum(cols * c))
    rhs = float(cr.sum(x * cr.col2im(c, (5, 6), 3, padding=1)))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))
    a, b = g.uniform(0.5, 1.5, (3, 4)), g.standard_normal((3, 4))
    h, ref = np.zeros(3), np.zeros((3, 4))
    for i in range(4):
        h = a[:, i] * h + b[:, i]
        ref[:, i] = h
    np.testing.assert_allclose(cr.linear_scan(cr.tensor(a), cr.tensor(b), 1).numpy(), ref, rtol=1e-13)
    src, idx = g.standard_normal((2, 5)), np.array([[0, 2, 2, 1, 0], [3, 3, 0, 1, 2]])
    out = np.zeros((2, 4))
    for r in range(2):
        np.add.at(out[r], idx[r], src[r])
    np.testing.assert_allclose(cr.scatter_add_along_axis(cr.tensor(src), cr.tensor(idx), 1, 4).numpy(), out, rtol=1e-14)


def test_division_bitwise_and_creation_as_python_and_numpy():
    a = np.array([7, -7, 7, -7, 0])
    b = np.array([2, 2, -2, -2, 3])
    x, y = cr.tensor(a), cr.tensor(b)
    np.testing.assert_array_equal((x // y).numpy(), a // b)
    np.testing.assert_array_equal((x % y).numpy(), a % b)
    np.testing.assert_array_equal((x % 3).numpy(), a % 3)
    f = cr.tensor([5.5, -5.5], dtype="float64")
    np.testing.assert_allclose((f % 2.0).numpy(), np.array([5.5, -5.5]) % 2.0)
    np.testing.assert_allclose(cr.grad(lambda v: cr.sum(v % 2.0))(f).numpy(), [1.0, 1.0])
    np.testing.assert_array_equal((x & y).numpy(), a & b)
    np.testing.assert_array_equal((x | 1).numpy(), a | 1)
    np.testing.assert_array_equal((x ^ y).numpy(), a ^ b)
    np.testing.assert_array_equal((~x).numpy(), ~a)
    m = x > 0
    np.testing.assert_array_equal((~m).numpy(), ~(a > 0))
    np.testing.assert_array_equal((m & (y > 0)).numpy(), (a > 0) & (b > 0))
    assert cr.arange(5).dtype == cr.int64 and cr.arange(5).numpy().tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(cr.arange(1.0, 2.0, 0.25).numpy(), np.arange(1.0, 2.0, 0.25))
    np.testing.assert_array_equal(cr.arange(10, 0, -3).numpy(), np.arange(10, 0, -3))
    np.testing.assert_allclose(cr.linspace(0, 1, 5, dtype="float64").numpy(), np.linspace(0, 1, 5))
    m3 = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(cr.tril(cr.tensor(m3), -1).numpy(), np.tril(m3, -1))
    np.testing.assert_array_equal(cr.triu(cr.tensor(m3), 1).numpy(), np.triu(m3, 1))
    assert cr.full_like(f, 3.0).dtype == cr.float64 and cr.full_like(f, 3.0).numpy().tolist() == [3.0, 3.0]
    with pytest.raises(cr.DTypeError):
        f & f


def test_conv2d_channels_last_matches_the_nchw_convolution():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 5))  # NCHW
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    want = cr.conv2d(cr.tensor(x), cr.tensor(w), cr.tensor(b), stride=2, padding=1).numpy()
    got = cr.conv2d(cr.tensor(x.transpose(0, 2, 3, 1).copy()), cr.tensor(w), cr.tensor(b), stride=2, padding=1,
                    channels_last=True).numpy()
    assert got.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, rtol=1e-12, atol=1e-12)
