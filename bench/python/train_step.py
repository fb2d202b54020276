"""A tiny-MLP training step driven from Python, side by side: chainrule's nn.train_step (one C++
call), a PyTorch-style backward() loop, a torch.func-style value_and_grad + opt.step(grads), and
PyTorch's own eager step (when torch is installed). Compare with the C++ step of
`chainrule bench --config tiny --threads 1` (the same network, batch and optimiser).

    PYTHONPATH=build/python OMP_NUM_THREADS=1 /usr/bin/python3 bench/python/train_step.py
"""
import argparse
import time

import numpy as np

import chainrule as cr
from chainrule import nn, optim

p = argparse.ArgumentParser()
p.add_argument("--model", default="mlp:2-64-64-2")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--steps", type=int, default=2000)
args = p.parse_args()
cr.set_num_threads(1)
sizes = [int(s) for s in args.model.split(":")[1].split("-")]
rng = np.random.default_rng(0)
xn = rng.standard_normal((args.batch, sizes[0])).astype(np.float32)
yn = rng.integers(0, sizes[-1], args.batch)
x, y = cr.tensor(xn), cr.tensor(yn)


def median_us(f):
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            f()
        times.append((time.perf_counter() - t0) / args.steps * 1e6)
    return sorted(times)[3]


model = nn.build_model(args.model, generator=cr.Generator(0))
opt = optim.SGD(model, lr=1e-3, momentum=0.9)


def eager():
    opt.zero_grad()
    cr.cross_entropy(model(x), y).backward()
    opt.step()


vg = cr.value_and_grad(lambda prm: cr.cross_entropy(nn.functional_call(model, prm, x), y))


def functional():
    _, g = vg(dict(model.named_parameters()))
    opt.step(g)


rows = [("chainrule nn.train_step", median_us(lambda: nn.train_step(model, opt, x, y))),
        ("chainrule backward() loop", median_us(eager)),
        ("chainrule value_and_grad + step(grads)", median_us(functional))]
try:
    import torch
    torch.set_num_threads(1)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    tm = torch.nn.Sequential(*layers[:-1])
    topt = torch.optim.SGD(tm.parameters(), lr=1e-3, momentum=0.9)
    tx, ty = torch.from_numpy(xn), torch.from_numpy(yn)

    def tstep():
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tm(tx), ty).backward()
        topt.step()
    rows.append((f"PyTorch {torch.__version__} eager step", median_us(tstep)))
except ImportError:
    pass
print(f"{args.model}, batch {args.batch}, SGD(momentum 0.9), float32, 1 thread; median of 7 x {args.steps} steps")
for name, us in rows:
    print(f"  {name:40s} {us:8.1f} us")
