"""copy.deepcopy and pickle for modules (PyTorch users copy models for EMA weights and target
networks, and pickle them to save or to send to another process).

A module is rebuilt the way it was made (its class, or build_model, called again with deep
copies of the same arguments, which every module records when it is constructed), and then
given copies of the original's tensors, its train/eval modes and requires_grad flags. So C++
layers need no copy code of their own and a Python subclass is copied through its __init__, as
the object it is. Construction draws nothing from the default generator: its state is restored."""
import copy as _copy
import functools as _functools
import sys as _sys

import numpy as _np

from .. import _core

_KEY = "_chainrule_ctor"


def _record(self, ctor, args, kwargs):
    # The outermost __init__ returns last, so a subclass's arguments replace its base's.
    self.__dict__[_KEY] = (ctor, args, kwargs)


def _wrap_init(cls):
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_chainrule_records", False):
        return

    @_functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        _record(self, type(self), args, kwargs)
    __init__._chainrule_records = True
    cls.__init__ = __init__


def _init_subclass(cls, **kwargs):
    _wrap_init(cls)


def _wrap_factory(fn):
    @_functools.wraps(fn)
    def factory(*args, **kwargs):
        m = fn(*args, **kwargs)
        _record(m, factory, args, kwargs)
        return m
    return factory


def _ctor_of(m):
    ctor = m.__dict__.get(_KEY)
    if ctor is None:
        raise TypeError(f"cannot copy or pickle {type(m).__name__}: it was made inside C++ (by build_model or a "
                        "container's constructor), so its arguments are unknown; copy the module that contains it")
    return ctor


def _generator_free(fn):
    """Calls fn with the default generator's state restored afterwards (the values drawn are
    replaced by the original's anyway)."""
    g = _core.default_generator()
    seed, counter = g.seed(), g.counter()
    try:
        return fn()
    finally:
        g.set_state(seed, counter)


def _modes(m):
    return {name: sub.training for name, sub in m.named_modules()}


def _flags(m):
    return {name: p.requires_grad for name, p in m.named_parameters()}


def _plain_attributes(m):
    return {k: v for k, v in m.__dict__.items()
            if not k.startswith("_") and not isinstance(v, (_core.nn.Module, _core.Tensor))}


def _restore(m, state, modes, flags, attrs):
    with _no_grad():
        m.load_state_dict(state)
    subs = dict(m.named_modules())
    for name, training in modes.items():
        if name in subs:
            subs[name].train(training)
    for name, p in m.named_parameters():
        if name in flags and p.requires_grad != flags[name]:
            p.requires_grad_(flags[name])
    m.__dict__.update(attrs)
    return m


def _deepcopy(self, memo):
    ctor, args, kwargs = _ctor_of(self)
    args, kwargs = _copy.deepcopy(args, memo), _copy.deepcopy(kwargs, memo)
    new = _generator_free(lambda: ctor(*args, **kwargs))
    memo[id(self)] = new
    state = {k: v.detach().clone() for k, v in self.state_dict().items()}
    return _restore(new, state, _modes(self), _flags(self), _copy.deepcopy(_plain_attributes(self), memo))


def _rebuild(ctor, args, kwargs, state, modes, flags, attrs):
    new = _generator_free(lambda: ctor(*args, **kwargs))
    return _restore(new, {k: _core.tensor(v) for k, v in state.items()}, modes, flags, attrs)


def _reduce(self):
    ctor, args, kwargs = _ctor_of(self)
    state = {k: _np.array(v.numpy(), copy=True) for k, v in self.state_dict().items()}
    return _rebuild, (ctor, args, kwargs, state, _modes(self), _flags(self), _plain_attributes(self))


def _no_grad():
    from .. import no_grad
    return no_grad()


def _generator_reduce(g):
    return _make_generator, (g.seed(), g.counter())


def _make_generator(seed, counter):
    g = _core.Generator(seed)
    g.set_state(seed, counter)
    return g


def install(namespace):
    """Records constructor arguments for every module class of chainrule.nn (and, through
    __init_subclass__, for every Python subclass), and wraps build_model in `namespace`."""
    Module = _core.nn.Module
    for obj in vars(_core.nn).values():
        if isinstance(obj, type) and issubclass(obj, Module) and obj is not Module:
            _wrap_init(obj)
    Module.__init_subclass__ = classmethod(_init_subclass)
    Module.__deepcopy__ = _deepcopy
    Module.__reduce__ = _reduce
    _core.Generator.__reduce__ = _generator_reduce
    factory = _wrap_factory(namespace["build_model"])
    factory.__module__, factory.__qualname__ = namespace["__name__"], "build_model"  # so pickle finds it
    namespace["build_model"] = factory
    # pickle finds classes by __module__; pybind11's submodules are attributes, not modules.
    _sys.modules.setdefault("chainrule._core.nn", _core.nn)
