"""Tensor methods that a NumPy, JAX or PyTorch user expects, each a thin call of the module
function of the same name (so a method and its function can never disagree), plus copying,
pickling and item assignment. Installed on chainrule.Tensor when the package is imported; the
operators and conversions that must be fast are bound in C++ (python/src/module.cpp)."""
import numpy as _np

from . import _core
from ._core import Tensor


def _method(fn, name):
    def method(self, *args, **kwargs):
        return fn(self, *args, **kwargs)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"x.{name}(...) is chainrule.{fn.__name__}(x, ...)."
    return method


# x.name(...) == chainrule.name(x, ...).
_SAME_NAME = """
    exp log sqrt abs tanh sigmoid relu sign square sin cos tan asin acos atan sinh cosh asinh acosh
    atanh expm1 log1p erf erfc floor ceil round trunc softplus silu gelu
    max min prod all any var std logsumexp argmax argmin cumsum cumprod softmax log_softmax
    flatten unsqueeze expand_dims moveaxis broadcast_to flip roll tile repeat sort argsort clip clamp
    matmul
""".split()
for _name in _SAME_NAME:
    setattr(Tensor, _name, _method(getattr(_core, _name), _name))


def _squeeze(self, axis=None):
    """x.squeeze(axis=None): drops the given size-1 axis (an int or a tuple), or every one."""
    if axis is None:
        return _core.reshape(self, tuple(d for d in self.shape if d != 1))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    r = self.ndim
    for a in axes:
        if not -r <= a < r or self.shape[a % r] != 1:
            raise _core.ShapeError(f"squeeze: axis {a} of shape {list(self.shape)} is not of size 1")
    drop = {a % r for a in axes}
    return _core.reshape(self, tuple(d for i, d in enumerate(self.shape) if i not in drop))


def _transpose(self, *axes):
    """NumPy's x.transpose(): no arguments reverse the axes; otherwise a permutation (as a tuple
    or as separate ints). PyTorch's two-axis swap is x.swapaxes(a, b)."""
    if len(axes) == 1 and not isinstance(axes[0], int):
        axes = tuple(axes[0])
    if not axes:
        axes = tuple(range(self.ndim - 1, -1, -1))
    return _core.permute(self, axes)


def _permute(self, *dims):
    """PyTorch's x.permute(*dims) (also a tuple)."""
    if len(dims) == 1 and not isinstance(dims[0], int):
        dims = tuple(dims[0])
    return _core.permute(self, dims)


def _to(self, dtype):
    """x.to(dtype): PyTorch's name for astype (only CPU exists, so only the dtype changes)."""
    return self.astype(dtype)


def _tolist(self):
    """Nested Python lists of Python numbers (a 0-d tensor gives a number), as numpy's tolist."""
    return self.numpy().tolist()


def _setitem(self, key, value):
    """x[key] = v in place (PyTorch), for a concrete tensor outside recording: x.copy_(x.at[key].set(v)).
    Inside a transform tensors are values, as in JAX: use x = x.at[key].set(v)."""
    if self.level != 0:
        raise TypeError("Tensor.__setitem__: a tensor inside a transform cannot be updated in place; "
                        "use x = x.at[key].set(value)")
    if self.requires_grad and _core.is_grad_enabled():
        raise _core.AutodiffError("Tensor.__setitem__: in-place update of a tensor that requires grad; "
                                  "wrap it in chainrule.no_grad() or use x.at[key].set(value)")
    self.copy_(self.at[key].set(value))


def _check_concrete(self, what):
    if self.level != 0:
        raise TypeError(f"{what}: a tracer (a tensor inside a transform) has no value to {what}")


def _rebuild(array, requires_grad=False):
    t = _core.tensor(array)
    return t.requires_grad_(True) if requires_grad else t


def _reduce(self):
    _check_concrete(self, "pickle")
    return _rebuild, (_np.array(self.numpy(), copy=True), bool(self.requires_grad))


def _deepcopy(self, memo):
    _check_concrete(self, "copy")
    c = self.detach().clone()
    if self.requires_grad:
        c.requires_grad_(True)
    memo[id(self)] = c
    return c


def _copy(self):
    return _deepcopy(self, {})


def _int(self):
    if self.numel() != 1:
        raise _core.ValueError(f"int: a tensor of {self.numel()} elements cannot be converted to a Python int")
    return int(self.item())


def _index(self):
    if self.dtype not in (_core.int64, _core.bool_) or self.ndim != 0:
        raise TypeError(f"only a 0-d int64 or bool tensor can be used as an index, not a {self.dtype.name} "
                        f"tensor of shape {list(self.shape)}")
    return int(self.item())


def _format(self, spec):
    if spec and self.numel() == 1:
        return format(self.item(), spec)
    return str(self) if not spec else format(str(self), spec)


def _rpow(self, base):
    return _core.pow(_core.full(self.shape, float(base), self.dtype) if not isinstance(base, Tensor) else base, self)


_EXTRA = {
    "squeeze": _squeeze, "transpose": _transpose, "permute": _permute, "swapaxes":
    lambda self, a, b: _core.transpose(self, a, b), "to": _to, "tolist": _tolist, "view": Tensor.reshape,
    "float": lambda self: self.astype(_core.float32), "double": lambda self: self.astype(_core.float64),
    "half": lambda self: self.astype(_core.float16), "bfloat16": lambda self: self.astype(_core.bfloat16),
    "long": lambda self: self.astype(_core.int64), "bool": lambda self: self.astype(_core.bool_),
    "__setitem__": _setitem, "__reduce__": _reduce, "__deepcopy__": _deepcopy, "__copy__": _copy,
    "__int__": _int, "__index__": _index, "__format__": _format, "__rpow__": _rpow,
    "__pos__": lambda self: self,
}
for _name, _fn in _EXTRA.items():
    if getattr(_fn, "__name__", "") == "<lambda>":
        _fn.__name__ = _fn.__qualname__ = _name
    setattr(Tensor, _name, _fn)

# NumPy's array size (the number of elements) and PyTorch's batched matrix transpose.
Tensor.size = property(lambda self: self.numel(), doc="The number of elements (NumPy's and the array API's size).")
Tensor.mT = property(lambda self: _core.transpose(self, -2, -1), doc="The transpose of the last two axes.")
# A numpy array on the left of + - * / defers to the tensor's reflected operator, so the result
# is a Tensor (as with JAX arrays and torch tensors).
Tensor.__array_priority__ = 100
