"""Type stubs for chainrule.io (python/src/nn_bindings.cpp): safetensors files."""
from typing import Dict, Mapping, Optional, Tuple, Union, overload, Literal

import numpy as np

from ._core import Tensor

def save_safetensors(path: str, tensors: Mapping[str, Union[Tensor, np.ndarray]],
                     metadata: Optional[Mapping[str, str]] = None) -> None: ...
@overload
def load_safetensors(path: str, with_metadata: Literal[False] = False) -> Dict[str, Tensor]: ...
@overload
def load_safetensors(path: str, with_metadata: Literal[True]) -> Tuple[Dict[str, Tensor], Dict[str, str]]: ...
