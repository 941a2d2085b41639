"""Measuring one model on one device: correctness, interleaved timing, memory.

For every case the harness, in this order:

1. computes torch's reference output and checks each non-torch contender against it
   (:func:`pyparams.bench.contenders.check`); a contender that differs is never timed;
2. runs every contender once (a torch contender that raises, e.g. ``RecursionError`` on a
   deep chain, is recorded as failed), warms up, and calibrates a loop count per contender
   so one sample lasts at least ``min_sample_s``;
3. takes interleaved rounds (A B C, C B A, A B C ...) with the cyclic GC paused, one sample
   per contender per round, so paired ratios cancel drift of the machine; on CUDA each
   sample is bracketed by ``torch.cuda.synchronize()``;
4. times the first item (lazy iterators produce it before the walk is done), except
   after other work;
5. measures memory (not after other work: that walk's memory is its hot or warm
   column's), one contender at a time: the ``tracemalloc`` peak of one full run
   (native allocations through ``PyMem`` included), the RSS delta while its result is held,
   and on CUDA the ``memory_allocated`` / ``max_memory_allocated`` deltas.

Each pyparams contender is timed in every state of ``Settings.states`` (cold, warm,
invalidated, after other work; :mod:`pyparams.bench.states`), each state its own column in
the same interleaved rounds; each torch contender in its hot loop and after other work. A
state's set-up runs outside the timed region: once before a warm sample, before every call
of the others (those calls are timed one by one, less the timer's own cost). The cache's
counters are recorded per column, and its size after warm walks per case. The timing
itself is :mod:`pyparams.bench.timing`'s.
"""

from __future__ import annotations

import functools
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

import pyparams
from pyparams.bench.contenders import (
    BASELINE,
    Contender,
    ContenderMismatch,
    Reference,
    check,
    torch_reference,
)
from pyparams.bench.extras import rss_bytes
from pyparams.bench.gc_pause import gc_paused
from pyparams.bench.states import (
    AFTER,
    COUNTERS,
    STATES,
    WARM_WALKS,
    StateColumn,
    cache_counts,
    state_columns,
)
from pyparams.bench.stats import paired_ratios, summarize
from pyparams.bench.sweep import SweepPlan, plan, sweeper
from pyparams.bench.timing import Column, calibrate, interleaved, timer_overhead_ns
from pyparams.bench.zoo import BuiltModel

__all__ = [
    "CaseResult",
    "ContenderResult",
    "MemoryUse",
    "Settings",
    "check_and_bind",
    "measure_case",
    "measure_memory",
    "synchronize",
]


@dataclass(frozen=True)
class Settings:
    """How hard to measure: rounds, warm-up, sample length and a time budget per case.

    ``repeat`` rounds are taken unless that would exceed ``max_case_s``, in which case
    fewer are, never fewer than ``min_repeat`` (every case records how many it got).
    """

    repeat: int = 15
    min_repeat: int = 5
    warmup: int = 2
    min_sample_s: float = 0.002
    max_case_s: float = 3.0
    ttf_repeat: int = 7
    max_loops: int = 100_000
    states: tuple[str, ...] = STATES  # states of the contenders (states.py); () = none
    sweep_bytes: int | None = None  # the after state's sweep; None: sized from the machine
    max_sweep_bytes: int = 1 << 30  # the most a sweep sized from the machine may be

    def sweep_plan(self) -> SweepPlan:
        """The after state's sweep: its size and how it was found."""
        return plan(self.sweep_bytes, max_bytes=self.max_sweep_bytes)


@dataclass
class MemoryUse:
    """Memory one run of a contender costs, in bytes (``None`` where not measured)."""

    tracemalloc_peak: int
    rss_delta: int | None  # None where RSS cannot be read (no psutil, no /proc)
    cuda_allocated_delta: int | None = None
    cuda_peak_delta: int | None = None


@dataclass
class ContenderResult:
    """Everything measured for one contender on one case, raw samples included."""

    name: str
    ok: bool
    error: str | None = None
    items: int | None = None
    loops: int = 0
    samples_ns: list[float] = field(default_factory=list)  # per call, one per round
    ttf_samples_ns: list[float] = field(default_factory=list)
    memory: MemoryUse | None = None
    state: str | None = None  # states.STATES; None: torch's hot loop, the floor
    # growth of the cache's counters (states.COUNTERS) over every timed call
    cache_counts: dict[str, int] | None = None


