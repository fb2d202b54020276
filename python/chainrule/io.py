"""chainrule.io: safetensors files: dicts of name -> Tensor, written atomically."""
from . import _core
from ._reexport import reexport

__all__ = reexport(globals(), _core.io)
del reexport
