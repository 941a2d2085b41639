"""Pausing Python's cyclic garbage collector around a block of work."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic GC inside the block, restoring its previous state after.

    Used while timing (a collection landing in one sample skews it) and while building
    many small modules (the GC's cost there grows with the number of live objects).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
