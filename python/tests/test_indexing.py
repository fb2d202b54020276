import numpy as np
import pytest

import chainrule as cr


def t64(a):
    return cr.tensor(np.asarray(a, dtype=np.float64), dtype="float64")


X = np.arange(4 * 5 * 6, dtype=np.float64).reshape(4, 5, 6)

# Keys checked against numpy's own indexing of the same array.
KEYS = [
    1, -1, (1, 2), (1, 2, 3), slice(1, None), slice(None, None, -1), (slice(None), slice(4, 0, -2)),
    (Ellipsis, 2), (None, 1, Ellipsis, None), (slice(-100, 100, 3),), (True,), (False,), (),
    [3, 0, 3], (slice(None), [4, -1]), (slice(None), [[0, 1], [2, 3]], slice(None, None, 2)),
    ([0, 3], slice(None), [1, 5]),  # separated arrays: their axes go first
    (0, slice(None), [2, 4]),        # an integer beside an array counts as an array
    ([[1], [2]], [0, 4]),            # broadcast arrays
    (slice(None), np.array([True, False, True, True, False])),
    X > 100, (X[:, :, 0] > 40,), (Ellipsis, np.array([1, 5])),
]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k)[:40] for k in KEYS])
def test_getitem_matches_numpy(key):
    want = X[key]
    got = t64(X)[key].numpy()
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_index_tensors_and_errors():
    x = t64(X)
    idx = cr.tensor(np.array([2, 0, 2]), dtype="int64")
    np.testing.assert_array_equal(x[:, idx].numpy(), X[:, [2, 0, 2]])
    mask = x > 50.0
    np.testing.assert_array_equal(x[mask].numpy(), X[X > 50])
    with pytest.raises(IndexError, match="axis 1"):
        x[0, 5]
    with pytest.raises(IndexError):
        x[[0, 4]]
    with pytest.raises(cr.ShapeError):
        x[np.array([True, False])]
    with pytest.raises(cr.ShapeError):
        x[0, 0, 0, 0]
    assert len([row for row in t64(np.zeros((3, 2)))]) == 3  # iteration stops at IndexError


def test_getitem_gradients_and_vmap():
    a = np.random.default_rng(0).standard_normal((3, 4))
    w = np.random.default_rng(1).standard_normal((3, 2))
    g = cr.grad(lambda v: cr.sum(v[:, ::-2] * t64(w)))(t64(a)).numpy()
    want = np.zeros_like(a)
    want[:, ::-2] = w
    np.testing.assert_allclose(g, want)
    rows = cr.vmap(lambda r: r[[2, 0]])(t64(a)).numpy()
    np.testing.assert_array_equal(rows, a[:, [2, 0]])


def test_at_and_index_put():
    x = t64([1, 2, 3, 4, 5])
    np.testing.assert_array_equal(x.at[[1, 3, 1]].set(t64([10, 20, 30])).numpy(), [1, 30, 3, 20, 5])  # last wins
    np.testing.assert_array_equal(x.at[[1, 3, 1]].add(t64([10, 20, 30])).numpy(), [1, 42, 3, 24, 5])
    np.testing.assert_array_equal(x.at[::2].multiply(2.0).numpy(), [2, 2, 6, 4, 10])
    np.testing.assert_array_equal(x.at[x > 2.5].set(0).numpy(), [1, 2, 0, 0, 0])
    np.testing.assert_array_equal(x.at[1:3].get().numpy(), [2, 3])
    np.testing.assert_array_equal(cr.index_put(x, ([0, 0],), t64([1, 1]), accumulate=True).numpy(), [3, 2, 3, 4, 5])
    np.testing.assert_array_equal(cr.slice(x, 0, None, None, -2).numpy(), [5, 3, 1])
    np.testing.assert_array_equal(cr.slice(x, 0, 1, 3).numpy(), [2, 3])
    g = cr.grad(lambda v: cr.sum(v.at[[0, 2]].set(t64([7.0, 8.0])) * t64([1, 2, 3, 4, 5])))(x).numpy()
    np.testing.assert_array_equal(g, [0, 2, 0, 4, 5])  # zero where overwritten


