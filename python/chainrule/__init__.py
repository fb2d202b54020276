"""chainrule: automatic differentiation in C++20, from Python.

Tensors, every op of include/chainrule/ops/ops.h under the same name, and composable JAX-style
transforms (grad, value_and_grad, vjp, jvp, linearize, vmap, jacfwd, jacrev, hessian, hvp) that take Python
callables and nest to any order. See docs/python.md.
"""
import numpy as _np

from . import _core
from ._core import *  # noqa: F401,F403
from . import _tensor  # noqa: F401  (installs Tensor's methods)

__version__ = _core.__version__
from ._core import Tensor, _vjp, _jvp, _vmap, _jacfwd, _jacrev, _hessian, _hvp, _linearize, _check_scalar

# The submodules as importable Python modules (import chainrule.nn, from chainrule.optim import SGD).
from . import nn, optim, data, io, linalg, profiler  # noqa: E402
from .nn import train  # noqa: E402  (chainrule.train is nn.train)

# (io is left out of __all__: a star import must not shadow Python's io module.)
__all__ = [n for n in dir(_core) if not n.startswith("_") and n != "io"] + [
    "grad", "value_and_grad", "vjp", "jvp", "vmap", "jacfwd", "jacrev", "hessian", "hvp", "linearize",
    "linear_transpose", "train", "no_grad", "asarray", "array", "permute_dims", "concatenate"]


class no_grad:
    """Eager reverse mode records nothing inside (torch.no_grad): a context manager or a
    decorator. In-place updates of parameters (p.copy_(...)) need it. Transforms (grad, vmap, ...)
    are not affected."""

    def __enter__(self):
        self._prev = _core.is_grad_enabled()
        _core.set_grad_enabled(False)
        return self

    def __exit__(self, *exc):
        _core.set_grad_enabled(self._prev)
        return False

    def __call__(self, f):
        import functools

        @functools.wraps(f)
        def wrapped(*args, **kwargs):
            with no_grad():
                return f(*args, **kwargs)
        return wrapped


# Arguments of transformed functions are trees: a Tensor, or (nested) tuples, lists and dicts of
# Tensors. Dicts are visited in sorted key order, as JAX does (and as C++'s std::map).
# A numpy array or a Python float among them becomes a Tensor (as JAX takes numpy arrays).
def _flatten(x, convert=True):
    if isinstance(x, Tensor):
        return [x], None
    if convert and (isinstance(x, (_np.ndarray, _np.generic, float))):
        return [tensor(x)], None
    if isinstance(x, dict):
        keys = sorted(x)
        leaves, specs = [], []
        for k in keys:
            l, s = _flatten(x[k], convert)
            leaves += l
            specs.append((len(l), s))
        return leaves, ((dict, tuple(keys)), specs)
    if isinstance(x, (tuple, list)):
        leaves, specs = [], []
        for e in x:
            l, s = _flatten(e, convert)
            leaves += l
            specs.append((len(l), s))
        return leaves, (type(x), specs)
    raise TypeError(f"chainrule: expected a Tensor or a tuple/list/dict of Tensors, got {type(x).__name__}")


def _unflatten(spec, leaves):
    if spec is None:
        return leaves[0]
    kind, specs = spec
    out, k = [], 0
    for n, s in specs:
        out.append(_unflatten(s, leaves[k:k + n]))
        k += n
    if isinstance(kind, tuple):  # (dict, keys)
        return dict(zip(kind[1], out))
    return kind(out)


def _as_tensor_arg(name, x):
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (_np.ndarray, _np.generic, float)):
        return tensor(x)
    raise TypeError(f"{name}: expected a Tensor (or a numpy array), got {type(x).__name__}")


def asarray(obj, dtype=None):
    """The array API's asarray: a Tensor as it is, a numpy array shared when its layout allows
    (chainrule.from_numpy's rule), anything else copied (chainrule.tensor); then cast to dtype."""
    if isinstance(obj, Tensor):
        t = obj
    elif isinstance(obj, _np.ndarray):
        t = from_numpy(obj)
    else:
        t = tensor(obj)
    return t if dtype is None or t.dtype == _core._parse_dtype(dtype) else t.astype(dtype)


def array(obj, dtype=None):
    """NumPy's array: always a copy (chainrule.tensor)."""
    return tensor(obj, dtype)


permute_dims = permute       # the array API's name
concatenate = concat         # NumPy's name


def _check_tensor_out(name, out):
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}: the function must return a Tensor, got {type(out).__name__}")
    return out


