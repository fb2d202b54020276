"""Training an MLP on Fashion-MNIST from Python, three ways:

1. a PyTorch-style loop: model(x), loss.backward(), opt.step();
2. a torch.func-style loop: cr.grad of a loss of a parameter dict (nn.functional_call);
3. chainrule.train, the C++ loop of `chainrule train` (progress lines, checkpoints), on the
   MLP recipe (`chainrule train --model mlp`: its network and settings) unless --model is given.

Data: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), read by the C++
loaders; --data spirals needs nothing installed. Run from the build tree:

    PYTHONPATH=build/python /usr/bin/python3 examples/python/train_mlp.py --epochs 1
"""
import argparse
import tempfile
import time

import chainrule as cr
from chainrule import data, nn, optim

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", default="fashion-mnist", help="fashion-mnist[:DIR] or spirals")
p.add_argument("--model", default=None, help="model spec (default: mlp:IN-256-CLASSES)")
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--max-steps", type=int, default=0, help="stop each loop after this many steps (0: whole epochs)")
args = p.parse_args()

splits = data.load_by_name(args.data)
features, classes = splits.train.features(), splits.train.num_classes
spec = args.model or f"mlp:{features}-256-{classes}"
print(f"data {args.data}: {len(splits.train)} train, {len(splits.val)} validation, {len(splits.test)} test; model {spec}")


def accuracy(model, ds):
    model.eval()
    logits = model(ds.x)
    model.train()
    return cr.mean(cr.cast(cr.equal(cr.argmax(logits, -1), ds.y), "float32")).item()


def run(name, step_fn, model):
    loader = data.DataLoader(splits.train, batch_size=args.batch, seed=0)
    t0, steps = time.perf_counter(), 0
    for epoch in range(args.epochs):
        for x, y in loader:
            loss = step_fn(x, y)
            steps += 1
            if args.max_steps and steps >= args.max_steps:
                break
    dt = time.perf_counter() - t0
    print(f"{name}: {steps} steps in {dt:.2f} s ({steps * args.batch / dt:.0f} samples/s), last loss {loss:.4f}, "
          f"val accuracy {accuracy(model, splits.val):.4f}")


# 1. PyTorch style: gradients accumulate in the parameters' .grad.
cr.manual_seed(0)
model = nn.build_model(spec)
opt = optim.AdamW(model, lr=args.lr)


def eager_step(x, y):
    opt.zero_grad()
    loss = cr.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


run("backward()", eager_step, model)

# 2. torch.func style: the gradient of a function of the parameters, as a dict.
cr.manual_seed(0)
model2 = nn.build_model(spec)
opt2 = optim.AdamW(model2, lr=args.lr)


def loss_fn(params, x, y):
    return cr.cross_entropy(nn.functional_call(model2, params, x), y)


value_and_grad = cr.value_and_grad(loss_fn)


def functional_step(x, y):
    loss, grads = value_and_grad(dict(model2.named_parameters()), x, y)
    opt2.step(grads)
    return loss.item()


run("cr.grad", functional_step, model2)

# 3. The C++ loop (no Python per step), with the CLI's progress output.
with tempfile.TemporaryDirectory() as out:
    # model "mlp" and lr 0: the MLP recipe's own network and learning rate, as `chainrule train --model mlp`.
    r = cr.train(args.data, args.model or "mlp", splits=splits, out_dir=out, epochs=args.epochs, batch=args.batch,
                 lr=args.lr if args.model else 0.0, stop_after=args.max_steps if args.max_steps else -1)
    print(f"cr.train ({r.model_spec}): {r.steps} steps, {r.samples / max(r.train_seconds, 1e-9):.0f} samples/s")
