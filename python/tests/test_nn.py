"""chainrule.nn from Python: specs, layers, parameters under PyTorch's names, state_dict,
functional_call under grad and vmap (against numpy references, a loop of grad and functorch)."""
import numpy as np
import pytest

import chainrule as cr
import chainrule.nn as nn
from chainrule.nn import init  # noqa: F401  (import of the submodule itself)

rng = np.random.default_rng(7)


def t64(a):
    return cr.tensor(np.asarray(a, dtype=np.float64), dtype="float64")


def np_mlp(params, x):
    """Reference forward of mlp:IN-H-OUT (relu) in numpy."""
    h = np.maximum(x @ params["0.weight"].T + params["0.bias"], 0.0)
    return h @ params["2.weight"].T + params["2.bias"]


def np_params(model):
    return {k: np.array(v.numpy()) for k, v in model.state_dict().items()}


def test_build_model_names_shapes_forward():
    m = nn.build_model("mlp:5-7-3", dtype="float64", generator=cr.Generator(1))
    names = [n for n, _ in m.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    p = dict(m.named_parameters())
    assert p["0.weight"].shape == (7, 5) and p["2.bias"].shape == (3,)
    assert list(m.state_dict()) == names
    assert m.num_parameters() == 7 * 5 + 7 + 3 * 7 + 3
    assert len(m.parameters()) == 4
    # He initialisation: not all zero; build_model(init=None) leaves zeros as C++ does.
    assert np.abs(p["0.weight"].numpy()).sum() > 0
    z = nn.build_model("mlp:5-7-3", init=None)
    assert np.all(z.state_dict()["0.weight"].numpy() == 0)
    x = rng.standard_normal((4, 5))
    np.testing.assert_allclose(m(t64(x)).numpy(), np_mlp(np_params(m), x), rtol=1e-12, atol=1e-12)
    assert isinstance(m[0], nn.Linear) and isinstance(m[1], nn.ReLU) and len(m) == 3
    assert m[-1].out_features == 3
    assert "Linear" in repr(m)
    assert nn.ModelSpec.parse("mlp:784-256-10").output_dim() == 10


def test_same_generator_seed_same_weights():
    a = nn.build_model("mlp:4-6-2", generator=cr.Generator(3))
    b = nn.build_model("mlp:4-6-2", generator=cr.Generator(3))
    c = nn.build_model("mlp:4-6-2", generator=cr.Generator(4))
    sa, sb, sc = np_params(a), np_params(b), np_params(c)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not np.array_equal(sa["0.weight"], sc["0.weight"])


def test_load_state_dict_and_errors():
    a = nn.build_model("mlp:3-4-2", dtype="float64", generator=cr.Generator(1))
    b = nn.build_model("mlp:3-4-2", dtype="float64", init=None)
    b.load_state_dict(a.state_dict())
    x = t64(rng.standard_normal((2, 3)))
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    # numpy arrays are accepted as values; the module's tensors are written in place
    w_before = b.state_dict()["0.weight"]
    new = {k: np.zeros(v.shape) for k, v in np_params(a).items()}
    b.load_state_dict(new)
    assert np.all(w_before.numpy() == 0)
    with pytest.raises(cr.Error, match="0.bias"):
        st = a.state_dict()
        del st["0.bias"]
        b.load_state_dict(st)
    b.load_state_dict({"0.bias": np.ones(4)}, strict=False)
    np.testing.assert_array_equal(b.state_dict()["0.bias"].numpy(), np.ones(4))
    with pytest.raises(cr.ShapeError):
        a(t64(rng.standard_normal((2, 5))))
    with pytest.raises(AttributeError):
        a.nonexistent


def test_layers_and_pytorch_names():
    seq = nn.Sequential(nn.Linear(3, 4, dtype="float64"), nn.Tanh(), nn.LayerNorm(4, dtype="float64"),
                        nn.Dropout(0.5), nn.Linear(4, 2, bias=False, dtype="float64"))
    names = [n for n, _ in seq.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight"]
    assert seq[4].bias is None or seq[4].bias.__class__ is cr.Tensor
    # PyTorch's default Linear initialisation: U(±1/sqrt(in))
    w = seq[0].weight.numpy()
    assert np.abs(w).max() <= 1 / np.sqrt(3) and np.abs(w).std() > 0
    # attribute access to children and parameters by name, as in PyTorch
    named = nn.Sequential({"fc": nn.Linear(2, 2), "act": nn.ReLU()})
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    assert isinstance(named.fc, nn.Linear)
    assert named.fc.weight.shape == (2, 2)
    assert [n for n, _ in named.named_modules()] == ["", "fc", "act"]
    # activations match the functions of the same name
    x = t64(rng.standard_normal((3, 4)))
    for mod, f in [(nn.ReLU(), cr.relu), (nn.Sigmoid(), cr.sigmoid), (nn.SiLU(), cr.silu), (nn.GELU(), cr.gelu),
                   (nn.ELU(0.5), lambda v: cr.elu(v, 0.5)), (nn.LeakyReLU(0.2), lambda v: cr.leaky_relu(v, 0.2)),
                   (nn.Softmax(dim=-1), cr.softmax), (nn.LogSoftmax(dim=1), cr.log_softmax), (nn.Identity(), lambda v: v)]:
        np.testing.assert_allclose(mod(x).numpy(), f(x).numpy(), rtol=1e-14)
    assert nn.make_activation("tanh").__class__ is nn.Tanh
    assert "relu" in nn.activation_names()


def test_conv_and_pool_modules():
    conv = nn.Conv2d(2, 3, 3, padding=1, dtype="float64", seed=5)
    assert conv.weight.shape == (3, 2, 3, 3) and conv.bias.shape == (3,)
    x = t64(rng.standard_normal((2, 2, 5, 5)))
    ref = cr.conv2d(x, conv.weight, conv.bias, padding=1)
    np.testing.assert_allclose(conv(x).numpy(), ref.numpy(), rtol=1e-13)
    net = nn.Sequential(conv, nn.BatchNorm2d(3, dtype="float64"), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(12, 2, dtype="float64"))
    assert net(x).shape == (2, 2)
    assert "1.running_mean" in net.state_dict() and "1.num_batches_tracked" in net.state_dict()
    assert nn.AdaptiveAvgPool2d(1)(x).shape == (2, 2, 1, 1)
    assert nn.AvgPool2d(2, stride=1)(x).shape == (2, 2, 4, 4)


def test_train_eval_dropout_batchnorm():
    d = nn.Dropout(0.5, seed=1)
    x = cr.ones((1000,), dtype="float64")
    assert d.training
    y = d(x).numpy()
    assert set(np.unique(y)) <= {0.0, 2.0} and 300 < (y == 0).sum() < 700
    assert d.eval() is d and not d.training
    np.testing.assert_array_equal(d(x).numpy(), x.numpy())
    bn = nn.BatchNorm1d(3, dtype="float64")
    xb = rng.standard_normal((8, 3)) * 2 + 1
    out = bn(t64(xb)).numpy()
    ref = (xb - xb.mean(0)) / np.sqrt(xb.var(0) + 1e-5)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * xb.mean(0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * xb.var(0, ddof=1), rtol=1e-12)
    bn.eval()
    rm, rv = bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()
    np.testing.assert_allclose(bn(t64(xb)).numpy(), (xb - rm) / np.sqrt(rv + 1e-5), rtol=1e-10)


def mlp_loss(model):
    def loss(params, x, y):
        return cr.cross_entropy(nn.functional_call(model, params, x), y)
    return loss


def np_ce_grad(params, x, y):
    """Analytic gradient of mean cross-entropy of the numpy MLP reference (hand backprop)."""
    z1 = x @ params["0.weight"].T + params["0.bias"]
    h = np.maximum(z1, 0)
    logits = h @ params["2.weight"].T + params["2.bias"]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    n = x.shape[0]
    d = p.copy()
    d[np.arange(n), y] -= 1
    d /= n
    g = {"2.weight": d.T @ h, "2.bias": d.sum(0)}
    dh = d @ params["2.weight"] * (z1 > 0)
    g["0.weight"] = dh.T @ x
    g["0.bias"] = dh.sum(0)
    return g


def test_functional_call_grad_matches_hand_backprop():
    model = nn.build_model("mlp:4-6-3", dtype="float64", generator=cr.Generator(2))
    params = dict(model.named_parameters())
    x = rng.standard_normal((5, 4))
    y = rng.integers(0, 3, 5)
    g = cr.grad(mlp_loss(model))(params, t64(x), cr.tensor(y, dtype="int64"))
    ref = np_ce_grad(np_params(model), x, y)
    assert set(g) == set(ref)
    for k in ref:
        np.testing.assert_allclose(g[k].numpy(), ref[k], rtol=1e-10, atol=1e-12)
    # the module's own tensors are restored after functional_call
    zeros = {k: cr.zeros_like(v) for k, v in params.items()}
    assert np.all(nn.functional_call(model, zeros, t64(x)).numpy() == 0)
    np.testing.assert_allclose(model(t64(x)).numpy(), np_mlp(np_params(model), x), rtol=1e-12)
    with pytest.raises(cr.Error, match="nope"):
        nn.functional_call(model, {"nope": cr.zeros((1,))}, t64(x))
    with pytest.raises(ValueError, match="missing"):
        nn.functional_call(model, {"0.weight": params["0.weight"]}, t64(x), strict=True)
    # a tuple of (params, buffers) dicts and a one-tuple of args, as torch.func
    out = nn.functional_call(model, ({"0.weight": params["0.weight"]}, {"2.bias": params["2.bias"]}), (t64(x),))
    np.testing.assert_allclose(out.numpy(), model(t64(x)).numpy())


def per_example_setup():
    model = nn.build_model("mlp:4-5-3", dtype="float64", generator=cr.Generator(9))
    params = dict(model.named_parameters())
    xs = rng.standard_normal((6, 4))
    ys = rng.integers(0, 3, 6)
    return model, params, xs, ys


def single_loss(model):
    def loss(params, x, y):  # one example: x [4], y scalar
        logits = nn.functional_call(model, params, cr.unsqueeze(x, 0))
        return cr.cross_entropy(logits, cr.unsqueeze(y, 0))
    return loss


def test_per_example_gradients_vmap_vs_loop():
    model, params, xs, ys = per_example_setup()
    loss = single_loss(model)
    pe = cr.vmap(cr.grad(loss), in_axes=(None, 0, 0))(params, t64(xs), cr.tensor(ys, dtype="int64"))
    for i in range(len(xs)):
        gi = cr.grad(loss)(params, t64(xs[i]), cr.tensor(ys[i], dtype="int64"))
        ref = np_ce_grad(np_params(model), xs[i:i + 1], ys[i:i + 1])
        for k in params:
            assert pe[k].shape == (6,) + params[k].shape
            np.testing.assert_allclose(pe[k].numpy()[i], gi[k].numpy(), rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(gi[k].numpy(), ref[k], rtol=1e-10, atol=1e-12)


def test_per_example_gradients_vs_functorch():
    torch = pytest.importorskip("torch")
    try:
        from torch.func import functional_call as tcall, grad as tgrad, vmap as tvmap
    except ImportError:
        functorch = pytest.importorskip("functorch")
        from functorch import grad as tgrad, vmap as tvmap
        from torch.nn.utils.stateless import functional_call as tcall
    model, params, xs, ys = per_example_setup()
    tm = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()
    tparams = {k: torch.tensor(v) for k, v in np_params(model).items()}

    def tloss(p, x, y):
        return torch.nn.functional.cross_entropy(tcall(tm, p, (x.unsqueeze(0),)), y.unsqueeze(0))
    ref = tvmap(tgrad(tloss), in_dims=(None, 0, 0))(tparams, torch.tensor(xs), torch.tensor(ys))
    pe = cr.vmap(cr.grad(single_loss(model)), in_axes=(None, 0, 0))(params, t64(xs), cr.tensor(ys, dtype="int64"))
    for k in params:
        np.testing.assert_allclose(pe[k].numpy(), ref[k].detach().numpy(), rtol=1e-10, atol=1e-13)


def test_tensor_backward_and_grad_attribute():
    m = nn.build_model("mlp:3-4-2", dtype="float64", generator=cr.Generator(4))
    x = rng.standard_normal((5, 3))
    y = rng.integers(0, 2, 5)
    loss = cr.cross_entropy(m(t64(x)), cr.tensor(y, dtype="int64"))
    w = dict(m.named_parameters())["0.weight"]
    assert w.requires_grad and w.is_leaf and w.grad is None
    loss.backward()
    ref = np_ce_grad(np_params(m), x, y)
    np.testing.assert_allclose(w.grad.numpy(), ref["0.weight"], rtol=1e-10, atol=1e-12)
    m.zero_grad()
    assert w.grad is None
    v = t64([1.0, 2.0]).requires_grad_()
    cr.sum(v * v).backward()
    np.testing.assert_allclose(v.grad.numpy(), [2.0, 4.0])
    v.grad = None
    assert v.grad is None


def test_cross_entropy_label_smoothing():
    z = rng.standard_normal((4, 5))
    y = rng.integers(0, 5, 4)
    eps = 0.1
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    target = np.full((4, 5), eps / 5)
    target[np.arange(4), y] += 1 - eps
    ref = -(target * logp).sum(-1).mean()
    got = nn.cross_entropy(t64(z), cr.tensor(y, dtype="int64"), label_smoothing=eps).item()
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    np.testing.assert_allclose(nn.cross_entropy(t64(z), cr.tensor(y, dtype="int64")).item(),
                               -logp[np.arange(4), y].mean(), rtol=1e-12)


def test_checkpoint_module_same_gradient():
    m = nn.build_model("mlp:3-4-2", dtype="float64", generator=cr.Generator(4))
    params = dict(m.named_parameters())
    x = t64(rng.standard_normal((2, 3)))
    g1 = cr.grad(lambda p: cr.sum(nn.functional_call(m, p, x)))(params)
    g2 = cr.grad(lambda v: cr.sum(nn.checkpoint(m, v)))(x)
    g3 = cr.grad(lambda v: cr.sum(m(v)))(x)
    np.testing.assert_allclose(g2.numpy(), g3.numpy(), rtol=1e-12)
    assert set(g1) == set(params)


class Net(nn.Module):
    """A PyTorch-style module defined in Python."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4, dtype="float64", generator=cr.Generator(1))
        self.scale = nn.Parameter(cr.tensor(np.linspace(0.5, 2.0, 4), dtype="float64"))
        self.register_buffer("shift", cr.tensor(np.full(2, 0.25), dtype="float64"))
        self.note = "plain attribute"
        self.fc2 = nn.Linear(4, 2, dtype="float64", generator=cr.Generator(2))

    def forward(self, x):
        return self.fc2(cr.tanh(self.fc1(x)) * self.scale) + self.shift


def np_net(p, x):
    h = np.tanh(x @ p["fc1.weight"].T + p["fc1.bias"]) * p["scale"]
    return h @ p["fc2.weight"].T + p["fc2.bias"] + p["shift"]


def test_python_subclass_of_module():
    import gc
    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["scale", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in net.named_buffers()] == ["shift"]
    assert net.note == "plain attribute" and isinstance(net.fc1, nn.Linear)
    assert repr(net).startswith("Net(") and "(fc1): Linear" in repr(net)
    x = rng.standard_normal((5, 3))
    p = np_params(net)
    np.testing.assert_allclose(net(t64(x)).numpy(), np_net(p, x), rtol=1e-12)
    # grad through functional_call reaches the Python attributes (self.scale reads the substitute)
    params = dict(net.named_parameters())
    g = cr.grad(lambda q: cr.sum(nn.functional_call(net, q, t64(x))))(params)
    h = np.tanh(x @ p["fc1.weight"].T + p["fc1.bias"])
    np.testing.assert_allclose(g["scale"].numpy(), (h * p["fc2.weight"].sum(0)).sum(0), rtol=1e-10)
    np.testing.assert_allclose(g["fc2.bias"].numpy(), np.full(2, 5.0), rtol=1e-12)
    pe = cr.vmap(cr.grad(lambda q, xi: cr.sum(nn.functional_call(net, q, xi))), in_axes=(None, 0))(params, t64(x))
    np.testing.assert_allclose(pe["scale"].numpy().sum(0), g["scale"].numpy(), rtol=1e-10)
    # in a C++ container, after the last Python reference to it is gone
    seq = nn.Sequential(Net(), nn.ReLU())
    gc.collect()
    np.testing.assert_allclose(seq(t64(x)).numpy(), np.maximum(np_net(p, x), 0), rtol=1e-12)
    assert "0.fc1.weight" in seq.state_dict()
    # optimisers and load_state_dict see the registered parameters
    opt = cr.optim.SGD(net, lr=0.5)
    cr.sum(net(t64(x))).backward()
    opt.step()
    np.testing.assert_allclose(net.scale.numpy(), p["scale"] - 0.5 * g["scale"].numpy(), rtol=1e-10)
    other = Net()
    other.load_state_dict(net.state_dict())
    np.testing.assert_array_equal(other(t64(x)).numpy(), net(t64(x)).numpy())


def test_python_module_errors():
    class NoForward(nn.Module):
        pass

    class Raises(nn.Module):
        def forward(self, x):
            raise KeyError("inside forward")

    class ReturnsFloat(nn.Module):
        def forward(self, x):
            return 1.0
    x = cr.ones((2, 3))
    with pytest.raises(NotImplementedError, match="NoForward"):
        NoForward()(x)
    with pytest.raises(KeyError, match="inside forward"):
        nn.Sequential(nn.Linear(3, 3), Raises())(x)
    with pytest.raises(TypeError, match="must return a Tensor"):
        ReturnsFloat()(x)
    with pytest.raises(cr.ValueError):
        nn.Linear(2, 2).register_buffer("b", x)


def test_bad_arguments_raise_clear_errors():
    m = nn.build_model("mlp:3-4-2")
    x = cr.ones((2, 3))
    with pytest.raises(TypeError, match="expected a Module, got int"):
        nn.Sequential(1, 2)
    with pytest.raises(TypeError, match="must return a Tensor"):
        nn.train_step(m, cr.optim.SGD(m), x, cr.tensor([0, 1]), loss=lambda a, b: 3)
    with pytest.raises(cr.ValueError, match="mlp:bad"):
        nn.build_model("mlp:bad")
    with pytest.raises(cr.ShapeError, match=r"\[5, 5\]"):
        nn.functional_call(m, {"0.weight": cr.ones((5, 5))}, x)
    with pytest.raises(cr.ValueError, match="out of range"):
        nn.train_step(m, cr.optim.SGD(m), x, cr.tensor([0, 5]))
    with pytest.raises(cr.DTypeError):
        cr.optim.SGD([cr.ones((2,), dtype="int64")])
    with pytest.raises(IndexError):
        m[5]


def test_functional_names_of_pytorch():
    import chainrule.nn.functional as F
    z = rng.standard_normal((3, 4))
    x = t64(z)
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(F.softmax(x, dim=1).numpy(), e / e.sum(1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(x, dim=-1).numpy(), np.log(e / e.sum(1, keepdims=True)), rtol=1e-12)
    np.testing.assert_allclose(F.softplus(x, beta=2.0).numpy(), np.log1p(np.exp(2 * z)) / 2, rtol=1e-12)
    np.testing.assert_allclose(F.logsigmoid(x).numpy(), -np.log1p(np.exp(-z)), rtol=1e-12)
    w, b = rng.standard_normal((2, 4)), rng.standard_normal(2)
    np.testing.assert_allclose(F.linear(x, t64(w)).numpy(), z @ w.T, rtol=1e-12)
    np.testing.assert_allclose(F.linear(x, t64(w), t64(b)).numpy(), z @ w.T + b, rtol=1e-12)
    np.testing.assert_allclose(F.mse_loss(x, t64(z + 1), reduction="sum").item(), 12.0, rtol=1e-12)
    assert F.cross_entropy is nn.cross_entropy


def test_module_misuse_raises_instead_of_crashing():
    class AssignsBeforeInit(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    class NoSuperInit(nn.Module):
        def __init__(self):
            pass

        def forward(self, x):
            return x

    class TwiceTheSameChild(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.fc = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="super"):
        AssignsBeforeInit()
    with pytest.raises(TypeError, match="__init__"):
        NoSuperInit()
    with pytest.raises(cr.ValueError, match="already registered"):
        TwiceTheSameChild()
    lin = nn.Linear(2, 2)
    lin.weight = cr.zeros((2, 2))  # a C++ layer's fields stay assignable
    assert lin.weight.numpy().sum() == 0
    lin.note = "kept"  # plain attributes, as on a torch.nn.Module
    import copy
    twin = copy.deepcopy(lin)
    assert twin.note == "kept" and twin.weight.numpy().sum() == 0
    twin.weight = cr.ones((2, 2))
    assert lin.weight.numpy().sum() == 0  # a deep copy shares no storage


def test_missing_bias_reads_none_and_schedules_checked():
    lin = nn.Linear(3, 2, bias=False)
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    np.testing.assert_allclose(lin(cr.ones((1, 3))).numpy(), lin.weight.numpy().sum(1, keepdims=True).T, rtol=1e-6)
    assert nn.Conv2d(1, 2, 3, bias=False).bias is None
    with pytest.raises(cr.ValueError, match="after"):
        cr.optim.WarmupLR(3, None)


class PicklableNet(nn.Module):  # at module level, so that pickle can find it by name
    def __init__(self, width, act="relu"):
        super().__init__()
        self.fc1 = nn.Linear(10, width)
        self.fc2 = nn.Linear(width, 3)
        self.act = act

    def forward(self, x):
        return self.fc2(cr.relu(self.fc1(x)))


def test_modules_deepcopy_and_pickle_rebuild_from_their_arguments():
    import copy
    import pickle

    net = PicklableNet(16)
    net.act = "gelu"
    net.eval()
    x = cr.randn((4, 10))
    g = cr.default_generator()
    before = (g.seed(), g.counter())
    twin = copy.deepcopy(net)
    assert (g.seed(), g.counter()) == before  # rebuilding draws no numbers from the user's stream
    assert twin.act == "gelu" and not twin.training and twin.fc1.weight is not net.fc1.weight
    np.testing.assert_array_equal(twin(x).numpy(), net(x).numpy())
    with cr.no_grad():
        twin.fc1.weight.fill_(0.0)
    assert not np.allclose(twin(x).numpy(), net(x).numpy())
    back = pickle.loads(pickle.dumps(net))
    assert type(back).__name__ == "PicklableNet"
    np.testing.assert_array_equal(back(x).numpy(), net(x).numpy())
    m = nn.build_model("resnet:1x8x8-4x1-8x1-3")
    m.eval()
    xi = cr.randn((2, 1, 8, 8))
    m2 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m2(xi).numpy(), m(xi).numpy())
    seq = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    np.testing.assert_array_equal(copy.deepcopy(seq)(x).numpy(), seq(x).numpy())
    conv = nn.Conv2d(1, 4, 3, padding=1)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(conv))(xi).numpy(), conv(xi).numpy())


def test_fused_batch_norm_matches_numpy_and_its_gradient():
    g = np.random.default_rng(5)
    a = g.standard_normal((6, 3, 4, 5))
    w, b = g.standard_normal(3), g.standard_normal(3)
    mu = a.mean(axis=(0, 2, 3), keepdims=True)
    var = a.var(axis=(0, 2, 3), keepdims=True)
    ref = (a - mu) / np.sqrt(var + 1e-5) * w[None, :, None, None] + b[None, :, None, None]
    x, tw, tb = cr.tensor(a), cr.tensor(w), cr.tensor(b)
    np.testing.assert_allclose(cr.batch_norm_train(x, tw, tb).numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cr.batch_norm_stats(x).numpy(), np.stack([mu.ravel(), var.ravel()]), rtol=1e-12)
    dy = cr.tensor(g.standard_normal(a.shape))
    gx = cr.grad(lambda v: cr.sum(cr.batch_norm_train(v, tw, tb) * dy))(x)
    np.testing.assert_allclose(cr.batch_norm_backward(dy, x, tw).numpy(), gx.numpy(), rtol=1e-10, atol=1e-12)
