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
4. times the first item (lazy iterators produce it before the walk is done);
5. measures memory, one contender at a time: the ``tracemalloc`` peak of one full run
   (native allocations through ``PyMem`` included), the RSS delta while its result is held,
   and on CUDA the ``memory_allocated`` / ``max_memory_allocated`` deltas.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from pyparams.bench.extras import rss_bytes
from pyparams.bench.gc_pause import gc_paused
from pyparams.bench.contenders import BASELINE, Contender, ContenderMismatch, check, torch_reference
from pyparams.bench.stats import paired_ratios, summarize
from pyparams.bench.zoo import BuiltModel

__all__ = [
    "CaseResult",
    "ContenderResult",
    "MemoryUse",
    "Settings",
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



def _time_once(fn: Callable[[], object], loops: int, device: str) -> float:
    """Mean ns per call over ``loops`` back-to-back calls."""
    synchronize(device)
    start = time.perf_counter_ns()
    for _ in range(loops):
        fn()
    synchronize(device)
    return (time.perf_counter_ns() - start) / loops


def _calibrate(fn: Callable[[], object], settings: Settings, device: str) -> tuple[int, float]:
    """Loop count so one sample lasts ``min_sample_s``, and the single-call estimate in ns."""
    for _ in range(settings.warmup):
        fn()
    single = min(_time_once(fn, 1, device) for _ in range(3))
    loops = max(1, min(settings.max_loops, math.ceil(settings.min_sample_s * 1e9 / max(single, 1.0))))
    return loops, single


def measure_memory(fn: Callable[[], object], device: str) -> MemoryUse:
    """Memory of one run of ``fn``: tracemalloc peak, RSS delta and CUDA deltas.

    The cyclic GC is paused throughout. The tracemalloc peak is relative to the traced
    memory at the start; the RSS and CUDA deltas are taken while the result of ``fn`` is
    still held (so a list that copied tensors would show up there).
    """
    with gc_paused():
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            fn()
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
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
    results: dict[str, ContenderResult] = {}
    bound: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
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
        except Exception as exc:  # a contender that raises is reported, not fatal
            result.error = f"{type(exc).__name__}: {exc}"
            continue
        result.ok = True
        if result.items is None:
            result.items = len(reference.expected(contender.kind))
        bound[contender.name] = (run, produce)

    estimates: dict[str, float] = {}
    for name, (run, _) in bound.items():
        results[name].loops, single = _calibrate(run, settings, device)
        estimates[name] = single * results[name].loops
    per_round_ns = sum(estimates.values()) or 1.0
    affordable = int(settings.max_case_s * 1e9 / per_round_ns)
    rounds = max(min(settings.repeat, settings.min_repeat), min(settings.repeat, affordable))

    names = list(bound)
    with gc_paused():
        for index in range(rounds):
            for name in names if index % 2 == 0 else reversed(names):
                run, _ = bound[name]
                results[name].samples_ns.append(_time_once(run, results[name].loops, device))
        for index in range(settings.ttf_repeat):
            for name in names if index % 2 == 0 else reversed(names):
                _, produce = bound[name]
                results[name].ttf_samples_ns.append(_time_to_first(produce, device))

    if memory:
        for name, (run, _) in bound.items():
            results[name].memory = measure_memory(run, device)

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
    )