@dataclass
class CaseResult:
    """One model on one device: its structure and each contender's result."""

    model: str
    family: str
    size: float | None
    description: str
    device: str
    requested_device: str
    note: str
    n_modules: int
    n_param_tensors: int
    n_params: int
    storage_bytes: int
    n_trainable_tensors: int
    build_seconds: float
    reference_recursion_limit: int | None
    rounds: int
    contenders: dict[str, ContenderResult]
    cache_bytes: int | None = None  # cache_info().bytes after warm walks of every state-ful one
    cache_records: int | None = None

    def median_ns(self, name: str) -> float | None:
        """Median time per call of contender ``name``, ``None`` if it did not run."""
        result = self.contenders.get(name)
        if result is None or not result.ok or not result.samples_ns:
            return None
        return summarize(result.samples_ns).median

    def speedup(self, name: str, over: str = BASELINE) -> float | None:
        """Median of per-round ratios ``over / name`` (``None`` if either did not run)."""
        a, b = self.contenders.get(over), self.contenders.get(name)
        if a is None or b is None or not (a.ok and b.ok and a.samples_ns and b.samples_ns):
            return None
        return summarize(paired_ratios(a.samples_ns, b.samples_ns)).median


def synchronize(device: str) -> None:
    """Wait for queued CUDA work when ``device`` is a CUDA device; no-op otherwise."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_memory(
    fn: Callable[[], object], device: str, setup: Callable[[], None] | None = None
) -> MemoryUse:
    """Memory of one run of ``fn``: tracemalloc peak, RSS delta and CUDA deltas.

    The cyclic GC is paused throughout. The tracemalloc peak is relative to the traced
    memory at the start; the RSS and CUDA deltas are taken while the result of ``fn`` is
    still held (so a list that copied tensors would show up there). ``setup`` runs before
    each of the two runs, outside what is measured.
    """
    setup = setup or (lambda: None)
    with gc_paused():
        tracemalloc.start()
        try:
            setup()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            fn()
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        setup()
        cuda = device.startswith("cuda")
        if cuda:
            synchronize(device)
            allocated = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        rss = rss_bytes()
        held = fn()
        after = rss_bytes()
        rss_delta = None if rss is None or after is None else after - rss
        use = MemoryUse(tracemalloc_peak=peak, rss_delta=rss_delta)
        if cuda:
            synchronize(device)
            use.cuda_allocated_delta = torch.cuda.memory_allocated() - allocated
            use.cuda_peak_delta = torch.cuda.max_memory_allocated() - allocated
    del held
    return use


def _time_to_first(produce: Callable[[], object], device: str) -> float:
    synchronize(device)
    start = time.perf_counter_ns()
    next(iter(produce()), None)  # type: ignore[call-overload]
    synchronize(device)
    return float(time.perf_counter_ns() - start)


Bound = dict[str, tuple[Callable[[], object], Callable[[], object]]]  # name -> (run, produce)


def check_and_bind(
    module: nn.Module, contenders: Sequence[Contender], reference: Reference
) -> tuple[dict[str, ContenderResult], Bound]:
    """Step 1 of a case: check each non-torch contender against ``reference``, then bind it
    and run it once. Every contender gets a result (not ``ok``, with the error, when it
    differs from torch or raises); only those that are ok are bound and measured."""
    results: dict[str, ContenderResult] = {}
    bound: Bound = {}
    for contender in contenders:
        result = results[contender.name] = ContenderResult(contender.name, ok=False)
        try:
            if contender.library != "torch":
                result.items = check(contender, module, reference)
            run, produce = contender.bind(module, reference)
            out = run()
            if contender.library == "torch" and isinstance(out, list):
                result.items = len(out)
        except ContenderMismatch as exc:
            result.error = f"WRONG OUTPUT: {exc}"
            continue
        except Exception as exc:  # noqa: BLE001 - a contender that raises is reported, not fatal
            result.error = f"{type(exc).__name__}: {exc}"
            continue
        result.ok = True
        if result.items is None:
            result.items = len(reference.expected(contender.kind))
        bound[contender.name] = (run, produce)
    return results, bound


@dataclass(frozen=True)
class _Timed:
    """One timed column of a case: what the engine times, and how to produce its items
    (for the time to the first item) after the state's set-up."""

    column: Column
    produce: Callable[[], object]
    state: StateColumn | None = None


