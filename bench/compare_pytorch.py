#!/usr/bin/python3
"""chainrule against PyTorch on the same machine, in one run.

Runs `chainrule bench --json` and the same configurations in PyTorch (Debian's python3-torch; run
this file with /usr/bin/python3), each PyTorch figure the best of 1 and 2 threads, once with the
environment as it is and once with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (then OpenBLAS may
use its AVX-512 kernels). Prints both columns, the best, chainrule's figure and the speed-up.

    /usr/bin/python3 bench/compare_pytorch.py --chainrule build/chainrule [--config tiny,small]
        [--jacobian] [--epoch] [--per-example] [--min-time 1.0] [--repeats 3] [--markdown]
    /usr/bin/python3 bench/compare_pytorch.py --elementwise   (only the elementwise functions at 1M float32)

Every PyTorch measurement runs in a fresh worker process (OpenBLAS reads its environment at load),
--repeats times on each side (chainrule's bench too), and the best median counts.
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {  # the same as src/cli/bench.cpp
    "tiny": ("mlp:2-64-64-2", 32),
    "small": ("mlp:64-256-256-256-10", 64),
    "fmnist": ("mlp:784-1024-1024-1024-10", 256),
    "wide": ("mlp:1024-4096-4096-10", 512),
    "resmlp": ("resmlp:784-256x15-10", 128),
    "resnet8": ("resnet:1x28x28-16x1-32x1-64x1-10", 128),
    "resnet20": ("resnet:1x28x28-16x3-32x3-64x3-10", 128),
}
TARGETS = {"tiny": 10.0, "small": 3.0, "fmnist": 1.5, "wide": 1.6, "resmlp": 2.5, "resnet8": 1.5, "resnet20": 1.5}  # speed-up wanted
JACOBIANS = [(16, 4096), (4096, 16), (1024, 1024)]  # (n, m), 3-layer tanh MLP of width 512
JACOBIAN_TARGET = 2.0
PER_EXAMPLE_BATCH, PER_EXAMPLE_TARGET = 128, 2.0  # per-example gradients of the fmnist MLP
ELEMENTWISE_N = 1 << 20  # float32 values, as `chainrule bench --elementwise`
ELEMENTWISE_POSITIVE = ("log", "log1p")  # on |x| + 0.01, as there


def median_seconds(fn, min_time, warmup=3, min_calls=10):
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---- workers (run in a child process) ------------------------------------------------------------

def build_model(spec, dropout=0.0):
    import torch.nn as nn

    kind, rest = spec.split(":", 1)
    if kind == "resnet":
        return build_resnet(spec)
    if kind == "mlp":
        sizes = [int(s) for s in rest.split("-")]
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i + 2 < len(sizes):
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    class Block(nn.Module):  # chainrule's default layout lrl: h + l2(relu(l1(h)))
        def __init__(self, w):
            super().__init__()
            self.l1, self.l2 = nn.Linear(w, w), nn.Linear(w, w)
            self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        def forward(self, h):
            return h + self.l2(self.drop(self.l1(h).relu()))

    dims = rest.split(":")[0].split("-")
    width, blocks = (int(v) for v in dims[1].split("x"))
    return nn.Sequential(nn.Linear(int(dims[0]), width), nn.ReLU(), *[Block(width) for _ in range(blocks)],
                         nn.Linear(width, int(dims[2])))


def build_resnet(spec):
    """chainrule's resnet:... in torch, as tools/make_torch_fixture.py builds it for the fixtures."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
    from make_torch_fixture import build_resnet as fixture_resnet

    model, features = fixture_resnet(spec)
    model.in_features = features
    model.out_features = int(spec.split(":")[1].split("-")[-1])  # the spec's last field: the classes
    return model


