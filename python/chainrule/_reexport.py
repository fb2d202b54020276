"""Re-exports a submodule of chainrule._core (pybind11 submodules are attributes, not importable
modules) into a Python module, so that `import chainrule.optim` and `from chainrule.data import
DataLoader` work."""


def reexport(namespace, submodule, skip=()):
    names = [k for k in dir(submodule) if not k.startswith("__") and k not in skip]
    namespace.update({k: getattr(submodule, k) for k in names})
    return [k for k in names if not k.startswith("_")]
