"""A convolutional network written in Python (an nn.Module subclass, as in PyTorch), trained on
Fashion-MNIST images, then per-example gradients of the same network in one line:

    PYTHONPATH=build/python /usr/bin/python3 examples/python/train_cnn.py --max-steps 200

Data: Debian's dataset-fashion-mnist; --data spirals is refused (it holds no images).
"""
import argparse
import time

import numpy as np

import chainrule as cr
from chainrule import data, nn, optim

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", default="fashion-mnist", help="fashion-mnist[:DIR]")
p.add_argument("--batch", type=int, default=128)
p.add_argument("--max-steps", type=int, default=200)
args = p.parse_args()


class SmallCNN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 7 * 7, classes)

    def forward(self, x):
        x = self.pool(cr.relu(self.bn1(self.conv1(x))))  # [N, 16, 14, 14]
        x = self.pool(cr.relu(self.bn2(self.conv2(x))))  # [N, 32, 7, 7]
        return self.fc(cr.flatten(x, 1))


splits = data.load_by_name(args.data)
h, w = splits.train.height, splits.train.width
if h <= 0:
    raise SystemExit(f"{args.data} holds no images")
images = lambda x: cr.reshape(x, (x.shape[0], 1, h, w))  # noqa: E731

cr.manual_seed(0)
model = SmallCNN(splits.train.num_classes)
opt = optim.AdamW(model, lr=2e-3)
loader = data.DataLoader(splits.train, batch_size=args.batch, seed=0)
t0, steps = time.perf_counter(), 0
while steps < args.max_steps:
    for x, y in loader:
        opt.zero_grad()
        loss = cr.cross_entropy(model(images(x)), y)
        loss.backward()
        opt.step()
        steps += 1
        if steps % 50 == 0:
            print(f"step {steps}: loss {loss.item():.4f}")
        if steps >= args.max_steps:
            break
dt = time.perf_counter() - t0
model.eval()
val = splits.val
correct = 0
for i in range(0, len(val), 1000):
    xb, yb = val.x[i:i + 1000], val.y[i:i + 1000]
    correct += int(cr.sum(cr.cast(cr.equal(cr.argmax(model(images(xb)), -1), yb), "int64")).item())
print(f"{steps} steps in {dt:.1f} s ({steps * args.batch / dt:.0f} images/s); validation accuracy {correct / len(val):.4f}")

# Per-example gradients (the model in eval mode, so batch norm uses its running statistics):
# vmap over the batch of grad of a one-example loss, against a loop of grad.
params = dict(model.named_parameters())


def loss_one(p, x, y):
    return cr.cross_entropy(nn.functional_call(model, p, cr.reshape(x, (1, 1, h, w))), cr.reshape(y, (1,)))


xs, ys = val.x[:16], val.y[:16]
per_example = cr.vmap(cr.grad(loss_one), in_axes=(None, 0, 0))(params, xs, ys)
for i in (0, 7):
    one = cr.grad(loss_one)(params, xs[i], ys[i])
    for name in params:
        np.testing.assert_allclose(per_example[name][i].numpy(), one[name].numpy(), rtol=2e-4, atol=1e-6)
print("per-example gradients:", {k: tuple(v.shape) for k, v in per_example.items()}, "== a loop of grad")
