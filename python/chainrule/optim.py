"""chainrule.optim: Optimisers (torch.optim's names: SGD, Adam, AdamW) and learning-rate schedules (ConstantLR, StepLR, CosineLR, WarmupLR)."""
from . import _core
from ._reexport import reexport

__all__ = reexport(globals(), _core.optim)
del reexport
