"""chainrule.profiler: time per primitive, forward and backward (torch.profiler's names: profile, record_function)."""
from . import _core
from ._reexport import reexport

__all__ = reexport(globals(), _core.profiler)
del reexport
