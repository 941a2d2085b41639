"""Loads the native extension, refusing one built against a torch other than the running one."""

from __future__ import annotations

import torch
from packaging.version import Version

_REBUILD = "pip install --no-build-isolation --force-reinstall --no-deps ."

try:
    from pyparams import _C
except ImportError as error:  # not built, or built against another torch's ABI
    raise ImportError(
        f"pyparams' native extension pyparams._C could not be loaded ({error}). "
        f"It is built when pyparams is installed; from the pyparams source tree, run: {_REBUILD}"
    ) from error

if Version(_C.__torch_version__) != Version(torch.__version__):
    raise ImportError(
        f"pyparams._C was built against torch {_C.__torch_version__}, but torch "
        f"{torch.__version__} is running; rebuild it for this torch from the pyparams "
        f"source tree: {_REBUILD}"
    )

__all__ = ["_C"]
