"""The build backend (pyproject.toml): setuptools' own, with one check before a wheel.

pyparams._C is compiled against the torch the build sees, and refuses to load under any
other. So torch is no build requirement: as one, an isolated build (plain ``pip install .``,
or ``pip install git+...``) would fetch the newest torch into a throwaway environment and
build against that. Instead the wheel and editable hooks stop at once, before pip resolves
any dependency, with one line naming the fix, when the build sees no torch; the sdist hooks
need none (``python -m build --sdist`` works in an isolated environment).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 (the sdist hooks, unchanged)

# Names torch and pyproject.toml's [build-system] requires, what a build without isolation
# needs installed (tests/test_packaging.py checks that the two lists agree).
NO_TORCH = (
    "pyparams: this build sees no torch (none is installed, or pip's build isolation "
    "hides it), and pyparams compiles against the torch that will import it: install "
    'torch and the build requirements first (pip install torch "setuptools>=77" wheel '
    "ninja packaging), then run `pip install --no-build-isolation .`"
)


def require_torch() -> None:
    """Exit with :data:`NO_TORCH` when ``import torch`` would find nothing."""
    if importlib.util.find_spec("torch") is None:
        sys.exit(NO_TORCH)


def _needs_torch(hook: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    def checked(*args: Any, **kwargs: Any) -> Any:
        require_torch()
        return hook(*args, **kwargs)

    return checked


get_requires_for_build_wheel = _needs_torch(_setuptools.get_requires_for_build_wheel)
prepare_metadata_for_build_wheel = _needs_torch(_setuptools.prepare_metadata_for_build_wheel)
build_wheel = _needs_torch(_setuptools.build_wheel)
get_requires_for_build_editable = _needs_torch(_setuptools.get_requires_for_build_editable)
prepare_metadata_for_build_editable = _needs_torch(_setuptools.prepare_metadata_for_build_editable)
build_editable = _needs_torch(_setuptools.build_editable)
