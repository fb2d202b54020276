#!/usr/bin/env python3
"""Writes tests/fixtures/torch_mlp/ once with PyTorch (Debian python3-torch; no safetensors package
needed: the files are written and read by hand here).

    /usr/bin/python3 tools/make_torch_fixture.py [--out tests/fixtures/torch_mlp]

For each model (mlp:6-5-4-3, resmlp:6-5x2-3) it builds the nn.Sequential chainrule's spec names
(tools/torch_grad_check.py's build), seeds torch, writes NAME.safetensors (float64 state_dict,
__metadata__ {"chainrule.model": SPEC}) and NAME_io.safetensors with "x" [4, 6] and "logits"
[4, 3] = model(x) in float64. tests/test_torch_fixture.cpp loads them with chainrule.

    /usr/bin/python3 tools/make_torch_fixture.py --check-chainrule FILE SPEC

is the reverse direction: loads a model.safetensors written by chainrule (save_model) into
torch's nn.Sequential with load_state_dict(strict=True) and checks the names and shapes match
torch's state_dict exactly.
"""
import argparse
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_grad_check import build, read_safetensors  # noqa: E402

MODELS = [("mlp", "mlp:6-5-4-3", 1), ("resmlp", "resmlp:6-5x2-3", 2)]


def write_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().to(torch.float64)
        raw = t.numpy().astype("<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make(out):
    os.makedirs(out, exist_ok=True)
    for name, spec, seed in MODELS:
        torch.manual_seed(seed)
        model = build(spec).to(torch.float64)
        with torch.no_grad():  # biases away from zero so they matter in the comparison
            for n, p in model.named_parameters():
                if n.endswith("bias"):
                    p.uniform_(-0.5, 0.5)
        model.eval()
        x = torch.randn(4, 6, dtype=torch.float64)
        with torch.no_grad():
            logits = model(x)
        write_safetensors(os.path.join(out, name + ".safetensors"), model.state_dict(), {"chainrule.model": spec})
        write_safetensors(os.path.join(out, name + "_io.safetensors"), {"x": x, "logits": logits})
        print(f"{name}: {spec}, {sum(p.numel() for p in model.parameters())} parameters, "
              f"logits[0] = {logits[0].tolist()}")


def check_chainrule(path, spec):
    meta, weights = read_safetensors(path)
    model = build(spec).to(torch.float64)
    theirs = {k: tuple(v.shape) for k, v in weights.items()}
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if theirs != mine:
        print(f"names/shapes differ:\n chainrule {theirs}\n torch     {mine}")
        return 1
    model.load_state_dict({k: v.to(torch.float64) for k, v in weights.items()}, strict=True)
    print(f"{path}: metadata {meta}; {len(mine)} tensors load into torch's {spec} with strict=True")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "torch_mlp"))
    p.add_argument("--check-chainrule", nargs=2, metavar=("FILE", "SPEC"))
    a = p.parse_args()
    if a.check_chainrule:
        return check_chainrule(*a.check_chainrule)
    make(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
