"""Other work before a timed call: a sweep through a buffer larger than the last-level cache.

A training step never walks a model back to back: between two walks come a forward, a
backward and an optimizer step that push megabytes through the CPU caches. The
``after`` state (:mod:`pyparams.bench.states`) stands for that: before each timed call,
untimed, every cache line of a buffer :data:`LLC_FACTOR` times the last-level cache is
written, so the call starts with the walk's data (modules, their dicts, the cache's
records) evicted. The size comes from the machine (:func:`plan`), and the run records it.

>>> plan(fallback_llc=1 << 20, sysfs="/nonexistent").source
'fallback (no cache size found under /nonexistent)'
"""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import asdict, dataclass

import torch

from pyparams.bench.formatting import format_bytes

__all__ = ["LLC_FACTOR", "SweepPlan", "plan", "sweeper"]

LLC_FACTOR = 2  # a buffer twice the last-level cache: nothing of the walk survives it
MAX_BYTES = 1 << 30  # a cap, so a machine that reports a huge cache does not sweep for ages
FALLBACK_LLC_BYTES = 32 << 20  # where no size is readable: the sweep is then 64 MiB
_SYSFS = "/sys/devices/system/cpu/cpu0/cache"


@dataclass(frozen=True)
class SweepPlan:
    """How large a sweep is and how that size was found (``results.json`` records it)."""

    bytes: int
    llc_bytes: int
    factor: int
    source: str  # where llc_bytes came from
    capped: bool  # factor * llc_bytes was over the cap
    cap: int = MAX_BYTES  # the most it may be (the quick preset's is smaller)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        """How large the sweep is and why, in words (the report's)."""
        size = format_bytes(self.bytes)
        if not self.factor:
            return f"{size}, {self.source}"
        capped = f", capped at {format_bytes(self.cap)}" if self.capped else ""
        return (
            f"{size}: {self.factor}x the largest cache, {format_bytes(self.llc_bytes)} "
            f"({self.source}){capped}"
        )


def _parse_size(text: str) -> int:
    """``'491520K'`` -> bytes (sysfs writes sizes with a K or M suffix)."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def _largest_cache(sysfs: str) -> tuple[int, str] | None:
    """The largest data or unified cache of cpu0, and the file that says so."""
    found = []
    for index in sorted(glob.glob(os.path.join(sysfs, "index*"))):
        try:
            with open(os.path.join(index, "type")) as kind:
                if kind.read().strip() == "Instruction":
                    continue
            with open(os.path.join(index, "size")) as size:
                found.append((_parse_size(size.read()), os.path.join(index, "size")))
        except (OSError, ValueError):
            continue
    return max(found) if found else None


def plan(
    bytes_override: int | None = None,
    sysfs: str = _SYSFS,
    fallback_llc: int = FALLBACK_LLC_BYTES,
    max_bytes: int = MAX_BYTES,
) -> SweepPlan:
    """The sweep's size: ``bytes_override`` if given, else :data:`LLC_FACTOR` times the
    largest cache sysfs lists (capped at ``max_bytes``), else a fallback."""
    if bytes_override is not None:
        return SweepPlan(bytes_override, 0, 0, "asked for (--sweep-mib)", False)
    largest = _largest_cache(sysfs)
    if largest is None:
        llc, source = fallback_llc, f"fallback (no cache size found under {sysfs})"
    else:
        llc, source = largest[0], f"sysfs {largest[1]}"
    wanted = LLC_FACTOR * llc
    return SweepPlan(min(wanted, max_bytes), llc, LLC_FACTOR, source, wanted > max_bytes, max_bytes)


@functools.lru_cache(maxsize=1)
def sweeper(size: int) -> _Sweeper:
    """The sweep of ``size`` bytes; its buffer is allocated once and kept for the run."""
    return _Sweeper(size)


class _Sweeper:
    """Writes every word of its buffer when called: every line passes through the caches."""

    def __init__(self, size: int) -> None:
        # float32: the add vectorizes on one thread (a uint8 add ran at half the speed)
        self.buffer = torch.zeros(max(size // 4, 1), dtype=torch.float32)
        self.calls = 0

    def __call__(self) -> None:
        # One thread: torch's pool threads would stay spinning after the sweep, beside (or
        # on a sibling hyperthread of) the timed call.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.buffer.add_(1)  # a read and a write of every line, at memory bandwidth
        finally:
            torch.set_num_threads(threads)
        self.calls += 1