def value_and_grad(f, argnums=0, has_aux=False):
    """value_and_grad(f, argnums=0, has_aux=False)(*args) -> (value, grads) or ((value, aux), grads).

    argnums is an int (grads has the argument's structure) or a tuple of ints (a tuple of those).
    f must return a scalar Tensor (or (scalar, aux) with has_aux)."""
    multi = not isinstance(argnums, int)
    nums = tuple(argnums) if multi else (argnums,)

    def wrapped(*args):
        for a in nums:
            if not -len(args) <= a < len(args):
                raise ValueError(f"grad: argnums {a} out of range for {len(args)} arguments")
        nums_ = tuple(a % len(args) for a in nums)
        flats = [_flatten(args[a]) for a in nums_]
        leaves = [l for fl, _ in flats for l in fl]
        aux = []

        def flat_f(xs):
            new = list(args)
            k = 0
            for a, (fl, spec) in zip(nums_, flats):
                new[a] = _unflatten(spec, xs[k:k + len(fl)])
                k += len(fl)
            r = f(*new)
            if has_aux:
                if not (isinstance(r, tuple) and len(r) == 2):
                    raise TypeError("grad: with has_aux=True the function must return (value, aux)")
                r, a = r
                aux.append(a)
            r = _check_tensor_out("grad", r)
            _check_scalar("grad", r)
            return r

        out, pullback = _vjp(flat_f, leaves)
        g = pullback(ones(out.shape, out.dtype))
        grads, k = [], 0
        for fl, spec in flats:
            grads.append(_unflatten(spec, g[k:k + len(fl)]))
            k += len(fl)
        grads = tuple(grads) if multi else grads[0]
        return ((out, aux[0]) if has_aux else out), grads
    return wrapped


def grad(f, argnums=0, has_aux=False):
    """grad(f, argnums=0, has_aux=False)(*args) -> df/dargs[argnums] (and aux with has_aux)."""
    vg = value_and_grad(f, argnums, has_aux)

    def wrapped(*args):
        v, g = vg(*args)
        return (g, v[1]) if has_aux else g
    return wrapped


def compile(f):
    """compile(f)(*args): f traced once per signature (the arguments' structure, shapes and dtypes,
    and grad mode) into a flat program of kernel calls, replayed on later calls with the same bytes
    as f. Values read on the host inside f (item(), numpy()) and the Python control flow they
    steer are baked into the trace, as torch.jit.trace does; inside a transform (grad(compile(f)))
    f runs uncompiled. The result has `traces` (signatures traced), `stats()` and `clear()`.
    See docs/transforms.md, "compile"."""
    compiled = {}   # argument structure -> _core._Compiled (which keys on shapes and dtypes)
    out_specs = {}  # full signature -> the output's structure
    current = [None]

    def signature(spec, leaves):
        return (spec, tuple((tuple(t.shape), str(t.dtype)) for t in leaves), _core.is_grad_enabled())

    def wrapped(*args):
        leaves, spec = _flatten(list(args))
        key = repr(spec)
        c = compiled.get(key)
        if c is None:  # f is called only while tracing, or uncompiled: with this call's closure
            c = compiled[key] = _core._compile(lambda xs: current[0](xs))
        sig = signature(key, leaves)

        def flat_f(xs):
            r = f(*_unflatten(spec, xs))
            out, os = _flatten(r, convert=False)
            out_specs[sig] = os
            return out
        current[0] = flat_f
        out = c(leaves)
        return _unflatten(out_specs[sig], out)

    def stats():
        import builtins  # chainrule's own sum is in this module's namespace
        return {"traces": builtins.sum(c.traces for c in compiled.values()),
                "uncompiled_signatures": builtins.sum(c.uncompiled_signatures for c in compiled.values()),
                "reasons": [c.reason for c in compiled.values() if c.reason]}

    def clear():
        compiled.clear()
        out_specs.clear()
    wrapped.stats = stats
    wrapped.clear = clear
    wrapped.traces = lambda: stats()["traces"]
    return wrapped


def vjp(f, *primals):
    """vjp(f, *primals) -> (out, pullback); pullback(ct) returns a tuple of cotangents, one per
    primal (each with that primal's structure). pullback may be called many times."""
    flats = [_flatten(p) for p in primals]
    leaves = [l for fl, _ in flats for l in fl]

    def flat_f(xs):
        new, k = [], 0
        for fl, spec in flats:
            new.append(_unflatten(spec, xs[k:k + len(fl)]))
            k += len(fl)
        return _check_tensor_out("vjp", f(*new))

    out, pb = _vjp(flat_f, leaves)

    def pullback(ct):
        g = pb(ct)
        res, k = [], 0
        for fl, spec in flats:
            res.append(_unflatten(spec, g[k:k + len(fl)]))
            k += len(fl)
        return tuple(res)
    return out, pullback


