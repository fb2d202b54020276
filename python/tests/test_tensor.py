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
