"""Optimisers, schedules, initialisers, data loaders and training from Python, against the
update formulas written out in numpy (and torch.optim where it is installed)."""
import math
import os

import numpy as np
import pytest

import chainrule as cr
import chainrule.nn as nn
from chainrule import data, optim

rng = np.random.default_rng(3)


def t64(a):
    return cr.tensor(np.asarray(a, dtype=np.float64), dtype="float64")


def test_sgd_momentum_nesterov_weight_decay():
    p0 = rng.standard_normal(4)
    grads = [rng.standard_normal(4) for _ in range(3)]
    p = t64(p0)
    opt = optim.SGD({"w": p}, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    ref, b = p0.copy(), None
    for g in grads:
        opt.step({"w": t64(g)})
        gg = g + 0.01 * ref
        b = gg if b is None else 0.9 * b + gg
        ref = ref - 0.1 * (gg + 0.9 * b)
    np.testing.assert_allclose(p.numpy(), ref, rtol=1e-13)
    assert opt.steps == 3 and opt.name() == "sgd"
    assert set(opt.state()) >= {"momentum_buffer.w"} or len(opt.state()) >= 1


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_adam_formula(cls):
    p0 = rng.standard_normal((2, 3))
    grads = [rng.standard_normal((2, 3)) for _ in range(4)]
    p = t64(p0)
    wd = 0.05
    opt = getattr(optim, cls)([p], lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd)
    ref, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, 1):
        opt.step([t64(g)])
        if cls == "Adam":
            g = g + wd * ref
        else:
            ref = ref * (1 - 0.01 * wd)
        m = 0.8 * m + 0.2 * g
        v = 0.95 * v + 0.05 * g * g
        ref = ref - 0.01 / (1 - 0.8 ** t) * m / (np.sqrt(v) / np.sqrt(1 - 0.95 ** t) + 1e-6)
    np.testing.assert_allclose(p.numpy(), ref, rtol=1e-12)


def test_adam_vs_torch_optim():
    torch = pytest.importorskip("torch")
    p0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(5)]
    p = t64(p0)
    opt = optim.AdamW({"p": p}, lr=0.02, weight_decay=0.1)
    tp = torch.tensor(p0, requires_grad=True)
    topt = torch.optim.AdamW([tp], lr=0.02, weight_decay=0.1)
    for g in grads:
        opt.step({"p": t64(g)})
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12)


def test_step_from_backward_equals_step_from_grad_dict():
    a = nn.build_model("mlp:3-4-2", dtype="float64", generator=cr.Generator(1))
    b = nn.build_model("mlp:3-4-2", dtype="float64", generator=cr.Generator(1))
    x, y = t64(rng.standard_normal((6, 3))), cr.tensor(rng.integers(0, 2, 6), dtype="int64")
    oa, ob = optim.Adam(a, lr=0.01), optim.Adam(b.named_parameters(), lr=0.01)
    for _ in range(3):
        oa.zero_grad()
        cr.cross_entropy(a(x), y).backward()
        oa.step()
        g = cr.grad(lambda p: cr.cross_entropy(nn.functional_call(b, p, x), y))(dict(b.named_parameters()))
        ob.step(g)
    for k, v in a.state_dict().items():
        np.testing.assert_allclose(v.numpy(), b.state_dict()[k].numpy(), rtol=1e-12)
    with pytest.raises(cr.ValueError, match="bogus"):
        ob.step({"bogus": cr.zeros((1,))})
    opt = optim.SGD(a, lr=0.5)
    opt.lr = 0.25
    assert opt.lr == 0.25