def worker_step(name, threads, min_time):
    import torch
    import torch.nn.functional as F
    from functorch import jvp

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec, batch = CONFIGS[name]
    model = build_model(spec)
    n_in = model.in_features if hasattr(model, "in_features") else model[0].in_features
    n_out = model.out_features if hasattr(model, "out_features") else model[-1].out_features
    x, y = torch.randn(batch, n_in), torch.randint(0, n_out, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def grad():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def forward():
        with torch.no_grad():
            F.cross_entropy(model(x), y)

    t = torch.randn_like(x)

    def tangent():
        with torch.no_grad():
            jvp(lambda xi: F.cross_entropy(model(xi), y), (x,), (t,))

    def dual_tangent():  # BatchNorm's running statistics are in-place updates, which functorch refuses
        import torch.autograd.forward_ad as fwAD

        with torch.no_grad(), fwAD.dual_level():
            fwAD.unpack_dual(F.cross_entropy(model(fwAD.make_dual(x, t)), y)).tangent

    if spec.startswith("resnet:"):
        tangent = dual_tangent

    r = {"step_us": 1e6 * median_seconds(step, min_time)}
    r["grad_us"] = 1e6 * median_seconds(grad, min_time)
    r["forward_us"] = 1e6 * median_seconds(forward, min_time)
    r["jvp_us"] = 1e6 * median_seconds(tangent, min_time)
    return r


def worker_jacobian(n, m, threads, min_time):
    import torch
    from torch.autograd.functional import jacobian

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    w = 512
    ws = [torch.randn(w, n) / n**0.5, torch.randn(w, w) / w**0.5, torch.randn(m, w) / w**0.5]
    bs = [torch.randn(w) * 0.1, torch.randn(w) * 0.1, torch.randn(m) * 0.1]

    def f(x):
        h = torch.tanh(ws[0] @ x + bs[0])
        h = torch.tanh(ws[1] @ h + bs[1])
        return ws[2] @ h + bs[2]

    x = torch.randn(n)
    r = {}
    for strategy in ("reverse-mode", "forward-mode"):
        r[strategy] = median_seconds(lambda: jacobian(f, x, vectorize=True, strategy=strategy), min_time, warmup=1, min_calls=3)
    return r


def worker_per_example(batch, threads, min_time):
    """Per-example gradients of the fmnist MLP with functorch (torch.func in later PyTorch):
    vmap(grad(loss), in_dims=(None, 0, 0)), and a loop of grad over the examples."""
    import torch
    import torch.nn.functional as F
    from functorch import grad, make_functional, vmap

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(CONFIGS["fmnist"][0])
    fmodel, params = make_functional(model)
    n_in, n_out = model[0].in_features, model[-1].out_features
    x, y = torch.randn(batch, n_in), torch.randint(0, n_out, (batch,))

    def loss(p, xi, yi):
        return F.cross_entropy(fmodel(p, xi.unsqueeze(0)), yi.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    g = grad(loss)

    def loop():
        for i in range(batch):
            g(params, x[i], y[i])

    return {"vmap_s": median_seconds(lambda: per_example(params, x, y), min_time, warmup=1, min_calls=3),
            "loop_s": median_seconds(loop, min_time, warmup=1, min_calls=3)}


def worker_elementwise(threads, min_time):
    """The functions of `chainrule bench --elementwise` in PyTorch, out of place, on the same shapes."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(ELEMENTWISE_N)
    positive = x.abs() + 0.01
    fns = {"exp": torch.exp, "log": torch.log, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "sin": torch.sin,
           "cos": torch.cos, "erf": torch.erf, "expm1": torch.expm1, "log1p": torch.log1p, "softplus": F.softplus,
           "gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "silu": F.silu}
    with torch.no_grad():
        return {name: median_seconds(lambda: f(positive if name in ELEMENTWISE_POSITIVE else x), min_time, min_calls=20)
                for name, f in fns.items()}


def compare_elementwise(a):
    """Side by side: each figure the best median over 1 and 2 threads and --repeats processes."""
    cmd = [a.chainrule, "bench", "--elementwise", "--threads", "1,2", "--min-time", str(a.min_time), "--json"]
    ours = [json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            ["elementwise"] for _ in range(a.repeats)]
    theirs = [dict(run_worker(["elementwise", "--min-time", str(a.min_time), "--threads", str(t)], True), threads=t)
              for _ in range(a.repeats) for t in (1, 2)]
    gbs = lambda seconds: 2 * 4 * ELEMENTWISE_N / seconds / 1e9  # one float32 read and one written per value
    md, sep = a.markdown, " | " if a.markdown else "  "

    def row(cells):
        print(("| " + sep.join(cells) + " |") if md else sep.join(f"{c:>14}" for c in cells))

    print(f"elementwise, {ELEMENTWISE_N} float32 values (chainrule's vector kernels: {ours[0]['isa']}); "
          f"best median of {a.repeats} processes, 1 or 2 threads")
    head = ["function", "torch", "torch GB/s", "chainrule", "chainrule GB/s", "speed-up"]
    row(head)
    if md:
        print("|" + "---|" * len(head))
    for f in ours[0]["functions"]:
        name = f["name"]
        mine_t, mine_ms = min(((int(t), ms) for run in ours for g in run["functions"] if g["name"] == name
                               for t, ms in g["ms"].items()), key=lambda p: p[1])
        best = min(theirs, key=lambda r: r[name])
        torch_s = best[name]
        row([name, f"{1e3 * torch_s:.3f} ms ({best['threads']}t)", f"{gbs(torch_s):.1f}",
             f"{mine_ms:.3f} ms ({mine_t}t)", f"{gbs(mine_ms / 1e3):.1f}", f"{1e3 * torch_s / mine_ms:.2f}x"])


def read_idx(path):
    import numpy as np

    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def worker_epoch(threads):
    """One epoch of the default `chainrule train` recipe in PyTorch: resmlp:784-512x2-10 with
    dropout 0.1 after each branch's ReLU, AdamW (lr 1e-3, weight decay 0.01), batch 128, label
    smoothing 0.1, random horizontal flips, on Fashion-MNIST's 60000 training images."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    root = "/usr/share/datasets/fashion-mnist"
    images = read_idx(f"{root}/train-images-idx3-ubyte.gz")
    labels = read_idx(f"{root}/train-labels-idx1-ubyte.gz")
    x_all = torch.from_numpy(images.astype("float32") / 255.0)
    y_all = torch.from_numpy(labels.astype("int64"))
    model = build_model("resmlp:784-512x2-10", dropout=0.1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    start = time.perf_counter()
    order = torch.randperm(x_all.shape[0])
    for b in range(0, x_all.shape[0], 128):
        idx = order[b: b + 128]
        x = x_all[idx]
        flip = torch.rand(x.shape[0]) < 0.5
        x = torch.where(flip[:, None, None], x.flip(2), x).reshape(x.shape[0], -1)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y_all[idx], label_smoothing=0.1).backward()
        opt.step()
    secs = time.perf_counter() - start
    return {"epoch_s": secs, "samples_per_s": x_all.shape[0] / secs}


# ---- driver --------------------------------------------------------------------------------------

def run_worker(args, pinned):
    env = dict(os.environ)
    if not pinned:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    out = subprocess.run([sys.executable, __file__, "--worker"] + args, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_of_threads(args, pinned, key, repeats):
    runs = [dict(run_worker(args + ["--threads", str(t)], pinned), threads=t) for _ in range(repeats) for t in (1, 2)]
    return min(runs, key=lambda r: r[key])


def best_of_runs(runs):
    """chainrule's figures, each the best over several `chainrule bench` processes."""
    best = dict(runs[0])
    best["gemm_peak_gflops"] = max(r["gemm_peak_gflops"] for r in runs)
    best["configs"] = [min((c for r in runs for c in r["configs"] if c["name"] == first["name"]), key=lambda c: c["step_us"])
                       for first in runs[0]["configs"]]
    if "per_example" in runs[0]:
        best["per_example"] = min((r["per_example"] for r in runs), key=lambda p: p["vmap_s"])
    best["jacobians"] = [min((j for r in runs for j in r.get("jacobians", []) if (j["n"], j["m"]) == (first["n"], first["m"])),
                             key=lambda j: j["seconds"]) for first in runs[0].get("jacobians", [])]
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chainrule", default="build/chainrule")
    p.add_argument("--config", default=",".join(CONFIGS))
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3,
                   help="fresh processes per measurement, on both sides; the best median counts (timings here vary "
                        "between processes, PyTorch's by up to 1.8x)")
    p.add_argument("--jacobian", action="store_true", help="also compare Jacobians of f: R^n -> R^m")
    p.add_argument("--epoch", action="store_true", help="also time one epoch of the default training recipe")
    p.add_argument("--per-example", action="store_true",
                   help="also compare per-example gradients of the fmnist MLP: vmap(grad) against functorch's")
    p.add_argument("--elementwise", action="store_true",
                   help="instead: exp, log, tanh, sigmoid, gelu and the other elementwise functions at 1M float32")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--worker", nargs="*")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    if a.worker is not None:  # child process
        kind = a.worker[0]
        if kind == "step":
            r = worker_step(a.worker[1], a.threads, a.min_time)
        elif kind == "jacobian":
            r = worker_jacobian(int(a.worker[1]), int(a.worker[2]), a.threads, a.min_time)
        elif kind == "per-example":
            r = worker_per_example(int(a.worker[1]), a.threads, a.min_time)
        elif kind == "elementwise":
            r = worker_elementwise(a.threads, a.min_time)
        else:
            r = worker_epoch(a.threads)
        print(json.dumps(r))
        return

    if a.elementwise:
        compare_elementwise(a)
        return
    names = [c for c in a.config.split(",") if c]
    for c in names:
        if c not in CONFIGS:
            sys.exit(f"compare_pytorch.py: unknown config '{c}' (known: {', '.join(CONFIGS)})")
    cmd = [a.chainrule, "bench", "--config", ",".join(names), "--min-time", str(a.min_time), "--json"]
    if a.jacobian:
        cmd.append("--jacobian")
    if a.per_example:
        cmd += ["--per-example", "--per-example-batch", str(PER_EXAMPLE_BATCH)]
    ours = best_of_runs([json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
                         for _ in range(a.repeats)])
    ours_by_name = {c["name"]: c for c in ours["configs"]}
    md = a.markdown
    sep = " | " if md else "  "

    def row(cells):
        print(("| " + sep.join(cells) + " |") if md else sep.join(f"{c:>14}" for c in cells))

    print(f"chainrule GEMM peak in the same run: {ours['gemm_peak_gflops']:.1f} GFLOP/s; every figure the best median of "
          f"{a.repeats} processes per setting\n")
    head = ["config", "torch pinned", "torch unpinned", "torch best", "chainrule", "speed-up", "target", "met",
            "chainrule GFLOP/s", "peak %", "grad/fwd", "jvp/fwd", "torch grad/fwd", "torch jvp/fwd"]
    row(head)
    if md:
        print("|" + "---|" * len(head))
    results = []
    for name in names:
        pinned = best_of_threads(["step", name, "--min-time", str(a.min_time)], True, "step_us", a.repeats)
        unpinned = best_of_threads(["step", name, "--min-time", str(a.min_time)], False, "step_us", a.repeats)
        best = min(pinned, unpinned, key=lambda r: r["step_us"])
        mine = ours_by_name[name]
        speedup = best["step_us"] / mine["step_us"]
        met = speedup >= TARGETS[name]
        results.append({"name": name, "torch_pinned": pinned, "torch_unpinned": unpinned, "chainrule": mine,
                        "speedup": speedup, "target": TARGETS[name], "met": met})
        row([name, f"{pinned['step_us']:.1f} µs ({pinned['threads']}t)", f"{unpinned['step_us']:.1f} µs ({unpinned['threads']}t)",
             f"{best['step_us']:.1f} µs", f"{mine['step_us']:.1f} µs ({mine['threads']}t)", f"{speedup:.2f}x",
             f"{TARGETS[name]:.1f}x", "yes" if met else "NO", f"{mine['gflops']:.1f}", f"{100 * mine['peak_fraction']:.0f}",
             f"{mine['grad_over_forward']:.2f}", f"{mine['jvp_over_forward']:.2f}",
             f"{best['grad_us'] / best['forward_us']:.2f}", f"{best['jvp_us'] / best['forward_us']:.2f}"])

    if a.jacobian:
        print()
        head = ["(n, m)", "torch reverse", "torch forward", "torch best", "chainrule", "mode", "speed-up", "met"]
        row(head)
        if md:
            print("|" + "---|" * len(head))
        for jac in ours.get("jacobians", []):
            n, m = jac["n"], jac["m"]
            args = ["jacobian", str(n), str(m), "--min-time", str(a.min_time)]
            runs = [run_worker(args + ["--threads", str(t)], pin) for _ in range(a.repeats) for t in (1, 2) for pin in (True, False)]
            rev = min(r["reverse-mode"] for r in runs)
            fwd = min(r["forward-mode"] for r in runs)
            speedup = min(rev, fwd) / jac["seconds"]
            row([f"({n}, {m})", f"{1e3 * rev:.2f} ms", f"{1e3 * fwd:.2f} ms", f"{1e3 * min(rev, fwd):.2f} ms",
                 f"{1e3 * jac['seconds']:.2f} ms", jac["mode"], f"{speedup:.2f}x", "yes" if speedup >= JACOBIAN_TARGET else "NO"])

    if a.per_example:
        mine = ours["per_example"]
        runs = [run_worker(["per-example", str(PER_EXAMPLE_BATCH), "--min-time", str(a.min_time), "--threads", str(t)], pin)
                for _ in range(a.repeats) for t in (1, 2) for pin in (True, False)]
        tv = min(r["vmap_s"] for r in runs)
        tl = min(r["loop_s"] for r in runs)
        speedup = tv / mine["vmap_s"]
        print(f"\nper-example gradients of {mine['model']}, batch {mine['batch']}:")
        head = ["", "vmap(grad)", "loop of grad", "loop / vmap"]
        row(head)
        if md:
            print("|" + "---|" * len(head))
        row(["functorch", f"{1e3 * tv:.1f} ms", f"{1e3 * tl:.1f} ms", f"{tl / tv:.2f}x"])
        row([f"chainrule ({mine['threads']}t)", f"{1e3 * mine['vmap_s']:.1f} ms", f"{1e3 * mine['loop_s']:.1f} ms",
             f"{mine['loop_s'] / mine['vmap_s']:.2f}x"])
        print(f"chainrule's vmap(grad) against functorch's: {speedup:.2f}x (target {PER_EXAMPLE_TARGET:.1f}x: "
              f"{'met' if speedup >= PER_EXAMPLE_TARGET else 'NOT met'})")

    if a.epoch:
        torch_runs = [run_worker(["epoch", "--threads", str(t)], pin) for t in (1, 2) for pin in (True, False)]
        torch_sps = max(r["samples_per_s"] for r in torch_runs)
        out_dir = f"/tmp/compare_pytorch_epoch_{os.getpid()}"
        # The first epoch of the default run; metrics.jsonl has its training time and rate.
        subprocess.run([a.chainrule, "train", "--epochs", "1", "--out", out_dir, "--quiet", "--force"], check=True,
                       stdout=subprocess.DEVNULL)
        with open(f"{out_dir}/metrics.jsonl") as f:
            m = json.loads(f.readline())
        print(f"\ndefault `chainrule train` recipe, first epoch: chainrule {m['seconds']:.2f} s "
              f"({m['samples_per_second']:.0f} samples/s); PyTorch best {torch_sps:.0f} samples/s "
              f"(an epoch of 60000 in {60000 / torch_sps:.2f} s); speed-up {m['samples_per_second'] / torch_sps:.2f}x")
        subprocess.run(["rm", "-rf", out_dir])


if __name__ == "__main__":
    main()
