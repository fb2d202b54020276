"""chainrule.data: Data sets in memory (Fashion-MNIST, spirals, regression, CSV) and seeded mini-batch loaders."""
from . import _core
from ._reexport import reexport

__all__ = reexport(globals(), _core.data)
del reexport
