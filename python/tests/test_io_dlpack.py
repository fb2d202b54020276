"""safetensors from Python (checked against a hand parse of the format) and DLPack exchange with
numpy and PyTorch, zero-copy both ways."""
import json
import os
import struct

import numpy as np
import pytest

import chainrule as cr
import chainrule.io as crio

rng = np.random.default_rng(5)


def parse_safetensors(path):
    """The format by hand: 8-byte little-endian header length N, N bytes of JSON, the data."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    np_dtype = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "BOOL": "?"}
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype=np_dtype[e["dtype"]]).reshape(e["shape"])
    return header, out


def test_safetensors_round_trip_and_format(tmp_path):
    tensors = {
        "b.weight": cr.tensor(rng.standard_normal((3, 4)).astype(np.float32)),
        "a.bias": cr.tensor(rng.standard_normal(5), dtype="float64"),
        "count": cr.tensor(np.array([1, -2, 3], dtype=np.int64)),
        "mask": cr.tensor(np.array([[True, False]])),
        "scalar": cr.tensor(2.5, dtype="float64"),
    }
    path = tmp_path / "t.safetensors"
    crio.save_safetensors(str(path), tensors, metadata={"note": "hi"})
    back = crio.load_safetensors(str(path))
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k].numpy(), v.numpy())
    header, parsed = parse_safetensors(path)
    assert header["__metadata__"] == {"note": "hi"}
    assert header["b.weight"]["dtype"] == "F32" and header["mask"]["dtype"] == "BOOL"
    for k, v in tensors.items():
        np.testing.assert_array_equal(parsed[k], v.numpy())
    _, meta = crio.load_safetensors(str(path), with_metadata=True)
    assert meta == {"note": "hi"}
    # atomic replacement: the file is rewritten whole and no temporary file stays behind
    crio.save_safetensors(str(path), {"x": cr.ones((2,))})
    assert list(crio.load_safetensors(str(path))) == ["x"]
    assert os.listdir(tmp_path) == ["t.safetensors"]


def test_safetensors_errors(tmp_path):
    with pytest.raises(cr.IOError):
        crio.load_safetensors(str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(OSError, match="bad.safetensors"):
        crio.load_safetensors(str(bad))
    with pytest.raises(cr.IOError):
        crio.save_safetensors(str(tmp_path / "no" / "dir" / "x.safetensors"), {"x": cr.ones((1,))})


def test_safetensors_read_by_torch(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.safetensors"
    w = rng.standard_normal((2, 3))
    crio.save_safetensors(str(path), {"w": cr.tensor(w, dtype="float64")})
    try:
        from safetensors.torch import load_file
        got = load_file(str(path))["w"]
    except ImportError:  # no safetensors package: torch reads the bytes the header points at
        raw = open(path, "rb").read()
        (n,) = struct.unpack("<Q", raw[:8])
        e = json.loads(raw[8:8 + n])["w"]
        a, b = e["data_offsets"]
        got = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=torch.float64).reshape(e["shape"])
    np.testing.assert_array_equal(got.numpy(), w)


def test_model_save_load(tmp_path):
    m = cr.nn.build_model("mlp:3-4-2", dtype="float64", generator=cr.Generator(1))
    p = str(tmp_path / "model.safetensors")
    cr.nn.save_model(p, m, "mlp:3-4-2", 7)
    m2, spec, step = cr.nn.load_model(p, dtype="float64")
    assert (spec, step) == ("mlp:3-4-2", 7)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k].numpy(), v.numpy())
    back = crio.load_safetensors(p)
    assert sorted(back) == sorted(m.state_dict())


def aligned(shape, dtype):
    """A numpy array whose data is 64-byte aligned (what chainrule shares without copying)."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.empty(n + 64, dtype=np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off:off + n].view(dtype).reshape(shape)


def test_dlpack_numpy_both_ways():
    a = aligned((3, 4), np.float64)
    a[...] = rng.standard_normal((3, 4))
    t = cr.from_dlpack(a)
    np.testing.assert_array_equal(t.numpy(), a)
    a[1, 2] = 42.0  # zero-copy: a write through numpy is seen by the tensor
    assert t.numpy()[1, 2] == 42.0
    t2 = cr.tensor(rng.standard_normal(5), dtype="float64")
    b = np.from_dlpack(t2)
    assert b.shape == (5,) and b.dtype == np.float64
    t2.fill_(3.0)
    np.testing.assert_array_equal(b, np.full(5, 3.0))
    assert t2.__dlpack_device__() == (1, 0)
    # a strided view is copied; an int32 array becomes int64 (chainrule.tensor's rule)
    s = cr.from_dlpack(a[:, ::2])
    np.testing.assert_array_equal(s.numpy(), a[:, ::2])
    i = cr.from_dlpack(np.arange(6, dtype=np.int32).reshape(2, 3))
    assert i.dtype == cr.int64 and i.numpy().tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(TypeError):
        cr.from_dlpack(3.0)
    cap = cr.to_dlpack(t2)
    cr.from_dlpack(cap)
    with pytest.raises(cr.ValueError, match="consumed"):
        cr.from_dlpack(cap)


def test_dlpack_torch_zero_copy_both_ways():
    torch = pytest.importorskip("torch")
    from torch.utils import dlpack as tdl
    # torch -> chainrule
    x = torch.zeros(4, 5, dtype=torch.float32)
    t = cr.from_dlpack(x)
    assert t.shape == (4, 5) and t.dtype == cr.float32
    x[2, 3] = 7.0
    assert t.numpy()[2, 3] == 7.0
    t.fill_(1.5)
    assert float(x[0, 0]) == 1.5
    t_cap = cr.from_dlpack(tdl.to_dlpack(x))
    x[0, 1] = -1.0
    assert t_cap.numpy()[0, 1] == -1.0
    # chainrule -> torch
    c = cr.tensor(rng.standard_normal((3, 2)), dtype="float64")
    y = tdl.from_dlpack(c)
    assert y.dtype == torch.float64 and tuple(y.shape) == (3, 2)
    np.testing.assert_array_equal(y.numpy(), c.numpy())
    y[1, 1] = 99.0
    assert c.numpy()[1, 1] == 99.0
    c.fill_(2.0)
    assert float(y.sum()) == 12.0
    yi = tdl.from_dlpack(cr.to_dlpack(cr.tensor([1, 2, 3])))
    assert yi.dtype == torch.int64 and yi.tolist() == [1, 2, 3]
    # the storage outlives the chainrule handle
    y2 = tdl.from_dlpack(cr.ones((2,), dtype="float64"))
    assert y2.tolist() == [1.0, 1.0]
    # a non-contiguous torch view is copied
    v = cr.from_dlpack(torch.arange(12.0).reshape(3, 4).t())
    np.testing.assert_array_equal(v.numpy(), np.arange(12.0).reshape(3, 4).T)