def test_train_step_and_clip_grad_norm():
    m = nn.build_model("mlp:2-16-2", generator=cr.Generator(0))
    s = data.make_spirals(train=256, validation=10, test=10)
    opt = optim.Adam(m, lr=0.01)
    first = None
    for _ in range(60):
        out, loss = nn.train_step(m, opt, s.train.x, s.train.y)
        first = first if first is not None else loss.item()
    assert loss.item() < first
    assert out.shape == (256, 2)
    # a Python loss function works too
    nn.train_step(m, opt, s.train.x, s.train.y, loss=lambda o, t: cr.cross_entropy(o, t))
    w = t64([3.0, 4.0]).requires_grad_()
    cr.sum(w * t64([1.0, 1.0])).backward()  # grad (1, 1), norm sqrt 2
    n = optim.clip_grad_norm_([w], 1.0)
    np.testing.assert_allclose(n, math.sqrt(2))
    np.testing.assert_allclose(w.grad.numpy(), [1 / math.sqrt(2)] * 2, rtol=1e-6)
    ev = nn.evaluate(m, s.test)
    assert ev.count == 10 and 0 <= ev.accuracy <= 1


def test_schedules():
    c = optim.CosineLR(10, min_factor=0.1)
    for s in [0, 3, 10, 12]:
        want = 0.1 + 0.9 * (1 + math.cos(math.pi * min(s, 10) / 10)) / 2
        assert c.factor(s) == pytest.approx(want)
    st = optim.StepLR(3, 0.5)
    assert [st(s) for s in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    w = optim.WarmupLR(4, optim.ConstantLR())
    assert [w(s) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert "cosine" in repr(c).lower()


def test_initialisers():
    w = cr.zeros((400, 500), dtype="float64")
    nn.init.kaiming_normal_(w, generator=cr.Generator(1))
    np.testing.assert_allclose(w.numpy().std(), math.sqrt(2 / 500), rtol=0.02)
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    np.testing.assert_allclose(w.numpy().std(), math.sqrt(2 / 400), rtol=0.02)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    b = math.sqrt(6 / ((1 + 5) * 500))
    assert w.numpy().max() <= b and w.numpy().min() >= -b and w.numpy().max() > 0.95 * b
    nn.init.xavier_uniform_(w, gain=2.0)
    b = 2.0 * math.sqrt(6 / 900)
    assert np.abs(w.numpy()).max() <= b
    nn.init.normal_(w, mean=1.0, std=0.5)
    np.testing.assert_allclose([w.numpy().mean(), w.numpy().std()], [1.0, 0.5], rtol=0.02)
    nn.init.uniform_(w, -2, -1)
    assert w.numpy().min() >= -2 and w.numpy().max() < -1
    nn.init.constant_(w, 3.5)
    assert np.all(w.numpy() == 3.5)
    nn.init.zeros_(w)
    assert np.all(w.numpy() == 0)
    assert nn.init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert nn.init.calculate_fans(cr.zeros((3, 4, 5, 5))) == (100.0, 75.0)
    with pytest.raises(cr.ValueError, match="nonlinearity"):
        nn.init.calculate_gain("swish")
    # the default generator is seeded by manual_seed
    cr.manual_seed(11)
    a = nn.Linear(3, 3).weight.numpy().copy()
    cr.manual_seed(11)
    np.testing.assert_array_equal(nn.Linear(3, 3).weight.numpy(), a)
    m = nn.init.init_model(nn.build_model("mlp:5-4-2", init=None), "xavier", generator=cr.Generator(2))
    assert np.abs(m.state_dict()["0.weight"].numpy()).sum() > 0
    assert np.all(m.state_dict()["0.bias"].numpy() == 0)


def test_data_loader_is_a_seeded_permutation():
    s = data.make_spirals(train=100, validation=10, test=10, seed=1)
    assert len(s.train) == 100 and s.train.num_classes == 2
    loader = data.DataLoader(s.train, batch_size=32, seed=5)
    assert len(loader) == 4
    xs = [x.numpy() for x, _ in loader]           # epoch 0
    assert [len(x) for x in xs] == [32, 32, 32, 4]
    allx = np.concatenate(xs)
    assert sorted(map(tuple, allx)) == sorted(map(tuple, s.train.x.numpy()))
    xs1 = [x.numpy() for x, _ in loader]          # epoch 1: another order
    assert not np.array_equal(xs1[0], xs[0])
    again = [x.numpy() for x, _ in loader.epoch(0)]
    assert all(np.array_equal(a, b) for a, b in zip(again, xs))
    order = loader.order(0)
    bx, by = loader.batch(order, 1)
    np.testing.assert_array_equal(bx.numpy(), s.train.x.numpy()[order[32:64]])
    np.testing.assert_array_equal(by.numpy(), s.train.y.numpy()[order[32:64]])
    assert len(data.DataLoader(s.train, batch_size=32, drop_last=True)) == 3


def test_fashion_mnist_loader_or_clear_error(tmp_path):
    with pytest.raises(cr.IOError, match="dataset-fashion-mnist"):
        data.load_fashion_mnist(dir=str(tmp_path))
    if not os.path.exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"):
        pytest.skip("Fashion-MNIST (Debian's dataset-fashion-mnist) not installed")
    s = data.load_fashion_mnist(validation=1000)
    assert (len(s.train), len(s.val), len(s.test)) == (59000, 1000, 10000)
    assert s.train.x.shape == (59000, 784) and s.test.num_classes == 10
    assert 0 <= s.test.x.numpy().min() and s.test.x.numpy().max() <= 1
    assert data.FASHION_MNIST_CLASSES[9] == "Ankle boot"


def test_train_on_spirals(tmp_path, capsys):
    epochs = []
    r = cr.train("spirals", "mlp:2-32-32-2", out_dir=tmp_path, epochs=3, batch=64, lr=0.01, on_epoch=epochs.append)
    out = capsys.readouterr().out
    assert r.finished and len(r.epochs) == 3 and [e.epoch for e in epochs] == [1, 2, 3]
    assert "epoch   1/3" in out and "test accuracy" in out
    assert {"model.safetensors", "state.safetensors", "metrics.jsonl"} <= set(os.listdir(tmp_path))
    assert r.model_spec == "mlp:2-32-32-2" and r.out_dir == str(tmp_path)
    assert 0 <= r.test.accuracy <= 1
    # the saved model loads back and gives the returned model's outputs
    model, spec, step = nn.load_model(str(tmp_path / "model.safetensors"))
    assert spec == "mlp:2-32-32-2" and step == r.steps
    x = cr.tensor(np.random.default_rng(0).standard_normal((3, 2)), dtype="float32")
    np.testing.assert_array_equal(model.eval()(x).numpy(), r.model.eval()(x).numpy())
    with pytest.raises(TypeError, match="bogus"):
        cr.train("spirals", bogus=1)


def test_train_with_own_splits_quiet(tmp_path, capsys):
    s = data.make_regression_1d(train=128, validation=32, test=32)
    r = cr.train("regression", "mlp:1-16-1", splits=s, out_dir=tmp_path, epochs=6, verbose=False)
    assert capsys.readouterr().out == ""
    assert r.finished and math.isnan(r.test.accuracy)


def test_random_numbers_seeded():
    a = cr.randn(1000, generator=cr.Generator(1), dtype="float64").numpy()
    b = cr.randn((1000,), generator=cr.Generator(1), dtype="float64").numpy()
    np.testing.assert_array_equal(a, b)
    assert abs(a.mean()) < 0.15 and abs(a.std() - 1) < 0.1
    u = cr.rand((500,), generator=cr.Generator(2)).numpy()
    assert u.dtype == np.float32 and 0 <= u.min() and u.max() < 1


def test_train_callback_exception_propagates(tmp_path):
    class Stop(Exception):
        pass

    def on_epoch(m):
        raise Stop(f"at epoch {m.epoch}")
    with pytest.raises(Stop, match="at epoch 1"):
        cr.train("spirals", "mlp:2-8-2", out_dir=tmp_path, epochs=2, verbose=False, on_epoch=on_epoch)
    seen = []

    def on_batch(b, n, loss, acc, sps):
        seen.append(b)
        if b == 3:
            raise KeyError("stop")
    with pytest.raises(KeyError):
        cr.train("spirals", "mlp:2-8-2", out_dir=tmp_path / "b", epochs=1, verbose=False, on_batch=on_batch)
    assert seen == [1, 2, 3]
    # transforms still work afterwards (no state left behind)
    assert cr.grad(lambda x: cr.sum(x * x))(cr.ones((2,))).numpy().tolist() == [2.0, 2.0]


def test_train_releases_the_gil(tmp_path):
    """While cr.train runs in another thread, this thread gets the GIL back within a few switch
    intervals; were the GIL held through the C++ loop, it would wait for a whole call."""
    import threading
    import time
    s = data.make_spirals(train=20000, validation=100, test=100)
    calls = []

    def work():
        t_end = time.perf_counter() + 0.6
        k = 0
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            cr.train("spirals", "mlp:2-64-64-2", splits=s, out_dir=tmp_path / str(k), epochs=3, verbose=False)
            calls.append(time.perf_counter() - t0)
            k += 1
    th = threading.Thread(target=work)
    th.start()
    worst = 0.0
    while th.is_alive():
        a = time.perf_counter()
        time.sleep(0.001)
        worst = max(worst, time.perf_counter() - a)
    th.join()
    assert calls and min(calls) > 0.05, f"training calls too short to tell: {calls}"
    assert worst < 0.8 * min(calls), f"waited {worst:.3f} s for the GIL; train calls took {calls}"




def test_own_dataset_from_numpy_and_training(tmp_path):
    g = np.random.default_rng(0)
    xs = g.standard_normal((300, 4)).astype(np.float32)
    ys = (xs[:, 0] + xs[:, 1] > 0).astype(np.int64)  # a linearly separable rule
    parts = [data.Dataset(xs[a:b], ys[a:b], num_classes=2, name="rule") for a, b in [(0, 200), (200, 250), (250, 300)]]
    assert len(parts[0]) == 200 and parts[0].features() == 4
    r = cr.train("rule", "mlp:4-16-2", splits=data.Splits(*parts), out_dir=tmp_path, epochs=15, lr=0.01, batch=32,
                 verbose=False)
    assert r.test.accuracy > 0.85
    with pytest.raises(cr.ShapeError, match="rows"):
        data.Dataset(xs, ys[:5], num_classes=2)
    with pytest.raises(cr.DTypeError, match="int64"):
        data.Dataset(xs, ys.astype(np.float32), num_classes=2)


def test_optimizer_state_round_trip():
    p0 = rng.standard_normal(3)
    grads = [rng.standard_normal(3) for _ in range(4)]
    a, b = t64(p0), t64(p0)
    oa = optim.Adam({"w": a}, lr=0.1)
    for g in grads[:2]:
        oa.step({"w": t64(g)})
    st = {k: cr.tensor(v.numpy().copy(), dtype=v.dtype) for k, v in oa.state().items()}
    ob = optim.Adam({"w": b}, lr=0.1)
    with pytest.raises(cr.AutodiffError, match="NoGradGuard"):
        b.copy_(a)  # b requires grad now, as a parameter
    with cr.no_grad():
        b.copy_(a)
    assert cr.is_grad_enabled()
    ob.load_state(st)
    for g in grads[2:]:
        oa.step({"w": t64(g)})
        ob.step({"w": t64(g)})
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert ob.steps == 4


def test_no_grad():
    w = t64([1.0, 2.0]).requires_grad_()

    @cr.no_grad()
    def f(v):
        return v * 2.0
    y = f(w)
    assert not y.requires_grad and cr.is_grad_enabled()
    with cr.no_grad():
        assert not cr.is_grad_enabled()
        assert not (w * 3.0).requires_grad
        # transforms still differentiate inside no_grad
        assert cr.grad(lambda v: cr.sum(v * v))(w).numpy().tolist() == [2.0, 4.0]
    assert (w * 3.0).requires_grad


def test_step_with_unknown_names_changes_nothing_and_says_why():
    from chainrule import nn
    lin = nn.Linear(3, 2)
    opt = cr.optim.SGD(list(lin.parameters()), lr=0.1)
    before = lin.weight.numpy().copy()
    with pytest.raises(cr.ValueError, match=r"'weight' names no parameter.*'0', '1'.*list of gradients"):
        opt.step({"weight": cr.ones((2, 3)), "bias": cr.ones((2,))})
    np.testing.assert_array_equal(lin.weight.numpy(), before)
    opt.step([cr.ones((2, 3)), cr.ones((2,))])
    np.testing.assert_allclose(lin.weight.numpy(), before - 0.1, rtol=1e-6)
    assert "bias=True" in repr(lin)
