"""The warm-walk cache's interface, in the spirit of ``functools.lru_cache``.

A complete walk of a root records what it read (each module's class and version, its
instance ``__dict__``, its member and children dicts, each with its dict version); a later
walk of the same root replays that record, checking every read against the recorded
versions at the moment the live walk would make it, and continues as the live walk from
the first difference. Records hold no references: a model's death drops its records.
"""

from __future__ import annotations

from typing import NamedTuple

from pyparams._extension import _C

__all__ = ["CacheInfo", "cache_clear", "cache_info"]


class CacheInfo(NamedTuple):
    """Counters since the last :func:`cache_clear`, and what the cache holds now."""

    hits: int  # walks that replayed a record
    misses: int  # walks that found none and walked live (recording one)
    invalidations: int  # replays that met a change and went on as the live walk
    revalidations: int  # modules whose __dict__ was written, re-checked and kept
    records: int  # records held (one per root and kind of walk)
    # What those records take; on CPython 3.12+ also the table of the dicts they follow,
    # which keeps the size it grew to (a lookup table's room) until cache_clear().
    bytes: int
    enabled: bool  # False with PYPARAMS_CACHE=0, on 3.13.0, after 3.14 and free-threaded builds
    # Instance __dict__s that recording built, and their bytes. CPython 3.11 keeps a
    # fresh object's attributes inline, without a dict version to check; the dicts
    # belong to the modules (and go with them), not to the cache.
    dicts_built: int
    dict_bytes: int
    # Why the cache is off, decided once at import ("" while it is on): PYPARAMS_CACHE=0,
    # CPython 3.13.0, every dict-watcher slot taken, or an interpreter it is not built for.
    off_reason: str


def cache_info() -> CacheInfo:
    """The cache's counters and size.

    >>> model = torch.nn.Linear(2, 2)
    >>> pyparams.cache_clear()
    >>> for _ in range(3):  # live; live and recorded; replayed
    ...     _ = pyparams.parameter_list(model)
    >>> info = pyparams.cache_info()
    >>> (info.misses, info.hits, info.records) if info.enabled else (2, 1, 1)
    (2, 1, 1)
    """
    return CacheInfo(*_C.cache_info())


def cache_clear() -> None:
    """Drop every record and reset the counters; the next walk of any root is cold.

    >>> pyparams.cache_clear()
    >>> pyparams.cache_info()[:5]
    (0, 0, 0, 0, 0)
    """
    _C.cache_clear()
