"""bfloat16 and float16 from Python: the dtypes, numpy conversion (float16 both ways; numpy has no
bfloat16, so np.asarray gives float32 and .numpy() says why it cannot), promotion, derivatives."""
import numpy as np
import pytest

import chainrule as cr


def test_dtypes_and_names():
    assert cr.bfloat16 == cr.DType.bfloat16 and cr.float16 == cr.DType.float16
    assert cr.tensor([1.0], dtype="bfloat16").dtype == cr.bfloat16
    assert cr.tensor([1.0], dtype="float16").dtype == cr.float16
    assert cr.tensor([1.0]).astype(cr.bfloat16).dtype == cr.bfloat16
    assert cr.tensor([1.0]).half().dtype == cr.float16
    assert cr.tensor([1.0]).bfloat16().dtype == cr.bfloat16


def test_float16_numpy_round_trip():
    a = np.array([1.0, 65504.0, 2.0 ** -24, -0.0], dtype=np.float16)
    t = cr.from_numpy(a)
    assert t.dtype == cr.float16
    back = t.numpy()
    assert back.dtype == np.float16
    np.testing.assert_array_equal(back, a)
    # float32 -> float16 rounds as numpy does (to nearest even)
    x = np.array([1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 70000.0, 1e-8], dtype=np.float32)
    with np.errstate(over="ignore"):  # 70000 overflows to inf, in both
        want = x.astype(np.float16)
    np.testing.assert_array_equal(cr.tensor(x).astype(cr.float16).numpy(), want)


def test_bfloat16_to_numpy():
    t = cr.tensor([1.0, 1.0 + 2.0 ** -8, 3.0]).astype(cr.bfloat16)
    with pytest.raises(cr.DTypeError, match="bfloat16"):
        t.numpy()
    a = np.asarray(t)  # a read-only float32 copy
    assert a.dtype == np.float32 and not a.flags.writeable
    np.testing.assert_array_equal(a, np.array([1.0, 1.0, 3.0], dtype=np.float32))  # 1 + 2^-8 ties to 1
    assert t.astype(cr.float32).numpy().tolist() == [1.0, 1.0, 3.0]


def test_promotion():
    b = cr.tensor([1.0, 2.0]).astype(cr.bfloat16)
    h = cr.tensor([1.0, 2.0]).astype(cr.float16)
    assert (b + h).dtype == cr.float32
    assert (b + cr.tensor([1.0, 2.0])).dtype == cr.float32
    assert (h * cr.tensor([1.0, 2.0], dtype=cr.float64)).dtype == cr.float64
    assert (b * 2.5).dtype == cr.bfloat16
    assert (3 + h).dtype == cr.float16
    assert (b + cr.tensor([1, 2])).dtype == cr.bfloat16


def test_values_and_derivatives():
    x = cr.tensor([0.5, -1.5, 2.0]).astype(cr.bfloat16)
    assert cr.sum(x * x).item() == 0.25 + 2.25 + 4.0
    g = cr.grad(lambda v: cr.sum(v * v))(x)
    assert g.dtype == cr.bfloat16
    assert np.asarray(g).tolist() == [1.0, -3.0, 4.0]
    y = cr.ones(1000, dtype=cr.float16)
    assert cr.sum(y).item() == 1000.0  # accumulates in float32