def measure_case(
    built: BuiltModel,
    contenders: Sequence[Contender],
    settings: Settings,
    *,
    memory: bool = True,
) -> CaseResult:
    """Check, time and measure every contender on ``built``; see the module docstring."""
    module, device = built.module, built.device
    reference = torch_reference(module, depth_hint=built.structure.n_modules)
    results, bound = check_and_bind(module, contenders, reference)
    results, timed = _columns(module, contenders, results, bound, settings)
    overhead = timer_overhead_ns()
    sync = functools.partial(synchronize, device)

    estimates: dict[str, float] = {}
    for name, one in timed.items():
        results[name].loops, estimates[name] = calibrate(
            one.column,
            warmup=settings.warmup,
            min_sample_s=settings.min_sample_s,
            max_loops=settings.max_loops,
            sync=sync,
            overhead=overhead,
        )
    per_round_ns = sum(estimates.values()) or 1.0
    affordable = int(settings.max_case_s * 1e9 / per_round_ns)
    rounds = max(min(settings.repeat, settings.min_repeat), min(settings.repeat, affordable))

    counts = {
        name: [0] * len(COUNTERS) for name, one in timed.items() if one.column.counters is not None
    }
    samples = interleaved(
        [one.column for one in timed.values()],
        {name: results[name].loops for name in timed},
        rounds,
        sync,
        overhead,
        counts,
    )
    for name, values in samples.items():
        results[name].samples_ns = values
    names = list(timed)
    with gc_paused():
        for index in range(settings.ttf_repeat):
            for name in names if index % 2 == 0 else reversed(names):
                one = timed[name]
                if one.state is not None and one.state.state == AFTER:
                    continue  # the first item is timed hot and warm; a sweep each is dear
                if one.state is not None:
                    one.state.setup()
                results[name].ttf_samples_ns.append(_time_to_first(one.produce, device))
    for name, grown in counts.items():
        results[name].cache_counts = dict(zip(COUNTERS, grown, strict=True))

    if memory:
        for name, one in timed.items():
            if one.state is not None and one.state.state == AFTER:
                continue  # the same walk as the hot or warm column: its memory is theirs
            results[name].memory = measure_memory(
                one.column.call, device, one.state.setup if one.state is not None else None
            )
    cache_bytes, cache_records = _cache_size(timed)

    structure = built.structure
    return CaseResult(
        model=built.entry.name,
        family=built.entry.family,
        size=built.entry.size,
        description=built.entry.description,
        device=device,
        requested_device=built.requested_device,
        note=built.note,
        n_modules=structure.n_modules,
        n_param_tensors=structure.n_param_tensors,
        n_params=structure.n_params,
        storage_bytes=structure.storage_bytes,
        n_trainable_tensors=structure.n_trainable_tensors,
        build_seconds=built.build_seconds,
        reference_recursion_limit=reference.recursion_limit,
        rounds=rounds,
        contenders=results,
        cache_bytes=cache_bytes,
        cache_records=cache_records,
    )


def _state_column(state: StateColumn, run: Callable[[], object]) -> Column:
    """The engine's column of a contender in a state: warm's set-up once per sample, the
    others' before every call."""
    return Column(
        state.key,
        run,
        before_sample=None if state.per_call else state.setup,
        before_call=state.setup if state.per_call else None,
        calls_per_sample=state.calls_per_sample,
        counters=cache_counts if state.counted else None,
    )


def _columns(
    module: nn.Module,
    contenders: Sequence[Contender],
    results: dict[str, ContenderResult],
    bound: Bound,
    settings: Settings,
) -> tuple[dict[str, ContenderResult], dict[str, _Timed]]:
    """Every timed column, in contender order: a torch contender's hot loop then its state
    columns, a pyparams one once per state (keys from
    :func:`pyparams.bench.states.column_key`), the floor once."""
    columns: dict[str, ContenderResult] = {}
    timed: dict[str, _Timed] = {}
    sweep = sweeper(settings.sweep_plan().bytes) if AFTER in settings.states else None
    for contender in contenders:
        name, result = contender.name, results[contender.name]
        if name not in bound:  # failed: one row with its error
            columns[name] = result
            continue
        run, produce = bound[name]
        if contender.library != "pyparams":  # torch's hot loop, the floor: no set-up
            columns[name], timed[name] = result, _Timed(Column(name, run), produce)
        for state in state_columns(
            name, contender.library, module, run, settings.states, sweep or _no_sweep
        ):
            columns[state.key] = ContenderResult(
                state.key, ok=True, items=result.items, state=state.state
            )
            timed[state.key] = _Timed(_state_column(state, run), produce, state)
    return columns, timed


def _no_sweep() -> None:
    raise AssertionError("the after state was not asked for")


def _cache_size(timed: dict[str, _Timed]) -> tuple[int | None, int | None]:
    """The cache's bytes and records after warm walks of each state-ful pyparams
    contender, from an empty cache; the cache is left empty so the next case starts cold."""
    runs = {
        id(one.column.call): one.column.call
        for one in timed.values()
        if one.state is not None and one.state.counted
    }
    if not runs:
        return None, None
    pyparams.cache_clear()
    for run in runs.values():
        for _ in range(WARM_WALKS + 1):  # record, then one warm walk
            run()
    info = pyparams.cache_info()
    pyparams.cache_clear()
    return int(info.bytes), int(info.records)
