import numpy as np
import pytest

import chainrule as cr


def test_import_and_basic_tensor():
    t = cr.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.shape == (2, 2)
    assert t.ndim == 2
    assert t.dtype == cr.float32
    assert "Tensor" in repr(t) or "1" in repr(t)
    assert cr.tensor(3.5, dtype="float64").item() == 3.5
    assert cr.tensor(7).dtype == cr.int64 and cr.tensor(7).item() == 7
    assert cr.tensor([True, False]).dtype == cr.bool_


def test_operators_and_scalars():
    a = cr.tensor(np.array([1.0, 2.0, 3.0]))
    b = cr.tensor(np.array([4.0, 5.0, 6.0]))
    np.testing.assert_allclose((a + b).numpy(), [5, 7, 9])
    np.testing.assert_allclose((a - b).numpy(), [-3, -3, -3])
    np.testing.assert_allclose((a * b).numpy(), [4, 10, 18])
    np.testing.assert_allclose((b / a).numpy(), [4, 2.5, 2])
    np.testing.assert_allclose((-a).numpy(), [-1, -2, -3])
    np.testing.assert_allclose((2 * a + 1).numpy(), [3, 5, 7])
    np.testing.assert_allclose((1 - a).numpy(), [0, -1, -2])
    np.testing.assert_allclose((6 / a).numpy(), [6, 3, 2])
    np.testing.assert_allclose((a ** 2).numpy(), [1, 4, 9])
    m = cr.stack([a, b])
    np.testing.assert_allclose((m @ a).numpy(), [14, 32])
    np.testing.assert_allclose((a @ cr.transpose(m)).numpy(), [14, 32])
    np.testing.assert_array_equal((a > 1.5).numpy(), [False, True, True])
    np.testing.assert_array_equal((a <= 2).numpy(), [True, True, False])
    np.testing.assert_array_equal((a == b - 3).numpy(), [True, True, True])
    np.testing.assert_array_equal((a != 2).numpy(), [True, False, True])


def test_numpy_roundtrip_dtypes():
    for dt in (np.float32, np.float64, np.int64, np.bool_):
        a = (np.arange(6).reshape(2, 3) % 2).astype(dt)
        t = cr.from_numpy(a)
        assert t.numpy().dtype == dt
        np.testing.assert_array_equal(t.numpy(), a)
        np.testing.assert_array_equal(np.asarray(t), a)  # buffer protocol
        np.testing.assert_array_equal(memoryview(t).tolist(), a.tolist())


def test_numpy_view_is_zero_copy_both_ways():
    t = cr.zeros((2, 3), dtype="float64")
    v = t.numpy()
    v[0, 1] = 5.0                      # write through numpy ...
    assert cr.sum(t).item() == 5.0     # ... seen by chainrule
    t.fill_(2.0)                       # write by chainrule ...
    assert v[1, 2] == 2.0              # ... seen through numpy
    del t
    assert v.sum() == 12.0             # the view keeps the storage alive
    b = np.asarray(cr.ones((4,)))
    b[0] = 3
    assert b.sum() == 6


def aligned_array(n, dtype):
    raw = np.zeros(n * np.dtype(dtype).itemsize + 64, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + n * np.dtype(dtype).itemsize].view(dtype)


def test_from_numpy_shares_aligned_contiguous_memory():
    a = aligned_array(4, np.float32)
    t = cr.from_numpy(a)
    a[2] = 7.0
    assert cr.sum(t).item() == 7.0
    t.fill_(1.0)
    assert a.sum() == 4.0
    del a
    assert cr.sum(t).item() == 4.0     # the tensor keeps the array alive


def test_from_numpy_copies_otherwise():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]  # not contiguous
    t = cr.from_numpy(a)
    np.testing.assert_array_equal(t.numpy(), a)
    a[0, 0] = 100
    assert t.numpy()[0, 0] == 0
    i32 = np.arange(3, dtype=np.int32)
    ti = cr.from_numpy(i32)
    assert ti.dtype == cr.int64
    np.testing.assert_array_equal(ti.numpy(), [0, 1, 2])


def test_bad_inputs_raise():
    with pytest.raises(TypeError, match="unsupported numpy dtype"):
        cr.from_numpy(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="unsupported numpy dtype"):
        cr.tensor(np.array([object()]))
    a = cr.tensor([1.0, 2.0])
    b = cr.tensor([1.0, 2.0], dtype="float64")
    assert (a + b).dtype == cr.float64  # promotion, as NumPy and PyTorch
    m = cr.tensor(np.array([True, False]))
    with pytest.raises(cr.DTypeError) as e:
        m - m  # no arithmetic on bool
    assert isinstance(e.value, TypeError)
    with pytest.raises(TypeError, match="expected a Tensor or a Python number"):
        a + "x"


def test_shape_error_is_value_error_with_message():
    a = cr.zeros((32, 784))
    b = cr.zeros((10, 64))
    with pytest.raises(cr.ShapeError) as e:
        cr.matmul(a, b)
    assert isinstance(e.value, ValueError)
    assert isinstance(e.value, cr.Error)
    assert "matmul: inner dimensions differ: [32, 784] @ [10, 64] (784 != 10)" in str(e.value)


