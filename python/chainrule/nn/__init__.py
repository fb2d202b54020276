"""chainrule.nn: modules with PyTorch's names (C++ layers of include/chainrule/nn), model specs
(build_model("mlp:784-256-10")), functional_call, initialisers (chainrule.nn.init), losses,
checkpoints and the training loop (train, train_step, evaluate). See docs/python.md."""
import os as _os
import sys as _sys
import tempfile as _tempfile

from .. import _core
from .._reexport import reexport
from . import init  # noqa: F401  (chainrule.nn.init)

__all__ = reexport(globals(), _core.nn, skip=("init",)) + ["init", "functional", "functional_call", "train", "cross_entropy", "Parameter"] + [
    "mse_loss", "nll_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "kl_div", "binary_cross_entropy",
    "binary_cross_entropy_with_logits"]
del reexport
from . import _copy  # noqa: E402
_copy.install(globals())  # copy.deepcopy and pickle of modules

# The losses of chainrule (ops.h, ops/array_api.h) under torch.nn.functional's names.
from .._core import (mse_loss, nll_loss, l1_loss, huber_loss, smooth_l1_loss, kl_div,  # noqa: E402,F401
                     binary_cross_entropy, binary_cross_entropy_with_logits)


def Parameter(data, requires_grad=True):
    """A Tensor that requires grad: assigned to an attribute of a Python nn.Module it becomes a
    parameter (torch.nn.Parameter). Returns the tensor itself (a numpy array or list is copied)."""
    t = data if isinstance(data, _core.Tensor) else _core.tensor(data)
    return t.requires_grad_(requires_grad)


def cross_entropy(input, target, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of logits [..., C] against int64 labels [...] (torch's
    F.cross_entropy), optionally against targets smoothed towards uniform by label_smoothing."""
    return _core.nn._cross_entropy(input, target, reduction, float(label_smoothing))


from . import functional  # noqa: E402,F401  (chainrule.nn.functional, after cross_entropy)


def functional_call(module, parameter_and_buffer_dicts, args, kwargs=None, *, strict=False):
    """module(*args) with the tensors of the dict(s) in place of the module's own parameters and
    buffers, restored afterwards (torch.func.functional_call). Names missing from the dicts keep
    the module's tensors (all of them must be present with strict=True); an unknown name is a
    chainrule.ValueError. This is what makes grad, jacrev, jvp and vmap differentiate a model in
    its parameters:

        params = dict(model.named_parameters())
        g = cr.grad(lambda p, x, y: cr.cross_entropy(nn.functional_call(model, p, x), y))(params, x, y)
    """
    if kwargs:
        raise TypeError("functional_call: chainrule modules take no keyword arguments")
    dicts = parameter_and_buffer_dicts
    if isinstance(dicts, dict):
        merged = dict(dicts)
    elif isinstance(dicts, (tuple, list)):
        merged = {}
        for d in dicts:
            if not isinstance(d, dict):
                raise TypeError(f"functional_call: expected dicts of tensors, got {type(d).__name__}")
            dup = merged.keys() & d.keys()
            if dup:
                raise ValueError(f"functional_call: {sorted(dup)} appear in more than one dict")
            merged.update(d)
    else:
        raise TypeError(f"functional_call: expected a dict or a tuple of dicts, got {type(dicts).__name__}")
    if isinstance(args, (tuple, list)):
        if len(args) != 1:
            raise TypeError(f"functional_call: chainrule modules take one input, got {len(args)}")
        args = args[0]
    if strict:
        missing = set(module.state_dict()) - merged.keys()
        if missing:
            raise ValueError(f"functional_call: strict, but {sorted(missing)} are missing")
    return _core.nn.functional_call(module, merged, args)


def _acc(a):
    return "-" if a != a else f"{a:.4f}"


def train(data="fashion-mnist", model="", *, splits=None, out_dir=None, verbose=True, progress=None, on_epoch=None,
          on_batch=None, checkpoint_every=None, stop_after=-1, checkpoint_segments=0, resume=False, **config):
    """The training loop of `chainrule train` (C++ nn::train, without the GIL): model spec, init,
    optimiser and schedule, seeded loader, per-epoch validation, test at the end, and checkpoints
    in out_dir (model.safetensors, state.safetensors, metrics.jsonl; a new temporary directory by
    default). Keyword arguments are TrainConfig's fields (opt, lr, weight_decay, momentum,
    schedule, warmup, label_smoothing, clip, batch, epochs, seed, init, zero_residual, drop_last,
    augment, shift, eval_flips, precision, time_budget, dtype); `splits` (a chainrule.data.Splits) replaces loading `data` by name.

    verbose prints the CLI's lines (one per epoch, the result); progress (default: when stderr is
    a terminal) draws its progress bar. on_epoch(EpochMetrics) and on_batch(step, steps, loss,
    accuracy, samples_per_second) are called from the training thread with the GIL. Ctrl-C stops
    between steps with KeyboardInterrupt, leaving the last checkpoint. Returns a TrainResult
    (its out_dir attribute names the run directory)."""
    c = _core.nn.TrainConfig()
    c.data, c.model = data, model
    for k, v in config.items():
        if not hasattr(c, k) or k.startswith("_") or k in ("json", "from_json"):
            raise TypeError(f"train: unknown option '{k}'")
        setattr(c, k, v)
    if out_dir is None:
        out_dir = _tempfile.mkdtemp(prefix="chainrule-train-")
    if progress is None:
        progress = verbose and _sys.stderr.isatty()

    def epoch_cb(m):
        if verbose:
            print(f"epoch {m.epoch:>3}/{m.epochs}  loss {m.train_loss:.4f}  train acc {_acc(m.train_accuracy)}  "
                  f"val loss {m.val_loss:.4f}  val acc {_acc(m.val_accuracy)}  {m.seconds:.1f} s  "
                  f"{m.samples_per_second:.0f} samples/s", flush=True)
        if on_epoch is not None:
            on_epoch(m)

    def batch_cb(b, n, loss, acc, sps):
        if progress:
            width, filled = 30, int(30 * b / n)
            bar = "#" * filled + "." * (width - filled)
            _sys.stderr.write(f"\r  [{bar}] {b}/{n}  loss {loss:.4f}  acc {_acc(acc)}  {sps:.0f} samples/s ")
            if b == n:
                _sys.stderr.write("\r" + " " * 80 + "\r")
            _sys.stderr.flush()
        if on_batch is not None:
            on_batch(b, n, loss, acc, sps)

    if verbose:
        print(f"run directory: {out_dir}", flush=True)
    msg = (lambda s: print(f"chainrule: {s}", file=_sys.stderr)) if verbose else None
    r = _core.nn._train(c, splits, _os.fspath(out_dir), checkpoint_every, stop_after, checkpoint_segments, resume, msg,
                        epoch_cb, batch_cb if (progress or on_batch is not None) else None)
    r.out_dir = _os.fspath(out_dir)
    if verbose:
        if r.finished:
            print(f"model {r.model_spec}, {r.model.num_parameters()} parameters, {r.steps} steps")
            print(f"test accuracy {_acc(r.test.accuracy)}  test loss {r.test.loss:.4f}  ({len(r.epochs)} epochs, "
                  f"{r.seconds:.1f} s)", flush=True)
        else:
            print(f"stopped after step {r.steps} (checkpoint in {out_dir}; continue with resume=True, out_dir=...)",
                  flush=True)
    return r
