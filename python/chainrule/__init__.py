"""chainrule: automatic differentiation in C++20, from Python.

Tensors, every op of include/chainrule/ops/ops.h under the same name, and composable JAX-style
transforms (grad, value_and_grad, vjp, jvp, vmap, jacfwd, jacrev, hessian, hvp) that take Python
callables and nest to any order. See docs/python.md.
"""
from . import _core
from ._core import *  # noqa: F401,F403
from ._core import Tensor, _vjp, _jvp, _vmap, _jacfwd, _jacrev, _hessian, _hvp, _check_scalar

__all__ = [n for n in dir(_core) if not n.startswith("_")] + [
    "grad", "value_and_grad", "vjp", "jvp", "vmap", "jacfwd", "jacrev", "hessian", "hvp"]


# Arguments of transformed functions are a Tensor or a (nested) tuple/list of Tensors.
def _flatten(x):
    if isinstance(x, Tensor):
        return [x], None
    if isinstance(x, (tuple, list)):
        leaves, specs = [], []
        for e in x:
            l, s = _flatten(e)
            leaves += l
            specs.append((len(l), s))
        return leaves, (type(x), specs)
    raise TypeError(f"chainrule: expected a Tensor or a tuple/list of Tensors, got {type(x).__name__}")


def _unflatten(spec, leaves):
    if spec is None:
        return leaves[0]
    kind, specs = spec
    out, k = [], 0
    for n, s in specs:
        out.append(_unflatten(s, leaves[k:k + n]))
        k += n
    return kind(out)


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
    """jvp(f, primals, tangents) -> (f(*primals), J·tangents); primals and tangents are tuples
    (a single Tensor is accepted for one argument)."""
    if isinstance(primals, Tensor):
        primals, tangents = (primals,), (tangents,)
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    flats = [_flatten(p) for p in primals]
    leaves = [l for fl, _ in flats for l in fl]
    tleaves = [l for t in tangents for l in _flatten(t)[0]]

    def flat_f(xs):
        new, k = [], 0
        for fl, spec in flats:
            new.append(_unflatten(spec, xs[k:k + len(fl)]))
            k += len(fl)
        return _check_tensor_out("jvp", f(*new))
    out, t = _jvp(flat_f, leaves, tleaves)
    return out, t


def vmap(f, in_axes=0):
    """vmap(f, in_axes=0)(*args): maps f over an axis of its (Tensor) arguments in one batched
    evaluation; in_axes is an int for all arguments or a tuple with an int or None per argument.
    The output's mapped axis is in front."""
    def wrapped(*args):
        axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        if len(axes) != len(args):
            raise ValueError(f"vmap: in_axes has {len(axes)} entries for {len(args)} arguments")
        for a in args:
            if not isinstance(a, Tensor):
                raise TypeError(f"vmap: arguments must be Tensors, got {type(a).__name__}")
        ax = [-1 if a is None else (a % args[i].ndim if args[i].ndim else a) for i, a in enumerate(axes)]
        return _vmap(lambda xs: _check_tensor_out("vmap", f(*xs)), list(args), ax)
    return wrapped


def _one_tensor_transform(name, core, doc):
    """A transform of f taking one Tensor x, whose f must return a Tensor."""
    def transform(f):
        def wrapped(x):
            if not isinstance(x, Tensor):
                raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
            return core(lambda v: _check_tensor_out(name, f(v)), x)
        return wrapped
    transform.__name__ = transform.__qualname__ = name
    transform.__doc__ = doc
    return transform


jacfwd = _one_tensor_transform(
    "jacfwd", _jacfwd, "jacfwd(f)(x): the Jacobian (shape out.shape + x.shape) by one batched forward pass.")
jacrev = _one_tensor_transform(
    "jacrev", _jacrev, "jacrev(f)(x): the Jacobian (shape out.shape + x.shape) by one batched reverse pass.")
hessian = _one_tensor_transform("hessian", _hessian, "hessian(f)(x) = jacfwd(jacrev(f))(x), f scalar-valued.")


def hvp(f):
    """hvp(f)(x, v) = H(x) v, forward over reverse, without forming H."""
    def wrapped(x, v):
        if not isinstance(x, Tensor):
            raise TypeError(f"hvp: expected a Tensor, got {type(x).__name__}")
        return _hvp(lambda u: _check_tensor_out("hvp", f(u)), x, v)
    return wrapped
