"""chainrule.nn.init: initialisers with torch.nn.init's names, in place, drawing from a
chainrule.Generator (default: chainrule.default_generator(), seeded by chainrule.manual_seed)."""
from .. import _core
from .._reexport import reexport

__all__ = reexport(globals(), _core.nn.init)
del reexport
