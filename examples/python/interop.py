"""Moving tensors in and out of chainrule: numpy and DLPack (zero-copy), safetensors files.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/interop.py
"""
import os
import tempfile

import numpy as np

import chainrule as cr

# numpy: a tensor's numpy() is a view of its storage, and np.from_dlpack shares it too.
t = cr.zeros((2, 3), dtype="float64")
view = np.from_dlpack(t)
t.fill_(1.0)
print("numpy sees the tensor's write:", view[0, 0] == 1.0)

# PyTorch (Debian's python3-torch), both ways, without copying.
try:
    import torch
    from torch.utils import dlpack
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    c = cr.from_dlpack(x)             # chainrule shares torch's memory
    x[0, 0] = 100.0
    print("chainrule sees torch's write:", c.numpy()[0, 0] == 100.0)
    back = dlpack.from_dlpack(cr.tanh(c))  # and torch shares chainrule's
    print("torch reads chainrule's result:", torch.allclose(back, torch.tanh(x)))
except ImportError:
    print("(PyTorch not installed: skipping the torch part)")

# safetensors: a dict of name -> Tensor, written atomically (temporary file, then rename).
model = cr.nn.build_model("mlp:4-8-2", generator=cr.Generator(0))
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "model.safetensors")
    cr.io.save_safetensors(path, model.state_dict(), metadata={"chainrule.model": "mlp:4-8-2"})
    loaded, meta = cr.io.load_safetensors(path, with_metadata=True)
    fresh = cr.nn.build_model(meta["chainrule.model"], init=None)
    fresh.load_state_dict(loaded)
    x = cr.ones((1, 4))
    print("reloaded model, same output:", cr.allclose(fresh(x), model(x)), sorted(loaded))
