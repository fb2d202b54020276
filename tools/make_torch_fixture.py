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
# densenet:... in torchvision's layout (bottleneck layers, compression 0.5, odd sizes pooled down)
# and unet:... in the torch.hub U-Net's (mateuszbuda/brain-segmentation-pytorch) without its sigmoid.
DENSENETS = [("densenet", "densenet:1x9x8-g3-b2x2-c0.5-3", 5)]
UNETS = [("unet", "unet:2x8x4-c3-d2-2", 6)]


def build_densenet(spec):
    """torchvision.models.densenet's _DenseLayer/_DenseBlock/_Transition, CIFAR stem (nn/spec.cpp)."""
    import collections
    import math

    import torch.nn as nn

    fields = spec.split(":")[1].split("-")
    c, h, w = (int(v) for v in fields[0].split("x"))
    k = int(fields[1][1:])
    blocks = [int(v) for v in fields[2][1:].split("x")]
    theta = float(fields[3][1:])
    out = int(fields[4])

    class Layer(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
            self.conv1 = nn.Conv2d(cin, 4 * k, 1, bias=False)
            self.norm2, self.relu2 = nn.BatchNorm2d(4 * k), nn.ReLU()
            self.conv2 = nn.Conv2d(4 * k, k, 3, padding=1, bias=False)

        def forward(self, feats):
            x = torch.cat(feats, 1)
            return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))

    class Block(nn.ModuleDict):
        def __init__(self, n, cin):
            super().__init__()
            for i in range(n):
                self.add_module(f"denselayer{i + 1}", Layer(cin + i * k))

        def forward(self, x):
            feats = [x]
            for layer in self.values():
                feats.append(layer(feats))
            return torch.cat(feats, 1)

    class DenseNet(nn.Module):
        def __init__(self):
            super().__init__()
            ch = 2 * k
            mods = collections.OrderedDict([("conv0", nn.Conv2d(c, ch, 3, padding=1, bias=False))])
            for b, n in enumerate(blocks):
                mods[f"denseblock{b + 1}"] = Block(n, ch)
                ch += n * k
                if b + 1 < len(blocks):
                    nxt = int(math.floor(theta * ch))
                    mods[f"transition{b + 1}"] = nn.Sequential(collections.OrderedDict(
                        [("norm", nn.BatchNorm2d(ch)), ("relu", nn.ReLU()), ("conv", nn.Conv2d(ch, nxt, 1, bias=False)),
                         ("pool", nn.AvgPool2d(2, 2))]))
                    ch = nxt
            mods["norm5"] = nn.BatchNorm2d(ch)
            self.features = nn.Sequential(mods)
            self.classifier = nn.Linear(ch, out)

        def forward(self, x):
            f = torch.relu(self.features(x.reshape(-1, c, h, w)))
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(f, 1), 1))

    return DenseNet(), c * h * w


def build_unet(spec):
    """The torch.hub U-Net's _block and wiring, depth D, no final sigmoid (nn/unet.cpp)."""
    import collections

    import torch.nn as nn

    fields = spec.split(":")[1].split("-")
    c, h, w = (int(v) for v in fields[0].split("x"))
    base, depth, out = int(fields[1][1:]), int(fields[2][1:]), int(fields[3])

    def block(cin, f, name):
        return nn.Sequential(collections.OrderedDict([
            (name + "conv1", nn.Conv2d(cin, f, 3, padding=1, bias=False)), (name + "norm1", nn.BatchNorm2d(f)), (name + "relu1", nn.ReLU()),
            (name + "conv2", nn.Conv2d(f, f, 3, padding=1, bias=False)), (name + "norm2", nn.BatchNorm2d(f)), (name + "relu2", nn.ReLU())]))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            cin = c
            for i in range(1, depth + 1):
                setattr(self, f"encoder{i}", block(cin, base << (i - 1), f"enc{i}"))
                setattr(self, f"pool{i}", nn.MaxPool2d(2, 2))
                cin = base << (i - 1)
            self.bottleneck = block(cin, base << depth, "bottleneck")
            for i in range(depth, 0, -1):
                f = base << (i - 1)
                setattr(self, f"upconv{i}", nn.ConvTranspose2d(2 * f, f, 2, stride=2))
                setattr(self, f"decoder{i}", block(2 * f, f, f"dec{i}"))
            self.conv = nn.Conv2d(base, out, 1)

        def forward(self, x):
            x = x.reshape(-1, c, h, w)
            skips = []
            for i in range(1, depth + 1):
                skips.append(getattr(self, f"encoder{i}")(x))
                x = getattr(self, f"pool{i}")(skips[-1])
            x = self.bottleneck(x)
            for i in range(depth, 0, -1):
                x = getattr(self, f"decoder{i}")(torch.cat((getattr(self, f"upconv{i}")(x), skips[i - 1]), 1))
            return self.conv(x)

    return UNet(), c * h * w


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
    convnets = [(n, s, seed, build_resnet) for n, s, seed in RESNETS] + [(n, s, seed, build_densenet) for n, s, seed in DENSENETS]
    convnets += [(n, s, seed, build_unet) for n, s, seed in UNETS]
    for name, spec, seed, builder in convnets:
        torch.manual_seed(seed)
        model, features = builder(spec)
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
                if "bn" in n or "norm" in n or "downsample.1" in n or n.endswith("bias"):
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
