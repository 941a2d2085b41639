"""The one timing engine of the harness: columns, calibration, interleaved rounds.

The zoo (:mod:`pyparams.bench.measure`), the consumers (:mod:`pyparams.bench.consumers`)
and the distributed section (:mod:`pyparams.bench.distributed`) all time through here:

- a :class:`Column` is one thing timed and what runs around it, untimed: a context
  entered around each sample (the patch switched on, say), a set-up once before each
  sample, and a set-up before every call (then calls are timed one by one, less the
  timer's own cost);
- :func:`calibrate` picks a loop count so one sample lasts ``min_sample_s``;
- :func:`interleaved` takes rounds A B C, C B A, ... with the cyclic GC paused, one sample
  per column per round, so per-round ratios cancel drift of the machine.

>>> columns = [Column("a", lambda: None), Column("b", lambda: None)]
>>> samples = interleaved(columns, {"a": 3, "b": 3}, rounds=2)
>>> [len(s) for s in samples.values()]
[2, 2]
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pyparams.bench.gc_pause import gc_paused
from pyparams.bench.stats import median

__all__ = ["Column", "calibrate", "interleaved", "sample", "timer_overhead_ns"]


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Column:
    """One timed column. Only ``call`` is timed.

    ``context``: entered around each sample (its entry and exit untimed);
    ``before_sample``: once before each sample; ``before_call``: before every call, which
    makes every call timed on its own; ``calls_per_sample``: fixed (``None``: calibrated);
    ``counters``: read before and after each timed stretch, their growth summed.
    """

    name: str
    call: Callable[[], object]
    before_sample: Callable[[], None] | None = None
    before_call: Callable[[], None] | None = None
    context: Callable[[], contextlib.AbstractContextManager[object]] | None = None
    calls_per_sample: int | None = None
    counters: Callable[[], Sequence[int]] | None = None


def timer_overhead_ns() -> float:
    """What two back-to-back ``perf_counter_ns`` calls read with nothing between them."""
    clock = time.perf_counter_ns
    gaps = []
    for _ in range(201):
        start = clock()
        gaps.append(clock() - start)
    return median(gaps)


def _add_growth(counts: list[int] | None, column: Column, before: Sequence[int]) -> None:
    if counts is not None and column.counters is not None:
        for index, (now, then) in enumerate(zip(column.counters(), before, strict=True)):
            counts[index] += now - then


def _read(column: Column, counts: list[int] | None) -> Sequence[int]:
    return column.counters() if counts is not None and column.counters is not None else ()


def sample(
    column: Column,
    loops: int,
    sync: Callable[[], None] = _nothing,
    overhead: float = 0.0,
    counts: list[int] | None = None,
) -> float:
    """Mean ns per call of one sample of ``loops`` calls (at least 1 ns, as the ratios
    need); adds the counters' growth over the timed calls to ``counts``."""
    clock = time.perf_counter_ns
    with column.context() if column.context is not None else contextlib.nullcontext():
        if column.before_sample is not None:
            column.before_sample()
        if column.before_call is None:
            sync()
            before = _read(column, counts)
            start = clock()
            for _ in range(loops):
                column.call()
            sync()
            elapsed = clock() - start
            _add_growth(counts, column, before)
            return max(elapsed / loops, 1.0)
        total = 0.0
        for _ in range(loops):
            column.before_call()
            sync()
            before = _read(column, counts)
            start = clock()
            result = column.call()
            sync()
            total += clock() - start - overhead
            del result  # freed outside the timing: the call's result is not its cost
            _add_growth(counts, column, before)
        return max(total / loops, 1.0)


def calibrate(
    column: Column,
    *,
    warmup: int,
    min_sample_s: float,
    max_loops: int,
    sync: Callable[[], None] = _nothing,
    overhead: float = 0.0,
) -> tuple[int, float]:
    """Calls per sample (``column.calls_per_sample``, or enough for ``min_sample_s``) and
    the wall ns one sample of that many takes, set-up included (what a budget is spent on).
    A column with a fixed count takes ``warmup`` samples (at least one), the first timed
    as the estimate: its set-up is what costs (a sweep, a step), not worth sampling twice."""
    clock = time.perf_counter_ns
    if column.calls_per_sample is not None:
        start = clock()
        sample(column, 1, sync, overhead)
        wall = clock() - start
        for _ in range(warmup - 1):
            sample(column, 1, sync, overhead)
        return column.calls_per_sample, wall * column.calls_per_sample
    for _ in range(warmup):
        sample(column, 1, sync, overhead)
    single = min(sample(column, 1, sync, overhead) for _ in range(3))
    loops = max(1, min(max_loops, math.ceil(min_sample_s * 1e9 / max(single, 1.0))))
    start = clock()
    sample(column, 1, sync, overhead)
    wall = clock() - start
    per_call = column.before_call is not None
    return loops, (wall * loops if per_call else wall + single * (loops - 1))


def interleaved(
    columns: Sequence[Column],
    loops: Mapping[str, int],
    rounds: int,
    sync: Callable[[], None] = _nothing,
    overhead: float = 0.0,
    counts: Mapping[str, list[int]] | None = None,
) -> dict[str, list[float]]:
    """``rounds`` samples per column, in interleaved order (A B C, C B A, ...), GC paused."""
    samples: dict[str, list[float]] = {column.name: [] for column in columns}
    with gc_paused():
        for index in range(rounds):
            for column in columns if index % 2 == 0 else reversed(columns):
                samples[column.name].append(
                    sample(
                        column, loops[column.name], sync, overhead, (counts or {}).get(column.name)
                    )
                )
    return samples
