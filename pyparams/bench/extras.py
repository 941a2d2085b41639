"""What the harness needs beyond pyparams' own dependencies, and what it does without it.

A plain ``pip install .`` brings torch and packaging only. The harness then still runs
everything that needs nothing else (the synthetic families, the claims on a synthetic
model) and says in one line which extra brings the rest: ``transformers`` builds the real
architectures, ``matplotlib`` draws the plots, ``tqdm`` the progress bar, ``psutil``
reads memory where ``/proc`` cannot.

>>> INSTALL_HINT
'pip install "pyparams[bench]"'
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable

__all__ = [
    "INSTALL_HINT",
    "available",
    "missing",
    "missing_line",
    "rss_bytes",
    "total_memory_bytes",
]

INSTALL_HINT = 'pip install "pyparams[bench]"'


def available(name: str) -> bool:
    """Whether the top-level module ``name`` can be imported (without importing it)."""
    return importlib.util.find_spec(name) is not None


def missing(names: Iterable[str]) -> list[str]:
    """The modules of ``names`` that are not installed, in order, without repeats."""
    return [name for name in dict.fromkeys(names) if not available(name)]


def missing_line(names: Iterable[str], consequence: str) -> str:
    """One line: which modules are missing, what that costs, and the command that fixes it."""
    return f"{', '.join(names)} not installed: {consequence} ({INSTALL_HINT})"


def rss_bytes() -> int | None:
    """This process's resident set size: psutil, else ``/proc/self/statm``, else ``None``."""
    if available("psutil"):
        import psutil

        return int(psutil.Process().memory_info().rss)
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def total_memory_bytes() -> int | None:
    """The machine's physical memory: psutil, else ``sysconf``, else ``None``."""
    if available("psutil"):
        import psutil

        return int(psutil.virtual_memory().total)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return None
