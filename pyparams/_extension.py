"""Loads the native extension; when it cannot, says what to run for the case at hand.

The cases it tells apart: a source tree whose extension was never built (and whether a
compiler is there to build it, or an installed pyparams that the source tree is hiding),
an install without the extension, an extension built for another torch (the file names
the torch it was compiled against) or failing to load for another reason, and a
free-threaded Python whose GIL is forced off.
"""

from __future__ import annotations

import importlib.machinery
import os
import re
import shutil
import sys
from pathlib import Path

import torch
from packaging.version import Version

PACKAGE = Path(__file__).resolve().parent
# A checkout (or sdist) has setup.py and csrc/ next to the package; an install does not.
SOURCE_TREE = (
    PACKAGE.parent
    if (PACKAGE.parent / "setup.py").is_file() and (PACKAGE.parent / "csrc").is_dir()
    else None
)
IN_PLACE = "pip install --no-build-isolation -e .` (or `python setup.py build_ext --inplace`"
REINSTALL = "pip install --no-build-isolation --force-reinstall --no-deps ."
COMPILERS = (
    "a C++17 compiler (Debian/Ubuntu: apt-get install g++; Fedora: dnf install "
    "gcc-c++; macOS: xcode-select --install; or set CXX)"
)


def _extension_files(package: Path) -> list[Path]:
    return [
        package / f"_C{suffix}"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
        if (package / f"_C{suffix}").is_file()
    ]


def _installed_elsewhere() -> Path | None:
    """Another pyparams with a built extension on ``sys.path`` (one this package hides)."""
    for entry in sys.path:
        candidate = (Path(entry or os.getcwd()) / "pyparams").resolve()
        if candidate != PACKAGE and _extension_files(candidate):
            return candidate
    return None


def _rebuild() -> str:
    """The command that builds the extension again for the running torch."""
    if SOURCE_TREE is not None:
        return f"from {SOURCE_TREE}, run `{IN_PLACE})"
    return f"from the pyparams source tree, reinstall it: `{REINSTALL}`"


def _not_built() -> str:
    """Why there is no extension file here, and the fix."""
    if SOURCE_TREE is None:
        return (
            f"pyparams at {PACKAGE} was installed without its native extension "
            f"pyparams._C; {_rebuild()}"
        )
    where = (
        f"pyparams is imported from its source tree {SOURCE_TREE}, where pyparams._C "
        f"was never built"
    )
    other = _installed_elsewhere()
    if other is not None:
        return (
            f"{where}, and it hides the installed pyparams in {other.parent}: the source "
            f"tree comes first on sys.path (Python started in the checkout, as `python -m "
            f"pytest` and `python -c` do, or PYTHONPATH). Run `pytest` or `pyparams` itself, "
            f"or `python -P ...`, or start outside the checkout; or build in place: "
            f"`{IN_PLACE})"
        )
    if shutil.which(os.environ.get("CXX", "c++").split()[0]) is None:
        return (
            f"{where}, and there is no C++ compiler to build it: install {COMPILERS}; "
            f"then {_rebuild()}"
        )
    return f"{where}; {_rebuild()}"


def _built_against(extension: Path) -> str | None:
    """The torch version the extension file was compiled against, read from its bytes
    (csrc/module/bindings.cpp writes it there), without loading it; None if absent."""
    found = re.search(rb"pyparams-built-against-torch=([^\0]+)\0", extension.read_bytes())
    return found.group(1).decode("ascii", "replace") if found else None


def _not_loaded(error: ImportError) -> str:
    """Why the extension file failed to load, and the fix."""
    extension = _extension_files(PACKAGE)[0]  # the import system tries suffixes in this order
    built = _built_against(extension)
    if built is None:
        return (
            f"pyparams._C could not be loaded ({error}); {extension.name} does not say "
            f"which torch it was built against, so it was most likely built by another "
            f"pyparams or against another torch than the running {torch.__version__}. "
            f"Rebuild it: {_rebuild()}"
        )
    if Version(built) != Version(torch.__version__):
        return (
            f"pyparams._C could not be loaded ({error}): it was built against torch "
            f"{built}, but torch {torch.__version__} is running; rebuild it for this "
            f"torch: {_rebuild()}"
        )
    return (
        f"pyparams._C could not be loaded ({error}), though it was built against the "
        f"running torch {built}: the cause is not a torch mismatch (see the error above "
        f"it). A partial or interrupted build is one; rebuild it: {_rebuild()}"
    )


if not _extension_files(PACKAGE):  # checked first: the bare import error would not say why
    raise ImportError(_not_built(), name="pyparams._C")
try:
    from pyparams import _C
except ImportError as error:  # undefined symbols (another torch's ABI), or a failed init
    raise ImportError(_not_loaded(error), name="pyparams._C") from error

# Free-threaded CPython (3.13t, --disable-gil): the walker takes borrowed references from
# module dicts (PyDict_Next, PyDict_GetItemWithError) and fills a per-class table with
# plain writes, safe only under the GIL. pyparams._C
# therefore does not declare Py_MOD_GIL_NOT_USED: importing it enables the GIL for the
# process, and CPython says so once with a RuntimeWarning naming pyparams._C (silence it
# with -W "ignore:The global interpreter lock:RuntimeWarning"). When the GIL is forced off
# (PYTHON_GIL=0 or -Xgil=0), pyparams refuses to load rather than walk unprotected.
if not getattr(sys, "_is_gil_enabled", lambda: True)():
    raise ImportError(
        "pyparams needs the GIL, and this free-threaded Python runs without it (PYTHON_GIL=0 "
        "or -Xgil=0 keeps it off): its walker is not safe without the GIL. Unset PYTHON_GIL "
        "(or drop -Xgil=0): importing pyparams then enables the GIL.",
        name="pyparams._C",
    )

if Version(_C.__torch_version__) != Version(torch.__version__):
    raise ImportError(
        f"pyparams._C was built against torch {_C.__torch_version__}, but torch "
        f"{torch.__version__} is running; rebuild it for this torch: {_rebuild()}",
        name="pyparams._C",
    )

__all__ = ["_C"]
