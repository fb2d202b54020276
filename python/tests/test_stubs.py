"""Every public name of chainrule and its submodules appears in the type stubs, and every class's
public methods in its stub class, so that a new binding cannot go without a stub (and a stub
cannot name what does not exist)."""
import ast
import inspect
import os
import pathlib

import pytest

import chainrule as cr

PKG = os.path.dirname(cr.__file__)


def stub_tree(*files):
    """Names defined, names imported and {class: member names} of the stub (or Python) files."""
    names, imported, classes = set(), set(), {}
    for f in files:
        tree = ast.parse(open(os.path.join(PKG, f)).read())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef):
                names.add(node.name)
                members = set()
                for b in node.body:
                    if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        members.add(b.name)
                    elif isinstance(b, ast.AnnAssign) and isinstance(b.target, ast.Name):
                        members.add(b.target.id)
                    elif isinstance(b, ast.Assign):
                        members |= {t.id for t in b.targets if isinstance(t, ast.Name)}
                classes[node.name] = members
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                imported |= {a.asname or a.name for a in node.names}
    return names, imported, classes


MODULES = [
    ("chainrule._core", cr._core, ["_core.pyi"]),
    ("chainrule", cr, ["_core.pyi", "__init__.py"]),
    ("chainrule.nn", cr.nn, ["nn/__init__.pyi"]),
    ("chainrule.nn.init", cr.nn.init, ["nn/init.pyi"]),
    ("chainrule.nn.functional", cr.nn.functional, ["nn/functional.pyi"]),
    ("chainrule.optim", cr.optim, ["optim.pyi"]),
    ("chainrule.data", cr.data, ["data.pyi"]),
    ("chainrule.io", cr.io, ["io.pyi"]),
    ("chainrule.linalg", cr.linalg, ["linalg.pyi"]),
    ("chainrule.profiler", cr.profiler, ["profiler.pyi"]),
]


def public(obj):
    return {n for n in dir(obj) if not n.startswith("_")}


@pytest.mark.parametrize("name,mod,files", MODULES, ids=[m[0] for m in MODULES])
def test_every_public_name_has_a_stub(name, mod, files):
    names, imported, _ = stub_tree(*files)
    names |= imported
    runtime = public(mod) - {"annotations"}
    missing = sorted(runtime - names)
    assert not missing, f"{name}: no stub for {missing} in {files}"


# Stub-only helpers (type aliases) that need not exist at run time.
ALIASES = {"Scalar", "Axes", "ShapeLike", "DTypeLike", "IntOrPair", "Params", "Grads"}


@pytest.mark.parametrize("name,mod,files", MODULES, ids=[m[0] for m in MODULES])
def test_stubs_name_only_what_exists(name, mod, files):
    names, _, _ = stub_tree(*files)
    typing_names = set(dir(__import__("typing"))) | {"np", "os", "overload", "Literal"}
    extra = sorted(n for n in names - typing_names - ALIASES if not n.startswith("_") and not hasattr(mod, n))
    assert not extra, f"{name}: stubs name {extra}, which the module does not have"


@pytest.mark.parametrize("name,mod,files", MODULES, ids=[m[0] for m in MODULES])
def test_every_public_method_has_a_stub(name, mod, files):
    _, _, classes = stub_tree(*files)
    for cname, members in classes.items():
        cls = getattr(mod, cname, None)
        if not inspect.isclass(cls):
            continue
        # Members declared on a stub base class count for the subclass.
        inherited = set()
        for base in cls.__mro__[1:]:
            inherited |= classes.get(base.__name__, set()) if base.__module__.startswith("chainrule") else public(base)
        missing = sorted(public(cls) - members - inherited - {"name", "value"})
        if cname == "DType":  # an enum: its values are stubbed as attributes
            missing = [m for m in missing if m not in {"float32", "float64", "int64", "bool"}]
        assert not missing, f"{name}.{cname}: no stub for {missing}"


def test_every_cpp_op_is_bound():
    """Every function of include/chainrule/ops/*.h that returns a Tensor has a Python binding of
    the same name (chainrule, chainrule.linalg without its linalg_ prefix, or nn.functional)."""
    import re
    root = pathlib.Path(__file__).resolve().parents[2] / "include" / "chainrule" / "ops"
    names = set()
    for h in root.glob("*.h"):
        names |= set(re.findall(r"^Tensor ([a-z_0-9]+)\(", h.read_text(), re.M))
    import chainrule.nn.functional as F
    missing = sorted(n for n in names if not (hasattr(cr, n) or hasattr(cr.linalg, n.removeprefix("linalg_")) or hasattr(F, n)))
    assert len(names) > 100 and not missing, f"C++ ops without a Python binding: {missing}"
