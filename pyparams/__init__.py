"""pyparams: a native, lazy walker of ``torch.nn.Module`` trees.

Every function yields exactly what the same-named ``torch.nn.Module`` method yields
(the same objects, in the same order, with the same names), walked in C++ with an
explicit stack instead of nested Python generators.

>>> import torch, pyparams
>>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
>>> [name for name, _ in pyparams.named_parameters(model)]
['0.weight', '0.bias', '2.weight', '2.bias']
"""

from pyparams._api import (
    buffers,
    modules,
    named_buffers,
    named_modules,
    named_parameters,
    named_trainable_parameters,
    parameter_list,
    parameters,
    trainable_parameters,
)
from pyparams._cache import cache_clear, cache_info
from pyparams._extension import _C
from pyparams._patch import is_patched, patch, patched, unpatch
from pyparams._zero_grad import zero_grad

__version__: str = _C.__version__

__all__ = [
    "buffers",
    "cache_clear",
    "cache_info",
    "is_patched",
    "modules",
    "named_buffers",
    "named_modules",
    "named_parameters",
    "named_trainable_parameters",
    "parameter_list",
    "parameters",
    "patch",
    "patched",
    "trainable_parameters",
    "unpatch",
    "zero_grad",
]