def test_methods_match_numpy():
    g = np.random.default_rng(0)
    a = g.standard_normal((3, 4))
    x = cr.tensor(a, dtype="float64")
    for name in ["exp", "tanh", "sin", "abs", "floor", "square"]:
        np.testing.assert_allclose(getattr(x, name)().numpy(), getattr(np, name)(a), rtol=1e-14, err_msg=name)
    np.testing.assert_allclose(x.max(axis=1).numpy(), a.max(axis=1))
    np.testing.assert_allclose(x.prod(axis=0, keepdims=True).numpy(), a.prod(axis=0, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(x.std(axis=1, correction=1).numpy(), a.std(axis=1, ddof=1), rtol=1e-13)
    np.testing.assert_array_equal(x.argmax(axis=0).numpy(), a.argmax(axis=0))
    np.testing.assert_allclose(x.cumsum(1).numpy(), np.cumsum(a, 1), rtol=1e-14)
    np.testing.assert_allclose(x.clip(-0.5, 0.5).numpy(), np.clip(a, -0.5, 0.5))
    np.testing.assert_allclose(x.transpose().numpy(), a.T)
    y = cr.tensor(g.standard_normal((2, 3, 4)))
    assert y.transpose(2, 0, 1).shape == (4, 2, 3) and y.transpose((2, 0, 1)).shape == (4, 2, 3)
    assert y.permute(1, 0, 2).shape == (3, 2, 4) and y.swapaxes(0, 2).shape == (4, 3, 2)
    assert y.mT.shape == (2, 4, 3) and y.size == 24 and y.view(6, 4).shape == (6, 4)
    assert cr.zeros((1, 3, 1)).squeeze().shape == (3,) and cr.zeros((1, 3, 1)).squeeze(axis=0).shape == (3, 1)
    with pytest.raises(cr.ShapeError, match="squeeze: axis 1"):
        cr.zeros((1, 3, 1)).squeeze(axis=1)
    assert x.to("float32").dtype == cr.float32 and x.double().dtype == cr.float64
    assert x.long().dtype == cr.int64 and (x > 0).bool().dtype == cr.bool_
    assert x.tolist() == a.tolist()


def test_scalar_conversions_and_reflected_power():
    i = cr.tensor(np.array(3, dtype=np.int64))
    assert int(i) == 3 and [10, 20, 30, 40][i] == 40
    with pytest.raises(TypeError, match="0-d int64"):
        [1, 2][cr.tensor([1.0])]
    with pytest.raises(cr.ValueError, match="3 elements"):
        int(cr.ones((3,)))
    assert f"{cr.tensor(0.25, dtype='float64'):.3f}" == "0.250"
    np.testing.assert_allclose((2.0 ** cr.tensor([1.0, 3.0], dtype="float64")).numpy(), [2.0, 8.0])
    x = cr.tensor([1.0, -2.0])
    assert (+x) is x
    assert isinstance(np.ones(2, dtype=np.float32) + x, cr.Tensor)  # numpy on the left defers to the tensor


def test_setitem_in_place_and_refused_where_it_cannot_be_honest():
    x = cr.zeros((2, 3), dtype="float64")
    x[0, 1] = 5.0
    x[1] = cr.tensor([1.0, 2.0, 3.0], dtype="float64")
    np.testing.assert_array_equal(x.numpy(), [[0, 5, 0], [1, 2, 3]])
    with pytest.raises(TypeError, match=r"\.at\[key\]\.set"):
        cr.grad(lambda v: (v.__setitem__(0, 1.0), v.sum())[1])(cr.ones((2,), dtype="float64"))
    w = cr.ones((2,), dtype="float64").requires_grad_()
    with pytest.raises(cr.AutodiffError, match="requires grad"):
        w[0] = 2.0
    with cr.no_grad():
        w[0] = 2.0
    np.testing.assert_array_equal(w.numpy(), [2.0, 1.0])


def test_pickle_and_copy():
    import copy
    import pickle
    x = cr.tensor(np.arange(6.0).reshape(2, 3))
    y = pickle.loads(pickle.dumps(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    w = cr.ones((2,), dtype="float64").requires_grad_()
    for c in (copy.deepcopy(w), copy.copy(w), pickle.loads(pickle.dumps(w))):
        assert c.requires_grad and c.is_leaf
        with cr.no_grad():
            c.fill_(7.0)
        assert w.numpy().tolist() == [1.0, 1.0]  # a copy shares no storage
    with pytest.raises(TypeError, match="tracer"):
        cr.grad(lambda v: (pickle.dumps(v), v.sum())[1])(w.detach())


def test_numpy_and_python_inputs_to_transforms():
    a = np.array([1.0, 2.0])
    np.testing.assert_allclose(cr.grad(lambda v: (v * v).sum())(a).numpy(), 2 * a)
    np.testing.assert_allclose(cr.jacrev(lambda v: v * 3.0)(a).numpy(), 3 * np.eye(2))
    assert cr.asarray(a).dtype == cr.float64 and cr.array([1, 2]).dtype == cr.int64
    assert cr.permute_dims(cr.zeros((2, 3)), (1, 0)).shape == (3, 2)
    assert cr.concatenate([cr.zeros((2,)), cr.ones((3,))]).shape == (5,)
    assert isinstance(cr.__version__, str) and cr.__version__.count(".") == 2


def test_python_scalars_beside_integer_tensors_keep_their_value():
    i = cr.tensor([1, 2, 3])
    assert (i * 0.5).dtype == cr.float32 and (i * 0.5).numpy().tolist() == [0.5, 1.0, 1.5]
    assert (i * 2).dtype == cr.int64 and (i * 2).numpy().tolist() == [2, 4, 6]
    assert (i + (2**60 + 1)).numpy().tolist() == [2**60 + 2, 2**60 + 3, 2**60 + 4]  # exact, not via a double
    b = i > 1
    assert (b + 1).dtype == cr.int64 and (b + 1).numpy().tolist() == [1, 2, 2]
    assert (cr.tensor([1.0], dtype="float64") * 2).dtype == cr.float64
