#!/usr/bin/env python3
"""Writes tests/fixtures/torch_mlp/ once with PyTorch (Debian python3-torch; no safetensors package
needed: the files are written and read by hand here).

    /usr/bin/python3 tools/make_torch_fixture.py [--out tests/fixtures/torch_mlp]

For each model (mlp:6-5-4-3, resmlp:6-5x2-3; and two ResNets, RESNETS) it builds the torch module chainrule's spec names
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
# Convolutional: chainrule's resnet:CxHxW-WIDTHxBLOCKS-...-OUT, post- and pre-activation blocks,
# with a projection shortcut (stride 2, more channels) and an identity one.
RESNETS = [("resnet", "resnet:1x8x8-4x2-6x1-3", 3), ("resnet_pre", "resnet:2x7x6-4x1-8x2-3:pre", 4)]


def build_resnet(spec):
    """torchvision's BasicBlock layout, with chainrule's names (nn/spec.cpp's build_resnet)."""
    import torch.nn as nn

    fields = spec.split(":")[1].split("-")
    preact = spec.endswith(":pre")
    c, h, w = (int(v) for v in fields[0].split("x"))
    stages = [tuple(int(v) for v in f.split("x")) for f in fields[1:-1]]

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cin if preact else cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                proj = [nn.Conv2d(cin, cout, 1, stride, bias=False)]
                self.downsample = nn.Sequential(*proj) if preact else nn.Sequential(*proj, nn.BatchNorm2d(cout))

        def forward(self, x):
            if preact:
                h = self.bn1(x).relu()
                shortcut = self.downsample(h) if self.downsample is not None else x
                return self.conv2(self.bn2(self.conv1(h)).relu()) + shortcut
            b = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            return (b + (self.downsample(x) if self.downsample is not None else x)).relu()

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            stem = stages[0][0]
            self.conv1 = nn.Conv2d(c, stem, 3, 1, 1, bias=False)
            if not preact:
                self.bn1 = nn.BatchNorm2d(stem)
            channels = stem
            for s, (width, blocks) in enumerate(stages):
                layer = []
                for b in range(blocks):
                    layer.append(Block(channels, width, 2 if s > 0 and b == 0 else 1))
                    channels = width
                setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
            if preact:
                self.bn_final = nn.BatchNorm2d(channels)
            self.fc = nn.Linear(channels, int(fields[-1]))

        def forward(self, x):
            h = self.conv1(x.reshape(-1, c, h_, w_))
            if not preact:
                h = self.bn1(h).relu()
            for s in range(len(stages)):
                h = getattr(self, f"layer{s + 1}")(h)
            if preact:
                h = self.bn_final(h).relu()
            return self.fc(h.mean((2, 3)))

    h_, w_ = h, w
    return ResNet(), c * h * w


def write_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        integer = t.dtype == torch.int64  # BatchNorm's num_batches_tracked
        t = t.detach().contiguous().to(torch.int64 if integer else torch.float64)
        raw = t.numpy().astype("<i8" if integer else "<f8").tobytes()
        header[name] = {"dtype": "I64" if integer else "F64", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
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


def save(out, name, spec, model, features):
    """NAME.safetensors (the state_dict) and NAME_io.safetensors (x [4, features], torch's logits)."""
    model.eval()
    x = torch.randn(4, features, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
    write_safetensors(os.path.join(out, name + ".safetensors"), model.state_dict(), {"chainrule.model": spec})
    write_safetensors(os.path.join(out, name + "_io.safetensors"), {"x": x, "logits": logits})
    print(f"{name}: {spec}, {sum(p.numel() for p in model.parameters())} parameters, logits[0] = {logits[0].tolist()}")


def make(out):
    os.makedirs(out, exist_ok=True)
    for name, spec, seed in MODELS:
        torch.manual_seed(seed)
        model = build(spec).to(torch.float64)
        with torch.no_grad():  # biases away from zero so they matter in the comparison
            for n, p in model.named_parameters():
                if n.endswith("bias"):
                    p.uniform_(-0.5, 0.5)
        save(out, name, spec, model, 6)
    for name, spec, seed in RESNETS:
        torch.manual_seed(seed)
        model, features = build_resnet(spec)
        model = model.to(torch.float64)
        with torch.no_grad():  # batch statistics and affine parameters away from their defaults
            for n, b in model.named_buffers():
                if n.endswith("running_mean"):
                    b.uniform_(-0.5, 0.5)
                elif n.endswith("running_var"):
                    b.uniform_(0.5, 2.0)
                elif n.endswith("num_batches_tracked"):
                    b.fill_(7)
            for n, p in model.named_parameters():
                if "bn" in n or "downsample.1" in n or n.endswith("bias"):
                    p.uniform_(0.5, 1.5) if n.endswith("weight") else p.uniform_(-0.5, 0.5)
        save(out, name, spec, model, features)


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