def test_einsum_matches_numpy():
    rng = np.random.default_rng(2)
    a, b, c = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    for sub, ops in [("ij,jk->ik", (a, b)), ("ij,jk,kl->il", (a, b, c)), ("ii->i", (a @ b @ c,)), ("ii", (a @ b @ c,)),
                     ("ij,jk", (a, b)), ("...j,jk->...k", (rng.standard_normal((5, 2, 3)), b)), ("ij,ij->", (a, a))]:
        np.testing.assert_allclose(cr.einsum(sub, *[t64(o) for o in ops]).numpy(), np.einsum(sub, *ops), rtol=1e-12, atol=1e-12,
                                   err_msg=sub)
    np.testing.assert_allclose(cr.einsum("ij,jk->ik", [t64(a), t64(b)]).numpy(), a @ b, rtol=1e-12)
    p = cr.einsum_path("ij,jk,kl->il", (100, 2), (2, 100), (100, 2))
    assert p["contractions"] == [(1, 2), (0, 1)]
    assert p["cost"] == 800.0 and p["naive_cost"] == 40000.0 and p["optimal"]
    with pytest.raises(cr.ShapeError, match="einsum"):
        cr.einsum("ij,jk->ik", t64(a), t64(a))
    g = cr.grad(lambda m: cr.einsum("ij,jk->", m, t64(b)))(t64(a)).numpy()
    np.testing.assert_allclose(g, np.broadcast_to(b.sum(axis=1), (2, 3)), rtol=1e-12)


def _random_key(rng, shape):
    items, used, ell = [], 0, False
    for _ in range(rng.integers(0, 5)):
        r, dim = rng.random(), (shape[used] if used < len(shape) else 0)
        if r < 0.2 and used < len(shape) and dim > 0:
            items.append(int(rng.integers(-dim, dim)))
            used += 1
        elif r < 0.4 and used < len(shape):
            pick = lambda vs: vs[rng.integers(len(vs))]  # noqa: E731
            items.append(slice(pick([None, -7, -2, -1, 0, 1, 2, 6]), pick([None, -7, -2, -1, 0, 1, 3, 6]), pick([None, 1, 2, -1, -2, 3])))
            used += 1
        elif r < 0.5:
            items.append(None)
        elif r < 0.6 and not ell:
            items.append(Ellipsis)
            ell = True
        elif r < 0.65:
            items.append(bool(rng.integers(2)))
        elif r < 0.85 and used < len(shape) and dim > 0:
            items.append(rng.integers(-dim, dim, size=tuple(rng.integers(1, 4, size=rng.integers(0, 3)))).tolist())
            used += 1
        elif used < len(shape):
            k = int(rng.integers(1, len(shape) - used + 1))
            items.append(rng.random(shape[used:used + k]) < 0.5)
            used += k
    return tuple(items)


def test_random_keys_and_updates_match_numpy():
    import warnings
    rng = np.random.default_rng(7)
    compared = 0
    for _ in range(600):
        shape = tuple(int(d) for d in rng.integers(1, 5, size=rng.integers(0, 4)))
        a = rng.standard_normal(shape)
        key = _random_key(rng, shape)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                want = a[key]
        except Exception:
            continue  # not a valid numpy index
        compared += 1
        x = t64(a)
        np.testing.assert_array_equal(x[key].numpy(), want, err_msg=repr(key))
        v = rng.standard_normal(want.shape)
        added = a.copy()
        np.add.at(added, key, v)
        np.testing.assert_allclose(x.at[key].add(t64(v)).numpy(), added, rtol=1e-12, atol=1e-12, err_msg=repr(key))
        overwritten = a.copy()
        overwritten[key] = v  # repeated positions: the last value wins in numpy too
        np.testing.assert_array_equal(x.at[key].set(t64(v)).numpy(), overwritten, err_msg=repr(key))
    assert compared > 400


def test_random_einsum_matches_numpy():
    rng = np.random.default_rng(8)
    letters = "abcdA"
    for _ in range(300):
        size = {c: int(rng.integers(1, 4)) for c in letters}
        terms = ["".join(rng.choice(list(letters), size=rng.integers(0, 4))) for _ in range(rng.integers(1, 6))]
        ops = [rng.standard_normal([size[c] for c in t]) for t in terms]
        sub = ",".join(terms)
        if rng.random() < 0.6:
            present = sorted(set("".join(terms)))
            sub += "->" + "".join(rng.permutation(present)[:rng.integers(0, len(present) + 1)])
        np.testing.assert_allclose(cr.einsum(sub, *[t64(o) for o in ops]).numpy(), np.einsum(sub, *ops), rtol=1e-10, atol=1e-10,
                                   err_msg=sub)
