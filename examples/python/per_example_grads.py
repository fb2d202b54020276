"""Per-example gradients of an MLP's loss, from Python: vmap over grad of a function of the
parameter dict (nn.functional_call), checked against a loop of grad, one example at a time.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/per_example_grads.py
"""
import numpy as np

import chainrule as cr
from chainrule import nn

model = nn.build_model("mlp:8-16-3", dtype="float64", generator=cr.Generator(0))
params = dict(model.named_parameters())  # {"0.weight": [16, 8], "0.bias": [16], "2.weight": ..., "2.bias": ...}
rng = np.random.default_rng(0)
xs = cr.tensor(rng.standard_normal((32, 8)), dtype="float64")
ys = cr.tensor(rng.integers(0, 3, 32))


def loss(p, x, y):  # one example: x [8], y a scalar label
    logits = nn.functional_call(model, p, cr.unsqueeze(x, 0))
    return cr.cross_entropy(logits, cr.unsqueeze(y, 0))


per_example = cr.vmap(cr.grad(loss), in_axes=(None, 0, 0))(params, xs, ys)
for name, g in per_example.items():
    print(f"{name:10s} {g.shape}")

worst = 0.0
for i in range(xs.shape[0]):
    gi = cr.grad(loss)(params, cr.tensor(xs.numpy()[i]), cr.tensor(ys.numpy()[i]))
    worst = max(worst, max(float(np.abs(per_example[k].numpy()[i] - gi[k].numpy()).max()) for k in params))
print(f"largest difference from a loop of grad: {worst:.2e}")
assert worst < 1e-12
