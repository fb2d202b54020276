#!/usr/bin/env python3
"""Cross-check `chainrule grad` against PyTorch (Debian: python3-torch; safetensors is read here
without the safetensors package).

    build/chainrule train --data fashion-mnist --model resmlp:784-32x2-10 --dtype f64 \
        --stop-after 20 --out /tmp/run --force --quiet
    build/chainrule grad --checkpoint /tmp/run/model.safetensors --data fashion-mnist --split train \
        --batch 64 --dtype f64 --out /tmp/grad.safetensors
    /usr/bin/python3 tools/torch_grad_check.py --checkpoint /tmp/run/model.safetensors \
        --grad /tmp/grad.safetensors --data fashion-mnist --batch 64

(The model must be trained on the data the gradient is taken on: a spirals model has 2 inputs, not
784. /usr/bin/python3 is Debian's, the one with torch.) Measured 2026-11-27, float64, batch 64:
worst relative difference 5.6e-16 for mlp:784-64-32-10 and 7.5e-16 for resmlp:784-32x2-10.

Builds the same nn.Sequential as the checkpoint's chainrule.model spec, loads the weights by
name, computes the mean cross-entropy over the first N examples of the split in float64 and
compares every parameter's gradient; exits non-zero if any differs by more than --rtol
(relative to the largest entry of that gradient).
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn

DTYPES = {"F32": (torch.float32, 4), "F64": (torch.float64, 8), "I64": (torch.int64, 8)}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        dt, size = DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + a:base + b]), dtype=dt).reshape(info["shape"]) if b > a else \
            torch.zeros(info["shape"], dtype=dt)
        out[name] = t
    return meta, out


class Block(nn.Module):
    def __init__(self, width, layout, norm):
        super().__init__()
        if norm == "ln":
            self.norm = nn.LayerNorm(width)
        elif norm == "bn":
            self.norm = nn.BatchNorm1d(width)
        else:
            self.norm = None
        self.l1 = nn.Linear(width, width)
        self.l2 = nn.Linear(width, width)
        self.layout = layout

    def forward(self, h):
        b = self.norm(h) if self.norm is not None else h
        if self.layout == "pre":
            b = torch.relu(b)
        b = self.l2(torch.relu(self.l1(b)))
        if self.layout == "lrlr":
            b = torch.relu(b)
        return h + b


def build(spec):
    kind, rest = spec.split(":", 1)
    if kind == "mlp":
        sizes = [int(s) for s in rest.split("-")]
        layers = []
        for i in range(len(sizes) - 1):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        return nn.Sequential(*layers)
    parts = rest.split(":")
    d_in, wb, d_out = parts[0].split("-")
    width, blocks = (int(v) for v in wb.split("x"))
    opts = parts[1].split("+") if len(parts) > 1 else ["lrl"]
    norm = next((o for o in opts[1:] if o in ("ln", "bn")), None)
    layers = [nn.Linear(int(d_in), width), nn.ReLU()]
    layers += [Block(width, opts[0], norm) for _ in range(blocks)]
    layers.append(nn.Linear(width, int(d_out)))
    return nn.Sequential(*layers)


def read_idx(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def fashion(directory, split, n):
    prefix = "t10k" if split == "test" else "train"
    def find(stem):
        for ext in ("", ".gz"):
            if os.path.exists(os.path.join(directory, stem + ext)):
                return os.path.join(directory, stem + ext)
        sys.exit(f"missing {stem} in {directory}")
    x = read_idx(find(prefix + "-images-idx3-ubyte")).reshape(-1, 784).to(torch.float64) / 255.0
    y = read_idx(find(prefix + "-labels-idx1-ubyte")).to(torch.int64)
    if split == "val":
        x, y = x[-5000:], y[-5000:]
    return x[:n], y[:n]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--grad", required=True)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--split", default="train")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rtol", type=float, default=1e-10)
    a = p.parse_args()
    meta, weights = read_safetensors(a.checkpoint)
    model = build(meta["chainrule.model"]).to(torch.float64)
    model.load_state_dict({k: v.to(torch.float64) if v.is_floating_point() else v for k, v in weights.items()})
    model.eval()
    directory = a.data.split(":", 1)[1] if ":" in a.data else "/usr/share/datasets/fashion-mnist"
    x, y = fashion(directory, a.split, a.batch)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    _, theirs = read_safetensors(a.grad)
    worst = 0.0
    for name, param in model.named_parameters():
        g, c = param.grad, theirs[name].to(torch.float64)
        rel = (g - c).abs().max().item() / max(g.abs().max().item(), 1e-300)
        worst = max(worst, rel)
        print(f"{name:24s} {tuple(g.shape)!s:14s} max relative difference {rel:.3e}")
    print(f"loss {loss.item():.17g}; worst relative difference {worst:.3e} (tolerance {a.rtol:g})")
    return 0 if worst <= a.rtol else 1


if __name__ == "__main__":
    sys.exit(main())
