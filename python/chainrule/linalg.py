"""chainrule.linalg: Linear algebra with derivatives (the array API's linalg)."""
from . import _core
from ._reexport import reexport

__all__ = reexport(globals(), _core.linalg)
del reexport