def jvp(f, primals, tangents):
    """jvp(f, primals, tangents) -> (f(*primals), J·tangents); primals and tangents are tuples of
    trees of one structure (a single Tensor is accepted for one argument). f may return a tree;
    the tangent then has its structure."""
    if isinstance(primals, Tensor):
        primals, tangents = (primals,), (tangents,)
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    flats = [_flatten(p) for p in primals]
    tflats = [_flatten(t) for t in tangents]
    for i, ((_, ps), (_, ts)) in enumerate(zip(flats, tflats)):
        if ps != ts:
            raise ValueError(f"jvp: primal {i} and its tangent differ in structure")
    leaves = [l for fl, _ in flats for l in fl]
    tleaves = [l for fl, _ in tflats for l in fl]
    out_spec = []

    def flat_f(xs):
        new, k = [], 0
        for fl, spec in flats:
            new.append(_unflatten(spec, xs[k:k + len(fl)]))
            k += len(fl)
        ol, os = _flatten(f(*new))
        out_spec.append(os)
        return ol
    out, t = _jvp(flat_f, leaves, tleaves)
    return _unflatten(out_spec[0], out), _unflatten(out_spec[0], t)


def vmap(f, in_axes=0, out_axes=0):
    """vmap(f, in_axes=0, out_axes=0)(*args): maps f over an axis of its arguments in one batched
    evaluation. Arguments are trees (Tensors, tuples, lists, dicts); in_axes is an int for all
    arguments or a tuple with an int or None per argument (every leaf of an argument is mapped
    along its axis; a None argument may also be any Python value). The output may be a tree;
    each leaf's mapped axis goes to out_axes."""
    def wrapped(*args):
        axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        if len(axes) != len(args):
            raise ValueError(f"vmap: in_axes has {len(axes)} entries for {len(args)} arguments")
        flats, leaves, leaf_axes = [], [], []
        for i, (a, ax) in enumerate(zip(args, axes)):
            try:
                fl, spec = _flatten(a, convert=ax is not None)
            except TypeError:
                if ax is not None:
                    raise TypeError(f"vmap: argument {i} is a {type(a).__name__}, not a tree of Tensors; "
                                    "map it with in_axes None") from None
                flats.append(None)
                continue
            flats.append((fl, spec))
            for x in fl:
                leaves.append(x)
                leaf_axes.append(-1 if ax is None else (ax % x.ndim if x.ndim else ax))
        out_spec = []

        def flat_f(xs):
            new, k = [], 0
            for a, fs in zip(args, flats):
                if fs is None:
                    new.append(a)
                    continue
                fl, spec = fs
                new.append(_unflatten(spec, xs[k:k + len(fl)]))
                k += len(fl)
            ol, os = _flatten(f(*new))
            out_spec.append(os)
            return ol
        outs = _vmap(flat_f, leaves, leaf_axes)
        if out_axes != 0:
            moved = []
            for o in outs:
                r = o.ndim
                if not -r <= out_axes < r:
                    raise ValueError(f"vmap: out_axes {out_axes} is out of range for an output of rank {r}")
                perm = list(range(1, r))
                perm.insert(out_axes % r, 0)
                moved.append(permute(o, perm))
            outs = moved
        return _unflatten(out_spec[0], outs)
    return wrapped


def _one_tensor_transform(name, core, doc):
    """A transform of f taking one Tensor x, whose f must return a Tensor; chunk_size (0: all at
    once) bounds the directions per batched pass, for less peak memory and the same result."""
    def transform(f, chunk_size=0):
        def wrapped(x):
            x = _as_tensor_arg(name, x)
            return core(lambda v: _check_tensor_out(name, f(v)), x, chunk_size)
        return wrapped
    transform.__name__ = transform.__qualname__ = name
    transform.__doc__ = doc
    return transform


jacfwd = _one_tensor_transform(
    "jacfwd", _jacfwd, "jacfwd(f, chunk_size=0)(x): the Jacobian (shape out.shape + x.shape) by batched forward passes.")
jacrev = _one_tensor_transform(
    "jacrev", _jacrev, "jacrev(f, chunk_size=0)(x): the Jacobian (shape out.shape + x.shape) by batched reverse passes.")
hessian = _one_tensor_transform("hessian", _hessian, "hessian(f, chunk_size=0)(x) = jacfwd(jacrev(f))(x), f scalar-valued.")


def linearize(f, x):
    """linearize(f, x) -> (f(x), lin): one evaluation records the linearisation; lin(u) = J u
    replays the recorded JVP rules only (no primal work), and may be called many times."""
    x = _as_tensor_arg("linearize", x)
    return _linearize(lambda v: _check_tensor_out("linearize", f(v)), x)


def linear_transpose(lin, like):
    """linear_transpose(lin, like)(ct) = Jᵀ ct for a linear map lin of Tensors shaped like `like`
    (lin's VJP at zero, which for a linear map is its transpose)."""
    _, pb = vjp(lin, zeros(like.shape, like.dtype))
    return lambda ct: pb(ct)[0]


def hvp(f):
    """hvp(f)(x, v) = H(x) v, forward over reverse, without forming H."""
    def wrapped(x, v):
        x, v = _as_tensor_arg("hvp", x), _as_tensor_arg("hvp", v)
        return _hvp(lambda u: _check_tensor_out("hvp", f(u)), x, v)
    return wrapped
